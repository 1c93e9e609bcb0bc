/**
 * The libc calls the sampler makes every interval, through FFI: in `run`'s cold wake-ups a
 * Deno op costs several times a bare syscall and an absent file (a reset request, an
 * absent node-exporter directory) builds an exception every time; here it is a return
 * value, and publishing a file is six syscalls and no allocation beyond the bytes.
 *
 * `run`'s hot path, the helpers it shares and the libbpf glue (bpf/libbpf.ts) use this
 * one table; the library is opened on first use. glibc's statx wrapper needs glibc 2.28.
 */

const SYMBOLS = {
  // int *__errno_location(void): the calling thread's errno
  __errno_location: { parameters: [], result: "pointer" },
  // char *strerror(int errnum /* i32 */)
  strerror: { parameters: ["i32"], result: "pointer" },
  // int open(const char *path /* buffer */, int flags /* i32 */, mode_t mode /* u32 */)
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // int openat(int dirfd /* i32 */, const char *path /* buffer */, int flags /* i32 */,
  //            mode_t mode /* u32 */)
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  // int mkdirat(int dirfd /* i32 */, const char *path /* buffer */, mode_t mode /* u32 */)
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // int renameat(int olddirfd /* i32 */, const char *oldpath /* buffer */,
  //              int newdirfd /* i32 */, const char *newpath /* buffer */)
  renameat: { parameters: ["i32", "buffer", "i32", "buffer"], result: "i32" },
  // int unlinkat(int dirfd /* i32 */, const char *path /* buffer */, int flags /* i32 */)
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // int fsync(int fd /* i32 */)
  fsync: { parameters: ["i32"], result: "i32" },
  // int ftruncate(int fd /* i32 */, off_t length /* i64 */)
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // ssize_t write(int fd /* i32 */, const void *buf /* buffer */, size_t count /* usize */)
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int fchmod(int fd /* i32 */, mode_t mode /* u32 */)
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  // int fchown(int fd /* i32 */, uid_t owner /* u32 */, gid_t group /* u32 */)
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
  // int close(int fd /* i32 */)
  close: { parameters: ["i32"], result: "i32" },
  // int rename(const char *oldpath /* buffer */, const char *newpath /* buffer */)
  rename: { parameters: ["buffer", "buffer"], result: "i32" },
  // int unlink(const char *path /* buffer */)
  unlink: { parameters: ["buffer"], result: "i32" },
  // int flock(int fd /* i32 */, int operation /* i32 */)
  flock: { parameters: ["i32", "i32"], result: "i32" },
  // int clock_gettime(clockid_t clk /* i32 */, struct timespec *tp /* 16-byte buffer */)
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  // int statx(int dirfd /* i32 */, const char *path /* buffer */, int flags /* i32 */,
  //           unsigned int mask /* u32 */, struct statx *buf /* 256-byte buffer */)
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  // int vsnprintf(char *str /* buffer */, size_t size /* usize */,
  //               const char *format /* pointer */, va_list ap /* pointer */)
  // va_list is passed as a pointer on x86-64 and arm64 alike, so a va_list libbpf hands its
  // print callback is forwarded as is (bpf/libbpf.ts).
  vsnprintf: { parameters: ["buffer", "usize", "pointer", "pointer"], result: "i32" },
  // unsigned int if_nametoindex(const char *ifname /* buffer */): 0 when there is none
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  // ssize_t pread(int fd /* i32 */, void *buf /* buffer */, size_t count /* usize */,
  //               off_t offset /* i64 */)
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  // ssize_t read(int fd /* i32 */, void *buf /* buffer */, size_t count /* usize */)
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int epoll_create1(int flags /* i32 */)
  epoll_create1: { parameters: ["i32"], result: "i32" },
  // int epoll_ctl(int epfd /* i32 */, int op /* i32 */, int fd /* i32 */,
  //               struct epoll_event *event /* 12-byte packed buffer on x86-64 */)
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // int epoll_wait(int epfd /* i32 */, struct epoll_event *events /* buffer */,
  //                int maxevents /* i32 */, int timeout_ms /* i32 */)
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  // The same call on a Deno worker thread, for waiting with the event loop running.
  epoll_wait_async: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // int eventfd(unsigned int initval /* u32 */, int flags /* i32 */)
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  // int inotify_init1(int flags /* i32 */)
  inotify_init1: { parameters: ["i32"], result: "i32" },
  // int inotify_add_watch(int fd /* i32 */, const char *path /* buffer */, uint32_t mask /* u32 */)
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // int socket(int domain /* i32 */, int type /* i32 */, int protocol /* i32 */)
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // ssize_t sendto(int fd /* i32 */, const void *buf /* buffer */, size_t len /* usize */,
  //                int flags /* i32 */, const struct sockaddr *addr /* buffer */,
  //                socklen_t addrlen /* u32 */)
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
} as const;

export const O_RDONLY = 0, O_WRONLY = 0o1, O_RDWR = 0o2, O_CREAT = 0o100, O_EXCL = 0o200;
export const O_DIRECTORY = 0o200000, O_NOFOLLOW = 0o400000, O_CLOEXEC = 0o2000000;
export const O_APPEND = 0o2000;
export const LOCK_EX = 2, LOCK_NB = 4;
export const CLOCK_MONOTONIC = 1;
export const EAGAIN = 11, EINTR = 4;
export const ENOENT = 2, EEXIST = 17, EACCES = 13, EPERM = 1, ENOTDIR = 20, ELOOP = 40;
export const AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, AT_EMPTY_PATH = 0x1000;
const STATX_TYPE = 0x1, STATX_INO = 0x100, STATX_BASIC_STATS = 0x7ff;
const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000;

let library: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

/** The symbols, opened once. */
export function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  library ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return library.symbols;
}

const encoder = new TextEncoder();

/** A string (a path, a name) as the NUL-terminated bytes C wants. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(s + "\0");
}

/** errno of the last failed call on this thread; read it before any other libc call. */
export function errno(): number {
  const at = libc().__errno_location();
  return at === null ? 0 : new Deno.UnsafePointerView(at).getInt32();
}

/**
 * The error Deno itself would throw for `errnum` (NotFound, AlreadyExists,
 * PermissionDenied, NotADirectory, else Error), worded like Deno's: callers and tests that
 * tell errors apart by class keep working whichever API failed.
 */
export function osError(errnum: number, what: string): Error {
  const text = libc().strerror(errnum);
  const reason = text === null ? "Unknown error" : Deno.UnsafePointerView.getCString(text);
  const message = `${reason} (os error ${errnum}): ${what}`;
  switch (errnum) {
    case ENOENT:
      return new Deno.errors.NotFound(message);
    case EEXIST:
      return new Deno.errors.AlreadyExists(message);
    case EACCES:
    case EPERM:
      return new Deno.errors.PermissionDenied(message);
    case ENOTDIR:
      return new Deno.errors.NotADirectory(message);
    default:
      return new Error(message);
  }
}

/** Throws osError for a C call's result when it is negative (a failure). */
export function check(result: number | bigint, what: string): void {
  if (result < 0) throw osError(errno(), what);
}

export interface PathInfo {
  ino: bigint;
  isDirectory: boolean;
  isFile: boolean;
}

const statxBuf = new Uint8Array(256);
const statxView = new DataView(statxBuf.buffer);

/**
 * Type and inode of `path` (the link itself when `followSymlinks` is false), or null when
 * nothing is there (ENOENT, or a path component is not a directory). Other failures throw.
 */
export function pathInfo(path: string, followSymlinks = true): PathInfo | null {
  const flags = followSymlinks ? 0 : AT_SYMLINK_NOFOLLOW;
  if (libc().statx(AT_FDCWD, cString(path), flags, STATX_TYPE | STATX_INO, statxBuf) !== 0) {
    const e = errno();
    if (e === ENOENT || e === ENOTDIR) return null;
    throw osError(e, `statx '${path}'`);
  }
  // struct statx: __u16 stx_mode at 28, __u64 stx_ino at 32 (the same on every arch).
  const type = statxView.getUint16(28, true) & S_IFMT;
  return {
    ino: statxView.getBigUint64(32, true),
    isDirectory: type === S_IFDIR,
    isFile: type === S_IFREG,
  };
}

/** What statx says of one file: its type, permission bits, owner, size and identity. */
export interface FileStat {
  type: "file" | "directory" | "symlink" | "other";
  /** Permission bits with setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  ino: bigint;
  /** dev_t as stat(2) returns it (major and minor encoded), for /proc/locks. */
  dev: number;
}

function typeOf(mode: number): FileStat["type"] {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "directory";
    case S_IFLNK:
      return "symlink";
    default:
      return "other";
  }
}

/**
 * statx of `name` relative to `dirfd` without following a final symlink, or of `dirfd`
 * itself when `name` is "" (fstat). Null when nothing is there; other failures throw.
 */
export function statAt(dirfd: number, name: string, what: string): FileStat | null {
  const flags = AT_SYMLINK_NOFOLLOW | (name === "" ? AT_EMPTY_PATH : 0);
  if (libc().statx(dirfd, cString(name), flags, STATX_BASIC_STATS, statxBuf) !== 0) {
    const e = errno();
    if (e === ENOENT || e === ENOTDIR) return null;
    throw osError(e, `statx '${what}'`);
  }
  // struct statx: stx_uid at 20, stx_gid at 24, stx_mode (u16) at 28, stx_ino at 32,
  // stx_size at 40, stx_dev_major at 136, stx_dev_minor at 140 (the same on every arch).
  const mode = statxView.getUint16(28, true);
  const major = statxView.getUint32(136, true), minor = statxView.getUint32(140, true);
  return {
    type: typeOf(mode),
    mode: mode & 0o7777,
    uid: statxView.getUint32(20, true),
    gid: statxView.getUint32(24, true),
    size: Number(statxView.getBigUint64(40, true)),
    ino: statxView.getBigUint64(32, true),
    // glibc's makedev, as stat(2) and Deno's stat report it.
    dev: (((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)) >>> 0) +
      (major - (major & 0xfff)) * 2 ** 32,
  };
}
