/**
 * Deno's built-in node:sqlite, as much of it as history uses. The module is loaded by a
 * name the type checker does not follow: checking a `node:` import wants @types/node in
 * node_modules, which this project does not install (deno.json "nodeModulesDir":
 * "manual"), so the types are declared here, like graph/render.ts does for asciichart.
 */

/** A prepared statement (node:sqlite StatementSync). */
export interface StatementSync {
  run(...params: SqlValue[]): { changes: number | bigint; lastInsertRowid: number | bigint };
  get(...params: SqlValue[]): Record<string, SqlValue> | undefined;
  all(...params: SqlValue[]): Record<string, SqlValue>[];
  /** INTEGER columns come back as bigint (exact beyond 2^53). */
  setReadBigInts(on: boolean): void;
}

export type SqlValue = null | number | bigint | string | Uint8Array;

/** A connection (node:sqlite DatabaseSync). */
export interface DatabaseSync {
  exec(sql: string): void;
  prepare(sql: string): StatementSync;
  close(): void;
}

export interface OpenOptions {
  /** SQLITE_OPEN_READONLY: readers never write, not even a journal. */
  readOnly?: boolean;
  /** Milliseconds to wait for another connection's lock (busy timeout). */
  timeout?: number;
  readBigInts?: boolean;
}

interface SqliteModule {
  DatabaseSync: new (path: string, options?: OpenOptions) => DatabaseSync;
}

const MODULE = "node:sqlite";
const sqlite = await import(MODULE) as SqliteModule;

/** Opens (creating unless read-only) the database at `path`. */
export function openDatabase(path: string, options: OpenOptions = {}): DatabaseSync {
  return new sqlite.DatabaseSync(path, options);
}
