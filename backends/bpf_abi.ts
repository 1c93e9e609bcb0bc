/**
 * The TypeScript mirror of bpf/netacct.h: constants, and encoders for the map keys and
 * values the program shares with userspace. The only place these layouts are spelt out
 * on this side; bpf_abi_test.ts pins them against the header.
 */

import type { Cidr } from "../lib/cidr.ts";

export const MAX_SERVICES = 64;
export const MAX_LEVELS = 4;
export const MAX_TARGETS = 64;
export const ID_BUCKETS = 64;
export const MAX_EXCLUDE = 1024;

/** enum netacct_verdict: what a remote address's first byte alone says. */
export const EXTERNAL = 0;
export const INTERNAL = 1;
export const ASK_TRIE = 2;

/** enum netacct_dir: counter slot = service index * 2 + direction. */
export const DIR_RX = 0;
export const DIR_TX = 1;

/** Map and program names in netacct.bpf.c. */
export const MAP_ACTIVE = "active";
export const MAP_CONFIG = "config";
export const MAP_EXCLUDE_V4 = "exclude_v4";
export const MAP_EXCLUDE_V6 = "exclude_v6";
export const MAP_COUNTERS = "counters";
export const PROG_INGRESS = "netacct_ingress";
export const PROG_EGRESS = "netacct_egress";

/**
 * struct netacct_config: __u64 ids[64] at 0, __u32 nr_levels at 512, __u32 levels[4] at
 * 516, __u8 first[65] at 532, __u8 service[64] at 597, __u8 pad[3] at 661,
 * __u8 verdict_v4[256] at 664, __u8 verdict_v6[256] at 920; sizeof 1176.
 */
export const CONFIG_OFFSETS = {
  ids: 0,
  nr_levels: 512,
  levels: 516,
  first: 532,
  service: 597,
  pad: 661,
  verdict_v4: 664,
  verdict_v6: 920,
} as const;
export const CONFIG_SIZE = 1176;
/** sizeof(struct netacct_counter): __u64 bytes, __u64 packets. */
export const COUNTER_SIZE = 16;
/** sizeof(struct netacct_lpm_v4) and (struct netacct_lpm_v6). */
export const LPM_V4_SIZE = 8;
export const LPM_V6_SIZE = 20;

/** Host byte order of the machine running both sides (x86-64 and arm64: little endian). */
const LE = true;

export function counterSlot(serviceIndex: number, dir: number): number {
  return serviceIndex * 2 + dir;
}

/** A __u32 map key (array indexes). */
export function encodeU32(value: number, out = new Uint8Array(4)): Uint8Array<ArrayBuffer> {
  new DataView(out.buffer, out.byteOffset, 4).setUint32(0, value, LE);
  return out as Uint8Array<ArrayBuffer>;
}

export interface TargetEntry {
  /** Cgroup id (inode number of the cgroup directory). */
  id: bigint;
  /** Service index: counter slots service * 2 + direction. */
  service: number;
}

/** verdict_v4 and verdict_v6 of struct netacct_config. */
export interface Verdicts {
  v4: Uint8Array;
  v6: Uint8Array;
}

/**
 * The first-byte verdicts for a list of excluded prefixes: INTERNAL where a prefix of
 * length <= 8 covers every address starting with that byte, else ASK_TRIE where a longer
 * prefix starts with it, else EXTERNAL.
 */
export function firstByteVerdicts(exclude: Cidr[]): Verdicts {
  const out = { v4: new Uint8Array(256), v6: new Uint8Array(256) };
  for (const cidr of exclude) {
    const table = cidr.family === 4 ? out.v4 : out.v6;
    const first = cidr.bytes[0];
    if (cidr.prefixLen > 8) {
      if (table[first] === EXTERNAL) table[first] = ASK_TRIE;
      continue;
    }
    const span = 1 << (8 - cidr.prefixLen);
    const low = first & ~(span - 1) & 0xff;
    table.fill(INTERNAL, low, low + span);
  }
  return out;
}

/**
 * struct netacct_config for one slot: the distinct levels (deepest first, at most
 * MAX_LEVELS), the target ids grouped by bucket (id % ID_BUCKETS) as the program scans
 * them (ids must be distinct), and the first-byte verdicts of the exclusions.
 */
export function encodeConfig(
  levels: number[],
  targets: TargetEntry[],
  verdicts: Verdicts = { v4: new Uint8Array(256), v6: new Uint8Array(256) },
): Uint8Array<ArrayBuffer> {
  if (levels.length > MAX_LEVELS) {
    throw new RangeError(`${levels.length} distinct cgroup levels, at most ${MAX_LEVELS} fit`);
  }
  if (targets.length > MAX_TARGETS) {
    throw new RangeError(`${targets.length} target cgroups, at most ${MAX_TARGETS} fit`);
  }
  const bucket = (id: bigint) => Number(id & BigInt(ID_BUCKETS - 1));
  const sorted = [...targets].sort((a, b) => bucket(a.id) - bucket(b.id));
  const out = new Uint8Array(CONFIG_SIZE);
  const view = new DataView(out.buffer);
  sorted.forEach((t, i) => {
    if (t.service < 0 || t.service > 255) throw new RangeError(`service index ${t.service}`);
    view.setBigUint64(CONFIG_OFFSETS.ids + 8 * i, t.id, LE);
    out[CONFIG_OFFSETS.service + i] = t.service;
  });
  view.setUint32(CONFIG_OFFSETS.nr_levels, levels.length, LE);
  levels.forEach((level, i) => view.setUint32(CONFIG_OFFSETS.levels + 4 * i, level, LE));
  // first[b] = entries in buckets below b; first[ID_BUCKETS] = all of them.
  let next = 0;
  for (let b = 0; b <= ID_BUCKETS; b++) {
    while (next < sorted.length && bucket(sorted[next].id) < b) next++;
    out[CONFIG_OFFSETS.first + b] = next;
  }
  out.set(verdicts.v4.subarray(0, 256), CONFIG_OFFSETS.verdict_v4);
  out.set(verdicts.v6.subarray(0, 256), CONFIG_OFFSETS.verdict_v6);
  return out;
}

/** struct netacct_lpm_v4 / netacct_lpm_v6 key for a prefix. */
export function encodeLpmKey(cidr: Cidr): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(cidr.family === 4 ? LPM_V4_SIZE : LPM_V6_SIZE);
  new DataView(out.buffer).setUint32(0, cidr.prefixLen, LE);
  out.set(cidr.bytes, 4);
  return out;
}

/**
 * Sums one per-CPU `counters` value as bpf_map_lookup_elem returns it: `cpus` structs of
 * COUNTER_SIZE bytes each (libbpf rounds per-CPU values up to 8 bytes; 16 already is).
 * Plain numbers: exact up to 2^53 bytes (8 PiB), and no BigInt work on the 0.5 s path.
 */
export function sumPerCpu(buf: Uint8Array, cpus: number): { bytes: number; packets: number } {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let bytes = 0, packets = 0;
  for (let off = 0; off < cpus * COUNTER_SIZE; off += COUNTER_SIZE) {
    bytes += view.getUint32(off, LE) + view.getUint32(off + 4, LE) * 2 ** 32;
    packets += view.getUint32(off + 8, LE) + view.getUint32(off + 12, LE) * 2 ** 32;
  }
  return { bytes, packets };
}
