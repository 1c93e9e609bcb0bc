import {
  ASK_TRIE,
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
  encodeU32,
  EXTERNAL,
  firstByteVerdicts,
  ID_BUCKETS,
  INTERNAL,
  LPM_V4_SIZE,
  LPM_V6_SIZE,
  MAX_DESTS,
  MAX_EXCLUDE,
  MAX_LEVELS,
  MAX_SERVICES,
  MAX_TARGETS,
  PENDING_SIZE,
  sumPerCpu,
} from "./bpf_abi.ts";
import { MAX_SERVICES as CONFIG_MAX_SERVICES } from "../lib/config.ts";
import { DEFAULT_EXCLUDE, parseCidr } from "../lib/cidr.ts";
import { assertEquals, assertThrows } from "../lib/test_assert.ts";

const header = Deno.readTextFileSync(new URL("../bpf/netacct.h", import.meta.url));

function define(name: string): number {
  const m = header.match(new RegExp(`^#define ${name}\\s+(\\d+)`, "m"));
  if (!m) throw new Error(`${name} not in bpf/netacct.h`);
  return Number(m[1]);
}

Deno.test("bpf_abi constants match bpf/netacct.h", () => {
  assertEquals(MAX_SERVICES, define("NETACCT_MAX_SERVICES"));
  assertEquals(MAX_LEVELS, define("NETACCT_MAX_LEVELS"));
  assertEquals(MAX_TARGETS, define("NETACCT_MAX_TARGETS"));
  assertEquals(ID_BUCKETS, define("NETACCT_ID_BUCKETS"));
  assertEquals(MAX_EXCLUDE, define("NETACCT_MAX_EXCLUDE"));
  assertEquals(MAX_DESTS, define("NETACCT_MAX_DESTS"));
  assertEquals(Number(header.match(/NETACCT_DIR_RX = (\d+)/)?.[1]), DIR_RX);
  assertEquals(Number(header.match(/NETACCT_DIR_TX = (\d+)/)?.[1]), DIR_TX);
  assertEquals(
    header.match(/struct netacct_config \{([^}]*)\}/)?.[1].replace(/\/\*.*?\*\//g, "").split(";")
      .map((f) => f.trim()).filter((f) => f !== ""),
    [
      "__u64 ids[NETACCT_MAX_TARGETS]",
      "__u32 nr_levels",
      "__u32 levels[NETACCT_MAX_LEVELS]",
      "__u16 first[NETACCT_ID_BUCKETS + 1]",
      "__u16 service[NETACCT_MAX_TARGETS]",
      "__u8 gso_correction",
      "__u8 pad[1]",
      "__u8 verdict_v4[256]",
      "__u8 verdict_v6[256]",
    ],
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

/** Member offsets of a struct, from the compiled object's BTF (what the kernel sees). */
async function btfOffsets(
  struct: string,
): Promise<{ size: number; members: Record<string, number> }> {
  const out = await new Deno.Command("bpftool", {
    args: ["btf", "dump", "file", new URL("../bpf/netacct.bpf.o", import.meta.url).pathname],
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const at = text.indexOf(`STRUCT '${struct}' size=`);
  if (at < 0) throw new Error(`struct ${struct} not in the object's BTF`);
  const lines = text.slice(at).split("\n");
  const size = Number(lines[0].match(/size=(\d+)/)![1]);
  const members: Record<string, number> = {};
  for (const line of lines.slice(1)) {
    const m = line.match(/^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)/);
    if (!m) break;
    members[m[1]] = Number(m[2]) / 8;
  }
  return { size, members };
}

Deno.test({
  name: "bpf_abi config layout matches the compiled object's BTF (bpftool, a make deps package)",
  async fn() {
    const { size, members } = await btfOffsets("netacct_config");
    assertEquals(size, CONFIG_SIZE);
    assertEquals(members, { ...CONFIG_OFFSETS });
    const key = await btfOffsets("netacct_dest_key");
    assertEquals(key.size, DEST_KEY_SIZE);
    assertEquals(key.members, { ...DEST_KEY_OFFSETS });
    const pending = await btfOffsets("netacct_pending");
    assertEquals(pending.size, PENDING_SIZE);
    assertEquals(pending.members, { key: 0, bytes: 24, packets: 32 });
  },
});

Deno.test("bpf_abi encodes keys and values in host (little-endian) order", () => {
  assertEquals(encodeU32(0x01020304), new Uint8Array([4, 3, 2, 1]));
  const big = 0x0102030405060708n;
  // 2050 and 2 share bucket 2 (id % 2048), 2048 is bucket 0, big is bucket 0x708 = 1800.
  const cfg = encodeConfig([7, 3], [
    { id: 2050n, service: 1 },
    { id: big, service: 2 },
    { id: 2048n, service: 0 },
    { id: 2n, service: 5 },
  ]);
  const view = new DataView(cfg.buffer);
  const ids = [0, 1, 2, 3].map((i) => view.getBigUint64(8 * i, true));
  assertEquals(ids, [2048n, 2050n, 2n, big], "grouped by bucket, stable within one");
  assertEquals(Array.from(cfg.subarray(0, 8)), [0, 8, 0, 0, 0, 0, 0, 0], "little endian");
  assertEquals(view.getUint32(CONFIG_OFFSETS.nr_levels, true), 2);
  assertEquals(
    [0, 1, 2, 3].map((i) => view.getUint32(CONFIG_OFFSETS.levels + 4 * i, true)),
    [7, 3, 0, 0],
  );
  const u16s = (at: number, n: number) =>
    Array.from({ length: n }, (_, i) => view.getUint16(at + 2 * i, true));
  const first = u16s(CONFIG_OFFSETS.first, ID_BUCKETS + 1);
  // bucket 0: [0,1); 1: empty; 2: [1,3); 3..1799: empty; 1800: [3,4); the rest empty.
  assertEquals(first.slice(0, 4), [0, 1, 1, 3]);
  assertEquals(first.slice(4, 1801), Array(1797).fill(3));
  assertEquals(first.slice(1801), Array(ID_BUCKETS + 1 - 1801).fill(4));
  assertEquals(u16s(CONFIG_OFFSETS.service, 5), [0, 1, 5, 2, 0]);
  assertEquals(cfg[CONFIG_OFFSETS.gso_correction], 0, "GSO correction off by default");
  assertEquals(encodeConfig([], [], undefined, true)[CONFIG_OFFSETS.gso_correction], 1);
  assertEquals(encodeConfig([], []), new Uint8Array(CONFIG_SIZE), "empty: all zero");
  const verdicts = firstByteVerdicts(DEFAULT_EXCLUDE.map(parseCidr));
  const withVerdicts = encodeConfig([], [], verdicts);
  assertEquals(
    withVerdicts.subarray(CONFIG_OFFSETS.verdict_v4, CONFIG_OFFSETS.verdict_v6),
    verdicts.v4,
  );
  assertEquals(withVerdicts.subarray(CONFIG_OFFSETS.verdict_v6), verdicts.v6);
  assertThrows(() => encodeConfig([1, 2, 3, 4, 5], []), RangeError, "at most 4");
  const many = Array.from(
    { length: MAX_TARGETS + 1 },
    (_, i) => ({ id: BigInt(i + 1), service: i % MAX_SERVICES }),
  );
  assertThrows(() => encodeConfig([1], many), RangeError, `at most ${MAX_TARGETS}`);
  const full = new DataView(encodeConfig([1], many.slice(0, MAX_TARGETS)).buffer);
  assertEquals(full.getUint16(CONFIG_OFFSETS.first + 2 * ID_BUCKETS, true), MAX_TARGETS);
  // Service indexes above 255 survive (they were bytes once).
  assertEquals(full.getUint16(CONFIG_OFFSETS.service + 2 * 300, true), 300);
  assertThrows(() => encodeConfig([1], [{ id: 1n, service: MAX_SERVICES }]), RangeError);
});

Deno.test("bpf_abi decodes destinations: dests entries plus per-CPU pending sums", () => {
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
  const got = decodeDests(keys, values, 2, [pendingRx, pendingTx], 2);
  assertEquals(got.length, 2);
  assertEquals(got[0], {
    service: 300,
    dir: DIR_TX,
    family: 4,
    addr: new Uint8Array([192, 0, 2, 9]),
    port: 443,
    proto: 6,
    bytes: 1500,
    packets: 3,
  });
  assertEquals([got[1].family, got[1].port, got[1].addr.length, got[1].bytes], [6, 53, 16, 50]);
});

Deno.test("bpf_abi first-byte verdicts of the default exclusions", () => {
  const { v4, v6 } = firstByteVerdicts(DEFAULT_EXCLUDE.map(parseCidr));
  const at = (t: Uint8Array, bytes: number[]) => bytes.map((b) => t[b]);
  // 0/8, 10/8, 127/8, 224/4 and 240/4 hold whole first bytes (255.255.255.255 inside
  // 240/4 changes nothing); 100.64/10, 169.254/16, 172.16/12, 192.168/16 split theirs.
  assertEquals(at(v4, [0, 10, 127, 224, 239, 240, 255]), Array(7).fill(INTERNAL));
  assertEquals(at(v4, [100, 169, 172, 192]), Array(4).fill(ASK_TRIE));
  assertEquals(at(v4, [1, 8, 11, 126, 128, 198, 203, 223]), Array(8).fill(EXTERNAL));
  // fc00::/7 holds fc and fd, ff00::/8 holds ff; ::1, :: and fe80::/10 split 00 and fe.
  assertEquals(at(v6, [0xfc, 0xfd, 0xff]), Array(3).fill(INTERNAL));
  assertEquals(at(v6, [0x00, 0xfe]), Array(2).fill(ASK_TRIE));
  assertEquals(at(v6, [0x20, 0x26, 0x3f, 0xfb]), Array(4).fill(EXTERNAL));
  // A /0 makes everything internal; a short prefix wins over a longer one in its range.
  assertEquals(firstByteVerdicts([parseCidr("0.0.0.0/0")]).v4, new Uint8Array(256).fill(1));
  const mixed = firstByteVerdicts(["10.1.0.0/16", "10.0.0.0/8", "11.2.0.0/16"].map(parseCidr));
  assertEquals(at(mixed.v4, [10, 11, 12]), [INTERNAL, ASK_TRIE, EXTERNAL]);
});

Deno.test("bpf_abi LPM keys: prefix length first, then the network-order address", () => {
  assertEquals(
    encodeLpmKey(parseCidr("100.64.0.0/10")),
    new Uint8Array([10, 0, 0, 0, 100, 64, 0, 0]),
  );
  const v6 = encodeLpmKey(parseCidr("fe80::/10"));
  assertEquals(v6.length, 20);
  assertEquals(Array.from(v6.subarray(0, 6)), [10, 0, 0, 0, 0xfe, 0x80]);
  assertEquals(v6.subarray(6).every((b) => b === 0), true);
});

Deno.test("bpf_abi sums per-CPU counters, including values above 2^32", () => {
  const buf = new Uint8Array(3 * COUNTER_SIZE);
  const view = new DataView(buf.buffer);
  view.setBigUint64(0, 5_000_000_000n, true);
  view.setBigUint64(8, 7n, true);
  view.setBigUint64(16, 1n, true);
  view.setBigUint64(24, 1n, true);
  view.setBigUint64(32, 2n ** 40n, true);
  view.setBigUint64(40, 2n, true);
  assertEquals(sumPerCpu(buf, 3), { bytes: 5_000_000_001 + 2 ** 40, packets: 10 });
  assertEquals(sumPerCpu(buf, 1), { bytes: 5_000_000_000, packets: 7 });
});
