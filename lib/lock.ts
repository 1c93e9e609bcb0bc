/**
 * One sampler per output: two `run`s publishing the same file would each count the same
 * packets, and their totals would interleave. flock(2) is released by the kernel when the
 * process dies however it dies, so a SIGKILLed run never leaves a stale lock. Deno exposes
 * no non-blocking lock, hence libc.
 */

import { type HeldDir, readOpenFile, writeAll } from "./held_dir.ts";
import { libc, LOCK_EX, LOCK_NB, O_CREAT, O_RDWR } from "./libc.ts";

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

/**
 * The pid holding a flock on the file with this device and inode, from /proc/locks text
 * ("1: FLOCK  ADVISORY  WRITE 4242 fe:00:131075 0 EOF", device as hex major:minor), or null.
 */
export function parseFlockHolder(procLocks: string, dev: number, ino: number): number | null {
  // dev_t as stat(2) returns it (new_encode_dev), split the way /proc/locks prints it.
  const major = ((dev >> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  for (const line of procLocks.split("\n")) {
    const f = line.trim().split(/\s+/);
    // A blocked waiter is printed as "1: -> FLOCK ...": only holders count.
    if (f[1] !== "FLOCK" || f[3] !== "WRITE") continue;
    const [maj = "", min = "", inode = ""] = f[5]?.split(":") ?? [];
    if (
      parseInt(maj, 16) === major && parseInt(min, 16) === minor && Number(inode) === ino
    ) {
      const pid = Number(f[4]);
      return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
    }
  }
  return null;
}

/**
 * The pid of the process holding the lock `name` in `dir`, as the kernel knows it (never
 * the file's content, which a crashed holder may have left for a pid since reused), or null.
 */
export function lockHolder(dir: HeldDir, name: string): number | null {
  try {
    const st = dir.stat(name);
    if (st === null) return null;
    return parseFlockHolder(Deno.readTextFileSync("/proc/locks"), st.dev, Number(st.ino));
  } catch {
    return null;
  }
}
