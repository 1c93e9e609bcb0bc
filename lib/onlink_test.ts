import { assertEquals } from "./test_assert.ts";
import { DEFAULT_EXCLUDE, parseCidr } from "./cidr.ts";
import { onlinkAdditions, OnlinkWatch, parseIpv4Routes, parseIpv6Routes } from "./onlink.ts";

const dir = new URL("./testdata/", import.meta.url).pathname;
// Captured in a netns with a LAN (wlan0: 192.168.1.23/24, 203.0.113.5/24, 2001:db8:42::23/64),
// tailscale0 (100.74.95.80/32, fd7a:115c:a1e0::1/128), a VPN's split default 0.0.0.0/1 and
// 2001:db8:77::/48 on tun0, gateway routes, a blackhole and an unreachable route.
const V4 = Deno.readTextFileSync(`${dir}proc_net_route.txt`);
const V6 = Deno.readTextFileSync(`${dir}proc_net_ipv6_route.txt`);
const texts = (cs: { text: string }[]) => cs.map((c) => c.text);

Deno.test("parseIpv4Routes takes the connected routes, not gateways, blackholes or a split default", () => {
  assertEquals(texts(parseIpv4Routes(V4, true)), ["192.168.1.0/24", "203.0.113.0/24"]);
});

Deno.test("parseIpv4Routes reads the addresses in the host's byte order", () => {
  const line = "eth0\tC0A80100\t00000000\t0001\t0\t0\t0\tFFFFFF00\t0\t0\t0";
  assertEquals(texts(parseIpv4Routes(`header\n${line}\n`, false)), ["192.168.1.0/24"]);
});

Deno.test("parseIpv6Routes takes connected prefixes, not local, multicast, unreachable or gateway routes", () => {
  assertEquals(texts(parseIpv6Routes(V6)), [
    "2001:db8:42::/64",
    "2001:db8:77::/48",
    "fd7a:115c:a1e0::1/128",
    "fe80::/64",
    "fe80::/64",
    "fe80::/64",
    "fe80::/64",
    "fe80::/64",
    "fe80::/64",
  ]);
});

Deno.test("parsers skip lines that are not routes", () => {
  assertEquals(parseIpv4Routes("Iface\nnonsense\neth0 zz 00 0001 0 0 0 00FFFFFF 0 0 0\n"), []);
  assertEquals(parseIpv6Routes("garbage\n\n1 2 3\n"), []);
});

Deno.test("onlinkAdditions leaves out what the exclusions hold, nested and repeated prefixes", () => {
  const exclude = DEFAULT_EXCLUDE.map(parseCidr);
  const found = [...parseIpv4Routes(V4), ...parseIpv6Routes(V6), parseCidr("2001:db8:42::/80")];
  assertEquals(texts(onlinkAdditions(found, exclude)), [
    "203.0.113.0/24",
    "2001:db8:42::/64",
    "2001:db8:77::/48",
  ]);
});

Deno.test("OnlinkWatch reports a change once, and the first list", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const sources = { ipv4: `${tmp}/route`, ipv6: `${tmp}/ipv6_route` };
    Deno.writeTextFileSync(sources.ipv4, V4);
    const logs: string[] = [];
    const w = new OnlinkWatch(DEFAULT_EXCLUDE.map(parseCidr), (m) => logs.push(m), sources);
    assertEquals(texts(w.poll() ?? []), ["203.0.113.0/24"]); // no ipv6_route: no IPv6
    assertEquals(w.poll(), null);
    Deno.writeTextFileSync(sources.ipv6, V6);
    assertEquals(texts(w.poll() ?? []), ["203.0.113.0/24", "2001:db8:42::/64", "2001:db8:77::/48"]);
    assertEquals(w.poll(), null);
    assertEquals(logs.length, 2);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
