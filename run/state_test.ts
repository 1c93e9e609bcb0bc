import { assertEquals, assertThrows } from "../lib/test_assert.ts";
import type { CountersV1 } from "../lib/contract.ts";
import {
  bootId,
  loadState,
  parseState,
  type SavedState,
  saveState,
  startingTotals,
  StateError,
} from "./state.ts";

Deno.test("state round-trips, is root-only, and bad files are refused by name", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = `${dir}/state.json`;
    assertEquals(loadState(path), null);
    const c = { rxBytes: 1, txBytes: 2, rxPackets: 3, txPackets: 4 };
    saveState(path, { server: c }, { startedAt: 1700000000.5, monotonicNow: 12.25 });
    const back = loadState(path)!;
    assertEquals(back.services, { server: c });
    assertEquals(back.boot_id, bootId());
    assertEquals([back.started_at, back.saved_monotonic], [1700000000.5, 12.25]);
    assertEquals(Deno.statSync(path).mode! & 0o777, 0o600);
    assertThrows(() => parseState("{", path), StateError, "not valid JSON");
    assertThrows(() => parseState('{"schema": 2, "services": {}}', path), StateError, "schema 1");
    assertThrows(
      () => parseState('{"schema": 1, "services": {"a": {"rxBytes": -1}}}', path),
      StateError,
      'service "a"',
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a new run continues from counters.json only when the run that saved the state published it later", () => {
  const saved: SavedState = {
    schema: 1,
    boot_id: "boot-a",
    saved_unix: 1700000010,
    saved_monotonic: 100,
    started_at: 1700000000,
    services: {
      server: { rxBytes: 10, txBytes: 20, rxPackets: 1, txPackets: 2 },
      shell: { rxBytes: 5, txBytes: 6, rxPackets: 1, txPackets: 1 },
    },
  };
  const service = (rx: number) => ({
    rx_bytes_total: rx,
    tx_bytes_total: rx * 2,
    rx_packets_total: 3,
    tx_packets_total: 4,
    cgroup: "/x",
    present: true,
  });
  const published: CountersV1 = {
    schema: 1,
    backend: "ebpf",
    boot_id: "boot-a",
    started_at: 1700000000,
    rx_bytes_total: 1000,
    tx_bytes_total: 2000,
    rx_packets_total: 3,
    tx_packets_total: 4,
    ts_monotonic: 130.5,
    ts_unix: 1700000040.5,
    interval_s: 0.5,
    services: { server: service(1000) },
  };
  // No saved state (first run, or an offline reset removed it): zero, whatever /run holds.
  assertEquals(startingTotals(null, published), null);
  assertEquals(startingTotals(saved, null), { services: saved.services, from: "state" });
  // The same run published after its last save: its counters.json is newer. A service it
  // did not publish keeps its saved totals.
  assertEquals(startingTotals(saved, published), {
    services: {
      server: { rxBytes: 1000, txBytes: 2000, rxPackets: 3, txPackets: 4 },
      shell: saved.services.shell,
    },
    from: "counters",
  });
  for (
    const [why, p] of [
      ["published before the save", { ...published, ts_monotonic: 99.9 }],
      ["another run", { ...published, started_at: 1700000001 }],
      ["another boot", { ...published, boot_id: "boot-b" }],
    ] as const
  ) {
    assertEquals(startingTotals(saved, p), { services: saved.services, from: "state" }, why);
  }
  // A state from before saves carried their run's identity cannot be matched.
  const legacy = { ...saved, saved_monotonic: undefined, started_at: undefined };
  assertEquals(startingTotals(legacy, published)?.from, "state");
});
