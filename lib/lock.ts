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
 * The pid of the process holding the lock at `path`, as the kernel knows it (never the
 * file's content, which a crashed holder may have left for a pid since reused), or null.
 */
export function lockHolder(path: string): number | null {
  try {
    const st = Deno.lstatSync(path);
    return parseFlockHolder(Deno.readTextFileSync("/proc/locks"), st.dev, st.ino!);
  } catch {
    return null;
  }
}
