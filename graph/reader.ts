/**
 * Reading counters.json as untrusted input. Whatever sits at the path (nothing, a half
 * file, garbage, gigabytes, a directory, a FIFO) the reader answers at once with a status
 * and a reason; it never throws and never blocks. parseCounters in lib/contract.ts does
 * the validation of the content.
 */

import { type CountersV1, MAX_COUNTERS_BYTES, parseCounters } from "../lib/contract.ts";

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
