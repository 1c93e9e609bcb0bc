/**
 * Rates from cumulative counters. A rate is only ever computed between two samples of the
 * same counter run: when a total goes down or the clock goes back (the daemon restarted,
 * the machine rebooted, totals were reset), the new sample becomes a new baseline. That is
 * what keeps the chart free of negative rates and of one giant spike the size of the
 * whole total.
 */

/**
 * One reading of cumulative counters. `t` is seconds on a clock that only moves forward;
 * the totals are exact (bigint), so a small increment to a huge total is never lost.
 */
export interface Sample {
  t: number;
  rx: bigint;
  tx: bigint;
}

/** Bytes moved between two consecutive samples of one run. */
export interface Interval {
  t0: number;
  t1: number;
  rx: number;
  tx: number;
}

export type PushResult = "baseline" | "advanced" | "unchanged" | "reset";

export interface DirectionStats {
  /** Bytes per second over the newest interval; null right after a reset. */
  current: number | null;
  /** Highest per-interval rate inside the window. */
  peak: number;
  /** Bytes moved inside the window divided by the time covered by data. */
  average: number;
}

export interface WindowStats {
  rx: DirectionStats;
  tx: DirectionStats;
}

export class RateTracker {
  #last: Sample | null = null;
  #intervals: Interval[] = [];
  #resets = 0;

  /** How much history to keep, in seconds of `t`: at least the widest window drawn. */
  constructor(readonly keepSeconds: number) {}

  get last(): Sample | null {
    return this.#last;
  }

  get resets(): number {
    return this.#resets;
  }

  /** Intervals, oldest first. */
  get intervals(): readonly Interval[] {
    return this.#intervals;
  }

  push(s: Sample): PushResult {
    const prev = this.#last;
    if (prev === null) {
      this.#last = s;
      return "baseline";
    }
    if (s.t === prev.t && s.rx === prev.rx && s.tx === prev.tx) return "unchanged";
    // Same timestamp with other totals cannot come from one run either: no Δt to divide by.
    if (s.t <= prev.t || s.rx < prev.rx || s.tx < prev.tx) {
      // A clock that went back is a new boot: the old intervals are on another time base.
      if (s.t < prev.t) this.#intervals = [];
      this.#last = s;
      this.#resets++;
      return "reset";
    }
    // One interval's bytes fit a number exactly (below 2^53: petabytes).
    this.#intervals.push({
      t0: prev.t,
      t1: s.t,
      rx: Number(s.rx - prev.rx),
      tx: Number(s.tx - prev.tx),
    });
    this.#last = s;
    const horizon = s.t - this.keepSeconds;
    const kept = this.#intervals.findIndex((iv) => iv.t1 > horizon);
    this.#intervals.splice(0, kept < 0 ? this.#intervals.length : kept);
    return "advanced";
  }

  /**
   * A new baseline whatever the numbers say: the sample comes from another boot (its
   * ts_monotonic counts from another zero), so no interval may span the two.
   */
  restart(s: Sample): void {
    this.#intervals = [];
    this.#last = s;
    this.#resets++;
  }

  /**
   * A new baseline on the same clock: the step to `s` is not traffic (a discontinuity), so
   * no interval spans it; the history before it stays.
   */
  rebase(s: Sample): void {
    if (this.#last !== null && s.t < this.#last.t) this.#intervals = [];
    this.#last = s;
    this.#resets++;
  }

  /**
   * Current, peak and average over the `window` seconds ending at the newest sample, or
   * null while the window holds no interval. A gap (samples missed) is one long interval:
   * its bytes are spread evenly over it, which is their true average.
   */
  stats(window: number): WindowStats | null {
    const last = this.#last;
    const newest = this.#intervals.at(-1);
    if (newest === undefined || last === null) return null;
    // After a reset the newest interval belongs to the previous run: no current rate yet.
    const fresh = newest.t1 === last.t;
    const d = newest.t1 - newest.t0;
    const end = last.t;
    const start = end - window;
    let rxBytes = 0, txBytes = 0, covered = 0, rxPeak = 0, txPeak = 0;
    for (const iv of this.#intervals) {
      const overlap = Math.min(iv.t1, end) - Math.max(iv.t0, start);
      if (overlap <= 0) continue;
      const len = iv.t1 - iv.t0;
      rxBytes += iv.rx * overlap / len;
      txBytes += iv.tx * overlap / len;
      covered += overlap;
      rxPeak = Math.max(rxPeak, iv.rx / len);
      txPeak = Math.max(txPeak, iv.tx / len);
    }
    if (covered === 0) return null;
    return {
      rx: { current: fresh ? newest.rx / d : null, peak: rxPeak, average: rxBytes / covered },
      tx: { current: fresh ? newest.tx / d : null, peak: txPeak, average: txBytes / covered },
    };
  }

  /**
   * The window ending at `end` cut into `columns` equal slots, each the average rate of the
   * data inside it; null where no interval covers the slot (before the first sample, or
   * across a reset). Columns wider than the sampling interval average several samples.
   */
  series(
    end: number,
    window: number,
    columns: number,
  ): { rx: (number | null)[]; tx: (number | null)[] } {
    const rx: (number | null)[] = new Array(columns).fill(null);
    const tx: (number | null)[] = new Array(columns).fill(null);
    if (columns <= 0 || window <= 0) return { rx, tx };
    const w = window / columns;
    const start = end - window;
    const rxB = new Array<number>(columns).fill(0);
    const txB = new Array<number>(columns).fill(0);
    const cov = new Array<number>(columns).fill(0);
    for (const iv of this.#intervals) {
      if (iv.t1 <= start || iv.t0 >= end) continue;
      const d = iv.t1 - iv.t0;
      const first = Math.max(0, Math.floor((iv.t0 - start) / w));
      const lastCol = Math.min(columns - 1, Math.floor((iv.t1 - start) / w));
      // Columns first..lastCol lie within 0..columns-1: the indexes below are in range.
      for (let c = first; c <= lastCol; c++) {
        const c0 = start + c * w;
        const overlap = Math.min(iv.t1, c0 + w) - Math.max(iv.t0, c0);
        if (overlap <= 0) continue;
        rxB[c]! += iv.rx * overlap / d;
        txB[c]! += iv.tx * overlap / d;
        cov[c]! += overlap;
      }
    }
    cov.forEach((covered, c) => {
      // Slivers (float rounding at slot edges) are not data.
      if (covered > w * 1e-6) {
        rx[c] = rxB[c]! / covered;
        tx[c] = txB[c]! / covered;
      }
    });
    return { rx, tx };
  }
}

/**
 * Whole-host counters as one monotonic total: per-interface counters are summed as
 * deltas, so an interface that vanishes (a veth deleted) or whose counters restart does
 * not make the host total drop and read as a reset.
 */
export class InterfaceAccumulator {
  #prev = new Map<string, { rx: number; tx: number }>();
  #rx = 0;
  #tx = 0;
  #primed = false;

  /** Adds a reading of every interface; returns the running totals. */
  push(ifaces: ReadonlyMap<string, { rx: number; tx: number }>): { rx: number; tx: number } {
    for (const [name, cur] of ifaces) {
      const prev = this.#prev.get(name);
      // A new interface or one whose counters restarted contributes from here on.
      if (this.#primed && prev !== undefined && cur.rx >= prev.rx && cur.tx >= prev.tx) {
        this.#rx += cur.rx - prev.rx;
        this.#tx += cur.tx - prev.tx;
      }
    }
    this.#prev = new Map(ifaces);
    this.#primed = true;
    return { rx: this.#rx, tx: this.#tx };
  }
}
