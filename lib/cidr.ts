/**
 * IPv4/IPv6 prefixes as the kernel's LPM tries and nftables interval sets want them:
 * network-order bytes plus a prefix length, host bits cleared.
 */

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Network-order address bytes (4 or 16), host bits zeroed. */
  bytes: Uint8Array;
  prefixLen: number;
  /** Canonical text, e.g. "10.0.0.0/8" or "fc00::/7". */
  text: string;
}

export class CidrError extends Error {
  override name = "CidrError";
}

export function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (const [i, part] of parts.entries()) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

export function parseIpv6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > 45) return null;
  let head = text;
  let tailV4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    tailV4 = parseIpv4(text.slice(lastColon + 1));
    if (!tailV4) return null;
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const groupsOf = (s: string | undefined) => (s === undefined || s === "" ? [] : s.split(":"));
  const left = groupsOf(halves[0]);
  const right = groupsOf(halves[1]);
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...left, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...right];
  const out = new Uint8Array(16);
  for (const [i, group] of groups.entries()) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return null;
    const v = parseInt(group, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  }
  if (tailV4) out.set(tailV4, 12);
  return out;
}

/** An IP protocol number as counters.json and events.jsonl name it: "tcp", "udp" or the number. */
export function protocolName(proto: number): string {
  return proto === 6 ? "tcp" : proto === 17 ? "udp" : String(proto);
}

export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!); // 16 bytes
  // Longest run of zero groups (length >= 2) collapses to "::" (RFC 5952).
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return hex.slice(0, bestStart).join(":") + "::" + hex.slice(bestStart + bestLen).join(":");
}

/** Parses "a.b.c.d/n", "x::y/n" or a bare address (a host prefix). */
export function parseCidr(text: string): Cidr {
  if (typeof text !== "string") throw new CidrError(`${JSON.stringify(text)} is not a string`);
  const slash = text.indexOf("/");
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const lenText = slash < 0 ? null : text.slice(slash + 1);
  const v4 = parseIpv4(addrText);
  const bytes = v4 ?? parseIpv6(addrText);
  if (!bytes) {
    throw new CidrError(
      `"${text}" is not an IPv4 or IPv6 prefix: write it like "192.0.2.0/24" or "2001:db8::/32"`,
    );
  }
  const family: Family = v4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let prefixLen = max;
  if (lenText !== null) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > max) {
      throw new CidrError(
        `"${text}" has a bad prefix length: IPv${family} prefix lengths go from 0 to ${max}`,
      );
    }
    prefixLen = Number(lenText);
  }
  const masked = maskBytes(bytes, prefixLen);
  if (!masked.every((b, i) => b === bytes[i])) {
    const fixed = `${formatAddress(masked)}/${prefixLen}`;
    throw new CidrError(`"${text}" has host bits set: did you mean "${fixed}"?`);
  }
  return { family, bytes: masked, prefixLen, text: `${formatAddress(masked)}/${prefixLen}` };
}

function maskBytes(bytes: Uint8Array, prefixLen: number): Uint8Array {
  return bytes.map((b, i) => {
    const bits = Math.max(0, Math.min(8, prefixLen - 8 * i));
    return b & (0xff << (8 - bits)) & 0xff;
  });
}

/** True when `outer` contains every address of `inner` (same family). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || outer.prefixLen > inner.prefixLen) return false;
  const masked = maskBytes(inner.bytes, outer.prefixLen);
  return masked.every((b, i) => b === outer.bytes[i]);
}

/** Pairs of prefixes where one contains the other (a config smell: one of them is dead). */
export function findOverlaps(cidrs: Cidr[]): [Cidr, Cidr][] {
  const out: [Cidr, Cidr][] = [];
  cidrs.forEach((a, i) => {
    for (const b of cidrs.slice(i + 1)) {
      if (cidrContains(a, b) || cidrContains(b, a)) out.push([a, b]);
    }
  });
  return out;
}

/** Whether an address (4 or 16 bytes) falls in any prefix; IPv4-mapped IPv6 is judged as IPv4. */
export function isExcluded(address: Uint8Array, exclude: Cidr[]): boolean {
  let addr = address;
  if (
    addr.length === 16 && addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff &&
    addr[11] === 0xff
  ) {
    addr = addr.subarray(12);
  }
  const family: Family = addr.length === 4 ? 4 : 6;
  return exclude.some((c) =>
    c.family === family &&
    cidrContains(c, { family, bytes: addr, prefixLen: addr.length * 8, text: "" })
  );
}

export const DEFAULT_EXCLUDE: readonly string[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "255.255.255.255/32",
  "::1/128",
  "::/128",
  "fc00::/7",
  "fe80::/10",
  "ff00::/8",
];
