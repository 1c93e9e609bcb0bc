/**
 * Published totals never go back. Backend readings are cumulative since that backend's
 * start, but a backend can restart its kernel counters (a rule re-inserted, a new run after
 * a crash); totals grow by the positive deltas only, and a reading that went down is taken
 * as "counted from zero again" rather than as negative traffic. Exact: bigint throughout.
 */

import type { CounterSample, ServiceCounters } from "../backends/backend.ts";

const FIELDS = ["rxBytes", "txBytes", "rxPackets", "txPackets"] as const;

export class Totals {
  readonly #totals = new Map<string, ServiceCounters>();
  readonly #last = new Map<string, ServiceCounters>();

  constructor(names: readonly string[], initial: Record<string, ServiceCounters> = {}) {
    for (const n of names) {
      const base = initial[n];
      this.#totals.set(n, {
        rxBytes: base?.rxBytes ?? 0n,
        txBytes: base?.txBytes ?? 0n,
        rxPackets: base?.rxPackets ?? 0n,
        txPackets: base?.txPackets ?? 0n,
      });
    }
  }

  /** Folds a backend reading in; services the reading lacks keep their totals. */
  add(sample: CounterSample): void {
    for (const [name, now] of Object.entries(sample)) {
      const total = this.#totals.get(name);
      if (!total) continue;
      const prev = this.#last.get(name);
      for (const f of FIELDS) {
        const delta = prev === undefined ? now[f] : now[f] - prev[f];
        total[f] += delta >= 0n ? delta : now[f];
      }
      this.#last.set(name, { ...now });
    }
  }

  /** Zero every total on purpose (`stb-netacct reset`); later readings add from here. */
  reset(): void {
    for (const t of this.#totals.values()) for (const f of FIELDS) t[f] = 0n;
  }

  /** Forget the last readings: the next one counts from zero (a new backend instance). */
  rebase(): void {
    this.#last.clear();
  }

  service(name: string): ServiceCounters {
    return { ...this.#totals.get(name)! };
  }

  all(): Record<string, ServiceCounters> {
    return Object.fromEntries([...this.#totals].map(([n, c]) => [n, { ...c }]));
  }

  sum(): ServiceCounters {
    const out = { rxBytes: 0n, txBytes: 0n, rxPackets: 0n, txPackets: 0n };
    for (const c of this.#totals.values()) for (const f of FIELDS) out[f] += c[f];
    return out;
  }
}
