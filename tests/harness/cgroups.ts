/**
 * The three StB service cgroups, replicated under a per-test prefix so tests never touch a
 * real user's cgroups and can run beside each other:
 *
 *   <cgroup2 mount>/stb-e2e-<pid>x<tag>/user.slice/user-1000.slice/user@1000.service/app.slice/
 *     app-stb\x2dnext\x2dserver.slice/stb-next-server@split.service      (and host-agent, shell)
 *
 * The `\x2d` is literal, as systemd writes it. Paths handed to the CLI's config are relative
 * to the cgroup2 mount, exactly like the real ones.
 */

import { DEFAULT_SERVICES } from "../../lib/config.ts";
import { oursOrStale, RUN_SCOPE, sleep } from "./exec.ts";

export const CGROUP_PREFIX = "stb-e2e-";
export const SERVICE_NAMES = Object.keys(DEFAULT_SERVICES);

export class CgroupTree {
  /** Top directory of this test's tree, relative to the mount: "/stb-e2e-<pid>x<tag>". */
  readonly top: string;

  /** `mountPoint` is where cgroup2 is mounted as the test process sees it. */
  constructor(readonly mountPoint: string, tag: string) {
    this.top = `/${CGROUP_PREFIX}${RUN_SCOPE}${tag}`;
  }

  /** A service's path relative to the cgroup2 mount (what the config says). */
  servicePath(name: string): string {
    const real = DEFAULT_SERVICES[name];
    if (real === undefined) throw new Error(`unknown service "${name}"`);
    return this.top + real;
  }

  /** The services as the CLI's config wants them. */
  configServices(): Record<string, string> {
    return Object.fromEntries(SERVICE_NAMES.map((n) => [n, this.servicePath(n)]));
  }

  /** Absolute directory as seen from a mount namespace whose cgroup2 sits at `mount`. */
  dir(name: string, mount = this.mountPoint): string {
    return mount + this.servicePath(name);
  }

  exists(name: string): boolean {
    try {
      return Deno.statSync(this.dir(name)).isDirectory;
    } catch {
      return false;
    }
  }

  /** Any cgroup below the top ("/slice/web.service"), relative to the cgroup2 mount. */
  path(rel: string): string {
    return this.top + rel;
  }

  /** Its directory as seen from a mount namespace whose cgroup2 sits at `mount`. */
  dirOf(rel: string, mount = this.mountPoint): string {
    return mount + this.path(rel);
  }

  /** Makes a cgroup below the top (and its parents). */
  make(rel: string): void {
    Deno.mkdirSync(this.dirOf(rel), { recursive: true });
  }

  /** Kills what runs in a cgroup below the top and removes it, children first. */
  async removeAt(rel: string): Promise<void> {
    await killAndRemove(this.dirOf(rel));
  }

  /** The directory's inode number: the id BPF sees. */
  id(name: string): number {
    return Deno.statSync(this.dir(name)).ino!;
  }

  create(name: string): void {
    Deno.mkdirSync(this.dir(name), { recursive: true });
  }

  /** Kills what runs in the service's cgroup and removes just its leaf directory. */
  async remove(name: string): Promise<void> {
    await killAndRemove(this.dir(name));
  }

  /** A service restart as systemd does it: the cgroup disappears and comes back (new id). */
  async recreate(name: string): Promise<void> {
    const before = this.id(name);
    await this.remove(name);
    this.create(name);
    if (this.id(name) === before) {
      throw new Error(`recreated cgroup of "${name}" kept id ${before}`);
    }
  }

  /** Kills every process in the tree, then removes it deepest first. Idempotent. */
  async teardown(): Promise<void> {
    await killAndRemove(this.mountPoint + this.top);
  }
}

function subdirs(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => `${dir}/${e.name}`);
  } catch {
    return [];
  }
}

function procsOf(dir: string): number[] {
  try {
    return Deno.readTextFileSync(`${dir}/cgroup.procs`).split("\n").filter((l) => l).map(Number);
  } catch {
    return [];
  }
}

/** Post-order walk: children before their parent, so rmdir works in list order. */
function deepestFirst(dir: string): string[] {
  return [...subdirs(dir).flatMap(deepestFirst), dir];
}

export async function killAndRemove(dir: string): Promise<void> {
  try {
    Deno.statSync(dir);
  } catch {
    return;
  }
  const dirs = deepestFirst(dir);
  // cgroup.kill (5.14+) kills the whole subtree at once, also processes forking right now.
  try {
    Deno.writeTextFileSync(`${dir}/cgroup.kill`, "1");
  } catch {
    for (const d of dirs) {
      for (const pid of procsOf(d)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
    }
  }
  for (const d of dirs) {
    for (let i = 0;; i++) {
      try {
        Deno.removeSync(d);
        break;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) break;
        // Busy until the killed processes are reaped.
        if (i >= 100) throw new Error(`cannot remove cgroup ${d}: ${e}`, { cause: e });
        await sleep(20);
      }
    }
  }
}

/** Every test tree left under a cgroup2 mount (for the leftover check). */
export function cgroupLeftovers(mountPoint: string): string[] {
  return subdirs(mountPoint).filter((d) => {
    const name = d.slice(mountPoint.length + 1);
    return name.startsWith(CGROUP_PREFIX) && oursOrStale(name, CGROUP_PREFIX);
  });
}
