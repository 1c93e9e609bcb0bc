/**
 * Who holds a sampler's lock, as the kernel knows it (/proc/locks), never by the file's
 * content, which a crashed holder may have left for a pid since reused. No FFI: readers
 * (graph, status) ask it to tell a stuck sampler from none at all.
 */

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
  return lockHolderIfKnown(path) ?? null;
}

/**
 * As lockHolder, but undefined when it cannot be known: /proc/locks unreadable (Deno asks
 * for --allow-all to read under /proc). No lock file is no holder.
 */
export function lockHolderIfKnown(path: string): number | null | undefined {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(path);
  } catch {
    return null;
  }
  let locks: string;
  try {
    locks = Deno.readTextFileSync("/proc/locks");
  } catch {
    return undefined;
  }
  return parseFlockHolder(locks, st.dev, st.ino ?? 0);
}
