/**
 * Reading history without privileges: `report` and `graph` open the database read-only
 * (SQLITE_OPEN_READONLY; the rollback journal needs nothing else), wait briefly for the
 * sampler's once-a-minute commit, and turn every way of failing into a sentence that
 * says what to do.
 */

import { type DatabaseSync, openDatabase, type SqlValue } from "./sqlite.ts";
import {
  HistoryError,
  type RowCounts,
  SCHEMA_VERSION,
  schemaVersion,
  SQLITE,
  sqliteCode,
} from "./db.ts";

/** The resolutions `report` shows (minutes are kept for `graph` and for finer views). */
export type Unit = "minute" | "hour" | "day" | "month";

/** One bucket: the instants it spans and each service's counts in it. */
export interface HistoryRow {
  /** The local calendar key for days and months ("2025-03-30"), else null. */
  key: string | null;
  start: number;
  end: number;
  services: Map<string, RowCounts>;
}

/** Nothing to read: no history file at the path. */
export class NoHistoryError extends HistoryError {
  override name = "NoHistoryError";
}

const TABLES: Record<Unit, { table: string; key: string | null; seconds: number }> = {
  minute: { table: "minutes", key: null, seconds: 60 },
  hour: { table: "hours", key: null, seconds: 3600 },
  day: { table: "days", key: "day", seconds: 0 },
  month: { table: "months", key: "month", seconds: 0 },
};

/** How long a reader waits for the sampler's commit (it holds its lock for milliseconds). */
const BUSY_WAIT_MS = 3000;

export class HistoryReader {
  readonly #db: DatabaseSync;
  /** The schema is older than this program's: the sampler upgrades it when it next starts. */
  readonly empty: boolean;

  private constructor(db: DatabaseSync, empty: boolean) {
    this.#db = db;
    this.empty = empty;
  }

  /** Opens `path` read-only; HistoryError with the reason and the fix when it cannot. */
  static open(path: string): HistoryReader {
    checkReadable(path);
    let db: DatabaseSync;
    try {
      db = openDatabase(path, { readOnly: true, timeout: BUSY_WAIT_MS, readBigInts: true });
    } catch (e) {
      throw explainOpenError(path, e);
    }
    try {
      const version = schemaVersion(db);
      if (version > SCHEMA_VERSION) {
        throw new HistoryError(
          `History "${path}" is schema version ${version}, newer than this stb-netacct ` +
            `(${SCHEMA_VERSION}) reads: use the stb-netacct that wrote it (the installed one)`,
        );
      }
      return new HistoryReader(db, version < SCHEMA_VERSION);
    } catch (e) {
      db.close();
      throw e instanceof HistoryError ? e : explainOpenError(path, e);
    }
  }

  /** Rows of `unit` that start in [since, until), oldest first. */
  rows(unit: Unit, since: number, until: number): HistoryRow[] {
    if (this.empty) return [];
    const t = TABLES[unit];
    const cols = t.key === null
      ? "start_unix, NULL AS key, start_unix + " + t.seconds + " AS end_unix"
      : `start_unix, ${t.key} AS key, end_unix`;
    const stmt = this.#db.prepare(
      `SELECT ${cols}, service, rx_bytes, tx_bytes, rx_packets, tx_packets FROM ${t.table} ` +
        `WHERE start_unix >= ? AND start_unix < ? ORDER BY start_unix, service`,
    );
    const out: HistoryRow[] = [];
    const byStart = new Map<string, HistoryRow>();
    for (const r of stmt.all(Math.floor(since), Math.ceil(until))) {
      const start = Number(r.start_unix), end = Number(r.end_unix);
      const key = typeof r.key === "string" ? r.key : null;
      const id = key ?? String(start);
      let row = byStart.get(id);
      if (!row) {
        row = { key, start, end, services: new Map() };
        byStart.set(id, row);
        out.push(row);
      }
      row.end = Math.max(row.end, end);
      row.services.set(String(r.service), countsOf(r));
    }
    return out;
  }

  /** The day row of a local date ("2025-03-30"), all services; null when it has none. */
  dayRow(key: string): HistoryRow | null {
    if (this.empty) return null;
    const rows = this.#db.prepare(
      "SELECT start_unix, end_unix, service, rx_bytes, tx_bytes, rx_packets, tx_packets " +
        "FROM days WHERE day = ?",
    ).all(key);
    if (rows.length === 0) return null;
    const row: HistoryRow = { key, start: Infinity, end: -Infinity, services: new Map() };
    for (const r of rows) {
      row.start = Math.min(row.start, Number(r.start_unix));
      row.end = Math.max(row.end, Number(r.end_unix));
      row.services.set(String(r.service), countsOf(r));
    }
    return row;
  }

  /** Every service history has rows for, in name order. */
  services(): string[] {
    if (this.empty) return [];
    const union = ["minutes", "hours", "days", "months"].map((t) => `SELECT service FROM ${t}`)
      .join(" UNION ");
    return this.#db.prepare(`${union} ORDER BY service`).all().map((r) => String(r.service));
  }

  /** When the newest batch was written (its last sample, Unix seconds), or null. */
  recordedUntil(): number | null {
    if (this.empty) return null;
    const r = this.#db.prepare("SELECT value FROM meta WHERE key = 'checkpoint_unix'").get();
    return r ? Number(r.value) : null;
  }

  /** The start of the oldest minute row at or after `since`, or null. */
  firstMinuteFrom(since: number): number | null {
    if (this.empty) return null;
    const r = this.#db.prepare("SELECT min(start_unix) AS s FROM minutes WHERE start_unix >= ?")
      .get(Math.floor(since));
    return r?.s === null || r?.s === undefined ? null : Number(r.s);
  }

  close(): void {
    this.#db.close();
  }
}

function countsOf(r: Record<string, SqlValue>): RowCounts {
  const n = (v: SqlValue | undefined) => typeof v === "bigint" ? v : BigInt(Number(v ?? 0));
  return {
    rx_bytes: n(r.rx_bytes),
    tx_bytes: n(r.tx_bytes),
    rx_packets: n(r.rx_packets),
    tx_packets: n(r.tx_packets),
  };
}

/** A file that is missing or closed to this user, said plainly before SQLite is asked. */
function checkReadable(path: string): void {
  try {
    Deno.openSync(path, { read: true }).close();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new NoHistoryError(
        `No history at "${path}": \`stb-netacct run\` writes it once a minute while it ` +
          `counts (unless the config's "history.enabled" is false); for another run's ` +
          `history give --history-db`,
      );
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new HistoryError(
        `Cannot read the history "${path}": permission denied. Root and the config's ` +
          `"owner" may read it: run this as that user, or with sudo`,
      );
    }
    throw new HistoryError(`Cannot read the history "${path}": ${(e as Error).message}`);
  }
}

function explainOpenError(path: string, e: unknown): HistoryError {
  const code = sqliteCode(e);
  const msg = (e as Error)?.message ?? String(e);
  if (code === SQLITE.CORRUPT || code === SQLITE.NOTADB) {
    return new HistoryError(
      `History "${path}" is not a readable database (${msg}): the sampler moves it aside ` +
        `and starts a new one when it next writes`,
    );
  }
  if (code === SQLITE.BUSY || code === SQLITE.LOCKED) {
    return new HistoryError(`History "${path}" stayed locked by its writer: try again`);
  }
  if (code === SQLITE.READONLY) {
    return new HistoryError(
      `History "${path}" was left in the middle of a write (${msg}): the sampler finishes ` +
        `it when it next opens it; run \`stb-netacct status\` to see that it runs`,
    );
  }
  return new HistoryError(`Cannot read the history "${path}": ${msg}`, { cause: e });
}
