/**
 * One sampler per output: two `run`s publishing the same file would each count the same
 * packets, and their totals would interleave. flock(2) is released by the kernel when the
 * process dies however it dies, so a SIGKILLed run never leaves a stale lock. Deno exposes
 * no non-blocking lock, hence libc.
 */

import { type HeldDir, readOpenFile, writeAll } from "./held_dir.ts";
import { libc, LOCK_EX, LOCK_NB, O_CREAT, O_RDWR } from "./libc.ts";
import { parseFlockHolder } from "./lock_holder.ts";

export class LockHeldError extends Error {
  override name = "LockHeldError";
}

export interface Lock {
  release(): void;
  /** Whether `dir` (the lock's directory, held anew) still has this lock's file. */
  intactIn(dir: HeldDir): boolean;
}

/**
 * Takes an exclusive lock on `name` in `dir` (created 0600, never through a symlink), or
 * throws LockHeldError naming the holder. The pid goes into the locked descriptor itself.
 */
export function acquireLock(dir: HeldDir, name: string): Lock {
  const c = libc();
  const path = dir.pathOf(name);
  let fd: number;
  try {
    fd = dir.open(name, O_RDWR | O_CREAT, 0o600);
  } catch (e) {
    throw new Error(`Cannot open lock file "${path}" (is it a symlink?)`, { cause: e });
  }
  if (c.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    let holder = "";
    try {
      const pid = readOpenFile(fd, path, 64).trim();
      if (/^[0-9]+$/.test(pid)) holder = ` (pid ${pid})`;
    } catch { /* unreadable: name no pid */ }
    c.close(fd);
    throw new LockHeldError(
      `Another stb-netacct run${holder} is already writing this output (lock "${path}"): ` +
        `stop it first (\`systemctl stop stb-netacct\`) or give --output another path`,
    );
  }
  c.ftruncate(fd, 0n);
  writeAll(fd, new TextEncoder().encode(`${Deno.pid}\n`), path);
  const ino = dir.stat(name)?.ino ?? null;
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      // Only our own file: after a removal the name may be another run's lock by now.
      try {
        if (ino !== null && dir.stat(name)?.ino === ino) dir.remove(name);
      } catch { /* the directory is gone */ }
      c.close(fd);
    },
    intactIn(current: HeldDir) {
      return held && ino !== null && current.same(dir) && current.stat(name)?.ino === ino;
    },
  };
}

// Who holds a lock by path is read without FFI, so graph can ask too: lib/lock_holder.ts.
export { lockHolder, parseFlockHolder } from "./lock_holder.ts";

/**
 * The pid of the process holding the lock `name` in the held `dir`, as the kernel knows it
 * (never the file's content, which a crashed holder may have left for a pid since reused),
 * or null.
 */
export function lockHolderIn(dir: HeldDir, name: string): number | null {
  try {
    const st = dir.stat(name);
    if (st === null) return null;
    return parseFlockHolder(Deno.readTextFileSync("/proc/locks"), st.dev, Number(st.ino));
  } catch {
    return null;
  }
}
