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
 */

import { type Cgroup2Mount, cgroupDir } from "./cgroup.ts";
import { pathInfo } from "./libc.ts";

/** The directories whose children decide whether `path` exists: "/a/b/c" -> /, /a, /a/b. */
export function ancestorPaths(path: string): string[] {
  const parts = path.split("/").filter((p) => p !== "");
  const out = ["/"];
  for (let i = 1; i < parts.length; i++) out.push("/" + parts.slice(0, i).join("/"));
  return out;
}

export class CgroupWatch {
  readonly #dirs: string[];
  readonly #onChange: () => void;
  readonly #onError: (message: string) => void;
  #watcher: Deno.FsWatcher | null = null;
  /** Inode of each watched directory, in the order of #dirs; "" for absent. */
  #watchedKey = "";
  #changed = true;
  #closed = false;
  #failed = false;

  /**
   * Watches the ancestors of `paths` (service cgroup paths). `onChange` runs after every
   * change, `onError` once when watching stops working (then `takeChanged` is always true:
   * the caller polls, as it would without a watch).
   */
  constructor(
    mount: Cgroup2Mount,
    paths: readonly string[],
    onChange: () => void,
    onError: (message: string) => void,
  ) {
    const unique = new Set(paths.flatMap(ancestorPaths));
    this.#dirs = [...unique].sort().map((p) => cgroupDir(mount, p).replace(/\/$/, "") || "/");
    this.#onChange = onChange;
    this.#onError = onError;
    this.#rebuild();
  }

  /** True when something changed since the last call (and on the first call). */
  takeChanged(): boolean {
    const changed = this.#changed || this.#failed;
    this.#changed = false;
    return changed;
  }

  /** Safe to call twice. */
  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = null;
  }

  /** (Re)watches the existing ancestors when their inodes differ from the watched ones. */
  #rebuild(): void {
    if (this.#closed || this.#failed) return;
    const present = this.#dirs.map((d) => ({ dir: d, info: pathInfo(d) }))
      .filter((d) => d.info?.isDirectory);
    const key = present.map((d) => `${d.dir}=${d.info!.ino}`).join(" ");
    if (key === this.#watchedKey && this.#watcher) return;
    this.#watcher?.close();
    this.#watcher = null;
    try {
      this.#watcher = Deno.watchFs(present.map((d) => d.dir), { recursive: false });
    } catch (e) {
      this.#failed = true;
      this.#onError(
        `cannot watch the service cgroups' directories (${(e as Error).message}); ` +
          "looking them up every interval instead",
      );
      return;
    }
    this.#watchedKey = key;
    // Anything created between the lookups above and the watch is only seen by a lookup.
    this.#changed = true;
    this.#onChange();
    this.#drain(this.#watcher);
  }

  async #drain(watcher: Deno.FsWatcher): Promise<void> {
    try {
      for await (const event of watcher) {
        if (event.kind === "access" || event.kind === "modify") continue;
        this.#changed = true;
        this.#rebuild();
        this.#onChange();
      }
    } catch (e) {
      if (this.#closed || watcher !== this.#watcher) return;
      this.#failed = true;
      this.#onError(
        `watching the service cgroups' directories failed (${(e as Error).message}); ` +
          "looking them up every interval instead",
      );
    }
  }
}
