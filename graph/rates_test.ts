import { InterfaceAccumulator, RateTracker } from "./rates.ts";

/** A sample: totals given as numbers, held exact as the tracker takes them. */
const at = (t: number, rx: number, tx: number) => ({ t, rx: BigInt(rx), tx: BigInt(tx) });

function eq(actual: unknown, expected: unknown, what = ""): void {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

function near(actual: number | null | undefined, expected: number, what = ""): void {
  if (typeof actual !== "number" || Math.abs(actual - expected) > 1e-6 * Math.max(1, expected)) {
    throw new Error(`${what}: expected ${expected}, got ${actual}`);
  }
}

Deno.test("rate is delta bytes over delta ts_monotonic", () => {
  const r = new RateTracker(60);
  eq(r.push(at(100, 1000, 500)), "baseline");
  eq(r.stats(60), null, "one sample has no rate");
  eq(r.push(at(100.5, 1000 + 512, 500 + 1024)), "advanced");
  const s = r.stats(60)!;
  near(s.rx.current, 1024, "rx");
  near(s.tx.current, 2048, "tx");
});

Deno.test("an identical sample (file not rewritten) changes nothing", () => {
  const r = new RateTracker(60);
  r.push(at(1, 0, 0));
  r.push(at(2, 100, 0));
  eq(r.push(at(2, 100, 0)), "unchanged");
  eq(r.intervals.length, 1);
});

Deno.test("a decreasing total starts a new baseline, never a negative rate", () => {
  for (const [rx, tx] of [[10, 5000], [5000, 10]] as const) {
    const r = new RateTracker(60);
    r.push(at(10, 0, 0));
    r.push(at(11, 4000, 4000));
    eq(r.push(at(11.5, rx, tx)), "reset");
    eq(r.resets, 1);
    const s = r.stats(60)!;
    eq(s.rx.current, null, "no current rate right after a reset");
    near(s.rx.peak, 4000, "old run's peak stays in the window");
    eq(r.push(at(12, rx + 100, tx + 100)), "advanced");
    near(r.stats(60)!.rx.current, 200, "rate from the new baseline");
    for (const iv of r.intervals) {
      if (iv.rx < 0 || iv.tx < 0) throw new Error("negative interval");
    }
  }
});

Deno.test("a clock that goes back (reboot) is a reset that drops the old time base", () => {
  const r = new RateTracker(60);
  r.push(at(5000, 0, 0));
  r.push(at(5001, 1e9, 1e9));
  // After a reboot totals may continue from saved state, so they can even be higher.
  eq(r.push(at(20, 2e9, 2e9)), "reset");
  eq(r.stats(60), null);
  eq(r.push(at(21, 2e9 + 10, 2e9 + 20)), "advanced");
  const s = r.stats(60)!;
  near(s.rx.current, 10);
  near(s.tx.peak, 20, "no giant spike from the previous boot");
});

Deno.test("same ts_monotonic with other totals is a reset, not a division by zero", () => {
  const r = new RateTracker(60);
  r.push(at(3, 0, 0));
  eq(r.push(at(3, 10, 0)), "reset");
  eq(r.intervals.length, 0);
});

Deno.test("a gap of missed samples averages the bytes over the gap", () => {
  const r = new RateTracker(60);
  r.push(at(0, 0, 0));
  r.push(at(0.5, 500, 0)); // 1000 B/s
  r.push(at(5.5, 500 + 10000, 0)); // 5 s gap: 2000 B/s on average
  r.push(at(6, 500 + 10000 + 250, 0)); // 500 B/s
  const s = r.stats(60)!;
  near(s.rx.current, 500, "current");
  near(s.rx.peak, 2000, "peak is the gap's average, not a spike");
  near(s.rx.average, 10750 / 6, "average over the time covered");
});

Deno.test("window stats count only the part of an interval inside the window", () => {
  const r = new RateTracker(600);
  r.push(at(0, 0, 0));
  r.push(at(10, 100000, 0)); // 10000 B/s
  r.push(at(20, 100000 + 1000, 0)); // 100 B/s
  const s = r.stats(15)!; // window [5, 20]: 5 s of 10000 B/s and 10 s of 100 B/s
  near(s.rx.average, (50000 + 1000) / 15);
  near(s.rx.peak, 10000);
  const s2 = r.stats(10)!;
  near(s2.rx.peak, 100, "older intervals leave the window");
});

Deno.test("history older than keepSeconds is dropped", () => {
  const r = new RateTracker(10);
  r.push(at(0, 0, 0));
  for (let i = 1; i <= 100; i++) r.push(at(i, i * 10, 0));
  eq(r.intervals.length, 10);
});

Deno.test("series resamples intervals into equal time slots", () => {
  const r = new RateTracker(60);
  r.push(at(100, 0, 0));
  r.push(at(101, 1000, 10)); // 1000 B/s
  r.push(at(102, 4000, 20)); // 3000 B/s
  const { rx, tx } = r.series(102, 4, 4);
  eq(rx, [null, null, 1000, 3000]);
  eq(tx, [null, null, 10, 10]);
  // Two slots per interval repeat its rate; one slot across both averages them.
  eq(r.series(102, 2, 4).rx, [1000, 1000, 3000, 3000]);
  eq(r.series(102, 2, 1).rx, [2000]);
});

Deno.test("series leaves a hole across a reset", () => {
  const r = new RateTracker(60);
  r.push(at(0, 0, 0));
  r.push(at(1, 100, 0));
  r.push(at(2, 5, 0)); // reset: [1, 2] has no data
  r.push(at(3, 305, 0));
  eq(r.series(3, 3, 3).rx, [100, null, 300]);
});

Deno.test("host interfaces: deltas summed, vanished or restarted interfaces never subtract", () => {
  const acc = new InterfaceAccumulator();
  const m = (o: Record<string, [number, number]>) =>
    new Map(Object.entries(o).map(([k, [rx, tx]]) => [k, { rx, tx }]));
  eq(acc.push(m({ eth0: [1000, 100], veth1: [50, 50] })), { rx: 0, tx: 0 });
  eq(acc.push(m({ eth0: [1500, 300], veth1: [60, 70] })), { rx: 510, tx: 220 });
  // veth1 deleted, wlan0 appears: no drop, wlan0 counts from its next reading.
  eq(acc.push(m({ eth0: [1600, 300], wlan0: [9999, 9999] })), { rx: 610, tx: 220 });
  eq(acc.push(m({ eth0: [1600, 300], wlan0: [10000, 10009] })), { rx: 611, tx: 230 });
  // eth0's counters restart (driver reload): skipped once, then counted again.
  eq(acc.push(m({ eth0: [5, 5], wlan0: [10000, 10009] })), { rx: 611, tx: 230 });
  eq(acc.push(m({ eth0: [10, 5], wlan0: [10000, 10009] })), { rx: 616, tx: 230 });
});

Deno.test("restart forces a new baseline even when the numbers look continuous", () => {
  const r = new RateTracker(60);
  r.push(at(10, 0, 0));
  r.push(at(11, 100, 100));
  r.restart(at(50, 200, 200));
  eq(r.stats(60), null);
  eq(r.resets, 1);
  r.push(at(51, 300, 250));
  near(r.stats(60)!.rx.current, 100);
});
