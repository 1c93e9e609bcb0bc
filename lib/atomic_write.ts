/**
 * Publishing a file readers may open at any moment: write a temp file in the same
 * directory (created exclusively, so a planted symlink is never followed), then rename
 * it over the target. Readers see the old or the new file, never a partial one.
 */

export interface AtomicWriteOptions {
  /** Permission bits of the published file. */
  mode: number;
  /** chown target; null leaves it owned by the writer. */
  uid: number | null;
  gid: number | null;
}

let sequence = 0;

export function writeFileAtomic(path: string, data: string, opts: AtomicWriteOptions): void {
  const slash = path.lastIndexOf("/");
  const dir = slash > 0 ? path.slice(0, slash) : "/";
  const base = path.slice(slash + 1);
  const tmp = `${dir}/.${base}.${Deno.pid}.${sequence++}.tmp`;
  // createNew fails on an existing path, symlinks included: nothing is written through one.
  const file = Deno.openSync(tmp, { write: true, createNew: true, mode: opts.mode });
  try {
    try {
      const bytes = new TextEncoder().encode(data);
      let off = 0;
      while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
    } finally {
      file.close();
    }
    // By path is safe here: the temp name was created exclusively by us in a directory
    // `run` has checked nobody else can write. The umask may have trimmed the open mode.
    Deno.chmodSync(tmp, opts.mode);
    if (opts.uid !== null || opts.gid !== null) Deno.chownSync(tmp, opts.uid, opts.gid);
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* already gone */ }
    throw e;
  }
}
