/**
 * Published totals never go back. Backend readings are cumulative since that backend's
 * start, but a backend can restart its kernel counters (a rule re-inserted, a new run after
 * a crash); totals grow by the positive deltas only, and a reading that went down is taken
 * as "counted from zero again" rather than as negative traffic. Exact: bigint throughout.
 *
 * Kernel state can outlive a run (backends/backend.ts, `kernelState`): its counters then
 * include traffic the saved totals already hold. The totals therefore record, per kernel
 * state, the readings they include (`kernelRecords`, saved with them), and a new run adds
 * only what lies beyond: saved + (reading now - reading included). Replaced state's last
 * reading is added the same way, once.
 */

import type {
  CounterSample,
  KernelState,
  ReplacedState,
  ServiceCounters,
} from "../backends/backend.ts";

/** Readings of one kernel state that totals include (run/state.ts saves them). */
export interface KernelRecord {
  id: string;
  services: Record<string, ServiceCounters>;
}

/** Where a run's totals start: the saved copy, and the kernel state the backend found. */
export interface Continuation {
  saved: Record<string, ServiceCounters>;
  /** What the saved totals include of each kernel state (absent: nothing). */
  included?: KernelRecord[];
  /** The state the backend reads now (null: counters since start). */
  current?: KernelState | null;
  replaced?: ReplacedState[];
}

const FIELDS = ["rxBytes", "txBytes", "rxPackets", "txPackets"] as const;

export class Totals {
  readonly #totals = new Map<string, ServiceCounters>();
  /** The readings included so far, of the kernel state `#kernelId`. */
  readonly #last = new Map<string, ServiceCounters>();
  #kernelId: string | null = null;
  /** Replaced kernel state, wholly included, until it is removed (releaseReplaced). */
  #replaced: KernelRecord[] = [];
  /** The next reading of `#kernelId` is where counting starts (see `continuing`). */
  #unrecorded = false;

  /**
   * Totals that continue saved ones: what the kernel state found holds beyond the readings
   * the saved totals include is added (replaced state now, current state with each read).
   */
  static continuing(names: readonly string[], c: Continuation): Totals {
    const t = new Totals(names, c.saved);
    const included = (id: string) => c.included?.find((k) => k.id === id)?.services ?? {};
    for (const r of c.replaced ?? []) {
      const before = included(r.id);
      for (const [name, now] of Object.entries(r.services)) {
        const total = t.#totals.get(name);
        if (!total) continue;
        for (const f of FIELDS) {
          const delta = now[f] - (before[name]?.[f] ?? 0n);
          if (delta > 0n) total[f] += delta;
        }
      }
      t.#replaced.push({ id: r.id, services: r.services });
    }
    if (c.current) {
      t.#kernelId = c.current.id;
      const record = c.included?.find((k) => k.id === c.current!.id);
      for (const [name, v] of Object.entries(record?.services ?? {})) t.#last.set(name, { ...v });
      // Adopted state the saved totals have no record of (another backend ran meanwhile, a
      // reset removed the copies, an older release saved them): what it holds may be in the
      // totals already, so it counts from its first reading, never twice.
      t.#unrecorded = c.current.adopted && record === undefined;
    }
    return t;
  }

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

  /**
   * Folds a backend reading in; services the reading lacks keep their totals. `kernelId`:
   * the kernel state read (another one than before counts from zero).
   */
  add(sample: CounterSample, kernelId?: string): void {
    if (kernelId !== undefined && kernelId !== this.#kernelId) {
      this.#last.clear();
      this.#kernelId = kernelId;
      this.#unrecorded = false;
    }
    if (this.#unrecorded) {
      this.#unrecorded = false;
      for (const [name, now] of Object.entries(sample)) this.#last.set(name, { ...now });
      return;
    }
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

  /** What the totals include of each kernel state, to be saved with them. */
  kernelRecords(): KernelRecord[] {
    const current = this.#kernelId === null ? [] : [{
      id: this.#kernelId,
      services: Object.fromEntries([...this.#last].map(([n, c]) => [n, { ...c }])),
    }];
    return [...current, ...this.#replaced];
  }

  /** Replaced state is gone from the kernel: its record is no longer needed. */
  forgetReplaced(): void {
    this.#replaced = [];
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
