/**
 * events.jsonl: the connect events `run` publishes for `stb-netacct events`, one JSON
 * object per line, beside counters.json. Readable by the configured owner only (mode 0640,
 * owner:root): who StB talks to is more private than how much. Bounded: past
 * MAX_EVENTS_BYTES the file is renamed to events.jsonl.1 (replacing the previous one) and a
 * new one begins, so at most twice that is kept.
 *
 * Append-only, whole lines per write(2) with O_APPEND: a reader following the file sees
 * complete lines, or a last line still without its newline, which it holds until the rest
 * comes. Everything goes through the held output directory (lib/held_dir.ts) and one
 * descriptor kept open between appends: created without following a symlink, then chmod
 * and chown on that descriptor. A sampler that is not root keeps appending after the file
 * became the owner's: it never reopens it by path.
 */

import type { HeldDir } from "../lib/held_dir.ts";
import { writeAll } from "../lib/held_dir.ts";
import { libc, O_APPEND, O_CREAT, O_EXCL, O_WRONLY, statAt } from "../lib/libc.ts";
import type { UserIds } from "../lib/users.ts";
import { stringifyExact } from "../lib/exact_json.ts";
import type { EventLine } from "./lifecycle.ts";

export const EVENTS_FILE_NAME = "events.jsonl";
export const MAX_EVENTS_BYTES = 1 << 20;
export const EVENTS_FILE_MODE = 0o640;

/** The previous generation of `path`, after a rotation. */
export function rotatedPath(path: string): string {
  return `${path}.1`;
}

/** The open file: its descriptor, the directory it is in, its inode, and its size. */
interface Open {
  fd: number;
  dir: HeldDir;
  ino: bigint;
  size: number;
}

export interface EventsLogOptions {
  /** The user the file is given to (group root), so they may read it; null: root keeps it. */
  owner: UserIds | null;
  /** Rotate past this size; default MAX_EVENTS_BYTES. */
  maxBytes?: number;
  /** The file's name in the directory; default EVENTS_FILE_NAME. */
  name?: string;
}

export class EventsLog {
  #encoder = new TextEncoder();
  #open: Open | null = null;
  readonly #rotated: string;
  readonly owner: UserIds | null;
  readonly maxBytes: number;
  readonly name: string;

  /** `dir`: the output directory as held now (it is held anew after it vanished). */
  constructor(readonly dir: () => HeldDir, opts: EventsLogOptions) {
    this.owner = opts.owner;
    this.maxBytes = opts.maxBytes ?? MAX_EVENTS_BYTES;
    this.name = opts.name ?? EVENTS_FILE_NAME;
    this.#rotated = rotatedPath(this.name);
  }

  get path(): string {
    return this.dir().pathOf(this.name);
  }

  /** Appends the events as lines; rotates first when they would take the file past max. */
  append(events: EventLine[]): void {
    if (events.length === 0) return;
    const bytes = this.#encoder.encode(events.map((e) => stringifyExact(e) + "\n").join(""));
    let file = this.#current();
    if (file.size > 0 && file.size + bytes.length > this.maxBytes) {
      file.dir.rename(this.name, this.#rotated);
      this.close();
      file = this.#current();
    }
    writeAll(file.fd, bytes, file.dir.pathOf(this.name));
    file.size += bytes.length;
  }

  /** Closes the file (`run` stops, or it must be opened anew). Safe twice. */
  close(): void {
    if (this.#open) libc().close(this.#open.fd);
    this.#open = null;
  }

  /**
   * The open file, opened anew when the directory was held anew or the name no longer
   * leads to it (removed, rotated by hand).
   */
  #current(): Open {
    const dir = this.dir();
    const o = this.#open;
    if (o && o.dir === dir && dir.stat(this.name)?.ino === o.ino) return o;
    this.close();
    return this.#open = this.#openIn(dir);
  }

  /**
   * Opens `name` for appending, never through a symlink. A new file is given its mode and
   * owner through the descriptor; one left by an earlier run is appended to if it is a
   * regular file this user may still write, else set aside as the old generation.
   */
  #openIn(dir: HeldDir): Open {
    const c = libc();
    for (let attempt = 0;; attempt++) {
      let fd: number;
      try {
        fd = dir.open(this.name, O_WRONLY | O_APPEND | O_CREAT | O_EXCL, EVENTS_FILE_MODE);
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists) || attempt > 2) throw e;
        const kept = this.#reopen(dir);
        if (kept) return kept;
        dir.rename(this.name, this.#rotated); // a link, another type, or no longer ours to write
        continue;
      }
      try {
        // The umask may have trimmed the mode.
        if (c.fchmod(fd, EVENTS_FILE_MODE) !== 0 || c.fchown(fd, this.#uid, 0) !== 0) {
          throw new Error(`Cannot give ${dir.pathOf(this.name)} its mode and owner`);
        }
        const st = statAt(fd, "", dir.pathOf(this.name))!;
        return { fd, dir, ino: st.ino, size: 0 };
      } catch (e) {
        c.close(fd);
        throw e;
      }
    }
  }

  /**
   * The existing file, when it is a regular file with the mode and owner this log gives
   * and this process can still append to it.
   */
  #reopen(dir: HeldDir): Open | null {
    let fd: number;
    try {
      fd = dir.open(this.name, O_WRONLY | O_APPEND);
    } catch {
      return null;
    }
    const st = statAt(fd, "", dir.pathOf(this.name))!;
    if (st.type !== "file" || st.mode !== EVENTS_FILE_MODE || st.uid !== this.#uid) {
      libc().close(fd);
      return null;
    }
    return { fd, dir, ino: st.ino, size: st.size };
  }

  /** Who the file belongs to: the owner, else root (group root either way). */
  get #uid(): number {
    return this.owner?.uid ?? 0;
  }
}
