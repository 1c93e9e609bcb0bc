/**
 * What the boundary probe of `verify` sends to, decided without touching anything: from this
 * host's addresses and routes (`ip -j addr`, `ip -j route`, parsed here) and the config,
 * one remote per class the accounting must tell apart, each in a prefix this host does not
 * use, so the probe's private namespaces never shadow a network the sampler knows about.
 *
 * The one exception is on purpose: the on-link check reuses one of this host's own on-link
 * global IPv6 prefixes (inside the probe's namespaces only), since `internal_onlink` is about
 * the host's connected networks as the sampler sees them, and the sampler sees its own
 * namespace's routes, not the probe's. Likewise the VPN-like interface takes the ifindex of
 * the host's interface of that name: the sampler knows interfaces by the indexes of its own
 * namespace, and a packet carries its device's index, not its name.
 */

import { type Cidr, cidrContains, formatAddress, isExcluded, parseCidr } from "../lib/cidr.ts";

/** The boundary checks, in the order they run. */
export const BOUNDARY_CHECKS = [
  "public4-counted",
  "public6-counted",
  "rfc1918-ignored",
  "cgnat-ignored",
  "ula-ignored",
  "onlink6",
  "vpn-interface",
] as const;
export type BoundaryCheck = typeof BOUNDARY_CHECKS[number];

/** Interface names inside the probe's own namespaces (no collision with the host's). */
export const PROBE_LINK = "stbv0";
export const PEER_LINK = "stbv1";
export const PEER_VPN_LINK = "stbvpn1";
/** The VPN-like interface when the config excludes none: tailscale's name. */
export const DEFAULT_VPN_NAME = "tailscale0";

/** What this host's own network namespace uses, as far as picking addresses is concerned. */
export interface HostView {
  /**
   * Every prefix of an address, or of a route in the main or local table (default routes
   * left out). Policy tables are left out too: tailscale routes all of 100.64.0.0/10 to
   * tailscale0 in its table 52, and neither that nor an exit node's default makes a network
   * connected to this host.
   */
  used: Cidr[];
  /** Own addresses, exact. */
  addresses: Uint8Array[];
  /** On-link global IPv6 prefixes (main table, no gateway, not on lo) with their device. */
  onlink6: { prefix: Cidr; dev: string }[];
  /** Interface name -> ifindex. */
  links: Record<string, number>;
}

interface IpAddrJson {
  ifindex?: number;
  ifname?: string;
  addr_info?: { local?: string; prefixlen?: number }[];
}

interface IpRouteJson {
  dst?: string;
  dev?: string;
  type?: string;
  table?: string;
  gateway?: string;
  nexthops?: unknown;
}

function tryCidr(address: string, prefixLen: number | null): Cidr | null {
  try {
    const host = parseCidr(address.replace(/%.*$/, ""));
    const len = prefixLen ?? host.prefixLen;
    const full = host.bytes.length * 8;
    if (len < 0 || len > full) return null;
    // parseCidr refuses host bits; mask them here (an interface address is a host in a net).
    const bytes = host.bytes.map((b, i) => {
      const bits = Math.max(0, Math.min(8, len - 8 * i));
      return b & (0xff << (8 - bits)) & 0xff;
    });
    return parseCidr(`${formatAddress(bytes)}/${len}`);
  } catch {
    return null;
  }
}

/** Parses `ip -j addr show` and `ip -j route show table all` (both families) output. */
export function parseHostView(
  addrJson: string,
  routeJsons: string[],
): HostView {
  const used: Cidr[] = [];
  const addresses: Uint8Array[] = [];
  const links: Record<string, number> = {};
  for (const link of JSON.parse(addrJson) as IpAddrJson[]) {
    if (typeof link.ifname === "string" && Number.isSafeInteger(link.ifindex)) {
      links[link.ifname] = link.ifindex!;
    }
    for (const a of link.addr_info ?? []) {
      if (typeof a.local !== "string") continue;
      const exact = tryCidr(a.local, null);
      const net = tryCidr(a.local, typeof a.prefixlen === "number" ? a.prefixlen : null);
      if (exact) addresses.push(exact.bytes);
      if (net) used.push(net);
    }
  }
  const onlink6: HostView["onlink6"] = [];
  const global6 = parseCidr("2000::/3");
  for (const text of routeJsons) {
    for (const r of JSON.parse(text) as IpRouteJson[]) {
      if (typeof r.dst !== "string" || r.dst === "default") continue;
      const slash = r.dst.indexOf("/");
      const prefix = tryCidr(
        slash < 0 ? r.dst : r.dst.slice(0, slash),
        slash < 0 ? null : Number(r.dst.slice(slash + 1)),
      );
      const main = r.table === undefined || r.table === "main";
      if (!prefix || prefix.prefixLen === 0 || !(main || r.table === "local")) continue;
      used.push(prefix);
      const unicast = r.type === undefined || r.type === "unicast";
      if (
        prefix.family === 6 && main && unicast && r.gateway === undefined &&
        r.nexthops === undefined && typeof r.dev === "string" && r.dev !== "lo" &&
        cidrContains(global6, prefix)
      ) {
        onlink6.push({ prefix, dev: r.dev });
      }
    }
  }
  return { used, addresses, onlink6, links };
}

/** One remote the probe sends to, and what the sampler must make of it. */
export interface BoundaryTarget {
  check: BoundaryCheck;
  family: 4 | 6;
  /** The probe's own address and the remote's, on the link named by `via`. */
  probeAddress: string;
  peerAddress: string;
  /** On-link prefix length on the main link; the VPN link uses host routes (/32). */
  prefixLen: number;
  via: "main" | "vpn";
  expect: "counted" | "ignored";
  /** The class of remote, in words ("CGNAT 100.64.0.0/10"). */
  label: string;
  /** Why it must (not) count, in words, for the check's line. */
  reason: string;
}

export interface BoundaryPlan {
  targets: BoundaryTarget[];
  /** The VPN-like interface made in the probe's namespace. */
  vpnName: string;
  /** Its ifindex: that of the host's interface of the same name, when there is one. */
  vpnIndex: number | null;
  /** Checks that cannot run here, with the reason. */
  skipped: { check: BoundaryCheck; reason: string }[];
  /** Hints about the config (an internal class it does not exclude). */
  notes: Partial<Record<BoundaryCheck, string>>;
}

export interface PlanOptions {
  host: HostView;
  exclude: Cidr[];
  excludeInterfaces: readonly string[];
  internalOnlink: boolean;
  ipv6: boolean;
}

/** Candidate prefixes per class, tried in order; the first this host does not use wins. */
const CANDIDATES = {
  public4: ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"],
  public6: ["2001:db8:5eb0::/64", "2001:db8:5eb1::/64", "2001:db8:5eb2::/64"],
  rfc1918: ["10.254.95.0/24", "172.31.254.0/24", "192.168.254.0/24", "10.123.45.0/24"],
  cgnat: ["100.127.254.0/24", "100.126.254.0/24", "100.125.254.0/24"],
  ula: ["fd5e:b0::/64", "fd5e:b1::/64", "fd5e:b2::/64"],
  onlink6: ["2001:db8:5eb8::/64", "2001:db8:5eb9::/64", "2001:db8:5eba::/64"],
  vpnRemote: ["203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"],
  vpnSource: ["100.127.253.0/24", "100.126.253.0/24", "100.125.253.0/24"],
} as const;

/** Host parts of the two addresses in a picked prefix: unlikely to be anyone's. */
const HOST_PART = { probe: 0x5e, peer: 0xb1 } as const;

function overlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b) || cidrContains(b, a);
}

function withHost(prefix: Cidr, host: number): string {
  const bytes = new Uint8Array(prefix.bytes);
  bytes[bytes.length - 1] = host;
  if (prefix.family === 6) bytes[bytes.length - 2] = 0x05;
  return formatAddress(bytes);
}

function addressBytes(text: string): Uint8Array {
  return parseCidr(text).bytes;
}

/**
 * Picks the remotes. `taken` grows as prefixes are chosen, so no two checks share one; an
 * address the config excludes is never picked for a check that must count.
 */
export function planBoundary(o: PlanOptions): BoundaryPlan {
  const taken: Cidr[] = [...o.host.used];
  const skipped: BoundaryPlan["skipped"] = [];
  const notes: BoundaryPlan["notes"] = {};
  const targets: BoundaryTarget[] = [];
  const ownAddress = (a: string) =>
    o.host.addresses.some((h) =>
      h.length === addressBytes(a).length &&
      h.every((b, i) => b === addressBytes(a)[i])
    );

  const pick = (list: readonly string[], mustCount: boolean): Cidr | null => {
    for (const text of list) {
      const c = parseCidr(text);
      if (taken.some((t) => overlaps(t, c))) continue;
      const addrs = [withHost(c, HOST_PART.probe), withHost(c, HOST_PART.peer)];
      if (mustCount && addrs.some((a) => isExcluded(addressBytes(a), o.exclude))) continue;
      taken.push(c);
      return c;
    }
    return null;
  };

  const onMain = (
    check: BoundaryCheck,
    prefix: Cidr | null,
    t: Pick<BoundaryTarget, "expect" | "label" | "reason">,
    unavailable: string,
  ) => {
    if (!prefix) {
      skipped.push({ check, reason: unavailable });
      return;
    }
    targets.push({
      check,
      family: prefix.family,
      probeAddress: withHost(prefix, HOST_PART.probe),
      peerAddress: withHost(prefix, HOST_PART.peer),
      prefixLen: prefix.prefixLen,
      via: "main",
      ...t,
    });
  };
  const noV6 = "IPv6 is disabled on this host";
  const allUsed = (what: string) =>
    `every candidate ${what} prefix is used by this host or excluded by the config`;

  onMain("public4-counted", pick(CANDIDATES.public4, true), {
    expect: "counted",
    label: "public IPv4 (documentation range)",
    reason: "a public address is external",
  }, allUsed("IPv4 documentation"));
  if (o.ipv6) {
    onMain("public6-counted", pick(CANDIDATES.public6, true), {
      expect: "counted",
      label: "public IPv6 (2001:db8::/32 documentation range)",
      reason: "a public address is external",
    }, allUsed("IPv6 documentation"));
  } else skipped.push({ check: "public6-counted", reason: noV6 });

  const internal = (
    check: BoundaryCheck,
    list: readonly string[],
    label: string,
    range: string,
  ) => {
    const prefix = pick(list, false);
    onMain(check, prefix, {
      expect: "ignored",
      label,
      reason: `${range} is internal`,
    }, allUsed(label));
    if (prefix && !isExcluded(prefix.bytes, o.exclude)) {
      notes[check] = `the config's exclusions do not cover ${range}: restore it in "exclude"`;
    }
  };
  internal("rfc1918-ignored", CANDIDATES.rfc1918, "RFC 1918 private IPv4", "RFC 1918");
  internal("cgnat-ignored", CANDIDATES.cgnat, "CGNAT (tailscale)", "CGNAT 100.64.0.0/10");
  if (o.ipv6) {
    internal("ula-ignored", CANDIDATES.ula, "IPv6 ULA", "ULA fc00::/7");
  } else skipped.push({ check: "ula-ignored", reason: noV6 });

  if (o.ipv6) {
    const hostOnlink = o.host.onlink6.find((r) =>
      !o.excludeInterfaces.includes(r.dev) && !isExcluded(r.prefix.bytes, o.exclude) &&
      !ownAddress(withHost(r.prefix, HOST_PART.probe)) &&
      !ownAddress(withHost(r.prefix, HOST_PART.peer))
    );
    if (hostOnlink) {
      targets.push({
        check: "onlink6",
        family: 6,
        probeAddress: withHost(hostOnlink.prefix, HOST_PART.probe),
        peerAddress: withHost(hostOnlink.prefix, HOST_PART.peer),
        prefixLen: hostOnlink.prefix.prefixLen,
        via: "main",
        expect: o.internalOnlink ? "ignored" : "counted",
        label: `global IPv6 on this host's on-link ${hostOnlink.prefix.text} (${hostOnlink.dev})`,
        reason: o.internalOnlink
          ? "internal_onlink is on: the host's connected networks are internal"
          : "internal_onlink is off: a global address on a connected network is external",
      });
    } else {
      onMain("onlink6", pick(CANDIDATES.onlink6, true), {
        expect: "counted",
        label: "global IPv6 on-link in the probe's namespace only",
        reason: "this host has no on-link global IPv6 network, and a prefix connected only " +
          "in another namespace is not one of the host's networks",
      }, allUsed("IPv6 documentation"));
    }
  } else skipped.push({ check: "onlink6", reason: noV6 });

  const vpnName = o.excludeInterfaces[0] ?? DEFAULT_VPN_NAME;
  const vpnIndex = o.host.links[vpnName] ?? null;
  const excluded = o.excludeInterfaces.includes(vpnName);
  const remote = pick(CANDIDATES.vpnRemote, true);
  const source = pick(CANDIDATES.vpnSource, false);
  if (excluded && vpnIndex === null) {
    skipped.push({
      check: "vpn-interface",
      reason: `this host has no interface "${vpnName}" now, and the sampler knows interfaces ` +
        "by this host's own: one of that name in the probe's namespace would prove nothing " +
        "(run verify while it is up)",
    });
  } else if (remote && source) {
    targets.push({
      check: "vpn-interface",
      family: 4,
      probeAddress: withHost(source, HOST_PART.probe),
      peerAddress: withHost(remote, HOST_PART.peer),
      prefixLen: 32,
      via: "vpn",
      expect: excluded ? "ignored" : "counted",
      label: `public IPv4 routed over an interface named "${vpnName}"` +
        (vpnIndex === null ? "" : ` (index ${vpnIndex}, as this host's)`),
      reason: excluded
        ? `"exclude_interfaces" lists "${vpnName}"`
        : `"exclude_interfaces" does not list "${vpnName}"`,
    });
  } else {
    skipped.push({ check: "vpn-interface", reason: allUsed("documentation or CGNAT") });
  }
  const order = (c: BoundaryCheck) => BOUNDARY_CHECKS.indexOf(c);
  targets.sort((a, b) => order(a.check) - order(b.check));
  return { targets, vpnName, vpnIndex, skipped, notes };
}
