/**
 * Before the suite: removes what an earlier run of it left when it was killed (SIGKILL,
 * a lost terminal) before its `finally` blocks ran: network namespaces and test cgroups
 * named for a process that no longer exists. Another live run's are never touched, nor
 * anything without the harness's run scope in its name. Without this, one crashed run
 * makes every later suite fail its leftover checks until someone cleans up by hand.
 */

import { findCgroup2Mount } from "../../lib/cgroup.ts";
import { CGROUP_PREFIX, cgroupLeftovers, killAndRemove } from "./cgroups.ts";
import { processExists, run } from "./exec.ts";
import { netnsLeftovers } from "./leftovers.ts";
import { NETNS_PREFIX } from "./topology.ts";
import { CONTAINER_CGROUP_PREFIX, parseNameSystemdMount } from "../systemd/container.ts";

/** Whether `name` (prefix + pid + "x" + tag) was made by a process that is gone. */
function stale(name: string, prefix: string): boolean {
  const m = /^(\d+)x/.exec(name.slice(prefix.length));
  return m !== null && !processExists(Number(m[1]));
}

/** Removes stale namespaces and cgroups; returns what it removed, as readable lines. */
export async function sweepStale(mountPoint = findCgroup2Mount().mountPoint): Promise<string[]> {
  const removed: string[] = [];
  for (const ns of await netnsLeftovers()) {
    if (!stale(ns, NETNS_PREFIX)) continue;
    await run(["ip", "netns", "del", ns]);
    removed.push(`netns ${ns}`);
  }
  // The systemd test's container cgroups (tests/systemd/container.ts) sit beside ours, and
  // on a hybrid host nspawn mirrors each in the v1 name=systemd hierarchy too.
  const v1 = parseNameSystemdMount(Deno.readTextFileSync("/proc/self/mountinfo"));
  for (const root of v1 === null ? [mountPoint] : [mountPoint, v1]) {
    const containers = [...Deno.readDirSync(root)]
      .filter((e) => e.isDirectory && e.name.startsWith(CONTAINER_CGROUP_PREFIX))
      .filter((e) => stale(e.name, CONTAINER_CGROUP_PREFIX))
      .map((e) => `${root}/${e.name}`);
    for (const dir of containers) {
      await killAndRemove(dir);
      removed.push(`cgroup ${dir}`);
    }
  }
  for (const dir of cgroupLeftovers(mountPoint)) {
    if (!stale(dir.slice(mountPoint.length + 1), CGROUP_PREFIX)) continue;
    await killAndRemove(dir);
    removed.push(`cgroup ${dir}`);
  }
  return removed;
}

if (import.meta.main) {
  for (const line of await sweepStale()) {
    console.log(`sweep: removed ${line}, left by an earlier run of the suite that was killed`);
  }
}
