/**
 * Who may touch the history files. Only the sampler writes them; root and the config's
 * "owner" read them: the database is 0640 with the owner's group (0600 without an owner),
 * and a directory history makes for itself is 0750 (0700). Readers only ever need read
 * access to the one file: the database keeps a rollback journal, not a WAL, so a reader
 * needs no -shm file to write and no directory it can write (see docs/design.md).
 *
 * A root daemon must not write where others can: the directory must be the sampler's and
 * closed to group and others, the files regular files, never symlinks. The installed
 * service runs as a dynamic user whose uid install cannot know, so install makes the
 * directory root's and the service takes what is root's with CAP_CHOWN (its unit gives it
 * all back to root when it stops: nothing stays owned by a uid systemd may hand out again).
 */

import { CAP_CHOWN, effectiveCaps, hasCap } from "../lib/capabilities.ts";
import { HistoryError } from "./db.ts";

export function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : "/";
}

/** The database's mode: group-readable when the owner's group is to read it. */
export function fileMode(ownerGid: number | null): number {
  return ownerGid === null ? 0o600 : 0o640;
}

/** Makes `path` (a directory or a file) this process's, or says why it cannot be. */
function ensureOurs(path: string, st: Deno.FileInfo, what: string): void {
  const me = Deno.uid();
  if (st.uid === me) return;
  if (st.uid === 0 && hasCap(effectiveCaps(), CAP_CHOWN)) {
    Deno.chownSync(path, me, null);
    return;
  }
  throw new HistoryError(
    `History ${what} "${path}" is owned by uid ${st.uid}, not by the sampler (uid ${me}): ` +
      `only the sampler may write history; \`chown -R ${me} ${dirOf(path)}\` or move it away`,
  );
}

/** Sets group (null: leave it) and mode where they differ (the file is ours by now). */
function settle(path: string, want: { gid: number | null; mode: number }): void {
  const st = Deno.lstatSync(path);
  if (want.gid !== null && st.gid !== want.gid) Deno.chownSync(path, null, want.gid);
  if (((st.mode ?? 0) & 0o7777) !== want.mode) Deno.chmodSync(path, want.mode);
}

/**
 * The directory holding the database: made (0750/0700, the owner's group) when missing;
 * else it must be a real directory, the sampler's (or root's, taken), not writable by
 * group or others. Its mode is left as it is: it may be the output directory.
 */
export function prepareDirectory(dir: string, ownerGid: number | null): void {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    const mode = ownerGid === null ? 0o700 : 0o750;
    Deno.mkdirSync(dir, { recursive: true, mode });
    settle(dir, { gid: ownerGid, mode });
    return;
  }
  if (st.isSymlink || !st.isDirectory) {
    throw new HistoryError(
      `History directory "${dir}" is a symlink or not a directory: point history at a real ` +
        `directory (run --history-db)`,
    );
  }
  const took = st.uid === 0 && Deno.uid() !== 0;
  ensureOurs(dir, st, "directory");
  if (took) settle(dir, { gid: ownerGid, mode: ownerGid === null ? 0o700 : 0o750 });
  const mode = (Deno.lstatSync(dir).mode ?? 0) & 0o7777;
  if ((mode & 0o022) !== 0) {
    throw new HistoryError(
      `History directory "${dir}" is writable by group or others (mode ${mode.toString(8)}): ` +
        `\`chmod go-w ${dir}\`, or point history elsewhere (run --history-db)`,
    );
  }
}

/**
 * The database file and its journal, if there: regular files, the sampler's, with the
 * readers' group and mode. A missing database is created here, exclusively, so SQLite
 * finds it with the right mode and gives its journal the same.
 */
export function prepareFiles(path: string, ownerGid: number | null): void {
  const mode = fileMode(ownerGid);
  for (const p of [path, `${path}-journal`]) {
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(p);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      if (p !== path) continue;
      Deno.openSync(p, { createNew: true, write: true, mode }).close();
      st = Deno.lstatSync(p);
    }
    if (st.isSymlink || !st.isFile) {
      throw new HistoryError(
        `History file "${p}" is a symlink or not a regular file: move it away`,
      );
    }
    ensureOurs(p, st, "file");
    settle(p, { gid: ownerGid, mode });
  }
}

/** The writer's lock file, when a crash left it: the sampler's, like the database. */
export function prepareLockFile(path: string): void {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (st.isSymlink || !st.isFile) {
    throw new HistoryError(`History lock "${path}" is a symlink or not a regular file: remove it`);
  }
  ensureOurs(path, st, "lock");
}

/** A name beside `path` for a database moved aside: "history.sqlite.broken-20250330T1402Z". */
export function asideName(path: string, nowUnix: number): string {
  const stamp = new Date(nowUnix * 1000).toISOString().replace(/[-:]/g, "").replace(
    /\.\d+Z$/,
    "Z",
  );
  return `${path}.broken-${stamp}`;
}
