/**
 * The two cgroup layouts the suite runs on, as a prefix for the command line of everything
 * that must see the layout (the CLI and the service processes):
 *
 * - hybrid: this testbed as it is, cgroup2 at /sys/fs/cgroup/unified beside v1 controllers;
 * - v2: the user's Debian 12 host, cgroup2 alone at /sys/fs/cgroup. Made with a private
 *   mount namespace (held open by a sleeping process) in which the v1 tree is unmounted and
 *   cgroup2 mounted at /sys/fs/cgroup. Same kernel cgroups, so the test process keeps
 *   creating and removing them through its own mount.
 *
 * Everything also enters a netns with `nsenter --net=` (not `ip netns exec`, which remounts
 * /sys and would hide the cgroup2 mount of the v2 namespace). nsenter execs the command, so
 * the pid a test spawns is the command's own pid: signals reach it directly.
 */

import { findCgroup2Mount } from "../../lib/cgroup.ts";
import { output } from "./exec.ts";

export type LayoutName = "hybrid" | "v2";
export const LAYOUT_NAMES: LayoutName[] = ["hybrid", "v2"];

export interface Layout {
  readonly name: LayoutName;
  /** Where cgroup2 is mounted for processes started through `wrap`. */
  readonly mountInView: string;
  /** Where cgroup2 is mounted for the test process itself. */
  readonly mountHere: string;
  /** Command prefix: enter the layout's mount namespace and the given netns. */
  wrap(netnsPath: string): string[];
  close(): Promise<void>;
}

/**
 * The layout this machine has: "hybrid" on this testbed, "v2" on a pure cgroup2 host such as
 * Debian 12 (and the kernel-6.1 lane's guest), where the hybrid layout cannot be made.
 */
export function nativeLayout(): LayoutName {
  return findCgroup2Mount().mountPoint === "/sys/fs/cgroup" ? "v2" : "hybrid";
}

export async function openLayout(name: LayoutName): Promise<Layout> {
  const here = findCgroup2Mount().mountPoint;
  if (name === "hybrid") {
    if (here === "/sys/fs/cgroup") {
      throw new Error("This host is pure cgroup v2: the hybrid layout cannot be tested here");
    }
    return {
      name,
      mountInView: here,
      mountHere: here,
      wrap: (netns) => ["nsenter", `--net=${netns}`, "--"],
      close: () => Promise.resolve(),
    };
  }
  return await openPureV2(here);
}

async function openPureV2(here: string): Promise<Layout> {
  const holder = new Deno.Command("unshare", {
    args: [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && echo ready && exec sleep infinity",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  reader.releaseLock();
  holder.stdout.cancel().catch(() => {});
  const close = async () => {
    try {
      holder.kill("SIGKILL");
    } catch { /* already gone */ }
    await holder.status;
  };
  if (first.value?.trim() !== "ready") {
    await close();
    throw new Error("Could not make a pure cgroup2 mount namespace (unshare + mount failed)");
  }
  const mntns = `/proc/${holder.pid}/ns/mnt`;
  const layout: Layout = {
    name: "v2",
    mountInView: "/sys/fs/cgroup",
    mountHere: here,
    wrap: (netns) => ["nsenter", `--mount=${mntns}`, `--net=${netns}`, "--"],
    close,
  };
  // The CLI must see exactly what the user's host shows: one cgroup2 mount, no v1.
  const mounts = await output(["nsenter", `--mount=${mntns}`, "--", "cat", "/proc/self/mountinfo"]);
  const cgroupLines = mounts.split("\n").filter((l) => / - cgroup2? /.test(l));
  if (cgroupLines.length !== 1 || !cgroupLines[0]?.includes(" /sys/fs/cgroup ")) {
    await close();
    throw new Error(`v2 layout has unexpected cgroup mounts:\n${cgroupLines.join("\n")}`);
  }
  return layout;
}
