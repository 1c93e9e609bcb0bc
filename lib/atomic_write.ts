/**
 * Publishing a file readers may open at any moment: write a temp file in the same
 * directory (created exclusively, so a planted symlink is never followed), then rename
 * it over the target. Readers see the old or the new file, never a partial one.
 *
 * `run` does this every interval (counters.json; the saved totals and the node-exporter
 * textfile less often), so it goes straight to libc (see lib/libc.ts for what Deno's ops
 * cost there), makes each path's C strings once, and chmods only when the umask asks.
 */

import {
  cString,
  errno,
  libc,
  O_CLOEXEC,
  O_CREAT,
  O_EXCL,
  O_NOFOLLOW,
  O_WRONLY,
  osError,
} from "./libc.ts";

export interface AtomicWriteOptions {
  /** Permission bits of the published file. */
  mode: number;
  /** chown target; null leaves it owned by the writer. */
  uid: number | null;
  gid: number | null;
}

const encoder = new TextEncoder();
const EEXIST = 17;

/** The C strings of one published path, made once: `run` writes the same few every interval. */
interface Target {
  tmp: string;
  tmpC: Uint8Array<ArrayBuffer>;
  pathC: Uint8Array<ArrayBuffer>;
}
const targets = new Map<string, Target>();
/** Reused for every write; grown when a file needs more. */
let scratch = new Uint8Array(16 * 1024);

function targetOf(path: string): Target {
  let t = targets.get(path);
  if (!t) {
    const slash = path.lastIndexOf("/");
    const dir = slash > 0 ? path.slice(0, slash) : "/";
    // One name per process and target: a sync write is never concurrent with another.
    const tmp = `${dir}/.${path.slice(slash + 1)}.${Deno.pid}.tmp`;
    t = { tmp, tmpC: cString(tmp), pathC: cString(path) };
    targets.set(path, t);
  }
  return t;
}

function encode(data: string): Uint8Array<ArrayBuffer> {
  for (;;) {
    const { read, written } = encoder.encodeInto(data, scratch);
    if (read === data.length) return scratch.subarray(0, written);
    scratch = new Uint8Array(data.length * 3); // UTF-8 needs at most 3 bytes per UTF-16 unit
  }
}

let umask: number | null = null;

/** The process umask, read once (reading it with umask(2) would change it). */
function processUmask(): number {
  if (umask === null) {
    try {
      const octal = /^Umask:\s*([0-7]+)$/m.exec(Deno.readTextFileSync("/proc/self/status"))?.[1];
      umask = octal ? parseInt(octal, 8) : 0o777;
    } catch {
      umask = 0o777; // unknown: always chmod
    }
  }
  return umask;
}

export function writeFileAtomic(path: string, data: string, opts: AtomicWriteOptions): void {
  const c = libc();
  const { tmp, tmpC, pathC } = targetOf(path);
  const flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  // O_EXCL fails on an existing path, symlinks included: nothing is written through one.
  let fd = c.open(tmpC, flags, opts.mode);
  if (fd < 0 && errno() === EEXIST) {
    // Left by a process that died mid-write with this pid (pids are reused across boots).
    c.unlink(tmpC);
    fd = c.open(tmpC, flags, opts.mode);
  }
  if (fd < 0) throw osError(errno(), `open '${tmp}'`);
  try {
    try {
      const bytes = encode(data);
      let off = 0;
      while (off < bytes.length) {
        const n = c.write(fd, bytes.subarray(off), BigInt(bytes.length - off));
        if (n < 0) throw osError(errno(), `write '${tmp}'`);
        off += Number(n);
      }
      // Only when the umask may have trimmed the open mode.
      if ((opts.mode & processUmask()) !== 0 && c.fchmod(fd, opts.mode) !== 0) {
        throw osError(errno(), `chmod '${tmp}'`);
      }
      if (opts.uid !== null || opts.gid !== null) {
        // (uid_t)-1 leaves that id as it is, as chown(2) documents.
        if (c.fchown(fd, opts.uid ?? 0xffffffff, opts.gid ?? 0xffffffff) !== 0) {
          throw osError(errno(), `chown '${tmp}'`);
        }
      }
    } finally {
      c.close(fd);
    }
    if (c.rename(tmpC, pathC) !== 0) throw osError(errno(), `rename '${tmp}' -> '${path}'`);
  } catch (e) {
    c.unlink(tmpC); // already gone is fine
    throw e;
  }
}
