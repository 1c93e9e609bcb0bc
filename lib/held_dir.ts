/**
 * A directory `run` writes into, held open by its descriptor. It is reached from "/" one
 * component at a time, each opened with O_NOFOLLOW (no symlink anywhere on the way), and
 * each ancestor is judged as it is passed: owned by root or the running user, and closed to
 * others (a sticky directory like /tmp excepted). Every later operation — create, write,
 * rename, remove, read, chmod, chown, lock — is relative to that descriptor and never
 * follows a symlink, so whoever later swaps a parent for a symlink cannot steer root's
 * writes: the descriptor still names the directory that was checked.
 *
 * Writes replace files whole: a temp file created exclusively beside the target, then
 * renamed over it; readers see the old or the new file, never a part. `durable` adds the
 * fsyncs a power loss needs (the file before the rename, the directory after).
 *
 * `run` publishes every interval, so this goes straight to libc (see lib/libc.ts for what
 * Deno's ops cost there) and makes each name's C strings once.
 */

import {
  cString,
  EEXIST,
  ELOOP,
  ENOENT,
  ENOTDIR,
  errno,
  type FileStat,
  libc,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NOFOLLOW,
  O_RDONLY,
  O_WRONLY,
  osError,
  statAt,
} from "./libc.ts";

export class DirError extends Error {
  override name = "DirError";
}

const O_NONBLOCK = 0o4000;
const AT_REMOVEDIR = 0x200;
const ENOTEMPTY = 39;

export type DirOwner = "self" | "root" | "any";

export interface HoldOptions {
  /** What the directory is for, in messages: "Output directory". */
  what: string;
  /** Mode of the directory when it is made here (missing parents get 0755); absent: never made. */
  create?: number;
  /**
   * Who may own the directory itself: "self" (default: one `run` makes and writes), "root"
   * too (one it only puts a file into), or "any" (`reset` as root, in the sampler's
   * directory, which it treats as hostile: no-follow, exclusive creates). Ancestors must
   * be root's or the running user's whatever this says.
   */
  owner?: DirOwner;
  /**
   * Accept ancestors other users own (still closed to group and others). Only for a
   * directory `run` puts one file into: Debian's /var/lib/prometheus belongs to the
   * prometheus user, and without a symlink on the way that user can only choose among
   * directories already inside its own tree, none of which passes the final check.
   */
  othersOwnAncestors?: boolean;
  /**
   * The directory itself may be group-writable: only for the Prometheus textfile
   * directory, which install opens to the service's own group with an ACL entry (the mode's
   * group bits then show the ACL mask). Files there are only ever created exclusively and
   * renamed into place, so another writer can replace them but never redirect the write.
   */
  groupWritable?: boolean;
  /** The running uid (tests pass another). */
  uid?: number;
}

export interface SubOptions {
  /** What the subdirectory is for, in messages: "Runtime state directory". */
  what: string;
  /** Its permission bits (e.g. 0700): made with them, set to them when they differ. */
  mode: number;
  /** "any": someone else's directory is accepted and its mode left alone; default "self". */
  owner?: DirOwner;
}

export interface WriteOptions {
  /** Permission bits of the file. */
  mode: number;
  /** chown target; null leaves it owned by the writer. */
  uid: number | null;
  gid: number | null;
  /** fsync the file before the rename and the directory after: it survives a power loss. */
  durable?: boolean;
}

const encoder = new TextEncoder();
/** Reused for every write; grown when a file needs more. */
let scratch = new Uint8Array(16 * 1024);

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

/** Writes all of `bytes` to `fd`; `what` names the file in errors. */
export function writeAll(fd: number, bytes: Uint8Array<ArrayBuffer>, what: string): void {
  const c = libc();
  let off = 0;
  while (off < bytes.length) {
    const n = c.write(fd, bytes.subarray(off), BigInt(bytes.length - off));
    if (n < 0) throw osError(errno(), `write '${what}'`);
    off += Number(n);
  }
}

/** The uid this process runs as (Deno says null only on Windows). */
export function myUid(): number {
  return Deno.uid() ?? 0;
}

/**
 * Why a directory on the way may not be trusted, or null. `final`: the directory itself,
 * owned as `owner` says and closed to group and others (unless anyone may own it); an
 * ancestor must be root's or the running user's, open to others only with the sticky bit
 * (/tmp), to group only when the group is root's.
 */
export function distrust(
  st: FileStat,
  o: {
    uid: number;
    final: boolean;
    owner: DirOwner;
    othersOwnAncestors?: boolean;
    groupWritable?: boolean;
  },
) {
  if (st.type !== "directory") return "is not a directory";
  if (o.final && o.owner === "any") return null;
  const selfOnly = o.final && o.owner === "self";
  const anyOwner = !o.final && o.othersOwnAncestors === true;
  if (st.uid !== o.uid && (selfOnly || st.uid !== 0) && !anyOwner) {
    return `is owned by uid ${st.uid}, not by ${selfOnly ? "" : "root or "}the user running ` +
      `stb-netacct (uid ${o.uid}), who alone may decide what is in it: ` +
      `\`chown ${o.uid === 0 ? "root" : o.uid}\` it or pick another directory`;
  }
  const sticky = !o.final && (st.mode & 0o1000) !== 0;
  const groupOk = o.final ? o.groupWritable === true : st.gid === 0;
  if (((st.mode & 0o002) !== 0 || ((st.mode & 0o020) !== 0 && !groupOk)) && !sticky) {
    return `is writable by ${(st.mode & 0o002) !== 0 ? "others" : `group ${st.gid}`} (mode ` +
      `${st.mode.toString(8)}), who could swap what root writes there: \`chmod go-w\` it`;
  }
  return null;
}

/** A directory held open by descriptor; see the header. */
export class HeldDir {
  /** C strings of the names used here, made once: `run` writes the same few every interval. */
  readonly #names = new Map<string, Uint8Array<ArrayBuffer>>();
  #fd: number;

  private constructor(readonly path: string, fd: number, readonly ino: bigint) {
    this.#fd = fd;
  }

  /**
   * Walks to `path` without following a symlink, judging every directory on the way (see
   * `distrust`), making missing ones when `create` is given. Throws DirError naming the
   * directory at fault and the fix.
   */
  static hold(path: string, options: HoldOptions): HeldDir {
    const uid = options.uid ?? myUid();
    const parts = path.split("/").filter((p) => p !== "" && p !== ".");
    if (!path.startsWith("/") || parts.includes("..")) {
      throw new DirError(`${options.what} "${path}" must be an absolute path without ".."`);
    }
    const c = libc();
    let fd = c.open(cString("/"), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) throw osError(errno(), "open '/'");
    let at = "";
    try {
      for (const [i, part] of parts.entries()) {
        const final = i === parts.length - 1;
        at += `/${part}`;
        const next = openDirAt(fd, part, {
          at,
          mode: final ? options.create : options.create === undefined ? undefined : 0o755,
          what: options.what,
          path,
        });
        c.close(fd);
        fd = next.fd;
        const st = statAt(fd, "", at)!;
        const why = distrust(st, {
          uid,
          final,
          owner: options.owner ?? "self",
          othersOwnAncestors: options.othersOwnAncestors,
          groupWritable: options.groupWritable,
        });
        if (why !== null) {
          throw new DirError(
            `${options.what} "${path}": ${final ? "it" : `"${at}" on its way`} ${why}`,
          );
        }
        // Made just now: the umask may have trimmed the mode asked for.
        if (next.made && c.fchmod(fd, next.mode) !== 0) throw osError(errno(), `chmod '${at}'`);
      }
      const st = statAt(fd, "", path)!;
      return new HeldDir(path === "/" ? "" : path.replace(/\/+$/, ""), fd, st.ino);
    } catch (e) {
      c.close(fd);
      throw e;
    }
  }

  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.path} is closed`);
    return this.#fd;
  }

  /** The full path of `name` here, for messages. */
  pathOf(name: string): string {
    return `${this.path}/${name}`;
  }

  #c(name: string): Uint8Array<ArrayBuffer> {
    let s = this.#names.get(name);
    if (!s) this.#names.set(name, s = cString(name));
    return s;
  }

  /** Whether `other` holds the same directory. */
  same(other: HeldDir): boolean {
    return other.ino === this.ino && statAt(other.fd, "", other.path)?.dev ===
        statAt(this.fd, "", this.path)?.dev;
  }

  /** What is at `name` (a symlink itself, not followed), or null. */
  stat(name: string): FileStat | null {
    return statAt(this.fd, name, this.pathOf(name));
  }

  /**
   * A subdirectory only this user may enter (`opts.mode`, e.g. 0700), made when missing. A
   * symlink there is refused, and so is someone else's directory unless `owner` is "any".
   */
  sub(name: string, opts: SubOptions): HeldDir {
    const { mode, what, owner = "self" } = opts;
    const at = this.pathOf(name);
    const next = openDirAt(this.fd, name, { at, mode, what, path: at });
    const c = libc();
    try {
      const st = statAt(next.fd, "", at)!;
      const why = distrust(st, { uid: myUid(), final: true, owner });
      if (why !== null) throw new DirError(`${what} "${at}" ${why}`);
      if (owner !== "any" && st.mode !== mode && c.fchmod(next.fd, mode) !== 0) {
        throw osError(errno(), `chmod '${at}'`);
      }
      return new HeldDir(at, next.fd, st.ino);
    } catch (e) {
      c.close(next.fd);
      throw e;
    }
  }

  /**
   * Opens `name` here with O_NOFOLLOW (and O_CLOEXEC) added to `flags`; returns the fd.
   * A symlink at `name` fails (ELOOP) rather than being followed.
   */
  open(name: string, flags: number, mode = 0): number {
    const fd = libc().openat(this.fd, this.#c(name), flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) throw osError(errno(), `open '${this.pathOf(name)}'`);
    return fd;
  }

  /**
   * The text of the regular file `name`, or null when nothing is there. Refuses a symlink,
   * a FIFO (never blocks on one) or anything over `maxBytes`.
   */
  readText(name: string, maxBytes: number): string | null {
    let fd: number;
    try {
      fd = this.open(name, O_RDONLY | O_NONBLOCK);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
    try {
      return readOpenFile(fd, this.pathOf(name), maxBytes);
    } finally {
      libc().close(fd);
    }
  }

  /**
   * Replaces `name` with `data` whole (see the header). The temp file is created
   * exclusively: a planted symlink at its name is removed, never written through.
   */
  writeAtomic(name: string, data: string, opts: WriteOptions): void {
    const c = libc();
    const tmp = `.${name}.${Deno.pid}.tmp`; // one per process and name: sync writes never overlap
    const tmpC = this.#c(tmp), nameC = this.#c(name);
    const flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    let fd = c.openat(this.fd, tmpC, flags, opts.mode);
    if (fd < 0 && errno() === EEXIST) {
      // Left by a process that died mid-write with this pid (pids are reused across boots).
      c.unlinkat(this.fd, tmpC, 0);
      fd = c.openat(this.fd, tmpC, flags, opts.mode);
    }
    if (fd < 0) throw osError(errno(), `open '${this.pathOf(tmp)}'`);
    try {
      try {
        writeAll(fd, encode(data), this.pathOf(tmp));
        // Only when the umask may have trimmed the open mode.
        if ((opts.mode & processUmask()) !== 0 && c.fchmod(fd, opts.mode) !== 0) {
          throw osError(errno(), `chmod '${this.pathOf(tmp)}'`);
        }
        if (opts.uid !== null || opts.gid !== null) {
          // (uid_t)-1 leaves that id as it is, as chown(2) documents.
          if (c.fchown(fd, opts.uid ?? 0xffffffff, opts.gid ?? 0xffffffff) !== 0) {
            throw osError(errno(), `chown '${this.pathOf(tmp)}'`);
          }
        }
        if (opts.durable && c.fsync(fd) !== 0) throw osError(errno(), `fsync '${tmp}'`);
      } finally {
        c.close(fd);
      }
      if (c.renameat(this.fd, tmpC, this.fd, nameC) !== 0) {
        throw osError(errno(), `rename '${this.pathOf(tmp)}' -> '${this.pathOf(name)}'`);
      }
    } catch (e) {
      c.unlinkat(this.fd, tmpC, 0); // already gone is fine
      throw e;
    }
    if (opts.durable) this.sync();
  }

  /**
   * Creates `name` with `data` only if nothing is there (O_EXCL: not even a symlink is
   * followed). AlreadyExists when something is.
   */
  createExclusive(name: string, data: string, mode: number): void {
    const fd = this.open(name, O_WRONLY | O_CREAT | O_EXCL, mode);
    try {
      writeAll(fd, encode(data), this.pathOf(name));
    } finally {
      libc().close(fd);
    }
  }

  /** Renames `from` to `to` here (replacing it); false when `from` is not there. */
  rename(from: string, to: string): boolean {
    if (libc().renameat(this.fd, this.#c(from), this.fd, this.#c(to)) === 0) return true;
    const e = errno();
    if (e === ENOENT) return false;
    throw osError(e, `rename '${this.pathOf(from)}' -> '${this.pathOf(to)}'`);
  }

  /** Removes the entry `name` (a symlink itself, never its target); false when absent. */
  remove(name: string): boolean {
    if (libc().unlinkat(this.fd, this.#c(name), 0) === 0) return true;
    const e = errno();
    if (e === ENOENT) return false;
    throw osError(e, `remove '${this.pathOf(name)}'`);
  }

  /** Removes the empty subdirectory `name`; false when absent or not empty. */
  removeDir(name: string): boolean {
    if (libc().unlinkat(this.fd, this.#c(name), AT_REMOVEDIR) === 0) return true;
    const e = errno();
    if (e === ENOENT || e === ENOTEMPTY) return false;
    throw osError(e, `rmdir '${this.pathOf(name)}'`);
  }

  /** fsync of the directory: the renames and removals in it survive a power loss. */
  sync(): void {
    if (libc().fsync(this.fd) !== 0) throw osError(errno(), `fsync '${this.path}'`);
  }

  close(): void {
    if (this.#fd >= 0) libc().close(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Opens the directory `name` in `dirfd` without following a symlink, making it first
 * (with `mode`) when it is missing and `mode` is given.
 */
function openDirAt(
  dirfd: number,
  name: string,
  o: { at: string; mode?: number; what: string; path: string },
): { fd: number; made: boolean; mode: number } {
  const c = libc();
  const nameC = cString(name);
  const flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  let made = false;
  let fd = c.openat(dirfd, nameC, flags, 0);
  if (fd < 0 && errno() === ENOENT && o.mode !== undefined) {
    if (c.mkdirat(dirfd, nameC, o.mode) === 0) made = true;
    else if (errno() !== EEXIST) throw osError(errno(), `mkdir '${o.at}'`);
    fd = c.openat(dirfd, nameC, flags, 0);
  }
  if (fd >= 0) return { fd, made, mode: o.mode ?? 0 };
  const e = errno();
  if (e === ELOOP || e === ENOTDIR) {
    const st = statAt(dirfd, name, o.at);
    if (st?.type === "symlink") {
      throw new DirError(
        `${o.what} "${o.path}": "${o.at}" is a symlink, which others could repoint: ` +
          `name the real path${realHint(o.path)}`,
      );
    }
    throw new DirError(`${o.what} "${o.path}": "${o.at}" is not a directory`);
  }
  throw osError(e, `open '${o.at}'`);
}

function realHint(path: string): string {
  try {
    return ` "${Deno.realPathSync(path)}"`;
  } catch {
    return "";
  }
}

/** Reads a whole regular file from `fd` (at most `maxBytes`); `what` names it. */
export function readOpenFile(fd: number, what: string, maxBytes: number): string {
  const st = statAt(fd, "", what)!;
  if (st.type !== "file") throw new Error(`"${what}" is not a regular file`);
  if (st.size > maxBytes) {
    throw new Error(`"${what}" is ${st.size} bytes, over the ${maxBytes}-byte limit`);
  }
  const buf = new Uint8Array(Math.min(maxBytes, st.size) + 1);
  let off = 0;
  while (off < buf.length) {
    const n = Number(libc().read(fd, buf.subarray(off), BigInt(buf.length - off)));
    if (n < 0) throw osError(errno(), `read '${what}'`);
    if (n === 0) break;
    off += n;
  }
  if (off > maxBytes) throw new Error(`"${what}" is over the ${maxBytes}-byte limit`);
  return new TextDecoder().decode(buf.subarray(0, off));
}
