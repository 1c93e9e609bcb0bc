/**
 * The TypeScript mirror of bpf/netacct.h: constants, and encoders for the map keys and
 * values the program shares with userspace. The only place these layouts are spelt out
 * on this side; netacct_abi_test.ts pins them against the header.
 */

import type { Cidr } from "../lib/cidr.ts";

export const MAX_SERVICES = 512;
export const MAX_LEVELS = 4;
export const MAX_TARGETS = 512;
export const ID_BUCKETS = 2048;
export const BUCKET_SLOTS = 4;
export const MAX_EXCLUDE = 131072;
export const MAX_DESTS = 4096;
export const VERDICT_KEYS = 65536;
export const MAX_SKIP_IFS = 15;
export const NO_IFINDEX = 0xffffffff;

/** enum netacct_verdict: what a remote address's first 16 bits alone say. */
export const EXTERNAL = 0;
export const INTERNAL = 1;
export const ASK_TRIE = 2;

/** enum netacct_dir: counter slot = service index * 2 + direction. */
export const DIR_RX = 0;
export const DIR_TX = 1;

/** Map and program names in netacct.bpf.c. */
/** The global `active` (a __u32), alone in its section: libbpf's one-entry array of it. */
export const MAP_ACTIVE = ".data.active";
/** The global `skip_ifs` (struct netacct_skip_ifs), alone in its section. */
export const MAP_SKIP_IFS = ".data.skipifs";
export const MAP_CONFIG = "config";
export const MAP_VERDICTS = "verdicts";
export const MAP_EXCLUDE_V4 = "exclude_v4";
export const MAP_EXCLUDE_V6 = "exclude_v6";
export const MAP_COUNTERS = "counters";
export const MAP_DESTS = "dests";
export const MAP_PENDING = "pending";
export const PROG_INGRESS = "netacct_ingress";
export const PROG_EGRESS = "netacct_egress";

/**
 * struct netacct_config: __u64 ids[512] at 0, __u64 bucket_mul at 4096, __u32 nr_levels at
 * 4104, __u32 levels[4] at 4108, __u16 first[2049] at 4124, __u16 service[512] at 8222,
 * __u8 gso_correction at 9246, __u8 pad[1] at 9247; sizeof 9248.
 */
export const CONFIG_OFFSETS = {
  ids: 0,
  bucket_mul: 4096,
  nr_levels: 4104,
  levels: 4108,
  first: 4124,
  service: 8222,
  gso_correction: 9246,
  pad: 9247,
} as const;
export const CONFIG_SIZE = 9248;
/** struct netacct_verdicts: __u8 v4[65536] at 0, __u8 v6[65536] at 65536; sizeof 131072. */
export const VERDICTS_OFFSETS = { v4: 0, v6: VERDICT_KEYS } as const;
export const VERDICTS_SIZE = 2 * VERDICT_KEYS;
/** sizeof(struct netacct_counter): __u64 bytes, __u64 packets. */
export const COUNTER_SIZE = 16;
/**
 * struct netacct_dest_key: __u8 addr[16] at 0, __u16 service at 16, __be16 port at 18,
 * __u8 family at 20, proto at 21, dir at 22, pad at 23; sizeof 24.
 */
export const DEST_KEY_OFFSETS = {
  addr: 0,
  service: 16,
  port: 18,
  family: 20,
  proto: 21,
  dir: 22,
  pad: 23,
} as const;
export const DEST_KEY_SIZE = 24;
/** sizeof(struct netacct_pending): the key, then __u64 bytes and packets. */
export const PENDING_SIZE = DEST_KEY_SIZE + COUNTER_SIZE;
/** sizeof(struct netacct_lpm_v4) and (struct netacct_lpm_v6). */
export const LPM_V4_SIZE = 8;
export const LPM_V6_SIZE = 20;

/** sizeof(struct netacct_skip_ifs): __u32 count, __u32 ifindex[15]. */
export const SKIP_IFS_SIZE = 4 + 4 * MAX_SKIP_IFS;

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

/** struct netacct_skip_ifs for these ifindexes (at most MAX_SKIP_IFS), the rest unused. */
export function encodeSkipIfs(indexes: readonly number[]): Uint8Array<ArrayBuffer> {
  if (indexes.length > MAX_SKIP_IFS) {
    throw new RangeError(
      `${indexes.length} interfaces, struct netacct_skip_ifs holds ${MAX_SKIP_IFS}`,
    );
  }
  const out = new Uint8Array(SKIP_IFS_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(0, indexes.length, LE);
  for (let i = 0; i < MAX_SKIP_IFS; i++) view.setUint32(4 + 4 * i, indexes[i] ?? NO_IFINDEX, LE);
  return out;
}

export interface TargetEntry {
  /** Cgroup id (inode number of the cgroup directory). */
  id: bigint;
  /** Service index: counter slots service * 2 + direction. */
  service: number;
}

/** The two tables of struct netacct_verdicts, VERDICT_KEYS entries each. */
export interface Verdicts {
  v4: Uint8Array;
  v6: Uint8Array;
}

/** An address's first 16 bits as a number, in network order: prefixes are ranges of these. */
export function verdictKey(bytes: Uint8Array): number {
  return bytes[0]! << 8 | bytes[1]!; // an address: 4 or 16 bytes
}

/**
 * Where the program finds the verdict of `key` (a verdictKey): it reads the two bytes as
 * one host-order __u16 (see struct netacct_verdicts), so on this little-endian host they
 * come swapped.
 */
export function verdictIndex(key: number): number {
  return LE ? (key & 0xff) << 8 | key >> 8 : key;
}

/**
 * The verdicts of every value of an address's first 16 bits for a list of excluded
 * prefixes: INTERNAL where a prefix of length <= 16 covers every address starting with
 * them, else ASK_TRIE where a longer prefix starts with them, else EXTERNAL.
 */
export function prefixVerdicts(exclude: Cidr[]): Verdicts {
  const out = { v4: new Uint8Array(VERDICT_KEYS), v6: new Uint8Array(VERDICT_KEYS) };
  for (const cidr of exclude) {
    const table = cidr.family === 4 ? out.v4 : out.v6;
    const key = verdictKey(cidr.bytes);
    if (cidr.prefixLen > 16) {
      if (table[key] === EXTERNAL) table[key] = ASK_TRIE;
      continue;
    }
    const span = 2 ** (16 - cidr.prefixLen);
    const low = key - key % span;
    table.fill(INTERNAL, low, low + span);
  }
  return out;
}

/**
 * The prefixes the program can ask the tries about: longer than /16 and in a range the
 * table leaves to the trie. Any other prefix either settles its whole range in the table
 * or lies inside a shorter excluded one, so the trie never needs it; a smaller trie is
 * also a faster lookup (3-5 ns less per trie-judged packet with the defaults beside).
 */
export function triePrefixes(exclude: Cidr[], verdicts: Verdicts): Cidr[] {
  return exclude.filter((c) =>
    c.prefixLen > 16 && (c.family === 4 ? verdicts.v4 : verdicts.v6)[verdictKey(c.bytes)] ===
      ASK_TRIE
  );
}

/** struct netacct_verdicts, the value of the one-entry `verdicts` array. */
export function encodeVerdicts(verdicts: Verdicts): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(VERDICTS_SIZE);
  for (let key = 0; key < VERDICT_KEYS; key++) {
    const at = verdictIndex(key);
    out[VERDICTS_OFFSETS.v4 + at] = verdicts.v4[key]!;
    out[VERDICTS_OFFSETS.v6 + at] = verdicts.v6[key]!;
  }
  return out;
}

const U64_MASK = (1n << 64n) - 1n;
/** The first multiplier tried: 2^64 / golden ratio, odd, spreads consecutive ids evenly. */
export const FIRST_BUCKET_MUL = 0x9e3779b97f4a7c15n;

/** The bucket of cgroup id `id` under multiplier `mul`: NETACCT_BUCKET in netacct.h. */
export function bucketOf(id: bigint, mul: bigint): number {
  return Number(((id * mul) & U64_MASK) >> 53n) & (ID_BUCKETS - 1);
}

/**
 * A bucket multiplier under which no bucket holds more than BUCKET_SLOTS of these ids
 * (the program compares at most that many). Cgroup ids are handed out in sequence, so the
 * first one nearly always does; a chance pile-up tries the next odd multiplier in a fixed
 * sequence, and 512 ids in 2048 buckets find one within a few tries.
 */
export function chooseBucketMul(ids: readonly bigint[]): bigint {
  let mul = FIRST_BUCKET_MUL;
  for (let attempt = 0; attempt < 1000; attempt++) {
    const load = new Uint16Array(ID_BUCKETS);
    if (ids.every((id) => ++load[bucketOf(id, mul)]! <= BUCKET_SLOTS)) return mul;
    mul = ((mul * 6364136223846793005n + 1442695040888963407n) & U64_MASK) | 1n;
  }
  throw new RangeError(`no bucket multiplier spreads these ${ids.length} ids (duplicates?)`);
}

/**
 * struct netacct_config for one slot: the distinct levels (deepest first, at most
 * MAX_LEVELS), the target ids grouped by bucket (bucketOf under a multiplier that keeps
 * every bucket within BUCKET_SLOTS) as the program scans them (ids must be distinct), and
 * whether GSO/GRO aggregates count their missing headers.
 */
export function encodeConfig(
  levels: number[],
  targets: TargetEntry[],
  gsoCorrection = false,
): Uint8Array<ArrayBuffer> {
  if (levels.length > MAX_LEVELS) {
    throw new RangeError(`${levels.length} distinct cgroup levels, at most ${MAX_LEVELS} fit`);
  }
  if (targets.length > MAX_TARGETS) {
    throw new RangeError(`${targets.length} target cgroups, at most ${MAX_TARGETS} fit`);
  }
  const out = new Uint8Array(CONFIG_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(CONFIG_OFFSETS.nr_levels, levels.length, LE);
  levels.forEach((level, i) => view.setUint32(CONFIG_OFFSETS.levels + 4 * i, level, LE));
  out[CONFIG_OFFSETS.gso_correction] = gsoCorrection ? 1 : 0;
  if (targets.length === 0) return out;
  const mul = chooseBucketMul(targets.map((t) => t.id));
  const bucket = (id: bigint) => bucketOf(id, mul);
  const sorted = [...targets].sort((a, b) => bucket(a.id) - bucket(b.id));
  view.setBigUint64(CONFIG_OFFSETS.bucket_mul, mul, LE);
  sorted.forEach((t, i) => {
    if (!(t.service >= 0 && t.service < MAX_SERVICES)) {
      throw new RangeError(`service index ${t.service}`);
    }
    view.setBigUint64(CONFIG_OFFSETS.ids + 8 * i, t.id, LE);
    view.setUint16(CONFIG_OFFSETS.service + 2 * i, t.service, LE);
  });
  // first[b] = entries in buckets below b; first[ID_BUCKETS] = all of them.
  let next = 0;
  for (let b = 0; b <= ID_BUCKETS; b++) {
    while (next < sorted.length && bucket(sorted[next]!.id) < b) next++;
    view.setUint16(CONFIG_OFFSETS.first + 2 * b, next, LE);
  }
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
 * Sums one per-CPU `counters` value as a lookup returns it: `cpus` structs of COUNTER_SIZE
 * bytes each (libbpf rounds per-CPU values up to 8 bytes; 16 already is), read as 32-bit
 * words (host order, as the kernel wrote them; this code assumes a little-endian host
 * throughout) from word `first`: indexing a typed array is what the interpreter does
 * fastest, and `run` does this for every service every interval. The low and high words
 * are summed apart as plain numbers (each sum exact), and joined into an exact bigint once.
 */
export function sumCounterWords(
  words: Uint32Array,
  first: number,
  cpus: number,
): { bytes: bigint; packets: bigint } {
  let bytesLo = 0, bytesHi = 0, packetsLo = 0, packetsHi = 0;
  // The caller's buffer holds `cpus` structs of 4 words from `first`.
  for (let w = first, end = first + cpus * 4; w < end; w += 4) {
    bytesLo += words[w]!;
    bytesHi += words[w + 1]!;
    packetsLo += words[w + 2]!;
    packetsHi += words[w + 3]!;
  }
  return { bytes: joinWords(bytesLo, bytesHi), packets: joinWords(packetsLo, packetsHi) };
}

/** lo + hi * 2^32 as an exact bigint (lo and hi: sums of 32-bit words, safe integers). */
export function joinWords(lo: number, hi: number): bigint {
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) + BigInt(lo);
}

/** One `dests` entry, decoded: a remote endpoint of a service in one direction. */
export interface DestEntry {
  service: number;
  dir: number;
  family: 4 | 6;
  /** Network-order address bytes: 4 for IPv4, 16 for IPv6. */
  addr: Uint8Array;
  /** Remote TCP/UDP port in host order, 0 for other protocols. */
  port: number;
  proto: number;
  bytes: bigint;
  packets: bigint;
}

function decodeDestKey(keys: Uint8Array, k: number): Omit<DestEntry, "bytes" | "packets"> {
  const kv = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
  const family = kv.getUint8(k + DEST_KEY_OFFSETS.family) === 6 ? 6 : 4;
  return {
    service: kv.getUint16(k + DEST_KEY_OFFSETS.service, LE),
    dir: kv.getUint8(k + DEST_KEY_OFFSETS.dir),
    family,
    addr: keys.slice(k, k + (family === 4 ? 4 : 16)),
    port: kv.getUint16(k + DEST_KEY_OFFSETS.port, false), // network order
    proto: kv.getUint8(k + DEST_KEY_OFFSETS.proto),
  };
}

/** `bytes` as 32-bit words in host order (copied first when not 4-byte aligned). */
function wordsOf(bytes: Uint8Array): Uint32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >>> 2);
}

const KEY_WORDS = DEST_KEY_SIZE / 4;
const COUNTER_WORDS = COUNTER_SIZE / 4;
const PENDING_WORDS = PENDING_SIZE / 4;

/** What one read of the destinations brought back. */
export interface DestsRead {
  /** `count` entries of a `dests` batch read: keys of DEST_KEY_SIZE, values of COUNTER_SIZE. */
  keys: Uint8Array;
  values: Uint8Array;
  count: number;
  /** The per-CPU `pending` sums: each slot's lookup, `cpus` structs of PENDING_SIZE. */
  pending?: Uint8Array[];
  cpus?: number;
}

/** Keys and counters as 32-bit words: where `DestSums.add` reads one entry. */
interface WordSource {
  key: Uint8Array;
  keyWords: Uint32Array;
  counterWords: Uint32Array;
}

/** An endpoint's sums while they are added up: low and high words apart, each exact. */
interface DestSum {
  key: Omit<DestEntry, "bytes" | "packets">;
  words: [bytesLo: number, bytesHi: number, packetsLo: number, packetsHi: number];
}

/** Totals by endpoint, summed over the `dests` entries and the pending slots. */
class DestSums {
  readonly byKey = new Map<string, DestSum>();

  /** `k`: the key's first word in `keyWords`; `c`: the counter's first word in `counterWords`. */
  add(src: WordSource, k: number, c: number): void {
    const { keyWords, counterWords } = src;
    const w = counterWords;
    if (w[c + 2] === 0 && w[c + 3] === 0) return; // no packets: an unused pending slot
    const id = `${keyWords[k]},${keyWords[k + 1]},${keyWords[k + 2]},${keyWords[k + 3]},` +
      `${keyWords[k + 4]},${keyWords[k + 5]}`;
    let sum = this.byKey.get(id);
    if (!sum) {
      sum = { key: decodeDestKey(src.key, k * 4), words: [0, 0, 0, 0] };
      this.byKey.set(id, sum);
    }
    sum.words[0] += w[c]!;
    sum.words[1] += w[c + 1]!;
    sum.words[2] += w[c + 2]!;
    sum.words[3] += w[c + 3]!;
  }

  entries(): DestEntry[] {
    return [...this.byKey.values()].map(({ key, words }) => ({
      ...key,
      bytes: joinWords(words[0], words[1]),
      packets: joinWords(words[2], words[3]),
    }));
  }
}

/**
 * Every endpoint's total: the `dests` entries (a plain LRU hash, one value per key) plus
 * the per-CPU `pending` sums not yet moved into it.
 *
 * `run` does this every interval while traffic flows, in V8's interpreter: word reads and
 * one short string per entry, no view, copy or join per entry.
 */
export function decodeDests(read: DestsRead): DestEntry[] {
  const { keys, count } = read;
  const sums = new DestSums();
  const dests = {
    key: keys,
    keyWords: wordsOf(keys.subarray(0, count * DEST_KEY_SIZE)),
    counterWords: wordsOf(read.values.subarray(0, count * COUNTER_SIZE)),
  };
  for (let i = 0; i < count; i++) sums.add(dests, i * KEY_WORDS, i * COUNTER_WORDS);
  for (const slot of read.pending ?? []) {
    const words = wordsOf(slot);
    const pending = { key: slot, keyWords: words, counterWords: words };
    for (let cpu = 0; cpu < (read.cpus ?? 0); cpu++) {
      const at = cpu * PENDING_WORDS;
      sums.add(pending, at, at + KEY_WORDS);
    }
  }
  return sums.entries();
}
