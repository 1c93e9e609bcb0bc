/**
 * Where the cgroup2 hierarchy is mounted and what a service cgroup's id is now.
 *
 * The user's Debian host mounts cgroup2 at /sys/fs/cgroup; hybrid hosts (this testbed)
 * at /sys/fs/cgroup/unified. Service paths in the config are relative to that mount,
 * exactly as systemd shows them (`systemctl --user show -p ControlGroup`).
 */

import { pathInfo } from "./libc.ts";

export class CgroupError extends Error {
  override name = "CgroupError";
}

/** A configured service's cgroup as it is now: what the backends and BPF programs target. */
export interface ServiceTarget {
  /** Config key, e.g. "server". Stable for the life of `run`. */
  name: string;
  /** Cgroup path relative to the cgroup2 mount, e.g. "/user.slice/.../stb-next-server@split.service". */
  path: string;
  /** Inode number of the cgroup directory now, or null while it does not exist. */
  id: bigint | null;
}

export interface Cgroup2Mount {
  /** Absolute mount point, e.g. "/sys/fs/cgroup" or "/sys/fs/cgroup/unified". */
  mountPoint: string;
  /**
   * "unified" when cgroup2 is mounted at /sys/fs/cgroup itself, "hybrid" when it sits
   * below it beside v1 controllers. nftables resolves `socket cgroupv2` paths relative to
   * /sys/fs/cgroup, so this is what its rules must account for.
   */
  layout: "unified" | "hybrid";
}

/** Undoes the octal escapes mountinfo uses for spaces and friends ("\040"). */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * Finds the cgroup2 mount in /proc/self/mountinfo text. When several exist (bind mounts),
 * the one at the shortest path wins; a "/" root field is required so a mount of a
 * sub-cgroup (containers) is not mistaken for the hierarchy's root.
 */
export function parseCgroup2Mount(mountinfo: string): Cgroup2Mount | null {
  let best: string | null = null;
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(" ");
    const fsType = line.slice(sep + 3).split(" ")[0];
    const at = left[4];
    if (fsType !== "cgroup2" || left[3] !== "/" || at === undefined) continue;
    const mountPoint = unescapeMountinfo(at);
    if (best === null || mountPoint.length < best.length) best = mountPoint;
  }
  if (best === null) return null;
  return { mountPoint: best, layout: best === "/sys/fs/cgroup" ? "unified" : "hybrid" };
}

export function findCgroup2Mount(): Cgroup2Mount {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch (cause) {
    throw new CgroupError("Cannot read /proc/self/mountinfo: is /proc mounted?", { cause });
  }
  const mount = parseCgroup2Mount(text);
  if (!mount) {
    throw new CgroupError(
      "No cgroup2 file system is mounted: stb-netacct attributes traffic by cgroup v2; " +
        "mount it with `mount -t cgroup2 none /sys/fs/cgroup` or boot with systemd.unified_cgroup_hierarchy=1",
    );
  }
  return mount;
}

/**
 * Checks a configured service path: absolute, no "." or ".." parts, no empty parts.
 * Returns it normalised (no trailing slash).
 */
export function validateCgroupPath(path: string): string {
  if (!path.startsWith("/")) {
    throw new CgroupError(
      `"${path}" is not an absolute cgroup path: start it with "/" as in ` +
        `\`systemctl --user show -p ControlGroup UNIT\``,
    );
  }
  const parts = path.split("/").slice(1);
  if (parts.length > 0 && parts[parts.length - 1] === "") parts.pop();
  if (parts.length === 0) {
    throw new CgroupError(`"${path}" is the cgroup2 root: name the service's own cgroup`);
  }
  for (const p of parts) {
    if (p === "" || p === "." || p === "..") {
      throw new CgroupError(
        `"${path}" has an empty, "." or ".." part: write the path as systemd prints it`,
      );
    }
    if (p.includes("\0")) throw new CgroupError(`"${path}" contains a NUL byte`);
  }
  return "/" + parts.join("/");
}

/** Depth below the cgroup2 root: "/a/b" is level 2 (the root is level 0). */
export function cgroupLevel(path: string): number {
  return path.split("/").filter((p) => p !== "").length;
}

/** Absolute directory of a service cgroup under the mount. */
export function cgroupDir(mount: Cgroup2Mount, path: string): string {
  return mount.mountPoint.replace(/\/$/, "") + path;
}

/**
 * Removes a cgroup directory (gone already is fine), retried for about 2 s: a process that
 * just exited can keep its cgroup busy (EBUSY) for a moment.
 */
export async function removeCgroupDir(dir: string): Promise<void> {
  for (let i = 0;; i++) {
    try {
      await Deno.remove(dir);
      return;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      if (i >= 100) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/**
 * The cgroup's id as the kernel reports it to BPF (the directory's inode number), or null
 * when it does not exist right now (service stopped, or not started yet).
 */
export function cgroupId(mount: Cgroup2Mount, path: string): bigint | null {
  // Asked every interval for every service: statx through libc, no exception when absent.
  const info = pathInfo(cgroupDir(mount, path));
  return info?.isDirectory ? info.ino : null;
}
