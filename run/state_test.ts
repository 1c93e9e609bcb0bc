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
    const c = { rxBytes: 1n, txBytes: 2n, rxPackets: 3n, txPackets: 4n };
    // Exact to the last digit, up to the kernel's 2^64 - 1.
    const huge = {
      rxBytes: (1n << 64n) - 1n,
      txBytes: 2n ** 53n + 1n,
      rxPackets: 1n,
      txPackets: 1n,
    };
    saveState(path, { server: c, shell: huge }, { startedAt: 1700000000.5, monotonicNow: 12.25 });
    assertEquals(Deno.readTextFileSync(path).includes('"rxBytes":18446744073709551615'), true);
    const back = loadState(path)!;
    assertEquals(back.services, { server: c, shell: huge });
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
    const over = '{"schema": 1, "services": {"a": {"rxBytes": 18446744073709551616, ' +
      '"txBytes": 0, "rxPackets": 0, "txPackets": 0}}}';
    assertThrows(() => parseState(over, path), StateError, 'service "a"');
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
      server: { rxBytes: 10n, txBytes: 20n, rxPackets: 1n, txPackets: 2n },
      shell: { rxBytes: 5n, txBytes: 6n, rxPackets: 1n, txPackets: 1n },
    },
  };
  const service = (rx: bigint) => ({
    rx_bytes_total: rx,
    tx_bytes_total: rx * 2n,
    rx_packets_total: 3n,
    tx_packets_total: 4n,
    cgroup: "/x",
    present: true,
  });
  const published: CountersV1 = {
    schema: 1,
    backend: "ebpf",
    boot_id: "boot-a",
    started_at: 1700000000,
    rx_bytes_total: 1000n,
    tx_bytes_total: 2000n,
    rx_packets_total: 3n,
    tx_packets_total: 4n,
    ts_monotonic: 130.5,
    ts_unix: 1700000040.5,
    interval_s: 0.5,
    services: { server: service(1000n) },
  };
  // No saved state (first run, or an offline reset removed it): zero, whatever /run holds.
  assertEquals(startingTotals(null, published), null);
  assertEquals(startingTotals(saved, null), { services: saved.services, from: "state" });
  // The same run published after its last save: its counters.json is newer. A service it
  // did not publish keeps its saved totals.
  assertEquals(startingTotals(saved, published), {
    services: {
      server: { rxBytes: 1000n, txBytes: 2000n, rxPackets: 3n, txPackets: 4n },
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
