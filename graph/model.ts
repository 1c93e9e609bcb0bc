/**
 * What the graph knows between frames: the last good sample, the rate history, and why
 * the newest read was (or was not) usable. Fed by the reader, read by render; no I/O and
 * no clock of its own, so every status can be tested with made-up times.
 *
 * Freshness is judged without a monotonic clock syscall (graph must not need --allow-ffi):
 * by the sample's own ts_unix against the wall clock, and by whether ts_monotonic has
 * advanced within the last few intervals of the reader's own timer.
 */

import type { TodayTotals } from "../history/today.ts";
import {
  type CountersV1,
  type DestinationV1,
  isFreshAge,
  type ReadResult,
  sampleAgeS,
  staleAfterS,
} from "../lib/contract.ts";
import { InterfaceAccumulator, RateTracker, type WindowStats } from "./rates.ts";
import { nonLoopback, parseProcNetDev } from "./proc_net_dev.ts";

export type StatusKind = "ok" | "waiting" | "stale" | "malformed" | "unreadable" | "reset";

export interface Status {
  kind: StatusKind;
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
  series(columns: number): { rx: (number | null)[]; tx: (number | null)[] };
  host: HostView | null;
  /**
   * The sample's destinations, busiest now first (then most bytes); null when the sample
   * has none (a backend without them).
   */
  destinations: DestinationRow[] | null;
  status: Status;
  /** Today's totals from history (history/today.ts), when there is history to read. */
  today?: TodayTotals | null;
}

/** How long "counter reset" stays on the status line, at least. */
const RESET_NOTICE_S = 5;

export class GraphModel {
  readonly tracker: RateTracker;
  #hostTracker: RateTracker | null = null;
  #hostAcc: InterfaceAccumulator | null = null;
  #hostError: string | null = null;
  #last: CountersV1 | null = null;
  #read: ReadResult | null = null;
  #advancedAt: number | null = null;
  #resetAt: number | null = null;
  /** Destination bytes of the previous sample (by destKey) and their rates since. */
  #destPrev: { t: number; bytes: Map<string, bigint> } | null = null;
  #destRates = new Map<string, number | null>();

  readonly path: string;
  readonly interval: number;
  readonly window: number;

  /** `interval`: the reader's; `window`: seconds of history; `host`: also /proc/net/dev. */
  constructor(o: { path: string; interval: number; window: number; host?: boolean }) {
    const { path, interval, window, host = false } = o;
    this.path = path;
    this.interval = interval;
    this.window = window;
    // A little more than the window, so the oldest column is still fully covered.
    this.tracker = new RateTracker(window + Math.max(2 * interval, 1));
    if (host) {
      this.#hostTracker = new RateTracker(window + Math.max(2 * interval, 1));
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
    const sample = { t: c.ts_monotonic, rx: c.rx_bytes_total, tx: c.tx_bytes_total };
    const prevBoot = this.#last?.boot_id ?? "";
    let pushed;
    if (prevBoot !== "" && c.boot_id !== "" && c.boot_id !== prevBoot) {
      // A reboot: ts_monotonic restarted from zero, even if it has already passed the old one.
      this.tracker.restart(sample);
      pushed = "reset";
    } else {
      pushed = this.tracker.push(sample);
    }
    if (pushed === "reset") this.#resetAt = nowMono;
    if (pushed !== "unchanged") this.#advancedAt = nowMono;
    if (pushed === "reset") this.#destPrev = null;
    if (pushed !== "unchanged") this.#updateDestinations(c);
    this.#last = c;
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
        before === undefined || d.bytes < before || dt <= 0 ? null : Number(d.bytes - before) / dt,
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

  status(nowUnix: number, nowMono: number): Status {
    const read = this.#read;
    const kept = this.#last !== null ? "; showing the last good values" : "";
    if (read === null) return { kind: "waiting", text: "waiting for the first read" };
    if (read.kind === "missing") {
      return { kind: "waiting", text: `waiting for file: ${read.reason}` };
    }
    if (read.kind === "malformed") {
      return { kind: "malformed", text: `malformed: ${read.reason}${kept}` };
    }
    if (read.kind === "unreadable") {
      return { kind: "unreadable", text: `unreadable: ${read.reason}${kept}` };
    }
    const c = read.counters;
    const limit = staleAfterS(c.interval_s);
    const age = sampleAgeS(c, nowUnix);
    const quiet = this.#advancedAt === null ? 0 : nowMono - this.#advancedAt;
    const staleByAge = age !== null && !isFreshAge(age, c.interval_s);
    if (staleByAge || !isFreshAge(quiet, c.interval_s)) {
      const shown = staleByAge ? age : quiet;
      return {
        kind: "stale",
        text: `stale: the last sample is ${fmtSeconds(shown)} old and the sampler writes every ` +
          `${fmtSeconds(c.interval_s)}; is "stb-netacct run" still running?`,
      };
    }
    if (this.#resetAt !== null && nowMono - this.#resetAt < Math.max(RESET_NOTICE_S, limit)) {
      return {
        kind: "reset",
        text: "counter reset: totals went back (the sampler restarted?); rates start " +
          "again from the new baseline",
      };
    }
    const ageText = age !== null ? ` · sample ${fmtSeconds(Math.max(0, age))} old` : "";
    return { kind: "ok", text: `ok${ageText}` };
  }

  frame(nowUnix: number, nowMono: number): FrameData {
    const last = this.#last;
    const tracker = this.tracker;
    const window = this.window;
    const stats = tracker.stats(window);
    let host: HostView | null = null;
    if (this.#hostTracker !== null) {
      const hs = this.#hostTracker.stats(window);
      const cur = hs !== null && hs.rx.current !== null && hs.tx.current !== null
        ? { rx: hs.rx.current, tx: hs.tx.current }
        : null;
      const share = hs !== null && stats !== null
        ? {
          rx: hs.rx.average > 0 ? stats.rx.average / hs.rx.average : null,
          tx: hs.tx.average > 0 ? stats.tx.average / hs.tx.average : null,
        }
        : null;
      host = { error: this.#hostError, current: cur, share };
    }
    return {
      path: this.path,
      window,
      interval: this.interval,
      nowUnix,
      backend: last?.backend ?? null,
      fallbackReason: last?.backend_fallback_reason ?? null,
      totals: last !== null ? { rx: last.rx_bytes_total, tx: last.tx_bytes_total } : null,
      stats,
      series: (columns) =>
        last === null
          ? { rx: new Array(columns).fill(null), tx: new Array(columns).fill(null) }
          : tracker.series(last.ts_monotonic, window, columns),
      host,
      destinations: last?.destinations === undefined ? null : this.#destinationRows(last),
      status: this.status(nowUnix, nowMono),
    };
  }

  #destinationRows(c: CountersV1): DestinationRow[] {
    const rows = (c.destinations ?? []).map((d) => ({
      service: d.service,
      direction: d.direction,
      endpoint: endpoint(d),
      protocol: d.protocol,
      rate: this.#destRates.get(destKey(d)) ?? null,
      total: d.bytes,
    }));
    return rows.sort((a, b) =>
      (b.rate ?? -1) - (a.rate ?? -1) || (b.total > a.total ? 1 : b.total < a.total ? -1 : 0)
    );
  }
}

function destKey(d: DestinationV1): string {
  return `${d.service}|${d.direction}|${d.protocol}|${d.address}|${d.port}`;
}

function endpoint(d: DestinationV1): string {
  if (d.port === 0) return d.address;
  return d.address.includes(":") ? `[${d.address}]:${d.port}` : `${d.address}:${d.port}`;
}

function fmtSeconds(s: number): string {
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}
