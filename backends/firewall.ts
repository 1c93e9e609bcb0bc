/**
 * What the nft and iptables backends share: per-service conntrack marks, the exclusion
 * lists per family, and totals that never go backwards.
 *
 * Mark scheme: the config's `ct_mark` is the first service's mark and `ct_mask` the bits
 * we own; service i gets the i-th value counting up from `ct_mark` inside the mask (the
 * bits outside the mask are skipped, so a non-contiguous mask works too). One mark per
 * service is what lets a reply packet, which carries no socket, be told apart by service.
 * 0 inside the mask means "not ours / not decided yet" and is never handed out.
 */

import {
  BackendError,
  type BackendOptions,
  type CounterSample,
  type ServiceCounters,
  type ServiceTarget,
} from "./backend.ts";
import type { Cidr } from "../lib/cidr.ts";

export function hex32(n: number): string {
  return "0x" + (n >>> 0).toString(16).padStart(8, "0");
}

/** Marks for `count` services: ctMark, then the next values inside ctMask. */
export function serviceMarks(ctMark: number, ctMask: number, count: number): number[] {
  const mask = ctMask >>> 0;
  const base = ctMark >>> 0;
  if (mask === 0) {
    throw new BackendError(`"ct_mask" is 0: give the conntrack mark at least one bit`);
  }
  if ((base & ~mask) >>> 0 !== 0) {
    throw new BackendError(
      `"ct_mark" ${hex32(base)} has bits outside "ct_mask" ${
        hex32(mask)
      }: pick a mark inside the mask`,
    );
  }
  if (base === 0) {
    throw new BackendError(`"ct_mark" is 0: 0 means "unmarked"; pick a non-zero mark`);
  }
  const marks: number[] = [];
  let v = base;
  for (let i = 0; i < count; i++) {
    if (i > 0) {
      // Next value of the bit field selected by mask: carry through the bits outside it.
      v = ((((v | ~mask) >>> 0) + 1) & mask) >>> 0;
      if (v === 0) {
        throw new BackendError(
          `"ct_mask" ${hex32(mask)} leaves room for only ${i} service mark(s) from "ct_mark" ` +
            `${
              hex32(base)
            }, but ${count} services are configured: lower "ct_mark" or widen "ct_mask"`,
        );
      }
    }
    marks.push(v);
  }
  return marks;
}

/** IPv4 exclusions, and IPv6 exclusions plus the IPv4 ones as IPv4-mapped (::ffff:a.b.c.d). */
export function exclusionsByFamily(exclude: Cidr[]): { v4: string[]; v6: string[] } {
  const v4 = exclude.filter((c) => c.family === 4).map((c) => c.text);
  const v6 = exclude.filter((c) => c.family === 6).map((c) => c.text);
  // A v6 socket talking to ::ffff:a.b.c.d puts IPv4 on the wire, so this rarely matters;
  // it keeps a mapped destination judged like the IPv4 address it carries.
  for (const c of exclude) {
    if (c.family !== 4) continue;
    v6.push(`::ffff:${Array.from(c.bytes).join(".")}/${96 + c.prefixLen}`);
  }
  return { v4, v6 };
}

/**
 * Totals per service that stay monotonic when the kernel counters behind them restart
 * (rules re-inserted, a chain flushed by someone else): a raw value lower than the last
 * one seen means a restart, and what was counted before is kept as an offset.
 */
export class MonotonicCounters {
  #last = new Map<string, ServiceCounters>();
  #offset = new Map<string, ServiceCounters>();

  constructor(names: string[]) {
    for (const n of names) {
      this.#last.set(n, zero());
      this.#offset.set(n, zero());
    }
  }

  /** Folds one raw reading in and returns the cumulative sample for every service. */
  update(raw: CounterSample): CounterSample {
    const out: CounterSample = {};
    for (const [name, last] of this.#last) {
      const cur = raw[name] ?? zero();
      const off = this.#offset.get(name)!;
      for (const k of KEYS) {
        if (cur[k] < last[k]) off[k] += last[k];
        last[k] = cur[k];
      }
      out[name] = {
        rxBytes: off.rxBytes + cur.rxBytes,
        txBytes: off.txBytes + cur.txBytes,
        rxPackets: off.rxPackets + cur.rxPackets,
        txPackets: off.txPackets + cur.txPackets,
      };
    }
    return out;
  }
}

const KEYS = ["rxBytes", "txBytes", "rxPackets", "txPackets"] as const;

function zero(): ServiceCounters {
  return { rxBytes: 0n, txBytes: 0n, rxPackets: 0n, txPackets: 0n };
}

/** A service as the rules are written for it. */
export interface PlannedService {
  name: string;
  /** Cgroup path relative to the cgroup2 mount ("/a/b"). */
  path: string;
  /** Its conntrack mark (serviceMarks). */
  mark: number;
  /** Whether the cgroup exists now, i.e. whether it may appear in a rule. */
  present: boolean;
}

/** What both firewall plans start from: a mark per service, the exclusions per family. */
export interface MarkPlan {
  services: PlannedService[];
  ctMask: number;
  v4: string[];
  v6: string[];
}

/** Marks the targets (in their order) and splits the exclusions by family. */
export function markPlan(targets: ServiceTarget[], options: BackendOptions): MarkPlan {
  const marks = serviceMarks(options.ctMark, options.ctMask, targets.length);
  const { v4, v6 } = exclusionsByFamily(options.exclude);
  return {
    services: targets.map((t, i) => ({
      name: t.name,
      path: t.path,
      mark: marks[i]!, // one mark per target
      present: t.id !== null,
    })),
    ctMask: options.ctMask >>> 0,
    v4,
    v6,
  };
}

/** A reading of zeros for each service, for the rules' counters to be added to. */
export function zeroSample(services: { name: string }[]): CounterSample {
  const raw: CounterSample = {};
  for (const s of services) raw[s.name] = zero();
  return raw;
}

/** Adds one counting rule's bytes and packets to a service's reading. */
export function addCounter(
  r: ServiceCounters,
  direction: "rx" | "tx",
  c: { bytes: bigint; packets: bigint },
): void {
  if (direction === "tx") {
    r.txBytes += c.bytes;
    r.txPackets += c.packets;
  } else {
    r.rxBytes += c.bytes;
    r.rxPackets += c.packets;
  }
}

/**
 * Folds new target ids into the plan. Returns the ids the rules must now be written for, or
 * null when no service's cgroup id changed (nothing to reload). The caller saves the ids only
 * after its reload succeeded, so a failed reload is retried on the next tick.
 */
export function refreshPresence(
  services: PlannedService[],
  ids: Map<string, bigint | null>,
  targets: ServiceTarget[],
): Map<string, bigint | null> | null {
  const byName = new Map(targets.map((t) => [t.name, t]));
  const changed = services.some((s) =>
    byName.has(s.name) && byName.get(s.name)!.id !== ids.get(s.name)
  );
  if (!changed) return null;
  for (const s of services) {
    const t = byName.get(s.name);
    if (t) s.present = t.id !== null;
  }
  return new Map(services.map((s) => [s.name, byName.get(s.name)?.id ?? null]));
}

/** "server, shell" or "no service": for the one log line after a reload. */
export function presentNames(services: PlannedService[]): string {
  return services.filter((s) => s.present).map((s) => s.name).join(", ") || "no service";
}

/**
 * What a started firewall backend keeps: its options, plan and totals, and the cgroup ids
 * its rules were last written for. Made by `start`, dropped by `stop`.
 */
export class FirewallRun<P extends { services: PlannedService[] }> {
  readonly totals: MonotonicCounters;
  /** By service name; set once the rules for them loaded. */
  ids = new Map<string, bigint | null>();

  constructor(readonly plan: P, readonly options: BackendOptions) {
    this.totals = new MonotonicCounters(plan.services.map((s) => s.name));
  }

  /** The rules for `targets` are in place. */
  loaded(targets: ServiceTarget[]): void {
    this.ids = new Map(targets.map((t) => [t.name, t.id]));
  }

  /**
   * When a service's cgroup id changed, `reload` rewrites the cgroup rules; the new ids are
   * kept only once it succeeded, so a failed reload is tried again with the next retarget.
   * `who` starts the log line, e.g. "nft".
   */
  async retarget(targets: ServiceTarget[], reload: () => Promise<void>, who: string) {
    const ids = refreshPresence(this.plan.services, this.ids, targets);
    if (!ids) return;
    await reload();
    this.ids = ids;
    this.options.log(`${who}: cgroup rules now cover ${presentNames(this.plan.services)}`);
  }
}
