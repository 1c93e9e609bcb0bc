/**
 * The history database: its schema, versioned migrations, and what both the writer (`run`)
 * and the readers (`report`, `graph`) need to know about it. SQLite through Deno's
 * built-in node:sqlite: no dependency, no server.
 *
 * Rows hold what was counted in one bucket per service: minutes and hours are keyed by
 * their UTC start, days and months by their local calendar key ("2025-03-30", "2025-03")
 * with the instants that calendar gave them when they were written. Counts are read as
 * bigint. SQLite's INTEGER is signed 64-bit: a bucket's count saturates at 2^63 - 1
 * (8 EiB in one row: 23 years at 100 Gbit/s for one monthly row). The checkpoint (the
 * totals history has accounted for) holds totals up to 2^64 - 1, so it is decimal text.
 */

import type { DatabaseSync } from "./sqlite.ts";

/** The schema this program writes and reads (PRAGMA user_version). */
export const SCHEMA_VERSION = 1;

/** The largest count a row holds: SQLite's INTEGER is signed 64-bit. */
export const MAX_ROW_COUNT = (1n << 63n) - 1n;

/** One step from version `to - 1` to `to`, run inside the migration's transaction. */
export interface Migration {
  to: number;
  sql: string;
}

const COUNTS = "rx_bytes INTEGER NOT NULL, tx_bytes INTEGER NOT NULL, " +
  "rx_packets INTEGER NOT NULL, tx_packets INTEGER NOT NULL";

/**
 * Every schema version, in order. A release that changes the schema appends a step and a
 * fixture of the version before it (history/testdata/); steps are never edited once shipped.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    to: 1,
    sql: `
      CREATE TABLE minutes (start_unix INTEGER NOT NULL, service TEXT NOT NULL, ${COUNTS},
        PRIMARY KEY (start_unix, service)) WITHOUT ROWID;
      CREATE TABLE hours (start_unix INTEGER NOT NULL, service TEXT NOT NULL, ${COUNTS},
        PRIMARY KEY (start_unix, service)) WITHOUT ROWID;
      CREATE TABLE days (day TEXT NOT NULL, service TEXT NOT NULL,
        start_unix INTEGER NOT NULL, end_unix INTEGER NOT NULL, ${COUNTS},
        PRIMARY KEY (day, service)) WITHOUT ROWID;
      CREATE TABLE months (month TEXT NOT NULL, service TEXT NOT NULL,
        start_unix INTEGER NOT NULL, end_unix INTEGER NOT NULL, ${COUNTS},
        PRIMARY KEY (month, service)) WITHOUT ROWID;
      CREATE TABLE checkpoint (service TEXT PRIMARY KEY NOT NULL,
        rx_bytes TEXT NOT NULL, tx_bytes TEXT NOT NULL,
        rx_packets TEXT NOT NULL, tx_packets TEXT NOT NULL) WITHOUT ROWID;
      CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
    `,
  },
];

export class HistoryError extends Error {
  override name = "HistoryError";
}

/** The database is of a newer schema than this program knows: an older binary after an upgrade. */
export class NewerSchemaError extends HistoryError {
  override name = "NewerSchemaError";
}

/** SQLite's primary result codes that history tells apart. */
export const SQLITE = {
  BUSY: 5,
  LOCKED: 6,
  READONLY: 8,
  IOERR: 10,
  CORRUPT: 11,
  FULL: 13,
  CANTOPEN: 14,
  NOTADB: 26,
} as const;

/** SQLite's own words for the codes above (sqlite3_errstr), for errors that carry no code. */
const MESSAGES: [string, number][] = [
  ["database is locked", SQLITE.BUSY],
  ["database table is locked", SQLITE.LOCKED],
  ["attempt to write a readonly database", SQLITE.READONLY],
  ["disk I/O error", SQLITE.IOERR],
  ["database disk image is malformed", SQLITE.CORRUPT],
  ["database or disk is full", SQLITE.FULL],
  ["unable to open database file", SQLITE.CANTOPEN],
  ["file is not a database", SQLITE.NOTADB],
];

/**
 * The primary SQLite result code of a node:sqlite error, or null for anything else.
 * Deno's DatabaseSync.exec throws without `errcode`; its message is SQLite's errstr then.
 */
export function sqliteCode(e: unknown): number | null {
  const code = (e as { errcode?: unknown })?.errcode;
  if (typeof code === "number") return code & 0xff;
  if ((e as { code?: unknown })?.code !== "ERR_SQLITE_ERROR") return null;
  const message = (e as Error).message ?? "";
  return MESSAGES.find(([text]) => message.startsWith(text))?.[1] ?? null;
}

/** The database file's content is not a usable database: it can only be moved aside. */
export function isCorruption(e: unknown): boolean {
  const c = sqliteCode(e);
  return c === SQLITE.CORRUPT || c === SQLITE.NOTADB;
}

/** The schema version of an open database. */
export function schemaVersion(db: DatabaseSync): number {
  const row = db.prepare("PRAGMA user_version").get() as { user_version: number | bigint };
  return Number(row.user_version);
}

/**
 * Brings `db` to the newest version in `migrations`, all steps in one transaction, so a
 * crash half-way leaves the old version whole. Returns the version it found. A database
 * newer than the list is refused, never touched: a later release wrote it.
 */
export function migrate(db: DatabaseSync, migrations: readonly Migration[] = MIGRATIONS): number {
  const found = schemaVersion(db);
  const target = migrations.at(-1)?.to ?? 0;
  if (found > target) {
    throw new NewerSchemaError(
      `History database is schema version ${found}, newer than this stb-netacct knows ` +
        `(${target}): a newer release wrote it; upgrade stb-netacct again`,
    );
  }
  if (found === target) return found;
  db.exec("BEGIN IMMEDIATE");
  try {
    for (const m of migrations) {
      if (m.to <= found) continue;
      db.exec(m.sql);
      db.exec(`PRAGMA user_version = ${m.to}`);
    }
    db.exec("COMMIT");
  } catch (e) {
    db.exec("ROLLBACK");
    throw e;
  }
  return found;
}

/** The four count columns as a row holds them. */
export interface RowCounts {
  rx_bytes: bigint;
  tx_bytes: bigint;
  rx_packets: bigint;
  tx_packets: bigint;
}

/** The file beside the database that `reset --history` leaves for a running sampler. */
export function clearRequestPath(statePath: string): string {
  return `${statePath}.reset-history`;
}
