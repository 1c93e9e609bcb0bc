/**
 * One sampler per output: two `run`s publishing the same file would each count the same
 * packets, and their totals would interleave. flock(2) is released by the kernel when the
 * process dies however it dies, so a SIGKILLed run never leaves a stale lock. Deno exposes
 * no non-blocking lock, hence libc.
 */

import {
  cString,
  libc,
  LOCK_EX,
  LOCK_NB,
  O_CLOEXEC,
  O_CREAT,
  O_NOFOLLOW,
  O_RDWR,
  pathInfo,
} from "./libc.ts";

export class LockHeldError extends Error {
  override name = "LockHeldError";
}

export interface Lock {
  release(): void;
  /** Whether the file at the lock's path is still the one this lock holds (not removed). */
  intact(): boolean;
}

function inodeAt(path: string): bigint | null {
  return pathInfo(path, false)?.ino ?? null;
}

/** Takes an exclusive lock on `path` (created 0600), or throws LockHeldError naming the holder. */
export function acquireLock(path: string): Lock {
  const c = libc();
  const fd = c.open(
    cString(path),
    O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
    0o600,
  );
  if (fd < 0) throw new Error(`Cannot open lock file "${path}" (is it a symlink?)`);
  if (c.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    c.close(fd);
    let holder = "";
    try {
      const pid = Deno.readTextFileSync(path).trim();
      if (/^[0-9]+$/.test(pid)) holder = ` (pid ${pid})`;
    } catch { /* unreadable: name no pid */ }
    throw new LockHeldError(
      `Another stb-netacct run${holder} is already writing this output (lock "${path}"): ` +
        `stop it first (\`systemctl stop stb-netacct\`) or give --output another path`,
    );
  }
  Deno.writeTextFileSync(path, `${Deno.pid}\n`);
  const ino = inodeAt(path);
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      // Only our own file: after a removal the path may be another run's lock by now.
      if (ino !== null && inodeAt(path) === ino) {
        try {
          Deno.removeSync(path);
        } catch { /* already gone */ }
      }
      c.close(fd);
    },
    intact() {
      return held && ino !== null && inodeAt(path) === ino;
    },
  };
}

// Who holds a lock is read without FFI, so graph can ask too: lib/lock_holder.ts.
export { lockHolder, parseFlockHolder } from "./lock_holder.ts";
