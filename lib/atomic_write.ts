/**
 * Publishing a file readers may open at any moment: write a temp file in the same
 * directory (created exclusively, so a planted symlink is never followed), then rename
 * it over the target. Readers see the old or the new file, never a partial one.
 *
 * `run` does this every interval (counters.json, the saved totals, the node-exporter
 * textfile), so it goes straight to libc: see lib/libc.ts for what Deno's ops cost there.
 */

import {
  check,
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

let sequence = 0;
const encoder = new TextEncoder();

export function writeFileAtomic(path: string, data: string, opts: AtomicWriteOptions): void {
  const c = libc();
  const slash = path.lastIndexOf("/");
  const dir = slash > 0 ? path.slice(0, slash) : "/";
  const base = path.slice(slash + 1);
  const tmp = `${dir}/.${base}.${Deno.pid}.${sequence++}.tmp`;
  const tmpC = cString(tmp);
  // O_EXCL fails on an existing path, symlinks included: nothing is written through one.
  const fd = c.open(tmpC, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, opts.mode);
  check(fd, `open '${tmp}'`);
  try {
    try {
      const bytes = encoder.encode(data);
      let off = 0;
      while (off < bytes.length) {
        const n = c.write(fd, bytes.subarray(off), BigInt(bytes.length - off));
        check(n, `write '${tmp}'`);
        off += Number(n);
      }
      // The umask may have trimmed the open mode.
      check(c.fchmod(fd, opts.mode), `chmod '${tmp}'`);
      if (opts.uid !== null || opts.gid !== null) {
        // (uid_t)-1 leaves that id as it is, as chown(2) documents.
        check(c.fchown(fd, opts.uid ?? 0xffffffff, opts.gid ?? 0xffffffff), `chown '${tmp}'`);
      }
    } finally {
      c.close(fd);
    }
    if (c.rename(tmpC, cString(path)) !== 0) throw osError(errno(), `rename '${tmp}' -> '${path}'`);
  } catch (e) {
    c.unlink(tmpC); // already gone is fine
    throw e;
  }
}
