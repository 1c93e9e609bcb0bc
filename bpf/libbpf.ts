/**
 * The FFI boundary to libbpf.so.1 (Debian 12: package libbpf1, 1.1.x). Everything the ebpf
 * backend and the benchmark do in the kernel goes through the symbols below; nothing here
 * runs bpftool or any other tool.
 *
 * libbpf 1.x reports errors as a negative errno from int-returning calls and as NULL plus
 * errno from pointer-returning calls. `check`/`checkPointer` turn both into a LibbpfError
 * carrying the errno name and libbpf's own log lines (the verifier log included), captured
 * through libbpf_set_print: libbpf hands the callback a printf format and a va_list, which
 * only libc's vsnprintf can expand (lib/libc.ts, with the open/close attach needs).
 */

import { BackendError } from "../lib/errors.ts";
import {
  cString,
  errno as lastErrno,
  libc as libcSymbols,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
} from "../lib/libc.ts";

export { cString };

const LIBBPF_SYMBOLS = {
  /** struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz,
   *    const struct bpf_object_open_opts *opts) */
  bpf_object__open_mem: {
    parameters: [
      "buffer", // const void *obj_buf
      "usize", // size_t obj_buf_sz
      "buffer", // const struct bpf_object_open_opts *opts
    ],
    result: "pointer", // struct bpf_object * (NULL + errno on error)
  },
  /** int bpf_object__load(struct bpf_object *obj) */
  bpf_object__load: {
    parameters: ["pointer"], // struct bpf_object *obj
    result: "i32",
  },
  /** void bpf_object__close(struct bpf_object *obj) */
  bpf_object__close: {
    parameters: ["pointer"], // struct bpf_object *obj
    result: "void",
  },
  /** struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj,
   *    const char *name) */
  bpf_object__find_program_by_name: {
    parameters: [
      "pointer", // const struct bpf_object *obj
      "buffer", // const char *name (NUL-terminated)
    ],
    result: "pointer", // struct bpf_program * (NULL + errno ENOENT)
  },
  /** struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj,
   *    const char *name) */
  bpf_object__find_map_by_name: {
    parameters: [
      "pointer", // const struct bpf_object *obj
      "buffer", // const char *name (NUL-terminated)
    ],
    result: "pointer", // struct bpf_map * (NULL + errno ENOENT)
  },
  /** struct bpf_program *bpf_object__next_program(const struct bpf_object *obj,
   *    struct bpf_program *prog) */
  bpf_object__next_program: {
    parameters: [
      "pointer", // const struct bpf_object *obj
      "pointer", // struct bpf_program *prog (NULL: the first)
    ],
    result: "pointer", // struct bpf_program * (NULL after the last)
  },
  /** const char *bpf_program__name(const struct bpf_program *prog) */
  bpf_program__name: {
    parameters: ["pointer"], // const struct bpf_program *prog
    result: "pointer", // const char * (owned by the object)
  },
  /** int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size)
   *  (the verifier writes this program's log here instead of libbpf's own buffer, which
   *  libbpf would print through the print callback in one message) */
  bpf_program__set_log_buf: {
    parameters: [
      "pointer", // struct bpf_program *prog
      "buffer", // char *log_buf (kept alive until bpf_object__load returns)
      "usize", // size_t log_size
    ],
    result: "i32",
  },
  /** int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level) */
  bpf_program__set_log_level: {
    parameters: [
      "pointer", // struct bpf_program *prog
      "u32", // __u32 log_level (BPF_LOG_LEVEL1 = 1, BPF_LOG_STATS = 4)
    ],
    result: "i32",
  },
  /** int bpf_program__fd(const struct bpf_program *prog) */
  bpf_program__fd: {
    parameters: ["pointer"], // const struct bpf_program *prog
    result: "i32",
  },
  /** struct bpf_link *bpf_program__attach_cgroup(const struct bpf_program *prog, int cgroup_fd)
   *  (BPF_LINK_CREATE: multi-attach, detached when the last fd to the link closes) */
  bpf_program__attach_cgroup: {
    parameters: [
      "pointer", // const struct bpf_program *prog
      "i32", // int cgroup_fd
    ],
    result: "pointer", // struct bpf_link * (NULL + errno on error)
  },
  /** int bpf_link__destroy(struct bpf_link *link) */
  bpf_link__destroy: {
    parameters: ["pointer"], // struct bpf_link *link
    result: "i32",
  },
  /** enum bpf_attach_type bpf_program__expected_attach_type(const struct bpf_program *prog)
   *  (what libbpf derived from the program's SEC name, e.g. cgroup_skb/egress) */
  bpf_program__expected_attach_type: {
    parameters: ["pointer"], // const struct bpf_program *prog
    result: "u32", // enum bpf_attach_type
  },
  /** int bpf_map__reuse_fd(struct bpf_map *map, int fd): before bpf_object__load, the
   *  object uses this existing map (a pinned one) instead of creating its own; libbpf
   *  duplicates the fd, the caller keeps its own */
  bpf_map__reuse_fd: {
    parameters: [
      "pointer", // struct bpf_map *map
      "i32", // int fd
    ],
    result: "i32",
  },
  /** int bpf_link_create(int prog_fd, int target_fd, enum bpf_attach_type attach_type,
   *    const struct bpf_link_create_opts *opts) (BPF_LINK_CREATE; cgroup links are
   *  multi-attach and detach when the last reference, fd or pin, goes) */
  bpf_link_create: {
    parameters: [
      "i32", // int prog_fd
      "i32", // int target_fd (a cgroup directory)
      "u32", // enum bpf_attach_type attach_type
      "pointer", // const struct bpf_link_create_opts *opts (NULL: defaults)
    ],
    result: "i32", // link fd, or -errno
  },
  /** int bpf_link_update(int link_fd, int new_prog_fd, const struct bpf_link_update_opts *opts)
   *  (BPF_LINK_UPDATE: the link runs the new program from the next packet on, atomically) */
  bpf_link_update: {
    parameters: [
      "i32", // int link_fd
      "i32", // int new_prog_fd
      "pointer", // const struct bpf_link_update_opts *opts (NULL: no old-program check)
    ],
    result: "i32",
  },
  /** int bpf_link_detach(int link_fd) (BPF_LINK_DETACH: detached now, whoever else holds
   *  or pins the link) */
  bpf_link_detach: {
    parameters: ["i32"], // int link_fd
    result: "i32",
  },
  /** int bpf_obj_pin(int fd, const char *pathname) (a file in a bpffs keeps the object) */
  bpf_obj_pin: {
    parameters: [
      "i32", // int fd (map, program or link)
      "buffer", // const char *pathname (NUL-terminated, in a bpffs)
    ],
    result: "i32",
  },
  /** int bpf_obj_get(const char *pathname): a new fd to a pinned object */
  bpf_obj_get: {
    parameters: ["buffer"], // const char *pathname (NUL-terminated)
    result: "i32", // fd, or -errno
  },
  /** int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len) */
  bpf_obj_get_info_by_fd: {
    parameters: [
      "i32", // int bpf_fd
      "buffer", // void *info (struct bpf_map_info / bpf_link_info / bpf_prog_info)
      "buffer", // __u32 *info_len (in: room, out: bytes filled)
    ],
    result: "i32",
  },
  /** int bpf_map_create(enum bpf_map_type map_type, const char *map_name, __u32 key_size,
   *    __u32 value_size, __u32 max_entries, const struct bpf_map_create_opts *opts) */
  bpf_map_create: {
    parameters: [
      "u32", // enum bpf_map_type map_type
      "buffer", // const char *map_name (NUL-terminated, at most 15 characters)
      "u32", // __u32 key_size
      "u32", // __u32 value_size
      "u32", // __u32 max_entries
      "pointer", // const struct bpf_map_create_opts *opts (NULL: defaults)
    ],
    result: "i32", // map fd, or -errno
  },
  /** int bpf_map__fd(const struct bpf_map *map) */
  bpf_map__fd: {
    parameters: ["pointer"], // const struct bpf_map *map
    result: "i32",
  },
  /** int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags) */
  bpf_map_update_elem: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key
      "buffer", // const void *value
      "u64", // __u64 flags (BPF_ANY = 0)
    ],
    result: "i32",
  },
  /** int bpf_map_lookup_elem(int fd, const void *key, void *value) */
  bpf_map_lookup_elem: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key
      "buffer", // void *value (per-CPU maps: nr_possible_cpus values, 8-byte aligned each)
    ],
    result: "i32",
  },
  /** int bpf_map_delete_elem(int fd, const void *key) */
  bpf_map_delete_elem: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key
    ],
    result: "i32",
  },
  /** int bpf_map_get_next_key(int fd, const void *key, void *next_key) */
  bpf_map_get_next_key: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *key (NULL: first key)
      "buffer", // void *next_key
    ],
    result: "i32", // -ENOENT after the last key
  },
  /** int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys,
   *    void *values, __u32 *count, const struct bpf_map_batch_opts *opts) */
  bpf_map_lookup_batch: {
    parameters: [
      "i32", // int fd
      "buffer", // void *in_batch (NULL: from the start; else the previous out_batch)
      "buffer", // void *out_batch (hash maps: a __u32 position)
      "buffer", // void *keys (count * key_size bytes)
      "buffer", // void *values (count * value_size bytes)
      "buffer", // __u32 *count (in: room, out: entries returned)
      "buffer", // const struct bpf_map_batch_opts *opts (NULL: defaults)
    ],
    result: "i32", // -ENOENT with the last entries in count when the map is exhausted
  },
  /** struct ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb,
   *    void *ctx, const struct ring_buffer_opts *opts) where
   *  int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size) */
  ring_buffer__new: {
    parameters: [
      "i32", // int map_fd (a BPF_MAP_TYPE_RINGBUF)
      "function", // ring_buffer_sample_fn sample_cb
      "pointer", // void *ctx
      "pointer", // const struct ring_buffer_opts *opts (NULL: defaults)
    ],
    result: "pointer", // struct ring_buffer * (NULL + errno on error)
  },
  /** int ring_buffer__consume(struct ring_buffer *rb): runs sample_cb on every record
   *  ready now, on this thread, without waiting */
  ring_buffer__consume: {
    parameters: ["pointer"], // struct ring_buffer *rb
    result: "i32", // records consumed, or -errno
  },
  /** void ring_buffer__free(struct ring_buffer *rb) */
  ring_buffer__free: {
    parameters: ["pointer"], // struct ring_buffer *rb
    result: "void",
  },
  /** int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts) */
  bpf_prog_test_run_opts: {
    parameters: [
      "i32", // int prog_fd
      "buffer", // struct bpf_test_run_opts *opts (layout: TEST_RUN_OPTS below)
    ],
    result: "i32",
  },
  /** int bpf_enable_stats(enum bpf_stats_type type): an fd; the kernel counts each
   *  program's runs and run time while it is open (tests and benchmarks only) */
  bpf_enable_stats: {
    parameters: ["i32"], // enum bpf_stats_type type (BPF_STATS_RUN_TIME = 0)
    result: "i32", // fd, or -errno
  },
  /** __u32 libbpf_major_version(void) */
  libbpf_major_version: { parameters: [], result: "u32" },
  /** __u32 libbpf_minor_version(void) */
  libbpf_minor_version: { parameters: [], result: "u32" },
  /** int libbpf_num_possible_cpus(void) */
  libbpf_num_possible_cpus: { parameters: [], result: "i32" },
  /** long libbpf_get_error(const void *ptr): -errno for a NULL ptr (libbpf 1.x) */
  libbpf_get_error: {
    parameters: ["pointer"], // const void *ptr
    result: "i64", // long
  },
  /** int libbpf_strerror(int err, char *buf, size_t size): also knows libbpf's own codes */
  libbpf_strerror: {
    parameters: [
      "i32", // int err (positive)
      "buffer", // char *buf
      "usize", // size_t size
    ],
    result: "i32",
  },
  /** libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn) where
   *  int (*libbpf_print_fn_t)(enum libbpf_print_level level, const char *fmt, va_list ap) */
  libbpf_set_print: {
    parameters: ["function"], // libbpf_print_fn_t fn
    result: "pointer", // the previous libbpf_print_fn_t
  },
} as const;

/** enum libbpf_print_level */
const LIBBPF_WARN = 0;
const LIBBPF_DEBUG = 2;

/** struct bpf_test_run_opts (libbpf 1.1 bpf.h), sizeof 80; offsets pinned by a test. */
export const TEST_RUN_OPTS = {
  size: 80,
  sz: 0, // size_t
  data_in: 8, // const void *
  data_out: 16, // void *
  data_size_in: 24, // __u32
  data_size_out: 28, // __u32
  ctx_in: 32, // const void *
  ctx_out: 40, // void *
  ctx_size_in: 48, // __u32
  ctx_size_out: 52, // __u32
  retval: 56, // __u32
  repeat: 60, // int
  duration: 64, // __u32, average ns per repetition
  flags: 68, // __u32
  cpu: 72, // __u32
  batch_size: 76, // __u32
} as const;

/** struct bpf_object_open_opts up to relaxed_maps; libbpf accepts a shorter struct by `sz`. */
export const OPEN_OPTS = { size: 24, sz: 0, object_name: 8, relaxed_maps: 16 } as const;

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  20: "ENOTDIR",
  22: "EINVAL",
  24: "EMFILE",
  28: "ENOSPC",
  34: "ERANGE",
  38: "ENOSYS",
  95: "EOPNOTSUPP",
  524: "ENOTSUPP",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

export const PRIVILEGE_FIX = "run as root or with CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON";

export interface LibbpfFailure extends ErrorOptions {
  errno: number;
  /** What libbpf logged meanwhile, one line each. */
  log: string[];
}

/** A failed libbpf call: what was attempted, the errno, and what libbpf logged meanwhile. */
export class LibbpfError extends BackendError {
  override name = "LibbpfError";
  readonly errno: number;
  readonly log: string[];
  constructor(message: string, failure: LibbpfFailure) {
    super(message, { cause: failure.cause });
    this.errno = failure.errno;
    this.log = failure.log;
  }
}

type Libbpf = Deno.DynamicLibrary<typeof LIBBPF_SYMBOLS>["symbols"];
type Libc = ReturnType<typeof libcSymbols>;

let libbpf: Libbpf | null = null;
let libc: Libc | null = null;
/** libbpf's messages since the last checked success, one per line, newest last. */
let captured: string[] = [];
const MAX_CAPTURED_LINES = 400;
const formatBuf = new Uint8Array(4096);
const decoder = new TextDecoder();

function openLibrary<S extends Deno.ForeignLibraryInterface>(
  name: string,
  symbols: S,
  fix: string,
): Deno.DynamicLibrary<S> {
  try {
    return Deno.dlopen(name, symbols);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotCapable || cause instanceof Deno.errors.PermissionDenied) {
      throw new BackendError(
        `Loading "${name}" needs FFI permission: run with --allow-ffi (the built binary has it)`,
        { cause },
      );
    }
    throw new BackendError(`Cannot load "${name}": ${fix}`, { cause });
  }
}

/**
 * Bytes of a va_list object: on x86-64 a va_list is a 24-byte struct (passed by pointer),
 * on arm64 a 32-byte one; copying it is what va_copy does. Null elsewhere: no second pass.
 */
const VA_LIST_BYTES: number | null = Deno.build.arch === "x86_64"
  ? 24
  : Deno.build.arch === "aarch64"
  ? 32
  : null;

/**
 * libbpf's print callback: expand the va_list with vsnprintf and keep the lines. A message
 * longer than the reused buffer is formatted again, from a copy of the va_list taken before
 * the first pass consumed it, into a buffer of the size vsnprintf reported.
 */
function onLibbpfPrint(level: number, fmt: Deno.PointerValue, ap: Deno.PointerValue): number {
  if (level >= LIBBPF_DEBUG || !libc || ap === null) return 0;
  const apCopy = VA_LIST_BYTES === null ? null : new Uint8Array(VA_LIST_BYTES);
  if (apCopy) new Deno.UnsafePointerView(ap).copyInto(apCopy);
  let n = libc.vsnprintf(formatBuf, BigInt(formatBuf.length), fmt, ap);
  if (n <= 0) return 0;
  let text: Uint8Array = formatBuf.subarray(0, Math.min(n, formatBuf.length - 1));
  if (n >= formatBuf.length && apCopy) {
    const whole = new Uint8Array(n + 1);
    n = libc.vsnprintf(whole, BigInt(whole.length), fmt, Deno.UnsafePointer.of(apCopy));
    if (n > 0) text = whole.subarray(0, Math.min(n, whole.length - 1));
  }
  for (const line of decoder.decode(text).split("\n")) {
    if (line.trim() !== "") captured.push(`${level === LIBBPF_WARN ? "" : "(info) "}${line}`);
  }
  if (captured.length > MAX_CAPTURED_LINES) {
    captured.splice(0, captured.length - MAX_CAPTURED_LINES);
  }
  return n;
}

const PRINT_FN = { parameters: ["i32", "pointer", "pointer"], result: "i32" } as const;
/** Held for the life of the process: libbpf keeps calling it. */
let printCallback: Deno.UnsafeCallback<typeof PRINT_FN> | null = null;

/** The libbpf symbols, loaded once; the print hook is installed on first use. */
export function lib(): Libbpf {
  if (libbpf) return libbpf;
  let c: Libc;
  try {
    c = libcSymbols();
  } catch (cause) {
    throw new BackendError(`Cannot load "libc.so.6": is this a glibc system?`, { cause });
  }
  const b = openLibrary(
    "libbpf.so.1",
    LIBBPF_SYMBOLS,
    "install libbpf 1.x with `apt-get install libbpf1`",
  ).symbols;
  libc = c;
  printCallback = new Deno.UnsafeCallback(PRINT_FN, onLibbpfPrint);
  b.libbpf_set_print(printCallback.pointer);
  libbpf = b;
  return b;
}

/**
 * Has the kernel count every program's runs (run_cnt) and run time until `close`: the
 * BPF_ENABLE_STATS fd, so the kernel.bpf_stats_enabled sysctl others may use is untouched.
 */
export function enableRunStats(): { close(): void } {
  const fd = check("Enabling BPF run-time stats (bpf_enable_stats)", lib().bpf_enable_stats(0));
  return { close: () => closeFd(fd) };
}

/** The loaded libbpf's version, e.g. "1.1" (doctor reports it). */
export function libbpfVersion(): string {
  const b = lib();
  return `${b.libbpf_major_version()}.${b.libbpf_minor_version()}`;
}

/** What libbpf logged since the last call that `check`/`checkPointer` saw succeed. */
export function capturedLog(): string[] {
  return [...captured];
}

/** A call succeeded: its log lines are not the reason for any later failure. */
function forgetLog(): void {
  if (captured.length > 0) captured = [];
}

function strerror(errno: number): string {
  const buf = new Uint8Array(256);
  lib().libbpf_strerror(errno, buf, BigInt(buf.length));
  const end = buf.indexOf(0);
  return decoder.decode(buf.subarray(0, end < 0 ? buf.length : end));
}

/**
 * The one place a libbpf failure becomes an Error: `what` failed with `errno`; the message
 * names the errno, the fix when there is an obvious one, and quotes libbpf's (and through
 * it the kernel's) own words.
 */
export function libbpfError(what: string, errno: number): LibbpfError {
  const log = capturedLog();
  const name = errnoName(errno);
  const verifier = log.some((l) => l.includes("BEGIN PROG LOAD LOG"));
  let fix: string;
  if ((errno === 1 || errno === 13) && !verifier) fix = PRIVILEGE_FIX;
  else if (verifier) fix = "the kernel's verifier refused the program (its log is quoted)";
  else fix = "the kernel refused";
  const quoted = quoteLog(log);
  const cause = new Error(`${name}: ${strerror(errno)}${quoted ? `; libbpf: ${quoted}` : ""}`);
  return new LibbpfError(`${what} failed with ${name} (${strerror(errno)}): ${fix}`, {
    errno,
    log,
    cause,
  });
}

/** libbpf's warnings, the verifier log trimmed to its end (where the reason is). */
function quoteLog(log: string[]): string {
  const warn = log.filter((l) => !l.startsWith("(info) "));
  const lines = warn.length > 12 ? [...warn.slice(0, 2), "...", ...warn.slice(-10)] : warn;
  return lines.map((l) => l.replace(/^libbpf: /, "")).join(" | ");
}

/** Throws a LibbpfError for a negative return code, else returns it. */
export function check(what: string, rc: number): number {
  if (rc < 0) throw libbpfError(what, -rc);
  forgetLog();
  return rc;
}

/** Throws a LibbpfError for a NULL pointer result (errno read through libbpf_get_error). */
export function checkPointer(what: string, p: Deno.PointerValue): Deno.PointerObject {
  if (p === null) {
    const err = -Number(lib().libbpf_get_error(null));
    throw libbpfError(what, err > 0 ? err : 22);
  }
  forgetLog();
  return p;
}

/** A program the verifier accepted, and how much work that took it. */
export interface VerifiedProgram {
  /** The object's name, e.g. "netacct". */
  object: string;
  program: string;
  /** Instructions the verifier processed ("processed N insns"); its limit is 1,000,000. */
  insns: number | null;
}

/** A BPF object in the kernel: libbpf's handle, and what the verifier said per program. */
export interface LoadedObject {
  pointer: Deno.PointerObject;
  programs: VerifiedProgram[];
}

/** A program's log with only the verifier's statistics (and, on a refusal, its reason). */
const BPF_LOG_STATS = 4;
/** The whole log: every instruction on the refused path and the state at each branch. */
const BPF_LOG_LEVEL1 = 1;
const STATS_LOG_BYTES = 64 * 1024;
const FULL_LOG_FIRST_BYTES = 4 * 1024 * 1024;
/** Beyond this a refusal is reported with the log it filled (the reason is its last line). */
const FULL_LOG_MAX_BYTES = 256 * 1024 * 1024;
const ENOSPC = 28;

/** Every program verified in this process, oldest first, for `doctor` and the log. */
const verified: VerifiedProgram[] = [];

/** What the verifier reported for the programs this process loaded, oldest first. */
export function verifiedPrograms(): VerifiedProgram[] {
  return [...verified];
}

/** The "processed N insns" figure of a verifier log, or null. */
export function parseVerifiedInsns(log: string): number | null {
  const m = log.match(/processed (\d+) insns/);
  return m ? Number(m[1]) : null;
}

/**
 * The lines of a refused program's log that say why: the last few before the statistics
 * (the verifier states its reason last, and on Linux 6.1 a full log loses the end).
 */
export function verifierReason(log: string, lines = 6): string[] {
  const all = log.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "");
  let end = all.length;
  while (end > 0 && /^(processed \d+ insns|verification time|stack depth)/.test(all[end - 1]!)) {
    end--;
  }
  return all.slice(Math.max(0, end - lines), end);
}

export interface Refusal extends ErrorOptions {
  errno: number;
  program: string;
  /** The whole verifier log of that program (level 1), as the kernel wrote it. */
  verifierLog: string;
}

/** A program the verifier refused: its whole log is kept, the message quotes its end. */
export class VerifierError extends LibbpfError {
  override name = "VerifierError";
  readonly program: string;
  readonly verifierLog: string;
  constructor(message: string, refusal: Refusal) {
    super(message, {
      errno: refusal.errno,
      log: refusal.verifierLog.split("\n"),
      cause: refusal.cause,
    });
    this.program = refusal.program;
    this.verifierLog = refusal.verifierLog;
  }
}

function cStringAt(p: Deno.PointerValue): string {
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

function logText(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return decoder.decode(buf.subarray(0, end < 0 ? buf.length : end));
}

interface ProgramLog {
  name: string;
  buf: Uint8Array<ArrayBuffer>;
}

function openObject(bytes: Uint8Array<ArrayBuffer>, name: string, what: string) {
  const cName = cString(name);
  const opts = new Uint8Array(OPEN_OPTS.size);
  const view = new DataView(opts.buffer);
  view.setBigUint64(OPEN_OPTS.sz, BigInt(OPEN_OPTS.size), true);
  view.setBigUint64(
    OPEN_OPTS.object_name,
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(cName))),
    true,
  );
  return checkPointer(
    `Opening ${what}`,
    lib().bpf_object__open_mem(bytes, BigInt(bytes.length), opts),
  );
}

interface LogRequest {
  /** BPF_LOG_* bits. */
  level: number;
  bytes: number;
  /** Only this program logs (the others log nothing); absent: every program. */
  only?: string;
}

/**
 * Gives each program of an opened object a log buffer of its own. The buffers must outlive
 * the load.
 */
function attachLogs(object: Deno.PointerObject, request: LogRequest): ProgramLog[] {
  const { level, bytes, only } = request;
  const b = lib();
  const logs: ProgramLog[] = [];
  for (
    let prog = b.bpf_object__next_program(object, null);
    prog !== null;
    prog = b.bpf_object__next_program(object, prog)
  ) {
    const name = cStringAt(b.bpf_program__name(prog));
    if (only !== undefined && name !== only) continue;
    const buf = new Uint8Array(bytes);
    check(
      `Setting the verifier log of "${name}"`,
      b.bpf_program__set_log_buf(prog, buf, BigInt(bytes)),
    );
    check(`Setting the verifier log level of "${name}"`, b.bpf_program__set_log_level(prog, level));
    logs.push({ name, buf });
  }
  return logs;
}

/**
 * Opens an embedded BPF object and loads its programs (the verifier runs here). `what` names
 * it in errors, e.g. "the BPF programs". Each program logs the verifier's statistics into a
 * buffer of its own, so its instruction count is known; a refused program is loaded again
 * alone with the whole log (grown until it fits), and the VerifierError thrown keeps that
 * log and quotes its end, where the verifier gives its reason. A failed load closes the
 * object again, so the caller owns it only on success and closes it with bpf_object__close.
 */
export function openAndLoadObject(
  bytes: Uint8Array<ArrayBuffer>,
  name: string,
  what: string,
  reuse: ReadonlyMap<string, number> = new Map(),
): LoadedObject {
  const b = lib();
  const object = openObject(bytes, name, what);
  let logs: ProgramLog[];
  let rc: number;
  try {
    // Pinned maps an earlier run left: the programs use them instead of new ones.
    for (const [mapName, fd] of reuse) {
      const map = checkPointer(
        `Finding map "${mapName}" in ${what}`,
        b.bpf_object__find_map_by_name(object, cString(mapName)),
      );
      check(`Reusing the pinned map "${mapName}"`, b.bpf_map__reuse_fd(map, fd));
    }
    logs = attachLogs(object, { level: BPF_LOG_STATS, bytes: STATS_LOG_BYTES });
    rc = b.bpf_object__load(object);
  } catch (e) {
    b.bpf_object__close(object);
    throw e;
  }
  if (rc < 0) {
    const failure = libbpfError(`Loading ${what} into the kernel`, -rc);
    b.bpf_object__close(object);
    const refused = refusedProgram(failure.log, logs);
    if (refused === null) throw failure; // not the verifier: e.g. a map, or no privilege
    throw refusal({ bytes, name, what, program: refused, first: failure });
  }
  const programs = logs.map((l) => ({
    object: name,
    program: l.name,
    insns: parseVerifiedInsns(logText(l.buf)),
  }));
  verified.push(...programs);
  if (verified.length > 100) verified.splice(0, verified.length - 100);
  forgetLog();
  return { pointer: object, programs };
}

/**
 * The program the kernel refused: libbpf names it in its warning; failing that, the last
 * program that has a log (programs load in order and the first refusal stops the load).
 * Null when no program got as far as the verifier.
 */
function refusedProgram(libbpfLog: string[], logs: ProgramLog[]): string | null {
  for (const line of libbpfLog) {
    const m = line.match(/prog '([^']+)': BPF program load failed/);
    if (m && logs.some((l) => l.name === m[1])) return m[1]!;
  }
  const tried = logs.filter((l) => logText(l.buf) !== "");
  return tried.at(-1)?.name ?? null;
}

interface RefusedLoad {
  bytes: Uint8Array<ArrayBuffer>;
  name: string;
  what: string;
  /** The program the verifier refused, and the error of that load. */
  program: string;
  first: LibbpfError;
}

/**
 * Loads the refused program of the object again with the whole verifier log, growing the
 * buffer while the kernel says it was too small, and returns the VerifierError to throw.
 */
function refusal(r: RefusedLoad): VerifierError {
  const { bytes, name, what, program, first } = r;
  const b = lib();
  let errno = first.errno;
  let log = "";
  for (let size = FULL_LOG_FIRST_BYTES; size <= FULL_LOG_MAX_BYTES; size *= 4) {
    const object = openObject(bytes, name, what);
    try {
      const [full] = attachLogs(object, {
        level: BPF_LOG_LEVEL1 | BPF_LOG_STATS,
        bytes: size,
        only: program,
      });
      const rc = b.bpf_object__load(object);
      if (full) log = logText(full.buf);
      if (rc >= 0) break; // accepted this time: report the first refusal's errno and log
      errno = -rc;
      if (errno !== ENOSPC) break;
    } finally {
      b.bpf_object__close(object);
    }
  }
  forgetLog();
  const reason = verifierReason(log);
  const quoted = reason.length > 0 ? reason.join(" | ") : first.log.join(" | ");
  return new VerifierError(
    `Loading ${what} into the kernel failed: the kernel's verifier refused program ` +
      `"${program}" (${errnoName(errno === ENOSPC ? first.errno : errno)}); it said: ${quoted}`,
    { errno: first.errno, program, verifierLog: log, cause: first },
  );
}

/** The ELF bytes of an object embedded as base64 (bpf/*_object.ts, made by bpf/embed.sh). */
export function decodeEmbeddedObject(base64: string): Uint8Array<ArrayBuffer> {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** The fd of a map in a loaded object; `what` names the object in errors. */
export function objectMapFd(object: Deno.PointerObject, name: string, what: string): number {
  const b = lib();
  const map = checkPointer(
    `Finding map "${name}" in ${what}`,
    b.bpf_object__find_map_by_name(object, cString(name)),
  );
  return check(`Getting the fd of map "${name}"`, b.bpf_map__fd(map));
}

/** The attach type libbpf derived from a program's SEC name (cgroup_skb/egress, ...). */
export function programAttachType(object: Deno.PointerObject, name: string, what: string) {
  const b = lib();
  const prog = checkPointer(
    `Finding program "${name}" in ${what}`,
    b.bpf_object__find_program_by_name(object, cString(name)),
  );
  return {
    fd: check(`Getting the fd of program "${name}"`, b.bpf_program__fd(prog)),
    attachType: b.bpf_program__expected_attach_type(prog),
  };
}

/** struct bpf_link_info (uapi): type, id, prog_id, then the union; the cgroup member's fields. */
export const LINK_INFO = { size: 64, id: 4, prog_id: 8, cgroup_id: 16, attach_type: 24 } as const;
/** struct bpf_map_info (uapi) up to map_flags: type, id, key, value and entry sizes. */
export const MAP_INFO = {
  size: 88,
  type: 0,
  id: 4,
  key_size: 8,
  value_size: 12,
  max_entries: 16,
} as const;

/** BPF_OBJ_GET_INFO_BY_FD into a zeroed buffer of `size` bytes. */
export function objectInfo(fd: number, size: number, what: string): DataView {
  const info = new Uint8Array(size);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, size, true);
  check(`Reading the kernel's info on ${what}`, lib().bpf_obj_get_info_by_fd(fd, info, len));
  return new DataView(info.buffer);
}

/** What the kernel says of a BPF link: its program, and its cgroup (0: the cgroup is gone). */
export function cgroupLinkInfo(fd: number): { id: number; progId: number; cgroupId: bigint } {
  const v = objectInfo(fd, LINK_INFO.size, "a BPF link");
  return {
    id: v.getUint32(LINK_INFO.id, true),
    progId: v.getUint32(LINK_INFO.prog_id, true),
    cgroupId: v.getBigUint64(LINK_INFO.cgroup_id, true),
  };
}

/** The kernel's id of a map: unique while the map lives, never reused soon after. */
export function mapId(fd: number): number {
  return objectInfo(fd, MAP_INFO.size, "a BPF map").getUint32(MAP_INFO.id, true);
}

/** Pins a map, program or link at `path` (in a bpffs). */
export function pinObject(fd: number, path: string): void {
  check(`Pinning a BPF object at "${path}"`, lib().bpf_obj_pin(fd, cString(path)));
}

/** A new fd to the object pinned at `path`; null when nothing is pinned there. */
export function openPinned(path: string): number | null {
  const fd = lib().bpf_obj_get(cString(path));
  if (fd === -2) return null;
  return check(`Opening the BPF object pinned at "${path}"`, fd);
}

/**
 * Destroys links newest first, then closes the object: the reverse of load and link. Every
 * step is tried; the errors come back for the caller to report together. Empties `links`.
 */
export function closeLinksAndObject(
  links: Deno.PointerObject[],
  object: Deno.PointerObject | null,
): unknown[] {
  if (links.length === 0 && object === null) return [];
  const b = lib();
  const errors: unknown[] = [];
  for (const link of links.splice(0).reverse()) {
    try {
      check("Detaching a BPF link", b.bpf_link__destroy(link));
    } catch (e) {
      errors.push(e);
    }
  }
  if (object) b.bpf_object__close(object);
  return errors;
}

/**
 * Opens a directory read-only (a cgroup to link programs to); close it with `closeFd`.
 * With `missingOk`, a directory that does not exist (a cgroup removed meanwhile) is null.
 */
export function openDirectory(path: string): number;
export function openDirectory(path: string, opts: { missingOk: true }): number | null;
export function openDirectory(path: string, opts?: { missingOk: true }): number | null {
  const fd = libcSymbols().open(cString(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) {
    const errno = lastErrno();
    if (errno === 2 && opts?.missingOk) return null;
    throw new BackendError(
      `Cannot open cgroup directory "${path}": ${errnoName(errno)} (${strerror(errno)})`,
    );
  }
  return fd;
}

export function closeFd(fd: number): void {
  libcSymbols().close(fd);
}
