/**
 * counters.json, schema version 1: what `run` publishes and `graph`/`status` read.
 * The JSON Schema twin is schema/counters.schema.json; keep them in step.
 *
 * Readers must treat the file as untrusted: it may be missing, half-written by a broken
 * writer, replaced by something else, or from a daemon that restarted (totals reset).
 * Whatever sits at the path (nothing, a half file, garbage, gigabytes, a directory, a
 * FIFO) CountersFileReader answers at once with a status and a reason; it never throws
 * and never blocks. parseCounters does the validation of the content.
 */

import { asCount, parseExact, stringifyExact } from "./exact_json.ts";
import { DEFAULT_INTERVAL_S, isInterval, MAX_INTERVAL_S, MIN_INTERVAL_S } from "./interval.ts";

export const SCHEMA_VERSION = 1;

/** Where `run` publishes by default: on /run, a tmpfs; the service's RuntimeDirectory=. */
export const COUNTERS_DIR = "/run/stb-netacct";
export const DEFAULT_COUNTERS_PATH = `${COUNTERS_DIR}/counters.json`;

/**
 * The lock a sampler holds while it writes `output` (a hidden file beside it): readers ask
 * the kernel who holds it (/proc/locks) to tell a stuck sampler from none at all.
 */
export function outputLockPath(output: string): string {
  const slash = output.lastIndexOf("/");
  return `${output.slice(0, slash + 1)}.${output.slice(slash + 1)}.lock`;
}

/**
 * The one freshness rule of graph, status, install and verify: a sample is stale once it is
 * older than STALE_INTERVALS of the writer's intervals, and never sooner than STALE_MIN_S
 * (slack for a busy machine at short intervals).
 */
export const STALE_INTERVALS = 3;
export const STALE_MIN_S = 2;

/** Seconds after which a sample written every `intervalS` seconds is stale. */
export function staleAfterS(intervalS: number): number {
  return Math.max(STALE_INTERVALS * intervalS, STALE_MIN_S);
}

/** Whether a sample `ageS` seconds old (null: unknown) written every `intervalS` is fresh. */
export function isFreshAge(ageS: number | null, intervalS: number): boolean {
  return ageS !== null && ageS <= staleAfterS(intervalS);
}

/** The sample's age by the wall clock; null when it carries no ts_unix (the first contract). */
export function sampleAgeS(c: CountersV1, nowUnix: number): number | null {
  return c.ts_unix > 0 ? nowUnix - c.ts_unix : null;
}

/** Whether `c` is fresh at `nowUnix` (Unix seconds). */
export function isFresh(c: CountersV1, nowUnix: number): boolean {
  return isFreshAge(sampleAgeS(c, nowUnix), c.interval_s);
}

/**
 * Byte and packet counts are bigint: exact up to the kernel's 2^64 - 1, written as plain
 * JSON integers (lib/exact_json.ts). A difference of two samples fits a number.
 */
export interface ServiceCountersV1 {
  rx_bytes_total: bigint;
  tx_bytes_total: bigint;
  rx_packets_total: bigint;
  tx_packets_total: bigint;
  /** Cgroup path relative to the cgroup2 mount. */
  cgroup: string;
  /** Whether the cgroup exists at this sample. */
  present: boolean;
}

/**
 * One remote endpoint of one service in one direction: bytes since `run` started (not
 * kept across restarts; an endpoint the kernel's bounded table forgot starts again).
 */
export interface DestinationV1 {
  service: string;
  direction: "rx" | "tx";
  /** Remote address: dotted IPv4 (also for IPv4-mapped IPv6), else IPv6 text. */
  address: string;
  /** Remote TCP/UDP port; 0 for other protocols. */
  port: number;
  /** "tcp", "udp", or the IP protocol number as text. */
  protocol: string;
  bytes: bigint;
  packets: bigint;
  /**
   * The DNS name StB's own processes resolved for `address`, when `run` saw the answer
   * (ebpf backend, names on). Absent when none is known.
   */
  name?: string;
}

/** At most this many destinations are published, and read. */
export const MAX_DESTINATIONS = 20;

export interface CountersV1 {
  schema: 1;
  backend: string;
  backend_fallback_reason?: string;
  /** /proc/sys/kernel/random/boot_id of the sampling boot: a change means a reboot. */
  boot_id: string;
  /** Unix time this `run` started: a change with totals kept means a restart. */
  started_at: number;
  rx_bytes_total: bigint;
  tx_bytes_total: bigint;
  rx_packets_total: bigint;
  tx_packets_total: bigint;
  /** Seconds of CLOCK_MONOTONIC at the sample (comparable across processes on one boot). */
  ts_monotonic: number;
  /** Seconds since the Unix epoch at the sample. */
  ts_unix: number;
  interval_s: number;
  services: Record<string, ServiceCountersV1>;
  /**
   * Optional (ebpf backend only): the endpoints with the most bytes, most first, at most
   * MAX_DESTINATIONS. Rates are the reader's: the difference of consecutive samples.
   */
  destinations?: DestinationV1[];
  /** Optional (ebpf with connect events): events lost since the run started. */
  events_dropped_total?: number;
  /**
   * eBPF programs `run` tried to attach at start and could not (auto fell back from ebpf;
   * the connect-event programs were refused); the reasons are in the log and events.jsonl.
   */
  ebpf_attach_failures_total?: number;
  /** Optional (history on): whether history is being written, and its faults so far. */
  history?: HistoryStatusV1;
  /** Optional (ebpf with names on): what the DNS capture saw since the run started. */
  names?: NamesStatusV1;
}

/** What counters.json says about the DNS capture that names destinations (names/). */
export interface NamesStatusV1 {
  queries_total: number;
  answers_total: number;
  answers_used_total: number;
  answers_ignored_total: number;
  malformed_total: number;
  entries: number;
  max_entries: number;
  dropped_total: number;
}

/** What counters.json says about the history database (history/). */
export interface HistoryStatusV1 {
  /** "paused" while writes fail (retried every minute; counting goes on regardless). */
  state: "recording" | "paused";
  /** Why it is paused. */
  reason?: string;
  /** Corrupt or unreadable databases moved aside, and new ones started, since `run` started. */
  databases_replaced_total: number;
  /** Batches that failed to be written since `run` started (kept, and written later). */
  write_failures_total: number;
}

/**
 * One line of JSON plus a newline; numbers are integers except the timestamps, and counts
 * keep every digit.
 */
export function serializeCounters(c: CountersV1): string {
  return stringifyExact(c) + "\n";
}

export class ContractError extends Error {
  override name = "ContractError";
}

/** Largest file a reader accepts: a real one is well under 64 KiB. */
export const MAX_COUNTERS_BYTES = 1 << 20;

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** A value as an error message quotes it: short, and never a walk of a deep structure. */
function describeValue(v: unknown): string {
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object" && v !== null) return "an object";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return String(v);
}

/** A count field: exact (see asCount), `fallback` when absent or not a count. */
function countOr(v: unknown, fallback = 0n): bigint {
  return asCount(v) ?? fallback;
}

function isTime(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0;
}

/**
 * Validates parsed JSON as a v1 sample. Unknown extra fields are allowed (later versions
 * add fields); missing or wrong-typed required ones throw a ContractError naming the field.
 * Only the three fields of the original contract are required; the rest default.
 */
export function parseCounters(text: string): CountersV1 {
  if (text.length === 0) throw new ContractError("the file is empty");
  if (text.length > MAX_COUNTERS_BYTES) {
    throw new ContractError(
      `the file is ${text.length} bytes, over the ${MAX_COUNTERS_BYTES} limit`,
    );
  }
  let raw: unknown;
  try {
    raw = parseExact(text);
  } catch (cause) {
    throw new ContractError(`it is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ContractError("it is not a JSON object");
  }
  const o = raw as Record<string, unknown>;
  if (o.schema !== undefined && o.schema !== SCHEMA_VERSION) {
    throw new ContractError(`schema ${JSON.stringify(o.schema)} is not supported (expected 1)`);
  }
  for (const k of ["rx_bytes_total", "tx_bytes_total"]) {
    if (o[k] === undefined) throw new ContractError(`"${k}" is missing`);
    if (asCount(o[k]) === null) {
      throw new ContractError(
        `"${k}" is ${describeValue(o[k])}, not an integer from 0 to 2^64 - 1`,
      );
    }
  }
  if (o.ts_monotonic === undefined) throw new ContractError(`"ts_monotonic" is missing`);
  if (!isTime(o.ts_monotonic)) {
    throw new ContractError(
      `"ts_monotonic" is ${JSON.stringify(o.ts_monotonic)}, not a non-negative number`,
    );
  }
  if (o.interval_s !== undefined && !isInterval(o.interval_s)) {
    // Freshness is judged in intervals: 1e300 would make any sample fresh forever.
    throw new ContractError(
      `"interval_s" is ${describeValue(o.interval_s)}, not ${MIN_INTERVAL_S} to ` +
        `${MAX_INTERVAL_S} seconds`,
    );
  }
  const services: Record<string, ServiceCountersV1> = {};
  if (typeof o.services === "object" && o.services !== null && !Array.isArray(o.services)) {
    for (const [name, sv] of Object.entries(o.services as Record<string, unknown>)) {
      if (typeof sv !== "object" || sv === null) continue;
      const s = sv as Record<string, unknown>;
      const rx = asCount(s.rx_bytes_total), tx = asCount(s.tx_bytes_total);
      if (rx === null || tx === null) continue;
      services[name] = {
        rx_bytes_total: rx,
        tx_bytes_total: tx,
        rx_packets_total: countOr(s.rx_packets_total),
        tx_packets_total: countOr(s.tx_packets_total),
        cgroup: typeof s.cgroup === "string" ? s.cgroup : "",
        present: s.present === true,
      };
    }
  }
  const destinations = parseDestinations(o.destinations);
  return {
    schema: 1,
    backend: typeof o.backend === "string" ? o.backend : "unknown",
    ...(typeof o.backend_fallback_reason === "string"
      ? { backend_fallback_reason: o.backend_fallback_reason }
      : {}),
    boot_id: typeof o.boot_id === "string" ? o.boot_id : "",
    started_at: isTime(o.started_at) ? o.started_at : 0,
    rx_bytes_total: countOr(o.rx_bytes_total),
    tx_bytes_total: countOr(o.tx_bytes_total),
    rx_packets_total: countOr(o.rx_packets_total),
    tx_packets_total: countOr(o.tx_packets_total),
    ts_monotonic: o.ts_monotonic as number,
    ts_unix: isTime(o.ts_unix) ? o.ts_unix : 0,
    interval_s: isInterval(o.interval_s) ? o.interval_s : DEFAULT_INTERVAL_S,
    services,
    ...(destinations ? { destinations } : {}),
    ...(isCount(o.events_dropped_total) ? { events_dropped_total: o.events_dropped_total } : {}),
    ...(isCount(o.ebpf_attach_failures_total)
      ? { ebpf_attach_failures_total: o.ebpf_attach_failures_total }
      : {}),
    ...(parseHistoryStatus(o.history) ?? {}),
  };
}

/** Tolerant like the other optional fields: anything malformed means no history status. */
function parseHistoryStatus(v: unknown): { history: HistoryStatusV1 } | null {
  if (typeof v !== "object" || v === null) return null;
  const h = v as Record<string, unknown>;
  if (h.state !== "recording" && h.state !== "paused") return null;
  return {
    history: {
      state: h.state,
      ...(typeof h.reason === "string" ? { reason: h.reason.slice(0, 300) } : {}),
      databases_replaced_total: isCount(h.databases_replaced_total)
        ? h.databases_replaced_total
        : 0,
      write_failures_total: isCount(h.write_failures_total) ? h.write_failures_total : 0,
    },
  };
}

/** A DNS name fit to show (anything else in the field is dropped, not printed). */
function isShownName(v: unknown): v is string {
  return typeof v === "string" && v.length <= 253 && /^[a-z0-9_*][a-z0-9_.*-]*$/.test(v);
}

/** Tolerant: a malformed entry is skipped, not fatal; a non-list means none. */
function parseDestinations(v: unknown): DestinationV1[] | null {
  if (!Array.isArray(v)) return null;
  const out: DestinationV1[] = [];
  for (const item of v.slice(0, MAX_DESTINATIONS)) {
    if (typeof item !== "object" || item === null) continue;
    const d = item as Record<string, unknown>;
    if (
      typeof d.service !== "string" || (d.direction !== "rx" && d.direction !== "tx") ||
      typeof d.address !== "string" || d.address.length > 64 || asCount(d.bytes) === null
    ) continue;
    out.push({
      service: d.service.slice(0, 64),
      direction: d.direction,
      address: d.address,
      port: isCount(d.port) && d.port <= 65535 ? d.port : 0,
      protocol: typeof d.protocol === "string" ? d.protocol.slice(0, 16) : "",
      bytes: countOr(d.bytes),
      packets: countOr(d.packets),
      ...(isShownName(d.name) ? { name: d.name } : {}),
    });
  }
  return out;
}

export type ReadResult =
  /** `changed` is false when the file is the same one as at the previous read. */
  | { kind: "ok"; counters: CountersV1; changed: boolean }
  /** Nothing at the path (yet): the sampler is not running or writes elsewhere. */
  | { kind: "missing"; reason: string }
  /** Something is there but it is not a valid counters file. */
  | { kind: "malformed"; reason: string }
  /** A valid-looking file this user may not read, or an I/O error. */
  | { kind: "unreadable"; reason: string };

const OPEN_TIMEOUT_MS = 1000;
const MAX_STUCK_OPENS = 4;

/**
 * Opens that blocked and are still pending. Such an op keeps the Deno process alive, so
 * the CLI exits explicitly when this is not zero.
 */
let stuckOpens = 0;

export function pendingStuckOpens(): number {
  return stuckOpens;
}

interface Stamp {
  dev: number;
  ino: number;
  size: number;
  mtime: number;
}

export class CountersFileReader {
  #stamp: Stamp | null = null;
  #last: ReadResult | null = null;
  /** How many times the content was actually read (unchanged files are not). */
  contentReads = 0;

  constructor(readonly path: string, readonly maxBytes = MAX_COUNTERS_BYTES) {}

  async read(): Promise<ReadResult> {
    const result = await this.#read();
    // Only content verdicts are cached: a permission fixed by chmod leaves mtime alone.
    if (result.kind === "missing" || result.kind === "unreadable") this.#stamp = null;
    this.#last = result;
    return result;
  }

  async #read(): Promise<ReadResult> {
    const path = this.path;
    let info: Deno.FileInfo;
    try {
      // Follows a symlink on purpose: an unprivileged reader gains nothing by refusing one.
      info = Deno.statSync(path);
    } catch (e) {
      return this.#failure(e);
    }
    // Checked before opening: opening a FIFO for reading would wait for a writer forever.
    if (!info.isFile) {
      this.#stamp = null;
      return { kind: "malformed", reason: notRegular(info) };
    }
    if (info.size > this.maxBytes) {
      this.#stamp = null;
      return tooBig(info.size, this.maxBytes);
    }
    const stamp: Stamp = {
      dev: info.dev,
      ino: info.ino ?? 0,
      size: info.size,
      mtime: info.mtime?.getTime() ?? 0,
    };
    const prev = this.#stamp;
    const last = this.#last;
    if (
      prev !== null && last !== null && prev.dev === stamp.dev && prev.ino === stamp.ino &&
      prev.size === stamp.size && prev.mtime === stamp.mtime
    ) {
      // The same file as last time: same verdict, without reading or parsing it again.
      return last.kind === "ok" ? { ...last, changed: false } : last;
    }
    this.#stamp = stamp;
    let bytes: Uint8Array;
    try {
      const r = await this.#readBytes();
      if (typeof r === "string") {
        this.#stamp = null;
        return { kind: "malformed", reason: r };
      }
      bytes = r;
    } catch (e) {
      return this.#failure(e);
    }
    if (bytes.length > this.maxBytes) return tooBig(bytes.length, this.maxBytes, true);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return { kind: "malformed", reason: "it is not UTF-8 text" };
    }
    try {
      return { kind: "ok", counters: parseCounters(text), changed: true };
    } catch (e) {
      return { kind: "malformed", reason: (e as Error).message };
    }
  }

  /**
   * At most maxBytes + 1 bytes, so a huge file that grew after stat is never read whole.
   * The stat above refused FIFOs, but the path can be swapped between stat and open, and
   * Deno's open has no O_NONBLOCK (node:fs has, but needs @types/node to type-check): the
   * open is raced against a timer, so a swapped-in FIFO costs a parked thread (a few at
   * most), never a frozen screen.
   */
  async #readBytes(): Promise<Uint8Array | string> {
    if (stuckOpens >= MAX_STUCK_OPENS) {
      return "earlier opens of it never returned (a FIFO swapped in?); not trying again";
    }
    const opening = Deno.open(this.path, { read: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), OPEN_TIMEOUT_MS);
    });
    const file = await Promise.race([opening, timeout]).finally(() => clearTimeout(timer));
    if (file === null) {
      stuckOpens++;
      opening.then((f) => f.close(), () => {}).finally(() => stuckOpens--);
      return "opening it blocked: it is not a regular file (a FIFO?)";
    }
    try {
      const st = await file.stat();
      if (!st.isFile) return "it is not a regular file";
      this.contentReads++;
      const limit = this.maxBytes + 1;
      let buf = new Uint8Array(Math.min(limit, Math.max(st.size + 1, 4096)));
      let off = 0;
      for (;;) {
        if (off === buf.length) {
          if (buf.length >= limit) break;
          const next = new Uint8Array(Math.min(limit, buf.length * 2));
          next.set(buf);
          buf = next;
        }
        const n = await file.read(buf.subarray(off));
        if (n === null) break;
        off += n;
      }
      return buf.subarray(0, off);
    } finally {
      file.close();
    }
  }

  #failure(e: unknown): ReadResult {
    const path = this.path;
    if (e instanceof Deno.errors.NotFound) {
      return {
        kind: "missing",
        reason: `it does not exist yet; start the sampler with "sudo stb-netacct run" ` +
          `or point --input at its output file`,
      };
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      return {
        kind: "unreadable",
        reason: `permission denied reading "${path}"; the sampler publishes it with mode 0644, ` +
          `check the file's and its directories' permissions`,
      };
    }
    if (e instanceof Deno.errors.NotCapable) {
      return {
        kind: "unreadable",
        reason: `Deno may not read "${path}"; run with --allow-read`,
      };
    }
    return { kind: "unreadable", reason: `cannot read "${path}": ${(e as Error).message}` };
  }
}

function notRegular(info: Deno.FileInfo): string {
  const what = info.isDirectory
    ? "a directory"
    : info.isFifo
    ? "a FIFO"
    : info.isSocket
    ? "a socket"
    : info.isCharDevice || info.isBlockDevice
    ? "a device"
    : "not a regular file";
  return `it is ${what}, not a counters file; point --input at the file "stb-netacct run" writes`;
}

function tooBig(size: number, max: number, grew = false): ReadResult {
  const how = grew ? "grew past" : `is ${size} bytes, over`;
  return {
    kind: "malformed",
    reason: `it ${how} the ${max}-byte limit, too big for a counters file; nothing was parsed`,
  };
}
