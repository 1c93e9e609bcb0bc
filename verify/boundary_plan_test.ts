import { assert, assertEquals, assertMatch } from "../lib/test_assert.ts";
import { type Cidr, cidrContains, DEFAULT_EXCLUDE, isExcluded, parseCidr } from "../lib/cidr.ts";
import {
  BOUNDARY_CHECKS,
  type BoundaryPlan,
  type HostView,
  parseHostView,
  planBoundary,
  type PlanOptions,
} from "./boundary_plan.ts";

const dir = new URL("./testdata/", import.meta.url);
const read = (name: string) => Deno.readTextFileSync(new URL(name, dir));
const view = (host: string): HostView =>
  parseHostView(read(`ip_addr_${host}.json`), [
    read(`ip_route4_${host}.json`),
    read(`ip_route6_${host}.json`),
  ]);
const DEFAULTS = DEFAULT_EXCLUDE.map(parseCidr);
const has = (list: Cidr[], text: string) => list.some((c) => c.text === text);
const target = (plan: BoundaryPlan, check: string) => plan.targets.find((t) => t.check === check);
const options = (o: Partial<PlanOptions> & { host: HostView }): PlanOptions => ({
  exclude: DEFAULTS,
  excludeInterfaces: [],
  internalOnlink: false,
  ipv6: true,
  ...o,
});

/** Whatever the host: no picked address in a prefix it uses, no two checks in one prefix. */
function assertClear(plan: BoundaryPlan, host: HostView): void {
  const picked = plan.targets.flatMap((t) => [t.probeAddress, t.peerAddress]);
  for (const t of plan.targets) {
    if (t.check === "onlink6" && t.label.includes("this host's on-link")) continue;
    for (const a of [t.probeAddress, t.peerAddress]) {
      const c = parseCidr(a);
      const clash = host.used.find((u) => cidrContains(u, c));
      assert(!clash, `${t.check} picked ${a}, inside ${clash?.text} of the host`);
    }
  }
  assertEquals(new Set(picked).size, picked.length, `an address picked twice: ${picked}`);
  for (const t of plan.targets) {
    const mustCount = t.expect === "counted";
    assertEquals(
      isExcluded(parseCidr(t.peerAddress).bytes, DEFAULTS),
      !mustCount && t.check !== "vpn-interface",
      `${t.check}: ${t.peerAddress} excluded by the defaults`,
    );
  }
}

Deno.test("parseHostView: the testbed's prefixes, no on-link global IPv6 (its IPv6 is a ULA)", () => {
  const h = view("testbed");
  for (const p of ["192.0.2.0/24", "127.0.0.0/8", "fd00::/64", "192.0.2.2/32", "fe80::/64"]) {
    assert(has(h.used, p), `${p} in use`);
  }
  assert(!h.used.some((c) => c.prefixLen === 0), "default routes are not prefixes in use");
  assertEquals(h.onlink6, []);
  assertEquals(h.addresses.length, 5);
});

Deno.test("parseHostView: the desktop's LAN prefix is on-link global; tailscale's table is not", () => {
  const h = view("desktop");
  assertEquals(h.onlink6.map((r) => [r.prefix.text, r.dev]), [
    ["2001:db8:aa:1::/64", "enp0s31f6"],
  ]);
  for (const p of ["100.64.0.0/10", "100.100.100.100/32", "fd7a:115c:a1e0::/48"]) {
    assert(!has(h.used, p), `${p} (table 52: policy routing) is not a connected network`);
  }
  for (const p of ["100.74.95.80/32", "fd7a:115c:a1e0::e401:5f50/128", "192.168.122.0/24"]) {
    assert(has(h.used, p), `${p} in use`);
  }
});

Deno.test("parseHostView: junk entries are skipped, not fatal", () => {
  const h = parseHostView('[{"ifname":"x","addr_info":[{"local":"nope","prefixlen":8},{}]}]', [
    '[{"dst":"10.0.0.0/99"},{"dst":"what"},{},{"dst":"default"}]',
  ]);
  assertEquals(h, { used: [], addresses: [], onlink6: [], links: {} });
});

Deno.test("planBoundary on the testbed: the host's 192.0.2.0/24 is avoided", () => {
  const h = view("testbed");
  const plan = planBoundary(options({ host: h }));
  assertEquals(plan.targets.map((t) => t.check), [...BOUNDARY_CHECKS]);
  assertClear(plan, h);
  assertMatch(target(plan, "public4-counted")!.peerAddress, /^198\.51\.100\./);
  // No on-link global IPv6 here: a prefix on-link in the probe's namespace, which must count.
  const onlink = target(plan, "onlink6")!;
  assertEquals(onlink.expect, "counted");
  assertMatch(onlink.reason, /no on-link global IPv6/);
  assertEquals([plan.vpnName, plan.vpnIndex], ["tailscale0", null]);
  assertEquals(target(plan, "vpn-interface")!.expect, "counted");
  assertEquals(plan.notes, {});
});

Deno.test("planBoundary on the desktop: its LAN prefix, internal_onlink and exclude_interfaces", () => {
  const h = view("desktop");
  const off = planBoundary(options({ host: h }));
  assertClear(off, h);
  const onlink = target(off, "onlink6")!;
  assertMatch(onlink.peerAddress, /^2001:db8:aa:1::/);
  assertEquals(onlink.expect, "counted");
  const on = planBoundary(options({
    host: h,
    internalOnlink: true,
    excludeInterfaces: ["tailscale0", "wg0"],
  }));
  assertEquals(target(on, "onlink6")!.expect, "ignored");
  assertEquals(on.vpnName, "tailscale0");
  assertEquals(target(on, "vpn-interface")!.expect, "ignored");
  assertMatch(target(on, "vpn-interface")!.reason, /lists "tailscale0"/);
  // The probe's tailscale0 takes the host's tailscale0's index: the sampler knows it by that.
  assertEquals(h.links["tailscale0"], 5);
  assertEquals([on.vpnIndex, off.vpnIndex], [5, 5]);
  // The first excluded name is the one made; one this host lacks proves nothing: skipped.
  const wg = planBoundary(options({ host: h, excludeInterfaces: ["wg0"] }));
  assertEquals([wg.vpnName, wg.vpnIndex], ["wg0", null]);
  assertEquals(wg.skipped.map((s) => s.check), ["vpn-interface"]);
  assertMatch(wg.skipped[0]!.reason, /no interface "wg0" now/);
  // Tailscale's 100.64.0.0/10 route (its table 52) does not stop the CGNAT check.
  assertMatch(target(off, "cgnat-ignored")!.peerAddress, /^100\.127\./);
  assertEquals(off.skipped, []);
});

Deno.test("planBoundary: a remote that must count is never one the config excludes", () => {
  const h = view("testbed");
  const extra = ["198.51.100.0/24", "203.0.113.0/24", "2001:db8:5eb0::/48"].map(parseCidr);
  const plan = planBoundary(options({ host: h, exclude: [...DEFAULTS, ...extra] }));
  assert(target(plan, "public4-counted") === undefined, "every IPv4 doc range is taken");
  assertMatch(target(plan, "public6-counted")!.peerAddress, /^2001:db8:5eb1::/);
  // The VPN check needs a public IPv4 remote as well: none is left.
  assertEquals(plan.skipped.map((s) => s.check), ["public4-counted", "vpn-interface"]);
  assertMatch(plan.skipped[0]!.reason, /used by this host or excluded by the config/);
  // With one doc range free again, the two share nothing.
  const two = planBoundary(options({ host: h, exclude: [...DEFAULTS, extra[1]!] }));
  assertClear(two, h);
  assertEquals(two.skipped.map((s) => s.check), ["vpn-interface"]);
});

Deno.test("planBoundary: an internal class the config does not exclude gets a note", () => {
  const h = view("testbed");
  const exclude = DEFAULTS.filter((c) => c.text !== "100.64.0.0/10");
  const plan = planBoundary(options({ host: h, exclude }));
  assertEquals(target(plan, "cgnat-ignored")!.expect, "ignored");
  assertMatch(plan.notes["cgnat-ignored"]!, /do not cover CGNAT 100\.64\.0\.0\/10/);
  assertEquals(Object.keys(plan.notes), ["cgnat-ignored"]);
});

Deno.test("planBoundary without IPv6: the IPv6 checks are skipped with the reason", () => {
  const plan = planBoundary(options({ host: view("testbed"), ipv6: false }));
  assertEquals(plan.skipped.map((s) => s.check).sort(), [
    "onlink6",
    "public6-counted",
    "ula-ignored",
  ]);
  assert(plan.skipped.every((s) => /IPv6 is disabled/.test(s.reason)));
  assert(plan.targets.every((t) => t.family === 4));
});
