import { assertEquals, assertThrows } from "../lib/test_assert.ts";
import { buildCounters, holdOutputDir, OutputError } from "./output.ts";
import { parseCounters, serializeCounters } from "../lib/contract.ts";

Deno.test("holdOutputDir creates 0755 and refuses directories others control", () => {
  const base = Deno.makeTempDirSync();
  try {
    holdOutputDir(`${base}/run/stb`).close();
    assertEquals(Deno.statSync(`${base}/run/stb`).mode! & 0o777, 0o755);
    Deno.mkdirSync(`${base}/open`);
    Deno.chmodSync(`${base}/open`, 0o777);
    assertThrows(() => holdOutputDir(`${base}/open`), OutputError, "chmod go-w");
    Deno.mkdirSync(`${base}/theirs`, { mode: 0o755 });
    Deno.chownSync(`${base}/theirs`, 65534, 65534);
    assertThrows(() => holdOutputDir(`${base}/theirs`), OutputError, "owned by uid 65534");
    Deno.symlinkSync(`${base}/run/stb`, `${base}/link`);
    assertThrows(() => holdOutputDir(`${base}/link`), OutputError, "symlink");
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test("buildCounters produces a contract-valid sample", () => {
  const z = { rxBytes: 5n, txBytes: 6n, rxPackets: 1n, txPackets: 2n };
  const c = buildCounters({
    backend: "nft",
    fallbackReason: "ebpf: no BTF",
    services: { s: { path: "/a", present: false, counters: z } },
    total: z,
    tsMonotonic: 10.1234567,
    tsUnix: 1795000000.1234,
    intervalS: 0.5,
    bootId: "b",
    startedAt: 1,
  });
  const back = parseCounters(serializeCounters(c));
  assertEquals(back.backend_fallback_reason, "ebpf: no BTF");
  assertEquals([back.boot_id, back.started_at], ["b", 1]);
  assertEquals(back.services.s, {
    rx_bytes_total: 5n,
    tx_bytes_total: 6n,
    rx_packets_total: 1n,
    tx_packets_total: 2n,
    cgroup: "/a",
    present: false,
  });
  assertEquals(back.ts_monotonic, 10.123457);
});
