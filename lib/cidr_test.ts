import { assertEquals, assertThrows } from "./test_assert.ts";
import {
  cidrContains,
  CidrError,
  DEFAULT_EXCLUDE,
  findOverlaps,
  formatAddress,
  isExcluded,
  parseCidr,
  parseIpv4,
  parseIpv6,
  protocolName,
} from "./cidr.ts";

Deno.test("parseCidr accepts IPv4 and IPv6 prefixes and canonicalises them", () => {
  assertEquals(parseCidr("10.0.0.0/8").text, "10.0.0.0/8");
  assertEquals(parseCidr("192.0.2.7").text, "192.0.2.7/32");
  assertEquals(parseCidr("FC00::/7").text, "fc00::/7");
  assertEquals(parseCidr("2001:DB8:0:0:0:0:0:1/128").text, "2001:db8::1/128");
  assertEquals(parseCidr("::/0").prefixLen, 0);
  assertEquals(
    parseCidr("::ffff:192.0.2.1/128").bytes.slice(10),
    new Uint8Array([255, 255, 192, 0, 2, 1]),
  );
});

Deno.test("parseCidr rejects bad input with a message naming the value and the fix", () => {
  for (
    const bad of [
      "",
      "10.0.0/8",
      "256.0.0.0/8",
      "10.0.0.0/33",
      "10.0.0.0/-1",
      "10.0.0.0/08",
      "fe80::/129",
      "1:2:3:4:5:6:7:8:9/64",
      ":::/1",
      "01.2.3.4/32",
      "x",
    ]
  ) {
    assertThrows(() => parseCidr(bad), CidrError, `"${bad}"`);
  }
  assertThrows(() => parseCidr("10.1.0.0/8"), CidrError, 'did you mean "10.0.0.0/8"');
  assertThrows(() => parseCidr("fe80::1/10"), CidrError, 'did you mean "fe80::/10"');
});

Deno.test("address parsing and formatting round-trip", () => {
  assertEquals(parseIpv4("1.2.3.4"), new Uint8Array([1, 2, 3, 4]));
  assertEquals(parseIpv4("1.2.3"), null);
  const v6 = parseIpv6("2001:db8::1:0:0:1")!;
  assertEquals(formatAddress(v6), "2001:db8::1:0:0:1");
  assertEquals(formatAddress(parseIpv6("::")!), "::");
  assertEquals(formatAddress(parseIpv6("fe80::")!), "fe80::");
  assertEquals(parseIpv6("1::2::3"), null);
});

Deno.test("containment, overlaps and the exclusion decision", () => {
  assertEquals(cidrContains(parseCidr("10.0.0.0/8"), parseCidr("10.1.0.0/16")), true);
  assertEquals(cidrContains(parseCidr("10.1.0.0/16"), parseCidr("10.0.0.0/8")), false);
  assertEquals(cidrContains(parseCidr("::/0"), parseCidr("10.0.0.0/8")), false);
  assertEquals(
    findOverlaps([parseCidr("10.0.0.0/8"), parseCidr("10.9.0.0/16"), parseCidr("11.0.0.0/8")])
      .length,
    1,
  );
  const ex = DEFAULT_EXCLUDE.map(parseCidr);
  const internal = [
    "127.0.0.1",
    "10.1.2.3",
    "100.100.1.1",
    "169.254.1.1",
    "172.31.255.255",
    "192.168.2.159",
    "224.0.0.251",
    "255.255.255.255",
    "0.0.0.0",
    "::1",
    "fd00::2",
    "fe80::1",
    "ff02::1",
    "::",
    "::ffff:192.168.1.1",
    "::ffff:127.0.0.1",
  ];
  const external = [
    "198.51.100.2",
    "192.0.2.1",
    "100.128.0.1",
    "172.32.0.1",
    "8.8.8.8",
    "2001:db8:1::2",
    "2606:4700::1111",
    "::ffff:198.51.100.2",
  ];
  for (const a of internal) assertEquals(isExcluded(parseCidr(a).bytes, ex), true, a);
  for (const a of external) assertEquals(isExcluded(parseCidr(a).bytes, ex), false, a);
});

Deno.test("protocolName: tcp, udp, else the number", () => {
  assertEquals([6, 17, 1, 132].map(protocolName), ["tcp", "udp", "1", "132"]);
});
