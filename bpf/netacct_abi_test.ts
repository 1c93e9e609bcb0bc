import {
  ASK_TRIE,
  BUCKET_SLOTS,
  bucketOf,
  chooseBucketMul,
  CONFIG_OFFSETS,
  CONFIG_SIZE,
  COUNTER_SIZE,
  counterSlot,
  decodeDests,
  DEST_KEY_OFFSETS,
  DEST_KEY_SIZE,
  DIR_RX,
  DIR_TX,
  encodeConfig,
  encodeLpmKey,
  encodeSkipIfs,
  encodeU32,
  encodeVerdicts,
  EXTERNAL,
  ID_BUCKETS,
  INTERNAL,
  LPM_V4_SIZE,
  LPM_V6_SIZE,
  MAP_ACTIVE,
  MAX_DESTS,
  MAX_EXCLUDE,
  MAX_LEVELS,
  MAX_SERVICES,
  MAX_SKIP_IFS,
  MAX_TARGETS,
  NO_IFINDEX,
  PENDING_SIZE,
  prefixVerdicts,
  sumCounterWords,
  triePrefixes,
  VERDICT_KEYS,
  verdictKey,
  VERDICTS_OFFSETS,
  VERDICTS_SIZE,
} from "./netacct_abi.ts";
import { MAX_SERVICES as CONFIG_MAX_SERVICES } from "../lib/config.ts";
import { DEFAULT_EXCLUDE, parseCidr, parseIpv4, parseIpv6 } from "../lib/cidr.ts";
import { assertEquals, assertThrows } from "../lib/test_assert.ts";

const header = Deno.readTextFileSync(new URL("./netacct.h", import.meta.url));

function define(name: string): number {
  const m = header.match(new RegExp(`^#define ${name}\\s+(\\d+)`, "m"));
  if (!m) throw new Error(`${name} not in bpf/netacct.h`);
  return Number(m[1]);
}

Deno.test("netacct_abi constants match bpf/netacct.h", () => {
  assertEquals(MAX_SERVICES, define("NETACCT_MAX_SERVICES"));
  assertEquals(MAX_LEVELS, define("NETACCT_MAX_LEVELS"));
  assertEquals(MAX_TARGETS, define("NETACCT_MAX_TARGETS"));
  assertEquals(ID_BUCKETS, define("NETACCT_ID_BUCKETS"));
  assertEquals(MAX_EXCLUDE, define("NETACCT_MAX_EXCLUDE"));
  assertEquals(MAX_DESTS, define("NETACCT_MAX_DESTS"));
  assertEquals(VERDICT_KEYS, define("NETACCT_VERDICT_KEYS"));
  assertEquals(MAX_SKIP_IFS, define("NETACCT_MAX_SKIP_IFS"));
  assertEquals(
    NO_IFINDEX,
    Number(header.match(/^#define NETACCT_NO_IFINDEX\s+(0x[0-9a-f]+)/m)?.[1]),
  );
  assertEquals(Number(header.match(/NETACCT_DIR_RX = (\d+)/)?.[1]), DIR_RX);
  assertEquals(Number(header.match(/NETACCT_DIR_TX = (\d+)/)?.[1]), DIR_TX);
  assertEquals(
    header.match(/struct netacct_config \{([^}]*)\}/)?.[1]?.replace(/\/\*.*?\*\//g, "").split(";")
      .map((f) => f.trim()).filter((f) => f !== ""),
    [
      "__u64 ids[NETACCT_MAX_TARGETS]",
      "__u64 bucket_mul",
      "__u32 nr_levels",
      "__u32 levels[NETACCT_MAX_LEVELS]",
      "__u16 first[NETACCT_ID_BUCKETS + 1]",
      "__u16 service[NETACCT_MAX_TARGETS]",
      "__u8 gso_correction",
      "__u8 pad[1]",
    ],
  );
  assertEquals(
    header.match(/struct netacct_verdicts \{([^}]*)\}/)?.[1]?.split(";").map((f) => f.trim())
      .filter((f) => f !== ""),
    ["__u8 v4[NETACCT_VERDICT_KEYS]", "__u8 v6[NETACCT_VERDICT_KEYS]"],
  );
  assertEquals(Number(header.match(/NETACCT_EXTERNAL = (\d+)/)?.[1]), EXTERNAL);
  assertEquals(Number(header.match(/NETACCT_INTERNAL = (\d+)/)?.[1]), INTERNAL);
  assertEquals(Number(header.match(/NETACCT_ASK_TRIE = (\d+)/)?.[1]), ASK_TRIE);
  assertEquals(COUNTER_SIZE, 16);
  assertEquals([LPM_V4_SIZE, LPM_V6_SIZE], [8, 20]);
  assertEquals(counterSlot(3, DIR_TX), 7);
  // Every service the config accepts has counter slots and a place in the target list.
  assertEquals(MAX_SERVICES >= CONFIG_MAX_SERVICES && MAX_TARGETS >= CONFIG_MAX_SERVICES, true);
  // The program masks indexes with MAX_TARGETS - 1 and ids with ID_BUCKETS - 1.
  assertEquals([MAX_TARGETS & (MAX_TARGETS - 1), ID_BUCKETS & (ID_BUCKETS - 1)], [0, 0]);
});

/** The compiled object's BTF (what the kernel sees), as bpftool prints it. */
async function btfDump(): Promise<string> {
  const out = await new Deno.Command("bpftool", {
    args: ["btf", "dump", "file", new URL("./netacct.bpf.o", import.meta.url).pathname],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

/** Member offsets of a struct, from the compiled object's BTF. */
async function btfOffsets(
  struct: string,
): Promise<{ size: number; members: Record<string, number> }> {
  const text = await btfDump();
  const at = text.indexOf(`STRUCT '${struct}' size=`);
  if (at < 0) throw new Error(`struct ${struct} not in the object's BTF`);
  const lines = text.slice(at).split("\n");
  const size = Number(lines[0]?.match(/size=(\d+)/)?.[1]);
  const members: Record<string, number> = {};
  for (const line of lines.slice(1)) {
    const [, name, bits] = line.match(/^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)/) ?? [];
    if (name === undefined) break;
    members[name] = Number(bits) / 8;
  }
  return { size, members };
}

Deno.test({
  name:
    "netacct_abi config layout matches the compiled object's BTF (bpftool, a make deps package)",
  async fn() {
    const { size, members } = await btfOffsets("netacct_config");
    assertEquals(size, CONFIG_SIZE);
    assertEquals(members, { ...CONFIG_OFFSETS });
    const verdicts = await btfOffsets("netacct_verdicts");
    assertEquals(verdicts.size, VERDICTS_SIZE);
    assertEquals(verdicts.members, { ...VERDICTS_OFFSETS });
    const key = await btfOffsets("netacct_dest_key");
    assertEquals(key.size, DEST_KEY_SIZE);
    assertEquals(key.members, { ...DEST_KEY_OFFSETS });
    // userspace writes `active` as its section's whole value: 4 bytes, nothing else in it.
    const section = (await btfDump()).split(/\n(?=\[)/).find((b) =>
      b.includes(`DATASEC '${MAP_ACTIVE}'`)
    );
    assertEquals(
      section?.split("\n").slice(1).map((l) => l.trim().replace(/^type_id=\d+ /, "")),
      ["offset=0 size=4 (VAR 'active')"],
    );
    const pending = await btfOffsets("netacct_pending");
    assertEquals(pending.size, PENDING_SIZE);
    assertEquals(pending.members, { key: 0, bytes: 24, packets: 32 });
  },
});

Deno.test("netacct_abi encodes keys and values in host (little-endian) order", () => {
  assertEquals(encodeU32(0x01020304), new Uint8Array([4, 3, 2, 1]));
  const big = 0x0102030405060708n;
  const entries = [
    { id: 2050n, service: 1 },
    { id: big, service: 2 },
    { id: 2048n, service: 0 },
    { id: 2n, service: 5 },
  ];
  const cfg = encodeConfig([7, 3], entries);
  const view = new DataView(cfg.buffer);
  const mul = view.getBigUint64(CONFIG_OFFSETS.bucket_mul, true);
  assertEquals(mul, chooseBucketMul(entries.map((e) => e.id)));
  const ids = [0, 1, 2, 3].map((i) => view.getBigUint64(8 * i, true));
  const byBucket = [...entries].sort((a, b) => bucketOf(a.id, mul) - bucketOf(b.id, mul));
  assertEquals(ids, byBucket.map((e) => e.id), "grouped by bucket, stable within one");
  assertEquals(view.getUint32(CONFIG_OFFSETS.nr_levels, true), 2);
  assertEquals(
    [0, 1, 2, 3].map((i) => view.getUint32(CONFIG_OFFSETS.levels + 4 * i, true)),
    [7, 3, 0, 0],
  );
  const u16s = (at: number, n: number) =>
    Array.from({ length: n }, (_, i) => view.getUint16(at + 2 * i, true));
  const first = u16s(CONFIG_OFFSETS.first, ID_BUCKETS + 1);
  // Bucket b's entries are [first[b], first[b + 1]): each id is found in its own bucket.
  ids.forEach((id, i) => {
    const b = bucketOf(id, mul);
    assertEquals(first[b]! <= i && i < first[b + 1]!, true, `id ${id} in bucket ${b}`);
  });
  assertEquals(first[0], 0);
  assertEquals(first[ID_BUCKETS], 4);
  assertEquals(
    u16s(CONFIG_OFFSETS.service, 5),
    [...byBucket.map((e) => e.service), 0],
  );
  assertEquals(cfg[CONFIG_OFFSETS.gso_correction], 0, "GSO correction off by default");
  assertEquals(encodeConfig([], [], true)[CONFIG_OFFSETS.gso_correction], 1);
  assertEquals(encodeConfig([], []), new Uint8Array(CONFIG_SIZE), "empty: all zero");
  assertThrows(() => encodeConfig([1, 2, 3, 4, 5], []), RangeError, "at most 4");
  const many = Array.from(
    { length: MAX_TARGETS + 1 },
    (_, i) => ({ id: BigInt(i + 1), service: i % MAX_SERVICES }),
  );
  assertThrows(() => encodeConfig([1], many), RangeError, `at most ${MAX_TARGETS}`);
  const full = new DataView(encodeConfig([1], many.slice(0, MAX_TARGETS)).buffer);
  assertEquals(full.getUint16(CONFIG_OFFSETS.first + 2 * ID_BUCKETS, true), MAX_TARGETS);
  // Service indexes above 255 survive (they were bytes once); here entries are in id order.
  const services = u16sOf(full, CONFIG_OFFSETS.service, MAX_TARGETS);
  assertEquals(services.includes(300), true);
  assertThrows(() => encodeConfig([1], [{ id: 1n, service: MAX_SERVICES }]), RangeError);
});

function u16sOf(view: DataView, at: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => view.getUint16(at + 2 * i, true));
}

/** The most ids any one bucket holds under `mul`. */
function maxLoad(ids: bigint[], mul: bigint): number {
  const load = new Map<number, number>();
  for (const id of ids) load.set(bucketOf(id, mul), (load.get(bucketOf(id, mul)) ?? 0) + 1);
  return Math.max(...load.values());
}

Deno.test("netacct_abi bucket multiplier: no bucket holds more than the program compares", () => {
  assertEquals(BUCKET_SLOTS, define("NETACCT_BUCKET_SLOTS"));
  assertEquals(ID_BUCKETS, 2 ** 11, "the program takes the top 11 bits of the product");
  assertEquals(/>> 53\) & \(NETACCT_ID_BUCKETS - 1\)/.test(header), true, "NETACCT_BUCKET");
  const sequential = Array.from({ length: MAX_TARGETS }, (_, i) => 4000n + BigInt(i));
  const mul = chooseBucketMul(sequential);
  assertEquals(maxLoad(sequential, mul) <= BUCKET_SLOTS, true);
  // A pile-up under the first multiplier (ids picked to share one bucket, also ids equal
  // in their low 43 bits) moves to another multiplier that spreads them.
  const first = chooseBucketMul([1n]);
  const piled: bigint[] = [];
  for (let id = 1n; piled.length < 3 * BUCKET_SLOTS; id++) {
    if (bucketOf(id, first) === bucketOf(1n, first)) piled.push(id);
  }
  const congruent = Array.from({ length: 64 }, (_, i) => 77n + (BigInt(i) << 43n));
  for (const ids of [piled, congruent, [...piled, ...sequential.slice(0, 400)]]) {
    const m = chooseBucketMul(ids);
    assertEquals(m % 2n, 1n, "odd");
    assertEquals(maxLoad(ids, m) <= BUCKET_SLOTS, true, `${ids.length} ids spread`);
  }
  assertEquals(maxLoad(piled, first) > BUCKET_SLOTS, true, "the pile-up is real");
  assertThrows(
    () => chooseBucketMul(Array(BUCKET_SLOTS + 1).fill(5n)),
    RangeError,
    "duplicates",
  );
});

Deno.test("netacct_abi decodes destinations: dests entries plus per-CPU pending sums", () => {
  const key = (addr: number[], service: number, port: number, family: number, dir: number) => {
    const k = new Uint8Array(DEST_KEY_SIZE);
    const v = new DataView(k.buffer);
    k.set(addr, 0);
    v.setUint16(DEST_KEY_OFFSETS.service, service, true);
    v.setUint16(DEST_KEY_OFFSETS.port, port, false);
    k[DEST_KEY_OFFSETS.family] = family;
    k[DEST_KEY_OFFSETS.proto] = 6;
    k[DEST_KEY_OFFSETS.dir] = dir;
    return k;
  };
  const counter = (bytes: number, packets: number) => {
    const c = new Uint8Array(COUNTER_SIZE);
    new DataView(c.buffer).setBigUint64(0, BigInt(bytes), true);
    new DataView(c.buffer).setBigUint64(8, BigInt(packets), true);
    return c;
  };
  const a = key([192, 0, 2, 9], 300, 443, 4, DIR_TX);
  const b = key([0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 7], 1, 53, 6, DIR_RX);
  const keys = new Uint8Array([...a, ...b]);
  const values = new Uint8Array([...counter(1000, 2), ...counter(50, 1)]);
  // Two CPUs: CPU 0's tx slot holds more for `a`, CPU 1's is unused (all zero).
  const pendingTx = new Uint8Array(2 * PENDING_SIZE);
  pendingTx.set(a, 0);
  pendingTx.set(counter(500, 1), DEST_KEY_SIZE);
  const pendingRx = new Uint8Array(2 * PENDING_SIZE);
  const got = decodeDests({ keys, values, count: 2, pending: [pendingRx, pendingTx], cpus: 2 });
  assertEquals(got.length, 2);
  assertEquals(got[0], {
    service: 300,
    dir: DIR_TX,
    family: 4,
    addr: new Uint8Array([192, 0, 2, 9]),
    port: 443,
    proto: 6,
    bytes: 1500n,
    packets: 3n,
  });
  const second = got[1];
  assertEquals(
    [second?.family, second?.port, second?.addr.length, second?.bytes],
    [6, 53, 16, 50n],
  );
  // Buffers at any offset (copied to word alignment), and counts above 2^32.
  const shifted = (bytes: Uint8Array) => {
    const out = new Uint8Array(bytes.length + 1);
    out.set(bytes, 1);
    return out.subarray(1);
  };
  const big = shifted(new Uint8Array([...counter(2 ** 40 + 7, 2 ** 33), ...counter(50, 1)]));
  const again = decodeDests({
    keys: shifted(keys),
    values: big,
    count: 2,
    pending: [shifted(pendingRx), shifted(pendingTx)],
    cpus: 2,
  });
  assertEquals(again.map((d) => [d.port, d.bytes, d.packets]), [
    [443, 2n ** 40n + 7n + 500n, 2n ** 33n + 1n],
    [53, 50n, 1n],
  ]);
});

/** The verdicts of addresses (text), looked up as the program does: by their first 16 bits. */
function verdictsOf(exclude: string[], addresses: string[]): number[] {
  const { v4, v6 } = prefixVerdicts(exclude.map(parseCidr));
  return addresses.map((a) => {
    const bytes = parseIpv4(a) ?? parseIpv6(a);
    if (!bytes) throw new Error(`bad address ${a}`);
    return (bytes.length === 4 ? v4 : v6)[verdictKey(bytes)]!; // a 16-bit key, VERDICT_KEYS entries
  });
}

Deno.test("netacct_abi 16-bit verdicts of the default exclusions", () => {
  const I = INTERNAL, E = EXTERNAL, T = ASK_TRIE;
  // Every default but ::1/128 and ::/128 is /16 or shorter: the table alone settles them,
  // right up to each prefix's edges (100.64/10 is 100.64-100.127; 172.16/12 is 172.16-31).
  assertEquals(
    verdictsOf([...DEFAULT_EXCLUDE], [
      "0.1.2.3",
      "10.255.0.1",
      "100.63.255.255",
      "100.64.0.0",
      "100.127.255.255",
      "100.128.0.7",
      "127.0.0.1",
      "169.253.0.1",
      "169.254.9.9",
      "169.255.0.1",
      "172.15.0.1",
      "172.16.0.1",
      "172.31.255.1",
      "172.32.0.1",
      "192.167.0.1",
      "192.168.1.7",
      "192.169.0.1",
      "224.0.0.1",
      "255.255.255.255",
      "198.51.100.7",
    ]),
    [I, I, E, I, I, E, I, E, I, E, E, I, I, E, E, I, E, I, I, E],
  );
  assertEquals(
    verdictsOf([...DEFAULT_EXCLUDE], [
      "::1",
      "::2",
      "0:1::",
      "1::1",
      "fc00::1",
      "fdff::1",
      "fe00::7",
      "fe7f::1",
      "fe80::1",
      "febf::1",
      "fec0::1",
      "ff02::1",
      "2001:db8::1",
    ]),
    [T, T, T, E, I, I, E, E, I, I, E, I, E],
  );
  const { v4, v6 } = prefixVerdicts(DEFAULT_EXCLUDE.map(parseCidr));
  assertEquals([v4.length, v6.length], [VERDICT_KEYS, VERDICT_KEYS]);
  assertEquals(v4.includes(ASK_TRIE), false, "no IPv4 address of the defaults needs the trie");
  assertEquals(v6.indexOf(ASK_TRIE), 0);
  assertEquals(v6.lastIndexOf(ASK_TRIE), 0, "only 0000::/16 needs the trie");
});

Deno.test("netacct_abi 16-bit verdicts by prefix length, overlapping prefixes and IPv6", () => {
  const I = INTERNAL, E = EXTERNAL, T = ASK_TRIE;
  // Shorter than 8: whole runs of first bytes.
  assertEquals(
    verdictsOf(["64.0.0.0/3"], ["63.255.0.1", "64.0.0.1", "95.255.255.255", "96.0.0.1"]),
    [E, I, I, E],
  );
  // Exactly 8, and 0: every second byte of the first / every address.
  assertEquals(verdictsOf(["11.0.0.0/8"], ["10.255.0.1", "11.0.0.1", "11.255.0.1"]), [E, I, I]);
  assertEquals(prefixVerdicts([parseCidr("0.0.0.0/0")]).v4, new Uint8Array(VERDICT_KEYS).fill(I));
  assertEquals(prefixVerdicts([parseCidr("::/0")]).v6, new Uint8Array(VERDICT_KEYS).fill(I));
  // 9 to 16: a run of second bytes within one first byte.
  assertEquals(
    verdictsOf(["12.128.0.0/9"], ["12.127.0.1", "12.128.0.1", "12.255.0.1", "13.0.0.1"]),
    [E, I, I, E],
  );
  assertEquals(verdictsOf(["12.34.0.0/16"], ["12.33.0.1", "12.34.0.1", "12.35.0.1"]), [E, I, E]);
  // Longer than 16: only its own 16 bits ask the trie; a /32 too.
  assertEquals(
    verdictsOf(["203.0.113.0/24", "9.9.9.9/32"], [
      "203.0.5.7",
      "203.0.113.7",
      "203.1.0.1",
      "9.9.0.1",
      "9.8.0.1",
    ]),
    [T, T, E, T, E],
  );
  // Overlapping: a prefix <= 16 wins over a longer one inside it, whatever the order.
  for (
    const list of [["10.1.2.0/24", "10.0.0.0/8"], ["10.0.0.0/8", "10.1.2.0/24"], [
      "10.1.0.0/16",
      "10.1.2.0/24",
    ]]
  ) {
    assertEquals(verdictsOf(list, ["10.1.2.3", "10.1.3.1"]), [I, I], list.join(" "));
  }
  assertEquals(
    verdictsOf(["10.1.0.0/16", "10.2.3.0/24", "10.0.0.0/15"], ["10.0.0.1", "10.2.3.4", "10.3.0.1"]),
    [I, T, E],
  );
  // IPv6, every length band; IPv4 and IPv6 tables never mix.
  assertEquals(
    verdictsOf(["2000::/3", "3ffe::/16", "2001:db8::/32", "4000:8000::/17"], [
      "2400::1",
      "3ffe:1::1",
      "3fff::1",
      "2001:db8::1",
      "4000:8000::1",
      "4000::1",
      "6000::1",
    ]),
    [I, I, I, I, T, T, E],
  );
  assertEquals(verdictsOf(["2001:db8::/32"], ["2001:db8::1", "2001:dead::7"]), [T, T]);
  assertEquals(verdictsOf(["32.1.0.0/16"], ["2001::1"]), [E], "IPv4 prefix, IPv6 address");
  // The tries get only what the table leaves them: not /16 or shorter, nor a longer prefix
  // inside a shorter one (255.255.255.255/32 in 240/4), nor the other family's.
  const list = [
    ...DEFAULT_EXCLUDE,
    "203.0.113.0/24",
    "10.9.9.0/24",
    "2001:db8::/32",
    "2001:db8:1::/48",
  ].map(parseCidr);
  assertEquals(
    triePrefixes(list, prefixVerdicts(list)).map((c) => c.text),
    ["::1/128", "::/128", "203.0.113.0/24", "2001:db8::/32", "2001:db8:1::/48"],
  );
  // encodeVerdicts lays the two tables end to end, as struct netacct_verdicts.
  const encoded = encodeVerdicts(prefixVerdicts(["0.0.0.0/16", "ffff::/16"].map(parseCidr)));
  assertEquals(encoded.length, VERDICTS_SIZE);
  assertEquals([encoded[0], encoded[1], encoded[VERDICTS_OFFSETS.v6 - 1]], [I, E, E]);
  assertEquals([encoded[VERDICTS_OFFSETS.v6], encoded[VERDICTS_SIZE - 1]], [E, I]);
  // The program reads the first two bytes as one host-order (little-endian) __u16: 10/8
  // (first byte 10, any second) sits at indexes 10 + 256 * second.
  const tenSlash8 = encodeVerdicts(prefixVerdicts([parseCidr("10.0.0.0/8")]));
  const u16 = (a: number, b: number) => new Uint16Array(new Uint8Array([a, b]).buffer)[0]!;
  for (const second of [0, 1, 77, 255]) {
    assertEquals(tenSlash8[u16(10, second)], I, `10.${second}.x.x`);
    assertEquals(tenSlash8[u16(second, 10)], second === 10 ? I : E, `${second}.10.x.x`);
  }
});

Deno.test("netacct_abi LPM keys: prefix length first, then the network-order address", () => {
  assertEquals(
    encodeLpmKey(parseCidr("100.64.0.0/10")),
    new Uint8Array([10, 0, 0, 0, 100, 64, 0, 0]),
  );
  const v6 = encodeLpmKey(parseCidr("fe80::/10"));
  assertEquals(v6.length, 20);
  assertEquals(Array.from(v6.subarray(0, 6)), [10, 0, 0, 0, 0xfe, 0x80]);
  assertEquals(v6.subarray(6).every((b) => b === 0), true);
});

Deno.test("netacct_abi sums per-CPU counters, including values above 2^32", () => {
  const buf = new Uint8Array(3 * COUNTER_SIZE);
  const view = new DataView(buf.buffer);
  view.setBigUint64(0, 5_000_000_000n, true);
  view.setBigUint64(8, 7n, true);
  view.setBigUint64(16, 1n, true);
  view.setBigUint64(24, 1n, true);
  view.setBigUint64(32, 2n ** 40n, true);
  view.setBigUint64(40, 2n, true);
  const words = new Uint32Array(buf.buffer);
  assertEquals(sumCounterWords(words, 0, 3), { bytes: 5_000_000_001n + 2n ** 40n, packets: 10n });
  assertEquals(sumCounterWords(words, 0, 1), { bytes: 5_000_000_000n, packets: 7n });
  assertEquals(sumCounterWords(words, 4, 2), { bytes: 1n + 2n ** 40n, packets: 3n }, "from a word");
});

Deno.test("encodeSkipIfs: count, the ifindexes, then unused slots that match no interface", () => {
  const bytes = encodeSkipIfs([3, 7]);
  const view = new DataView(bytes.buffer);
  assertEquals(bytes.length, 4 + 4 * MAX_SKIP_IFS);
  assertEquals([view.getUint32(0, true), view.getUint32(4, true), view.getUint32(8, true)], [
    2,
    3,
    7,
  ]);
  assertEquals(view.getUint32(12, true), NO_IFINDEX);
  assertEquals(new DataView(encodeSkipIfs([]).buffer).getUint32(0, true), 0);
  assertThrows(() => encodeSkipIfs(Array.from({ length: 16 }, (_, i) => i + 1)));
});
