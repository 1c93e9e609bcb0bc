/**
 * The one writer of the history database (`run`'s recorder drives it): opens it, moving
 * a corrupt or unusable file aside for a new one, and writes one batch per transaction:
 * every resolution's rows, the checkpoint and the expiry of old rows together, so a
 * crash leaves the batch wholly in or wholly out.
 */

import { type DatabaseSync, openDatabase, type StatementSync } from "./sqlite.ts";
import { acquireLock, type Lock } from "../lib/lock.ts";
import { HeldDir } from "../lib/held_dir.ts";
import type { Tier } from "./retention.ts";
import { HistoryError, isCorruption, MAX_ROW_COUNT, migrate } from "./db.ts";
import { asideName, dirOf, prepareDirectory, prepareFiles, prepareLockFile } from "./files.ts";

/** Bytes and packets each way: one service's counts in a bucket, or its totals. */
export interface Counts {
  rxBytes: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  txPackets: bigint;
}

/** A minute or hour row: keyed by its UTC start. */
export interface TimeRow {
  start: number;
  service: string;
  counts: Counts;
}

/** A day or month row: keyed by its local calendar key, with the instants it spans. */
export interface CalendarRow {
  key: string;
  start: number;
  end: number;
  service: string;
  counts: Counts;
}

/** Rows older than these go in the same transaction (null: kept forever). */
export interface Expiry {
  /** Minute and hour rows starting at or before these Unix seconds. */
  minutesUpTo: number | null;
  hoursUpTo: number | null;
  /** Day and month rows whose key sorts before these. */
  daysBefore: string | null;
  monthsBefore: string | null;
}

export interface Batch {
  minutes: TimeRow[];
  hours: TimeRow[];
  days: CalendarRow[];
  months: CalendarRow[];
  /** The totals every row so far accounts for, and when they were seen. */
  checkpoint: { unix: number; services: Map<string, Counts> };
  expiry: Expiry;
}

/** What the last run left: the totals history had accounted for, and when. */
export interface Checkpoint {
  unix: number;
  services: Map<string, Counts>;
}

/** A history file that is there but cannot be the database (wrong type, owner). */
export class UnusableFileError extends HistoryError {
  override name = "UnusableFileError";
}

const MAX = MAX_ROW_COUNT.toString();
/** Adds without leaving SQLite's INTEGER (an overflowing sum would turn into a REAL). */
const addCount = (c: string) =>
  `${c} = CASE WHEN ${c} > ${MAX} - excluded.${c} THEN ${MAX} ELSE ${c} + excluded.${c} END`;
const ADD_COUNTS = ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"].map(addCount).join(", ");

const clamp = (v: bigint) => v > MAX_ROW_COUNT ? MAX_ROW_COUNT : v;

interface Statements {
  time: Record<"minutes" | "hours", StatementSync>;
  calendar: Record<"days" | "months", StatementSync>;
  expire: Record<Tier, StatementSync>;
  checkpoint: StatementSync;
  meta: StatementSync;
}

export class HistoryWriter {
  #db: DatabaseSync | null = null;
  #statements: Statements | null = null;
  #ino: number | null = null;
  #lock: Lock | null = null;
  /** The directory the lock is in, held while the lock is (its release removes the file). */
  #lockDir: HeldDir | null = null;

  constructor(readonly path: string, readonly ownerGid: number | null) {}

  get isOpen(): boolean {
    return this.#db !== null;
  }

  /**
   * Opens (creating when missing) and migrates. A file that is not a usable database is
   * moved aside and a new one started: returns where it went and why, else null. A
   * directory it may not use, a lock another run holds and a newer schema throw.
   */
  open(nowUnix: number): { aside: string; why: string } | null {
    this.close();
    const dir = dirOf(this.path);
    prepareDirectory(dir, this.ownerGid);
    // Whether a file can be made here at all (a read-only or full file system), in the
    // system's own words, before the lock file's creation would fail with less of a reason.
    Deno.removeSync(Deno.makeTempFileSync({ dir, prefix: ".probe-" }));
    prepareLockFile(`${this.path}.lock`);
    // Opened without following a symlink, like every lock: the directory is the sampler's.
    this.#lockDir = HeldDir.hold(dir, { what: "History directory", owner: "any" });
    this.#lock = acquireLock(
      this.#lockDir,
      `${this.path.slice(this.path.lastIndexOf("/") + 1)}.lock`,
    );
    try {
      try {
        this.#connect();
        return null;
      } catch (e) {
        if (!isCorruption(e) && !(e instanceof UnusableFileError)) throw e;
        this.#disconnect();
        const aside = asideName(this.path, nowUnix);
        Deno.renameSync(this.path, aside);
        try {
          Deno.renameSync(`${this.path}-journal`, `${aside}-journal`);
        } catch { /* none */ }
        this.#connect();
        return { aside, why: (e as Error).message };
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  #connect(): void {
    try {
      prepareFiles(this.path, this.ownerGid);
    } catch (e) {
      if (e instanceof HistoryError) throw new UnusableFileError(e.message, { cause: e });
      throw e;
    }
    const db = openDatabase(this.path, { timeout: 0 });
    this.#db = db;
    // A rollback journal rather than a WAL: readers then need nothing but read access.
    // A small page cache: a batch touches a few pages, and `run` stays small.
    db.exec("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL; PRAGMA cache_size = -256");
    const check = db.prepare("PRAGMA quick_check").all() as { quick_check: string }[];
    if (check.length !== 1 || check[0]?.quick_check !== "ok") {
      throw Object.assign(new HistoryError(`quick_check: ${check[0]?.quick_check}`), {
        errcode: 11,
      });
    }
    migrate(db);
    this.#statements = prepare(db);
    this.#ino = Deno.lstatSync(this.path).ino;
  }

  #disconnect(): void {
    try {
      this.#db?.close();
    } catch { /* closing what failed to open */ }
    this.#db = null;
    this.#statements = null;
    this.#ino = null;
  }

  /** Whether the open database is still the file at `path` (not removed or replaced). */
  stillAtPath(): boolean {
    try {
      return this.#ino !== null && Deno.lstatSync(this.path).ino === this.#ino;
    } catch {
      return false;
    }
  }

  /** What the last batch left, or null for a new database. */
  checkpoint(): Checkpoint | null {
    const db = this.#need();
    const at = db.prepare("SELECT value FROM meta WHERE key = 'checkpoint_unix'").get() as
      | { value: string }
      | undefined;
    if (!at) return null;
    const services = new Map<string, Counts>();
    const rows = db.prepare("SELECT * FROM checkpoint").all() as Record<string, string>[];
    for (const r of rows) {
      services.set(String(r.service), {
        rxBytes: BigInt(r.rx_bytes ?? 0),
        txBytes: BigInt(r.tx_bytes ?? 0),
        rxPackets: BigInt(r.rx_packets ?? 0),
        txPackets: BigInt(r.tx_packets ?? 0),
      });
    }
    return { unix: Number(at.value), services };
  }

  /** One batch, one transaction. */
  write(batch: Batch): void {
    const db = this.#need();
    const s = this.#statements!;
    this.#transaction(db, () => {
      for (const tier of ["minutes", "hours"] as const) {
        for (const r of batch[tier]) s.time[tier].run(r.start, r.service, ...countArgs(r.counts));
      }
      for (const tier of ["days", "months"] as const) {
        for (const r of batch[tier]) {
          s.calendar[tier].run(r.key, r.service, r.start, r.end, ...countArgs(r.counts));
        }
      }
      db.prepare("DELETE FROM checkpoint").run();
      for (const [name, c] of batch.checkpoint.services) {
        s.checkpoint.run(name, ...[c.rxBytes, c.txBytes, c.rxPackets, c.txPackets].map(String));
      }
      s.meta.run("checkpoint_unix", String(batch.checkpoint.unix));
      const e = batch.expiry;
      if (e.minutesUpTo !== null) s.expire.minutes.run(e.minutesUpTo);
      if (e.hoursUpTo !== null) s.expire.hours.run(e.hoursUpTo);
      if (e.daysBefore !== null) s.expire.days.run(e.daysBefore);
      if (e.monthsBefore !== null) s.expire.months.run(e.monthsBefore);
    });
  }

  /** Empties the history (`reset --history`). */
  clear(): void {
    const db = this.#need();
    this.#transaction(db, () => {
      for (const t of ["minutes", "hours", "days", "months", "checkpoint", "meta"]) {
        db.prepare(`DELETE FROM ${t}`).run();
      }
    });
  }

  /** Prepared, not exec'd: a prepared statement's error carries SQLite's code (a full disk). */
  #transaction(db: DatabaseSync, body: () => void): void {
    db.prepare("BEGIN IMMEDIATE").run();
    try {
      body();
      db.prepare("COMMIT").run();
    } catch (e) {
      try {
        db.prepare("ROLLBACK").run();
      } catch { /* SQLite already rolled back (a full disk at commit) */ }
      throw e;
    }
  }

  #need(): DatabaseSync {
    if (!this.#db) throw new HistoryError("The history database is not open");
    return this.#db;
  }

  close(): void {
    this.#disconnect();
    this.#lock?.release();
    this.#lock = null;
    this.#lockDir?.close();
    this.#lockDir = null;
  }
}

function countArgs(c: Counts): [bigint, bigint, bigint, bigint] {
  return [clamp(c.rxBytes), clamp(c.txBytes), clamp(c.rxPackets), clamp(c.txPackets)];
}

function prepare(db: DatabaseSync): Statements {
  const time = (t: string) =>
    db.prepare(
      `INSERT INTO ${t} (start_unix, service, rx_bytes, tx_bytes, rx_packets, tx_packets) ` +
        `VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (start_unix, service) DO UPDATE SET ${ADD_COUNTS}`,
    );
  const calendar = (t: string, key: string) =>
    db.prepare(
      `INSERT INTO ${t} (${key}, service, start_unix, end_unix, rx_bytes, tx_bytes, ` +
        `rx_packets, tx_packets) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (${key}, service) ` +
        `DO UPDATE SET start_unix = min(start_unix, excluded.start_unix), ` +
        `end_unix = max(end_unix, excluded.end_unix), ${ADD_COUNTS}`,
    );
  return {
    time: { minutes: time("minutes"), hours: time("hours") },
    calendar: { days: calendar("days", "day"), months: calendar("months", "month") },
    expire: {
      minutes: db.prepare("DELETE FROM minutes WHERE start_unix <= ?"),
      hours: db.prepare("DELETE FROM hours WHERE start_unix <= ?"),
      days: db.prepare("DELETE FROM days WHERE day < ?"),
      months: db.prepare("DELETE FROM months WHERE month < ?"),
    },
    checkpoint: db.prepare(
      "INSERT INTO checkpoint (service, rx_bytes, tx_bytes, rx_packets, tx_packets) " +
        "VALUES (?, ?, ?, ?, ?)",
    ),
    meta: db.prepare(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = " +
        "excluded.value",
    ),
  };
}
