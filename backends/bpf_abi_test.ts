import {
  CONFIG_SIZE,
  COUNTER_SIZE,
  counterSlot,
  decodeU64,
  DIR_RX,
  DIR_TX,
  encodeConfig,
  encodeLpmKey,
  encodeU32,
  encodeU64,
  idBits,
  LPM_V4_SIZE,
  LPM_V6_SIZE,
  MAX_EXCLUDE,
  MAX_LEVELS,
  MAX_SERVICES,
  MAX_TARGETS,
  sumPerCpu,
} from "./bpf_abi.ts";
import { parseCidr } from "../lib/cidr.ts";
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
  assertEquals(MAX_EXCLUDE, define("NETACCT_MAX_EXCLUDE"));
  assertEquals(Number(header.match(/NETACCT_DIR_RX = (\d+)/)?.[1]), DIR_RX);
  assertEquals(Number(header.match(/NETACCT_DIR_TX = (\d+)/)?.[1]), DIR_TX);
  // Struct sizes follow from the header's fields: u64 + u32 + u32[MAX_LEVELS] + u32;
  // u64 x2; u32 + u8[n].
  assertEquals(CONFIG_SIZE, 32);
  assertEquals(
    header.match(/struct netacct_config \{([^}]*)\}/)?.[1].replace(/\/\*.*?\*\//g, "").split(";")
      .map((f) => f.trim()).filter((f) => f !== ""),
    ["__u64 id_bits", "__u32 nr_levels", "__u32 levels[NETACCT_MAX_LEVELS]", "__u32 pad"],
  );
  assertEquals(COUNTER_SIZE, 16);
  assertEquals([LPM_V4_SIZE, LPM_V6_SIZE], [8, 20]);
  assertEquals(counterSlot(3, DIR_TX), 7);
});

Deno.test("bpf_abi encodes keys and values in host (little-endian) order", () => {
  assertEquals(encodeU32(0x01020304), new Uint8Array([4, 3, 2, 1]));
  assertEquals(encodeU64(0x0102030405060708n), new Uint8Array([8, 7, 6, 5, 4, 3, 2, 1]));
  assertEquals(decodeU64(encodeU64(18446744073709551615n)), 18446744073709551615n);
  const cfg = encodeConfig([7, 3], idBits([65n, 130n, 64n]));
  assertEquals(Array.from(cfg.subarray(0, 8)), [7, 0, 0, 0, 0, 0, 0, 0], "bits 0, 1, 2");
  assertEquals(Array.from(cfg.subarray(8)), [
    2,
    0,
    0,
    0,
    7,
    0,
    0,
    0,
    3,
    0,
    0,
    0,
    ...Array(12).fill(0),
  ]);
  assertEquals(idBits([63n, 127n]), 1n << 63n);
  assertThrows(() => encodeConfig([1, 2, 3, 4, 5], 0n), RangeError, "at most 4");
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
