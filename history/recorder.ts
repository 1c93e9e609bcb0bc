/**
 * What `run` hands every sample to: turns the exact totals into history rows and writes
 * them in batches, at most one transaction a minute and one at stop.
 *
 * Time: what is added is always the difference of two consecutive samples' exact totals
 * (samples ordered by CLOCK_MONOTONIC), never a rate times a wall-clock duration, so no
 * clock step can make a count negative or count a byte twice. Each difference is stamped
 * with the wall-clock minute of its sample and added into fixed buckets (UTC minute and
 * hour, local day and month, written in the same batch), so a row is one bucket: a step
 * back adds to minutes that already have rows, a step forward leaves minutes empty, and
 * no interval is negative or listed twice. The batch cadence follows CLOCK_MONOTONIC.
 *
 * Continuity: each batch also stores the totals it accounts for (the checkpoint). After
 * a restart, SIGKILL or crash the first sample's totals minus the checkpoint is exactly
 * what the last batch missed; it is recorded at the checkpoint's minute, once.
 */

import type { CountersV1, HistoryStatusV1 } from "../lib/contract.ts";
import type { HistorySink } from "../run/sinks.ts";
import { type CalendarBucket, Zone } from "./calendar.ts";
import { isCorruption, SQLITE, sqliteCode } from "./db.ts";
import type { Retention } from "./retention.ts";
import {
  type Batch,
  type CalendarRow,
  type Checkpoint,
  type Counts,
  HistoryWriter,
  type TimeRow,
} from "./writer.ts";

/** Seconds of CLOCK_MONOTONIC between batches. */
export const BATCH_S = 60;
/** A checkpoint older than this (wall clock) is not caught up with: too long to place. */
export const CATCH_UP_S = 600;
/** A wall-clock jump this large between batches (a step, a suspend) pauses expiry ... */
export const JUMP_S = 3600;
/** ... for this long (monotonic): old rows are never expired by a clock that may be wrong. */
export const EXPIRY_HOLD_S = 86_400;

/** The writer as the recorder uses it (tests hand in one that fails on cue). */
export type WriterLike = Pick<
  HistoryWriter,
  "path" | "isOpen" | "open" | "stillAtPath" | "checkpoint" | "write" | "clear" | "close"
>;

export interface RecorderOptions {
  path: string;
  retention: Retention;
  /** The config owner's group, which may read history; null: root only. */
  ownerGid: number | null;
  /** The host's zone name now, asked before each batch: it may change while `run` runs. */
  zone: () => string;
  /** `reset --history` leaves this file for a running sampler. */
  clearRequest: string;
  log: (message: string) => void;
  writer?: WriterLike;
}

type ServiceCounts = Map<string, Counts>;

/** Counts not yet written, per bucket of each resolution. */
interface Pending {
  minutes: Map<number, ServiceCounts>;
  hours: Map<number, ServiceCounts>;
  days: Map<string, { bucket: CalendarBucket; services: ServiceCounts }>;
  months: Map<string, { bucket: CalendarBucket; services: ServiceCounts }>;
}

function addInto(into: ServiceCounts, name: string, c: Counts): void {
  const t = into.get(name);
  if (!t) {
    into.set(name, { ...c });
    return;
  }
  t.rxBytes += c.rxBytes;
  t.txBytes += c.txBytes;
  t.rxPackets += c.rxPackets;
  t.txPackets += c.txPackets;
}

function emptyPending(): Pending {
  return { minutes: new Map(), hours: new Map(), days: new Map(), months: new Map() };
}

export class HistoryRecorder implements HistorySink {
  readonly #o: RecorderOptions;
  readonly #writer: WriterLike;
  #zone: Zone;
  #day: CalendarBucket | null = null;
  #month: CalendarBucket | null = null;
  /** The totals accounted for so far (checkpoint + pending); null before the first sample. */
  #last: ServiceCounts | null = null;
  /** The minute being filled by samples, folded into `#pending` when the minute changes. */
  #minute: { start: number; services: ServiceCounts } | null = null;
  #pending = emptyPending();
  #checkpoint: Checkpoint | null = null;
  #lastUnix = 0;
  #lastMono = 0;
  #lastBatch: { mono: number; unix: number } | null = null;
  #expiryHeldUntil = -Infinity;
  #paused: string | null = null;
  #replaced = 0;
  #failures = 0;

  constructor(options: RecorderOptions) {
    this.#o = options;
    this.#writer = options.writer ?? new HistoryWriter(options.path, options.ownerGid);
    this.#zone = new Zone(options.zone());
    this.#open(Date.now() / 1000);
    if (this.#paused === null) options.log(`history: recording to ${options.path}`);
  }

  record(counters: CountersV1): void {
    try {
      this.#record(counters);
    } catch (e) {
      this.#pause(`history: ${(e as Error).message}`);
    }
  }

  #record(counters: CountersV1): void {
    const unix = counters.ts_unix, mono = counters.ts_monotonic;
    if (this.#last === null) this.#begin(counters);
    else this.#add(counters, unix);
    this.#lastUnix = unix;
    this.#lastMono = mono;
    if (this.#lastBatch === null) this.#lastBatch = { mono, unix };
    else if (mono - this.#lastBatch.mono >= BATCH_S) this.#batch(mono, unix);
  }

  /**
   * The first sample: continue from the checkpoint when it is recent (a restart), the
   * missed difference at the checkpoint's minute; else count from this sample on.
   */
  #begin(counters: CountersV1): void {
    const ck = this.#checkpoint;
    this.#last = new Map();
    if (ck && Math.abs(counters.ts_unix - ck.unix) <= CATCH_UP_S) {
      for (const [name, c] of ck.services) this.#last.set(name, { ...c });
      this.#add(counters, Math.min(ck.unix, counters.ts_unix));
      return;
    }
    let grew = 0n;
    for (const name in counters.services) {
      const s = counters.services[name]!; // an own key
      const was = ck?.services.get(name);
      if (was && s.rx_bytes_total >= was.rxBytes && s.tx_bytes_total >= was.txBytes) {
        grew += s.rx_bytes_total - was.rxBytes + s.tx_bytes_total - was.txBytes;
      }
      this.#last.set(name, totalsOf(s));
    }
    if (ck && grew > 0n) {
      this.#o.log(
        `history: ${grew} bytes were counted while nothing recorded history (since ` +
          `${this.#zone.iso(ck.unix)}); they are in the totals, not in the history`,
      );
    }
  }

  /** Adds each service's difference since the last sample into the minute of `stampUnix`. */
  #add(counters: CountersV1, stampUnix: number): void {
    const start = Math.floor(stampUnix / 60) * 60;
    let minute = this.#minute;
    if (minute === null || minute.start !== start) {
      if (minute !== null) this.#fold(minute);
      minute = this.#minute = { start, services: new Map() };
    }
    const last = this.#last!;
    for (const name in counters.services) {
      const s = counters.services[name]!; // an own key
      const prev = last.get(name);
      if (prev === undefined) {
        last.set(name, totalsOf(s)); // a service history has not seen: counted from here
        continue;
      }
      // Totals only go down when reset on purpose: count from the new value on.
      const d = {
        rxBytes: s.rx_bytes_total >= prev.rxBytes ? s.rx_bytes_total - prev.rxBytes : 0n,
        txBytes: s.tx_bytes_total >= prev.txBytes ? s.tx_bytes_total - prev.txBytes : 0n,
        rxPackets: s.rx_packets_total >= prev.rxPackets ? s.rx_packets_total - prev.rxPackets : 0n,
        txPackets: s.tx_packets_total >= prev.txPackets ? s.tx_packets_total - prev.txPackets : 0n,
      };
      prev.rxBytes = s.rx_bytes_total;
      prev.txBytes = s.tx_bytes_total;
      prev.rxPackets = s.rx_packets_total;
      prev.txPackets = s.tx_packets_total;
      if (d.rxBytes || d.txBytes || d.rxPackets || d.txPackets) addInto(minute.services, name, d);
    }
  }

  /** A finished minute into every resolution's pending rows. */
  #fold(minute: { start: number; services: ServiceCounts }): void {
    if (minute.services.size === 0) return;
    const p = this.#pending;
    const hour = Math.floor(minute.start / 3600) * 3600;
    const day = this.#day = inBucket(this.#day, minute.start) ?? this.#zone.dayOf(minute.start);
    const month = this.#month = inBucket(this.#month, minute.start) ??
      this.#zone.monthOf(minute.start);
    for (const [name, c] of minute.services) {
      addInto(getOr(p.minutes, minute.start, () => new Map()), name, c);
      addInto(getOr(p.hours, hour, () => new Map()), name, c);
      addInto(
        getOr(p.days, day.key, () => ({ bucket: day, services: new Map() })).services,
        name,
        c,
      );
      addInto(
        getOr(p.months, month.key, () => ({ bucket: month, services: new Map() })).services,
        name,
        c,
      );
    }
  }

  /** One batch: the pending rows, the checkpoint and the expiry, in one transaction. */
  #batch(mono: number, unix: number): void {
    const prev = this.#lastBatch;
    this.#lastBatch = { mono, unix };
    if (prev && Math.abs((unix - prev.unix) - (mono - prev.mono)) > JUMP_S) {
      this.#expiryHeldUntil = mono + EXPIRY_HOLD_S;
      this.#o.log(
        `history: the wall clock moved ${Math.round(unix - prev.unix)} s in ` +
          `${Math.round(mono - prev.mono)} s; old rows are not expired for a day`,
      );
    }
    this.#followZone();
    if (this.#minute) this.#fold(this.#minute);
    this.#minute = null;
    this.#write(mono < this.#expiryHeldUntil);
  }

  /** The host's zone may have changed (timedatectl): days and months follow it from now. */
  #followZone(): void {
    const name = this.#o.zone();
    if (name === this.#zone.name) return;
    try {
      const zone = new Zone(name);
      if (zone.name === this.#zone.name) return;
      this.#o.log(`history: the time zone is now ${zone.name} (was ${this.#zone.name})`);
      this.#zone = zone;
      this.#day = this.#month = null;
    } catch { /* a name ICU does not know: keep the last good zone */ }
  }

  /** Writes what is pending; on failure keeps it for the next batch and pauses. */
  #write(holdExpiry: boolean, retry = true): void {
    if (!this.#ready()) return;
    try {
      this.#writer.write(this.#makeBatch(holdExpiry));
    } catch (e) {
      this.#failures++;
      // Once: a new database that is corrupt at once is a disk fault, paused like one.
      if (retry && isCorruption(e) && this.#reopen(`${(e as Error).message}`)) {
        return this.#write(holdExpiry, false);
      }
      this.#pause(`history: ${describeWriteError(e)}`);
      return;
    }
    this.#pending = emptyPending();
    if (this.#paused !== null) this.#o.log("history: writing again");
    this.#paused = null;
  }

  /** Opens the database when it is not (or no longer) the file at its path. */
  #ready(): boolean {
    if (this.#writer.isOpen && this.#writer.stillAtPath()) return true;
    if (this.#writer.isOpen) {
      this.#o.log(`history: ${this.#writer.path} was removed or replaced; starting a new one`);
      this.#replaced++;
    }
    this.#open(this.#lastUnix);
    return this.#writer.isOpen;
  }

  /** Opens the writer; a file moved aside is logged and counted, a failure pauses. */
  #open(nowUnix: number): void {
    try {
      const aside = this.#writer.open(nowUnix);
      if (aside) {
        this.#replaced++;
        this.#o.log(
          `history: ${this.#writer.path} is not a usable database (${aside.why}); moved it to ` +
            `${aside.aside} and started a new one`,
        );
      }
      this.#checkpoint = this.#writer.checkpoint();
    } catch (e) {
      this.#pause(`history: cannot open ${this.#writer.path}: ${describeWriteError(e)}`);
    }
  }

  /** A database found corrupt while writing: moved aside, a new one opened. */
  #reopen(why: string): boolean {
    this.#writer.close();
    try {
      const aside = this.#writer.open(this.#lastUnix);
      this.#replaced++;
      this.#o.log(
        `history: ${this.#writer.path} is corrupt (${why}); ` +
          (aside ? `moved it to ${aside.aside} and started a new one` : "reopened it"),
      );
      return true;
    } catch (e) {
      this.#pause(`history: cannot open ${this.#writer.path}: ${describeWriteError(e)}`);
      return false;
    }
  }

  #makeBatch(holdExpiry: boolean): Batch {
    const p = this.#pending;
    const time = (m: Map<number, ServiceCounts>): TimeRow[] =>
      [...m].flatMap(([start, services]) =>
        [...services].map(([service, counts]) => ({ start, service, counts }))
      );
    const calendar = (m: Pending["days"]): CalendarRow[] =>
      [...m.values()].flatMap(({ bucket, services }) =>
        [...services].map(([service, counts]) => ({ ...bucket, service, counts }))
      );
    const r = this.#o.retention, now = this.#lastUnix;
    const keep = (tier: keyof Retention) => holdExpiry || r[tier] === null ? null : now - r[tier];
    const minutes = keep("minutes"), hours = keep("hours");
    const days = keep("days"), months = keep("months");
    return {
      minutes: time(p.minutes),
      hours: time(p.hours),
      days: calendar(p.days),
      months: calendar(p.months),
      checkpoint: { unix: now, services: new Map(this.#last ?? []) },
      expiry: {
        minutesUpTo: minutes === null ? null : minutes - 60,
        hoursUpTo: hours === null ? null : hours - 3600,
        daysBefore: days === null ? null : this.#zone.dayOf(days).key,
        monthsBefore: months === null ? null : this.#zone.monthOf(months).key,
      },
    };
  }

  #pause(message: string): void {
    if (this.#paused !== message) {
      this.#o.log(`${message}; counting goes on, retrying every minute`);
    }
    this.#paused = message;
    // Kept across a long pause: minutes beyond their retention would be expired anyway.
    const keep = this.#o.retention.minutes;
    if (keep !== null && this.#pending.minutes.size > keep / 60) {
      for (const start of [...this.#pending.minutes.keys()]) {
        if (start <= this.#lastUnix - keep) this.#pending.minutes.delete(start);
      }
    }
  }

  totalsReset(): void {
    try {
      Deno.lstatSync(this.#o.clearRequest);
    } catch {
      return; // only the totals were to be reset
    }
    try {
      if (!this.#ready()) throw new Error(this.#paused ?? "not open");
      this.#writer.clear();
      this.#pending = emptyPending();
      this.#minute = null;
      Deno.removeSync(this.#o.clearRequest);
      this.#o.log("history cleared on request");
    } catch (e) {
      this.#o.log(`history: cannot clear it as \`reset --history\` asked: ${(e as Error).message}`);
    }
  }

  status(): HistoryStatusV1 {
    return {
      state: this.#paused === null ? "recording" : "paused",
      ...(this.#paused === null ? {} : { reason: this.#paused.replace(/^history: /, "") }),
      databases_replaced_total: this.#replaced,
      write_failures_total: this.#failures,
    };
  }

  close(): void {
    try {
      if (this.#lastBatch !== null) this.#batch(this.#lastMono, this.#lastUnix);
    } catch (e) {
      this.#o.log(`history: the last batch failed: ${(e as Error).message}`);
    } finally {
      this.#writer.close();
    }
  }
}

function totalsOf(s: CountersV1["services"][string]): Counts {
  return {
    rxBytes: s.rx_bytes_total,
    txBytes: s.tx_bytes_total,
    rxPackets: s.rx_packets_total,
    txPackets: s.tx_packets_total,
  };
}

function inBucket(b: CalendarBucket | null, t: number): CalendarBucket | null {
  return b !== null && b.start <= t && t < b.end ? b : null;
}

function getOr<K, V>(m: Map<K, V>, key: K, make: () => V): V {
  let v = m.get(key);
  if (v === undefined) m.set(key, v = make());
  return v;
}

/** A write or open failure in a user's words. */
export function describeWriteError(e: unknown): string {
  const code = sqliteCode(e);
  const msg = (e as Error)?.message ?? String(e);
  if (code === SQLITE.FULL) return `the disk is full (${msg})`;
  if (code === SQLITE.READONLY) return `it is read-only (${msg})`;
  if (e instanceof Deno.errors.PermissionDenied) return `permission denied (${msg})`;
  return msg;
}
