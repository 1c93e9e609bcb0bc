/**
 * events.jsonl: the connect events `run` publishes for `stb-netacct events`, one JSON
 * object per line, beside counters.json. Readable by the configured owner only (mode 0640,
 * owner:root): who StB talks to is more private than how much. Bounded: past
 * MAX_EVENTS_BYTES the file is renamed to events.jsonl.1 (replacing the previous one) and a
 * new one begins, so at most twice that is kept.
 *
 * Append-only, whole lines per write(2) with O_APPEND: a reader following the file sees
 * complete lines, or a last line still without its newline, which it holds until the rest
 * comes. The directory is root's and closed to others (run/output.ts checks), so nobody
 * can plant a link where the file is created.
 */

import { COUNTERS_DIR } from "../lib/contract.ts";
import type { UserIds } from "../lib/users.ts";
import type { ConnectEvent } from "./collector.ts";

export const EVENTS_FILE_NAME = "events.jsonl";
export const DEFAULT_EVENTS_FILE = `${COUNTERS_DIR}/${EVENTS_FILE_NAME}`;
export const MAX_EVENTS_BYTES = 1 << 20;
export const EVENTS_FILE_MODE = 0o640;

/** The previous generation of `path`, after a rotation. */
export function rotatedPath(path: string): string {
  return `${path}.1`;
}

export class EventsLog {
  #encoder = new TextEncoder();
  #size: number | null = null;
  /**
   * Held open across batches: the file is given to the owner after it is made, and a
   * writer without CAP_DAC_OVERRIDE (the installed service's dynamic user) could not open
   * it again by path.
   */
  #file: Deno.FsFile | null = null;

  constructor(
    readonly path: string,
    readonly owner: UserIds | null,
    readonly maxBytes = MAX_EVENTS_BYTES,
  ) {}

  /** Appends the events as lines; rotates first when they would take the file past max. */
  append(events: ConnectEvent[]): void {
    if (events.length === 0) return;
    const bytes = this.#encoder.encode(events.map((e) => JSON.stringify(e) + "\n").join(""));
    let size = this.#size ?? this.#currentSize();
    if (size > 0 && size + bytes.length > this.maxBytes) {
      this.#rotate();
      size = 0;
    }
    if (this.#file === null) {
      const opened = this.#open(size === 0);
      this.#file = opened.file;
      if (opened.rotated) size = 0;
    }
    let off = 0;
    while (off < bytes.length) off += this.#file.writeSync(bytes.subarray(off));
    this.#size = size + bytes.length;
  }

  /** Closes the held file; the next append opens it again. Safe twice. */
  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  #currentSize(): number {
    try {
      const st = Deno.lstatSync(this.path);
      if (!st.isFile) {
        throw new Error(
          `"${this.path}" is not a regular file: remove it so events can be written there`,
        );
      }
      return st.size;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return 0;
      throw e;
    }
  }

  #rotate(): void {
    this.close();
    Deno.renameSync(this.path, rotatedPath(this.path));
  }

  /** Opens for appending; a new file (or one this run has not written yet) is set up. */
  #open(fresh: boolean): { file: Deno.FsFile; rotated: boolean } {
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(this.path, { append: true, create: true, mode: EVENTS_FILE_MODE });
    } catch (e) {
      // A file an earlier run gave to the owner, which this (unprivileged) writer cannot
      // open: it becomes the previous generation and a new one begins.
      if (!(e instanceof Deno.errors.PermissionDenied) || this.#size !== null) throw e;
      this.#rotate();
      return { file: this.#open(true).file, rotated: true };
    }
    if (fresh || this.#size === null) {
      try {
        // The umask may have trimmed the mode; a file left by an older run may differ.
        Deno.chmodSync(this.path, EVENTS_FILE_MODE);
        Deno.chownSync(this.path, this.owner?.uid ?? 0, 0);
      } catch (e) {
        file.close();
        throw e;
      }
    }
    return { file, rotated: false };
  }
}
