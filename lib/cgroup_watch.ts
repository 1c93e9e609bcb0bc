/**
 * Tells `run` when a service cgroup may have appeared, gone or been recreated, so it can
 * retarget at once instead of asking the kernel about every service every interval: a
 * restarted service's first packets (its reconnects) then count from its first
 * millisecond rather than from the next sample, and an idle interval does no path lookups.
 *
 * inotify on cgroupfs reports mkdir and rmdir in a watched directory, so watching every
 * existing directory on the way to each service sees any change that matters: a service
 * cgroup is created and removed in its parent, a removed ancestor is reported by its own
 * parent. A recreated ancestor is a new inode the old watch no longer sees, so the
 * watched set is keyed by inode and rebuilt when one changes. Whatever can still slip
 * through (a full inotify queue, a watch limit reached) is caught by `run`'s slow poll.
 *
 * The inotify descriptor is the kernel's own, read here without blocking: `run` sleeps in
 * one epoll_wait on it (lib/sleeper.ts) rather than in Deno's event loop.
 */

import { type Cgroup2Mount, cgroupDir } from "./cgroup.ts";
import { cString, EAGAIN, errno, libc, O_CLOEXEC, osError, pathInfo } from "./libc.ts";

const IN_NONBLOCK = 0o4000;
/** Entries made, removed or renamed in a directory, and the directory itself going. */
const IN_MOVED_FROM = 0x40, IN_MOVED_TO = 0x80, IN_CREATE = 0x100, IN_DELETE = 0x200;
const IN_DELETE_SELF = 0x400, IN_MOVE_SELF = 0x800, IN_ONLYDIR = 0x01000000;
const WATCH_MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF |
  IN_MOVE_SELF | IN_ONLYDIR;

/** The directories whose children decide whether `path` exists: "/a/b/c" -> /, /a, /a/b. */
export function ancestorPaths(path: string): string[] {
  const parts = path.split("/").filter((p) => p !== "");
  const out = ["/"];
  for (let i = 1; i < parts.length; i++) out.push("/" + parts.slice(0, i).join("/"));
  return out;
}

export class CgroupWatch {
  readonly #dirs: string[];
  readonly #onError: (message: string) => void;
  #fd = -1;
  /** Inode of each watched directory, in the order of #dirs; "" for absent. */
  #watchedKey = "";
  #changed = true;
  /** Set with the descriptor closed: from then on every call says look. */
  #failed = false;
  readonly #buffer = new Uint8Array(4096);

  /**
   * Watches the ancestors of `paths` (service cgroup paths). `onError` runs once when
   * watching cannot work (then `takeChanged` is always true: the caller polls, as it would
   * without a watch).
   */
  constructor(
    mount: Cgroup2Mount,
    paths: readonly string[],
    onError: (message: string) => void,
  ) {
    const unique = new Set(paths.flatMap(ancestorPaths));
    this.#dirs = [...unique].sort().map((p) => cgroupDir(mount, p).replace(/\/$/, "") || "/");
    this.#onError = onError;
    this.#fd = libc().inotify_init1(IN_NONBLOCK | O_CLOEXEC);
    if (this.#fd < 0) {
      this.#fail(osError(errno(), "inotify_init1"));
      return;
    }
    this.#rebuild();
  }

  /** Readable when something may have changed; null when not watching (poll instead). */
  get fd(): number | null {
    return this.#fd >= 0 ? this.#fd : null;
  }

  /** True when something changed since the last call (and on the first call). */
  takeChanged(): boolean {
    this.#drain();
    const changed = this.#changed || this.#failed;
    this.#changed = false;
    return changed;
  }

  /** Safe to call twice. */
  close(): void {
    if (this.#fd >= 0) libc().close(this.#fd);
    this.#fd = -1;
  }

  /** Reads every queued event; any one of them means look again. */
  #drain(): void {
    if (this.#fd < 0) return;
    let seen = false;
    for (;;) {
      const n = libc().read(this.#fd, this.#buffer, BigInt(this.#buffer.length));
      if (n > 0) {
        seen = true;
        continue;
      }
      const e = errno();
      if (n < 0 && e !== EAGAIN) this.#fail(osError(e, "read inotify"));
      break;
    }
    if (seen) {
      this.#changed = true;
      this.#rebuild();
    }
  }

  /** Watches the existing ancestors anew when their inodes differ from the watched ones. */
  #rebuild(): void {
    if (this.#fd < 0) return;
    const present = this.#dirs.map((d) => ({ dir: d, info: pathInfo(d) }))
      .filter((d) => d.info?.isDirectory);
    const key = present.map((d) => `${d.dir}=${d.info!.ino}`).join(" ");
    if (key === this.#watchedKey) return;
    // Watching a directory again only updates its watch; a recreated one gets a new watch,
    // and the kernel drops the watch of a removed one by itself.
    for (const { dir } of present) {
      if (libc().inotify_add_watch(this.#fd, cString(dir), WATCH_MASK) >= 0) continue;
      const e = errno();
      if (pathInfo(dir) === null) continue; // removed meanwhile: its parent reports that
      this.#fail(osError(e, `inotify_add_watch '${dir}'`));
      return;
    }
    this.#watchedKey = key;
    // Anything created between the lookups above and the watch is only seen by a lookup.
    this.#changed = true;
  }

  #fail(e: Error): void {
    this.#failed = true;
    this.close();
    this.#onError(
      `cannot watch the service cgroups' directories (${e.message}); ` +
        "looking them up every interval instead",
    );
  }
}
