/**
 * The TypeScript mirror of bpf/netacct.h: constants, and encoders for the map keys and
 * values the program shares with userspace. The only place these layouts are spelt out
 * on this side; bpf_abi_test.ts pins them against the header.
 */

import type { Cidr } from "../lib/cidr.ts";

export const MAX_SERVICES = 32;
export const MAX_LEVELS = 4;
export const MAX_TARGETS = 64;
export const MAX_EXCLUDE = 1024;

/** enum netacct_dir: counter slot = service index * 2 + direction. */
export const DIR_RX = 0;
export const DIR_TX = 1;

/** Map and program names in netacct.bpf.c. */
export const MAP_CONFIG = "config";
export const MAP_TARGETS = "targets";
export const MAP_EXCLUDE_V4 = "exclude_v4";
export const MAP_EXCLUDE_V6 = "exclude_v6";
export const MAP_COUNTERS = "counters";
export const PROG_INGRESS = "netacct_ingress";
export const PROG_EGRESS = "netacct_egress";

/** sizeof(struct netacct_config): __u64 id_bits, __u32 nr_levels, __u32 levels[4], __u32 pad. */
export const CONFIG_SIZE = 8 + 4 + 4 * MAX_LEVELS + 4;
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

/** A __u64 map key (cgroup ids in `targets`). */
export function encodeU64(value: bigint, out = new Uint8Array(8)): Uint8Array<ArrayBuffer> {
  new DataView(out.buffer, out.byteOffset, 8).setBigUint64(0, value, LE);
  return out as Uint8Array<ArrayBuffer>;
}

export function decodeU64(bytes: Uint8Array): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, LE);
}

/** The config's id filter: bit (id % 64) set for each target cgroup id. */
export function idBits(ids: Iterable<bigint>): bigint {
  let bits = 0n;
  for (const id of ids) bits |= 1n << (id & 63n);
  return bits;
}

/** struct netacct_config: target-id filter and the distinct levels (at most MAX_LEVELS). */
export function encodeConfig(levels: number[], bits: bigint): Uint8Array<ArrayBuffer> {
  if (levels.length > MAX_LEVELS) {
    throw new RangeError(`${levels.length} distinct cgroup levels, at most ${MAX_LEVELS} fit`);
  }
  const out = new Uint8Array(CONFIG_SIZE);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, bits, LE);
  view.setUint32(8, levels.length, LE);
  levels.forEach((level, i) => view.setUint32(12 + 4 * i, level, LE));
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
