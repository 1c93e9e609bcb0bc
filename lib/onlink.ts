/**
 * The host's directly connected networks (config "internal_onlink"): the prefixes of the
 * routes without a gateway in `run`'s network namespace, read from /proc/net/route (IPv4,
 * main table) and /proc/net/ipv6_route, parsed by the pure functions below. Re-read every
 * sample (`OnlinkWatch.poll`), so an address or route that comes or goes takes effect at
 * the next sample; it costs tens of µs (docs/benchmarks.md), cheaper than a netlink
 * socket the sampler's sleep would have to watch.
 *
 * Not taken: loopback, local, multicast and reject routes, source-specific IPv6 routes,
 * default routes and anything shorter than /8 (IPv4) or /32 (IPv6): a VPN's "0.0.0.0/1 dev
 * tun0" is connected too, but it is the internet, not a LAN.
 */

import { type Cidr, cidrContains, parseCidr } from "./cidr.ts";
import { check, cString, errno, libc, O_CLOEXEC, O_RDONLY, osError } from "./libc.ts";

export const MIN_ONLINK_PREFIX = { 4: 8, 6: 32 } as const;

const RTF_UP = 0x1, RTF_GATEWAY = 0x2, RTF_REJECT = 0x200;
const RTF_ANYCAST = 0x100000, RTF_LOCAL = 0x80000000;

function hexBytes(hex: string): Uint8Array | null {
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) return null;
  return Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
}

function prefixOf(family: 4 | 6, bytes: Uint8Array, prefixLen: number): Cidr | null {
  const max = family === 4 ? 32 : 128;
  if (prefixLen < MIN_ONLINK_PREFIX[family] || prefixLen > max) return null;
  const text = family === 4
    ? `${Array.from(bytes).join(".")}/${prefixLen}`
    : `${
      Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16))
        .join(":")
    }/${prefixLen}`;
  try {
    return parseCidr(text);
  } catch {
    return null; // host bits set: not a prefix the kernel would list; skip it
  }
}

/**
 * Connected IPv4 prefixes from /proc/net/route (columns Iface, Destination, Gateway, Flags,
 * ..., Mask; addresses as the host-order hex of the network-order value, i.e. bytes
 * reversed on little-endian machines). `littleEndian` is the host's byte order.
 */
export function parseIpv4Routes(text: string, littleEndian = true): Cidr[] {
  const out: Cidr[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, dest, gateway, flagsHex, , , , maskHex] = f;
    const flags = parseInt(flagsHex!, 16);
    // "*": no device (a blackhole route).
    if (iface === "lo" || iface === "*" || !(flags & RTF_UP)) continue;
    if (flags & (RTF_GATEWAY | RTF_REJECT)) continue;
    if (!/^0+$/.test(gateway!)) continue;
    const addr = hexBytes(dest!), mask = hexBytes(maskHex!);
    if (!addr || !mask || addr.length !== 4 || mask.length !== 4) continue;
    if (littleEndian) {
      addr.reverse();
      mask.reverse();
    }
    const bits = mask.reduce((n, b) => (n << 8) | b, 0) >>> 0;
    const len = 32 - Math.log2(((~bits) >>> 0) + 1);
    if (!Number.isInteger(len)) continue; // not a contiguous mask
    const c = prefixOf(4, addr, len);
    if (c) out.push(c);
  }
  return out;
}

/**
 * Connected IPv6 prefixes from /proc/net/ipv6_route (columns dest, dest_len, src, src_len,
 * next hop, metric, refcount, use, flags, iface; lengths and flags in hex).
 */
export function parseIpv6Routes(text: string): Cidr[] {
  const out: Cidr[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [dest, destLen, , srcLen, nextHop, , , , flagsHex, iface] = f;
    const flags = parseInt(flagsHex!, 16) >>> 0;
    if (iface === "lo" || !(flags & RTF_UP)) continue;
    if (flags & (RTF_GATEWAY | RTF_REJECT | RTF_ANYCAST | RTF_LOCAL)) continue;
    if (parseInt(srcLen!, 16) !== 0 || !/^0+$/.test(nextHop!)) continue;
    const addr = hexBytes(dest!);
    if (!addr || addr.length !== 16 || addr[0] === 0xff) continue; // ff00::/8: multicast
    const c = prefixOf(6, addr, parseInt(destLen!, 16));
    if (c) out.push(c);
  }
  return out;
}

/**
 * The prefixes of `found` that add to `exclude` (static exclusions always win: a prefix
 * already inside one is left out), each once, the widest of nested ones, in a stable order.
 */
export function onlinkAdditions(found: Cidr[], exclude: readonly Cidr[]): Cidr[] {
  const kept = found.filter((c) => !exclude.some((e) => cidrContains(e, c)));
  const widest = kept.filter((c, i) =>
    !kept.some((o) => o.text !== c.text && cidrContains(o, c)) &&
    kept.findIndex((o) => o.text === c.text) === i
  );
  return widest.sort((a, b) =>
    a.family - b.family || (a.text < b.text ? -1 : a.text > b.text ? 1 : 0)
  );
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface OnlinkSources {
  ipv4: string;
  ipv6: string;
}

export const PROC_ROUTES: OnlinkSources = {
  ipv4: "/proc/net/route",
  ipv6: "/proc/net/ipv6_route",
};

/**
 * A small /proc file's bytes, read with open + pread + close through libc: a third of what
 * Deno.readTextFileSync costs here, on a path `run` takes twice a second. Empty when the
 * file does not exist (no IPv6 in this kernel or netns: nothing connected there).
 */
export class ProcFile {
  #buf = new Uint8Array(16384);
  readonly #path: Uint8Array<ArrayBuffer>;

  constructor(readonly path: string) {
    this.#path = cString(path);
  }

  /** The whole file, in a buffer the next read reuses. */
  read(): Uint8Array {
    const c = libc();
    const fd = c.open(this.#path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
      const e = errno();
      if (e === 2) return new Uint8Array(0); // ENOENT
      throw osError(e, `opening ${this.path}`);
    }
    try {
      let size = 0;
      while (true) {
        if (size === this.#buf.length) {
          const bigger = new Uint8Array(this.#buf.length * 2);
          bigger.set(this.#buf);
          this.#buf = bigger;
        }
        const rest = this.#buf.subarray(size);
        const n = Number(c.pread(fd, rest, BigInt(rest.length), BigInt(size)));
        check(n, `reading ${this.path}`);
        if (n === 0) return this.#buf.subarray(0, size);
        size += n;
      }
    } finally {
      c.close(fd);
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array | null): boolean {
  if (b === null || a.length !== b.length) return false;
  // A plain loop: `every` with a closure cost 10 µs per KiB under run's --lite-mode.
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const decoder = new TextDecoder();

/** The on-link prefixes, re-read on every `poll`. */
export class OnlinkWatch {
  #last: string | null = null;
  #bytes4: Uint8Array | null = null;
  #bytes6: Uint8Array | null = null;
  readonly #v4: ProcFile;
  readonly #v6: ProcFile;
  #failed = false;

  constructor(
    readonly exclude: readonly Cidr[],
    readonly log: (message: string) => void,
    readonly sources: OnlinkSources = PROC_ROUTES,
  ) {
    this.#v4 = new ProcFile(sources.ipv4);
    this.#v6 = new ProcFile(sources.ipv6);
  }

  /** The connected prefixes beyond `exclude` now, or null when unchanged since the last poll. */
  poll(): Cidr[] | null {
    let found: Cidr[];
    try {
      const v4 = this.#v4.read(), v6 = this.#v6.read();
      // The usual case: the same bytes (no column there moves with traffic), nothing to parse.
      if (sameBytes(v4, this.#bytes4) && sameBytes(v6, this.#bytes6)) return null;
      this.#bytes4 = v4.slice();
      this.#bytes6 = v6.slice();
      found = [
        ...parseIpv4Routes(decoder.decode(v4), LITTLE_ENDIAN),
        ...parseIpv6Routes(decoder.decode(v6)),
      ];
      this.#failed = false;
    } catch (e) {
      // Counting goes on with the prefixes known so far.
      if (!this.#failed) {
        this.log(`internal_onlink: cannot read the routes: ${(e as Error).message}`);
      }
      this.#failed = true;
      return null;
    }
    const now = onlinkAdditions(found, this.exclude);
    const key = now.map((c) => c.text).join(" ");
    if (key === this.#last) return null;
    const first = this.#last === null;
    this.#last = key;
    this.log(
      `internal_onlink: ${first ? "" : "now "}internal as on-link: ${
        key || "no network beyond the exclusions"
      }`,
    );
    return now;
  }
}
