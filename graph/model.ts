/**
 * What the graph knows between frames: the last good sample, the rate history of the total
 * and of every service, and why the newest read was (or was not) usable. Fed by the reader,
 * read by render; no I/O and no clock of its own, so every status can be tested with
 * made-up times.
 *
 * Freshness is judged without a monotonic clock syscall (graph must not need --allow-ffi):
 * by the sample's own ts_unix against the wall clock when it has a believable one, and by
 * whether ts_monotonic advanced within the last few intervals of the reader's own timer.
 * A step no link could carry is a discontinuity: a new baseline, like a reset, never a rate.
 */

import type { TodayTotals } from "../history/today.ts";
import {
  type CountersV1,
  type DestinationV1,
  type ReadResult,
  staleAfterS,
} from "../lib/contract.ts";
import {
  clockProblem,
  type FileVerdict,
  fileVerdict,
  formatDuration,
  type Freshness,
  isImplausible,
  judgeFreshness,
  sampleClock,
  type Watch,
} from "../lib/health.ts";
import { printable } from "../lib/text.ts";
import { formatBytes } from "../lib/units.ts";
import { InterfaceAccumulator, RateTracker, type Sample, type WindowStats } from "./rates.ts";
import { nonLoopback, parseProcNetDev } from "./proc_net_dev.ts";

export type StatusKind =
  | "ok"
  | "waiting"
  | "stale"
  | "unknown"
  | "malformed"
  | "unreadable"
  | "reset"
  | "discontinuity"
  | "clock";

export interface Status {
  kind: StatusKind;
  /** One line of plain text (file content in it made printable). */
  text: string;
}

export interface HostView {
  /** Why there are no host figures, when there are none. */
  error: string | null;
  current: { rx: number; tx: number } | null;
  /** StB's share of the host's traffic over the window, 0..1, or null when unknown. */
  share: { rx: number | null; tx: number | null } | null;
}

/** One remote endpoint of the top-destinations table. */
export interface DestinationRow {
  service: string;
  direction: "rx" | "tx";
  /** "198.51.100.2:443", "[2001:db8::2]:443"; the bare address when the port is 0. */
  endpoint: string;
  protocol: string;
  /** Bytes per second between the last two samples; null for an endpoint new in the last. */
  rate: number | null;
  total: bigint;
  /** Its DNS name: the one `run` saw StB resolve, else reverse DNS's (made printable). */
  name?: string;
}

/** One service of the sample: its figures and whether its cgroup exists now. */
export interface ServiceView {
  /** The name, made printable. */
  name: string;
  present: boolean;
  totals: { rx: bigint; tx: bigint };
  stats: WindowStats | null;
}

/** Rates per column for one chart width: the total and each service (frame order). */
export interface SeriesSet {
  all: { rx: (number | null)[]; tx: (number | null)[] };
  services: { rx: (number | null)[]; tx: (number | null)[] }[];
}

/** Everything one frame shows. `series` resamples the history for a given chart width. */
export interface FrameData {
  path: string;
  window: number;
  interval: number;
  nowUnix: number;
  backend: string | null;
  fallbackReason: string | null;
  totals: { rx: bigint; tx: bigint } | null;
  stats: WindowStats | null;
  /** The sample's services, in the file's order. */
  services: ServiceView[];
  /**
   * Today's totals from history (history/today.ts), when there is history to read; absent
   * or null: not shown. The graph itself keeps no history.
   */
  today?: TodayTotals | null;
  series(columns: number): SeriesSet;
  host: HostView | null;
  /**
   * The sample's destinations, busiest now first (then most bytes); null when the sample
   * has none (a backend without them).
   */
  destinations: DestinationRow[] | null;
  status: Status;
  /** The verdict `status` gives for this file (and its exit status, for --once). */
  verdict: FileVerdict;
}

/** How long "counter reset" or "discontinuity" stays on the status line, at least. */
const NOTICE_S = 5;

/** What one new sample was, against the one before. */
type Step =
  | { kind: "baseline" | "unchanged" | "advanced" | "reset" | "reboot" }
  | { kind: "discontinuity"; what: string };

export class GraphModel {
  readonly tracker: RateTracker;
  #services = new Map<string, RateTracker>();
  #hostTracker: RateTracker | null = null;
  #hostAcc: InterfaceAccumulator | null = null;
  #hostError: string | null = null;
  #last: CountersV1 | null = null;
  #read: ReadResult | null = null;
  /** When the reader first saw a sample, and when it last saw one advance (its timer). */
  #firstSeenAt: number | null = null;
  #advancedAt: number | null = null;
  #notice: { at: number; status: Status } | null = null;
  #watchDone = false;
  /** Destination bytes of the previous sample (by destKey) and their rates since. */
  #destPrev: { t: number; bytes: Map<string, bigint> } | null = null;
  #destRates = new Map<string, number | null>();
  /** Today's totals from history, as the reader last read them: copied into every frame. */
  today: TodayTotals | null = null;
  /**
   * Who holds the sampler's lock on the file, as the reader last looked (a pid, null for
   * nobody, undefined when it cannot tell): a stale file with a holder is a stuck sampler,
   * without one no sampler at all.
   */
  sampler: number | null | undefined = undefined;
  /** Names addresses `run` gave no name (reverse DNS); never waits. */
  nameOf: ((address: string) => string | undefined) | null = null;

  readonly path: string;
  readonly interval: number;
  readonly window: number;
  readonly #keep: number;

  /** `interval`: the reader's; `window`: seconds of history; `host`: also /proc/net/dev. */
  constructor(o: { path: string; interval: number; window: number; host?: boolean }) {
    const { path, interval, window, host = false } = o;
    this.path = path;
    this.interval = interval;
    this.window = window;
    // A little more than the window, so the oldest column is still fully covered.
    this.#keep = window + Math.max(2 * interval, 1);
    this.tracker = new RateTracker(this.#keep);
    if (host) {
      this.#hostTracker = new RateTracker(this.#keep);
      this.#hostAcc = new InterfaceAccumulator();
    }
  }

  get last(): CountersV1 | null {
    return this.#last;
  }

  /** True once a rate can be shown (two samples of one run). */
  get hasRate(): boolean {
    return this.tracker.stats(this.window)?.rx.current != null;
  }

  /** Takes one read of the counters file; `nowMono` is the reader's own seconds timer. */
  update(read: ReadResult, nowMono: number): void {
    this.#read = read;
    if (read.kind !== "ok") return;
    const c = read.counters;
    if (this.#last !== null && !read.changed) return;
    const step = this.#step(c);
    if (step.kind === "unchanged") return;
    this.#firstSeenAt ??= nowMono;
    if (step.kind !== "baseline") this.#advancedAt = nowMono;
    this.#apply(c, step);
    if (step.kind === "reset" || step.kind === "reboot") {
      this.#notice = { at: nowMono, status: resetStatus() };
    } else if (step.kind === "discontinuity") {
      this.#notice = { at: nowMono, status: discontinuityStatus(step.what) };
    }
    this.#last = c;
  }

  /** Classifies `c` against the previous sample. */
  #step(c: CountersV1): Step {
    const prev = this.#last;
    if (prev === null) return { kind: "baseline" };
    if (prev.boot_id !== "" && c.boot_id !== "" && c.boot_id !== prev.boot_id) {
      // ts_monotonic restarted from zero, even if it has already passed the old one.
      return { kind: "reboot" };
    }
    if (
      c.ts_monotonic === prev.ts_monotonic && c.rx_bytes_total === prev.rx_bytes_total &&
      c.tx_bytes_total === prev.tx_bytes_total
    ) return { kind: "unchanged" };
    if (
      c.ts_monotonic <= prev.ts_monotonic || c.rx_bytes_total < prev.rx_bytes_total ||
      c.tx_bytes_total < prev.tx_bytes_total
    ) return { kind: "reset" };
    const dt = c.ts_monotonic - prev.ts_monotonic;
    const what = implausibleStep(prev, c, dt);
    return what === null ? { kind: "advanced" } : { kind: "discontinuity", what };
  }

  /** Feeds the trackers: one interval when it advanced, a new baseline otherwise. */
  #apply(c: CountersV1, step: Step): void {
    const sample = (rx: bigint, tx: bigint): Sample => ({ t: c.ts_monotonic, rx, tx });
    const all = sample(c.rx_bytes_total, c.tx_bytes_total);
    const services = new Map<string, RateTracker>();
    for (const [name, s] of Object.entries(c.services)) {
      const tracker = this.#services.get(name) ?? new RateTracker(this.#keep);
      services.set(name, tracker);
      const ss = sample(s.rx_bytes_total, s.tx_bytes_total);
      if (step.kind === "reboot") tracker.restart(ss);
      else if (step.kind === "advanced" || tracker.last === null) tracker.push(ss);
      else tracker.rebase(ss);
    }
    // A service no longer in the file has nothing more to show.
    this.#services = services;
    if (step.kind === "reboot") this.tracker.restart(all);
    else if (step.kind === "advanced" || step.kind === "baseline") this.tracker.push(all);
    else this.tracker.rebase(all);
    if (step.kind !== "advanced") this.#destPrev = null;
    this.#updateDestinations(c);
  }

  /** Rates of the sample's destinations against the previous sample (same run). */
  #updateDestinations(c: CountersV1): void {
    const prev = this.#destPrev;
    const bytes = new Map<string, bigint>();
    this.#destRates = new Map();
    const dt = prev === null ? 0 : c.ts_monotonic - prev.t;
    for (const d of c.destinations ?? []) {
      const key = destKey(d);
      bytes.set(key, d.bytes);
      const before = prev?.bytes.get(key);
      // New, or forgotten by the kernel's bounded table and counted again: no rate yet.
      this.#destRates.set(
        key,
        before === undefined || d.bytes < before || dt <= 0 ||
          isImplausible(d.bytes - before, dt)
          ? null
          : Number(d.bytes - before) / dt,
      );
    }
    this.#destPrev = { t: c.ts_monotonic, bytes };
  }

  /** Takes one read of /proc/net/dev, or the error that prevented it. */
  updateHost(procNetDev: string | Error, nowMono: number): void {
    if (this.#hostAcc === null || this.#hostTracker === null) return;
    if (procNetDev instanceof Error) {
      this.#hostError = procNetDev.message;
      return;
    }
    this.#hostError = null;
    const totals = this.#hostAcc.push(nonLoopback(parseProcNetDev(procNetDev)));
    this.#hostTracker.push({ t: nowMono, rx: BigInt(totals.rx), tx: BigInt(totals.tx) });
  }

  /** What this reader saw of the file changing, by its own timer; null before a sample. */
  #watch(nowMono: number): Watch | null {
    if (this.#firstSeenAt === null) return null;
    const changed = this.#advancedAt !== null;
    const since = this.#advancedAt ?? this.#firstSeenAt;
    return { quietS: nowMono - since, changed, done: this.#watchDone };
  }

  /**
   * A one-shot reader (--once) is done watching: a file whose age is unknown and that was
   * not seen to change is judged stale now, not "unknown".
   */
  endWatch(): void {
    this.#watchDone = true;
  }

  /** How fresh the current sample is; null when there is none. */
  freshness(nowUnix: number, nowMono: number): Freshness | null {
    const read = this.#read;
    if (read?.kind !== "ok") return null;
    const c = read.counters;
    return judgeFreshness(sampleClock(c, nowUnix), c.interval_s, this.#watch(nowMono));
  }

  /** The verdict on the file as status would give it (see lib/health.ts fileVerdict). */
  verdict(nowUnix: number, nowMono: number): FileVerdict {
    const read = this.#read;
    if (read === null) return "not running";
    return fileVerdict(read.kind, this.freshness(nowUnix, nowMono), this.sampler);
  }

  status(nowUnix: number, nowMono: number): Status {
    const read = this.#read;
    const kept = this.#last !== null ? "; showing the last good values" : "";
    if (read === null) return { kind: "waiting", text: "waiting for the first read" };
    if (read.kind !== "ok") {
      const reason = printable(read.reason);
      if (read.kind !== "missing") {
        return { kind: read.kind, text: `${read.kind}: ${reason}${kept}` };
      }
      if (typeof this.sampler !== "number") {
        return { kind: "waiting", text: `no counters file: ${reason}` };
      }
      return {
        kind: "stale",
        text: `stale: no counters file, but a sampler (pid ${this.sampler}) holds its lock: ` +
          "it is stuck or writes elsewhere",
      };
    }
    const c = read.counters;
    const clock = sampleClock(c, nowUnix);
    const watch = this.#watch(nowMono);
    const freshness = judgeFreshness(clock, c.interval_s, watch);
    const problem = clockProblem(clock);
    if (freshness === "stale") return staleStatus({ c, clock, watch }, this.sampler);
    if (freshness === "unknown") {
      return { kind: "unknown", text: `${problem}; waiting to see the file change` };
    }
    const notice = this.#notice;
    if (notice !== null && nowMono - notice.at < Math.max(NOTICE_S, staleAfterS(c.interval_s))) {
      return notice.status;
    }
    if (problem !== null) {
      return { kind: "clock", text: `clock: ${problem}; it is live: it keeps changing` };
    }
    const age = clock.kind === "dated" && clock.ageS >= 1
      ? ` · sample ${formatDuration(clock.ageS)} old`
      : "";
    return { kind: "ok", text: `ok${age}` };
  }

  frame(nowUnix: number, nowMono: number): FrameData {
    const last = this.#last;
    const window = this.window;
    const services = last === null ? [] : this.#serviceViews(last);
    return {
      path: printable(this.path),
      window,
      interval: this.interval,
      nowUnix,
      backend: last === null ? null : printable(last.backend),
      fallbackReason: last?.backend_fallback_reason === undefined
        ? null
        : printable(last.backend_fallback_reason),
      totals: last !== null ? { rx: last.rx_bytes_total, tx: last.tx_bytes_total } : null,
      stats: this.tracker.stats(window),
      services,
      today: this.today,
      series: (columns) => this.#series(columns),
      host: this.#hostView(),
      destinations: last?.destinations === undefined ? null : this.#destinationRows(last),
      status: this.status(nowUnix, nowMono),
      verdict: this.verdict(nowUnix, nowMono),
    };
  }

  #serviceViews(last: CountersV1): ServiceView[] {
    return Object.entries(last.services).map(([name, s]) => ({
      name: printable(name),
      present: s.present,
      totals: { rx: s.rx_bytes_total, tx: s.tx_bytes_total },
      stats: this.#services.get(name)?.stats(this.window) ?? null,
    }));
  }

  #series(columns: number): SeriesSet {
    const last = this.#last;
    const empty = () => ({
      rx: new Array<number | null>(columns).fill(null),
      tx: new Array<number | null>(columns).fill(null),
    });
    if (last === null) return { all: empty(), services: [] };
    const end = last.ts_monotonic;
    return {
      all: this.tracker.series(end, this.window, columns),
      services: Object.keys(last.services).map((name) =>
        this.#services.get(name)?.series(end, this.window, columns) ?? empty()
      ),
    };
  }

  #hostView(): HostView | null {
    if (this.#hostTracker === null) return null;
    const stats = this.tracker.stats(this.window);
    const hs = this.#hostTracker.stats(this.window);
    const cur = hs !== null && hs.rx.current !== null && hs.tx.current !== null
      ? { rx: hs.rx.current, tx: hs.tx.current }
      : null;
    const share = hs !== null && stats !== null
      ? {
        rx: hs.rx.average > 0 ? stats.rx.average / hs.rx.average : null,
        tx: hs.tx.average > 0 ? stats.tx.average / hs.tx.average : null,
      }
      : null;
    return { error: this.#hostError, current: cur, share };
  }

  #destinationRows(c: CountersV1): DestinationRow[] {
    const rows = (c.destinations ?? []).map((d) => {
      const row: DestinationRow = {
        service: printable(d.service),
        direction: d.direction,
        endpoint: printable(endpoint(d)),
        protocol: printable(d.protocol),
        rate: this.#destRates.get(destKey(d)) ?? null,
        total: d.bytes,
      };
      const name = d.name ?? this.nameOf?.(d.address);
      if (name !== undefined) row.name = printable(name);
      return row;
    });
    return rows.sort((a, b) =>
      (b.rate ?? -1) - (a.rate ?? -1) || (b.total > a.total ? 1 : b.total < a.total ? -1 : 0)
    );
  }
}

/**
 * The first total (all, then each service) that rose faster than any link between `prev`
 * and `c`, described; null when every step is plausible.
 */
function implausibleStep(prev: CountersV1, c: CountersV1, dt: number): string | null {
  const pairs: [string, bigint, bigint][] = [
    ["↓ all", prev.rx_bytes_total, c.rx_bytes_total],
    ["↑ all", prev.tx_bytes_total, c.tx_bytes_total],
  ];
  for (const [name, s] of Object.entries(c.services)) {
    const p = prev.services[name];
    if (p === undefined) continue;
    pairs.push([`↓ ${name}`, p.rx_bytes_total, s.rx_bytes_total]);
    pairs.push([`↑ ${name}`, p.tx_bytes_total, s.tx_bytes_total]);
  }
  for (const [what, before, after] of pairs) {
    if (after > before && isImplausible(after - before, dt)) {
      return `${printable(what)} rose by ${formatBytes(after - before)} in ${formatDuration(dt)}`;
    }
  }
  return null;
}

function resetStatus(): Status {
  return {
    kind: "reset",
    text: "counter reset: totals went back (the sampler restarted?); rates start " +
      "again from the new baseline",
  };
}

function discontinuityStatus(what: string): Status {
  return {
    kind: "discontinuity",
    text: `discontinuity: ${what}, faster than any link (1 Tbit/s); not drawn, rates ` +
      "start again from this sample",
  };
}

/** Why the sample is stale, and what the sampler's lock says about it. */
function staleStatus(
  f: { c: CountersV1; clock: ReturnType<typeof sampleClock>; watch: Watch | null },
  sampler: number | null | undefined,
): Status {
  const limit = staleAfterS(f.c.interval_s);
  const quiet = formatDuration(f.watch?.quietS ?? 0);
  const unchanged = f.watch?.changed === false
    ? `it did not change in the ${quiet} watched`
    : `it has not changed for ${quiet}`;
  const problem = clockProblem(f.clock);
  const why = f.clock.kind === "dated" && f.clock.ageS > limit
    ? `the last sample is ${formatDuration(f.clock.ageS)} old`
    : problem !== null
    ? `${problem}, and ${unchanged}`
    : unchanged;
  const every = `the sampler writes every ${formatDuration(f.c.interval_s)}`;
  const who = sampler === undefined
    ? `${every}: is "stb-netacct run" still running?`
    : sampler === null
    ? `no sampler holds its lock: none is running ("sudo stb-netacct run" starts one)`
    : `a sampler (pid ${sampler}) holds its lock but does not write: it is stuck`;
  return { kind: "stale", text: `stale: ${why}; ${who}` };
}

function destKey(d: DestinationV1): string {
  return `${d.service}|${d.direction}|${d.protocol}|${d.address}|${d.port}`;
}

function endpoint(d: DestinationV1): string {
  if (d.port === 0) return d.address;
  return d.address.includes(":") ? `[${d.address}]:${d.port}` : `${d.address}:${d.port}`;
}
