/**
 * Where the cgroup2 mount's root sits in the kernel's cgroup hierarchy, measured once at
 * start by bpf/calibrate.bpf.o (embedded as bpf/calibrate_object.ts).
 *
 * Target levels are counted from the mount ("/a/b" is level 2), but the BPF helpers
 * (bpf_skb_ancestor_cgroup_id, bpf_get_current_ancestor_cgroup_id) take the kernel's
 * absolute levels. On a host they agree. Inside a cgroup namespace (systemd-nspawn,
 * docker, podman) the mount's root is the namespace's root, somewhere below the real
 * root, and every level is short by its depth: no packet would match. The sampler
 * runs the calibration program with BPF_PROG_TEST_RUN, whose skb belongs to the calling
 * task's cgroup, and finds its own cgroup (the inode of `<mount><path in
 * /proc/self/cgroup>`) among the ancestors the kernel lists by absolute level; the
 * difference to the path's own depth is the offset userspace adds to every level it
 * writes, so the per-packet path costs nothing extra on a host or in a container.
 */

import { BackendError } from "../lib/errors.ts";
import { type Cgroup2Mount, cgroupDir, cgroupLevel } from "../lib/cgroup.ts";
import {
  check,
  checkPointer,
  cString,
  decodeEmbeddedObject,
  lib,
  openAndLoadObject,
} from "./libbpf.ts";
import { craftPacket, ownCgroupPath, testRun } from "./packet_run.ts";
import { OBJECT_BASE64 } from "./calibrate_object.ts";

/** CALIBRATE_MAX_LEVELS in bpf/calibrate.bpf.c: ids in the `ancestors` map's one value. */
export const CALIBRATE_MAX_LEVELS = 64;
const MAP_ANCESTORS = "ancestors";
const PROG_CALIBRATE = "calibrate_egress";

export interface LevelCalibration {
  /** Add to a level counted from the mount to get the kernel's level. 0 on a host. */
  offset: number;
  /** This process's cgroup as /proc/self/cgroup names it (relative to the mount). */
  path: string;
  /** Its level counted from the mount, and in the kernel. */
  relative: number;
  absolute: number;
  /** Its id (inode number under the mount). */
  id: bigint;
}

/** This process's cgroup path and id, from /proc/self/cgroup and the mount. */
function ownCgroup(mount: Cgroup2Mount): { path: string; id: bigint } {
  let path: string;
  try {
    path = ownCgroupPath();
  } catch (cause) {
    throw new BackendError(
      `Cannot read this process's cgroup2 membership from /proc/self/cgroup: ` +
        `${(cause as Error).message}; run on a host or container with cgroup v2`,
      { cause },
    );
  }
  if (path.split("/").includes("..")) {
    throw new BackendError(
      `This process's cgroup "${path}" lies outside its own cgroup namespace, so cgroup ` +
        `levels cannot be calibrated: start stb-netacct from a process inside the ` +
        `namespace (e.g. within the container, not with \`nsenter --cgroup\` alone)`,
    );
  }
  const dir = cgroupDir(mount, path);
  let ino: number | null;
  try {
    ino = Deno.statSync(dir).ino;
  } catch (cause) {
    throw new BackendError(
      `This process's cgroup "${path}" (from /proc/self/cgroup) is not at "${dir}": the ` +
        `cgroup2 mount "${mount.mountPoint}" shows another part of the hierarchy than this ` +
        `process's cgroup namespace; mount cgroup2 from inside this namespace ` +
        `(\`mount -t cgroup2 none ${mount.mountPoint}\`)`,
      { cause },
    );
  }
  if (ino === null) throw new BackendError(`No inode number for "${dir}"`);
  return { path, id: BigInt(ino) };
}

/**
 * The ids of this process's cgroup and its ancestors by absolute level (root first), as
 * bpf_skb_ancestor_cgroup_id reports them: one test run of the calibration program, whose
 * object is closed again before returning (nothing stays in the kernel).
 */
export function kernelAncestors(): bigint[] {
  const b = lib();
  const object = openAndLoadObject(
    decodeEmbeddedObject(OBJECT_BASE64),
    "calibrate",
    "the cgroup level calibration program",
  ).pointer;
  try {
    const prog = checkPointer(
      `Finding program "${PROG_CALIBRATE}" in the calibration object`,
      b.bpf_object__find_program_by_name(object, cString(PROG_CALIBRATE)),
    );
    const progFd = check("Getting the calibration program's fd", b.bpf_program__fd(prog));
    const map = checkPointer(
      `Finding map "${MAP_ANCESTORS}" in the calibration object`,
      b.bpf_object__find_map_by_name(object, cString(MAP_ANCESTORS)),
    );
    const mapFd = check(`Getting the fd of map "${MAP_ANCESTORS}"`, b.bpf_map__fd(map));
    const zero = new Uint8Array(8);
    const frame = craftPacket({ src: zero.subarray(0, 4), dst: zero.subarray(4) });
    testRun(progFd, { frame, ifindex: 1, repeat: 1 });
    const value = new Uint8Array(8 * CALIBRATE_MAX_LEVELS);
    check(
      "Reading the calibration result",
      b.bpf_map_lookup_elem(mapFd, new Uint8Array(4), value),
    );
    const ids = new BigUint64Array(value.buffer);
    const out: bigint[] = [];
    for (const id of ids) {
      if (id === 0n) break;
      out.push(id);
    }
    return out;
  } finally {
    b.bpf_object__close(object);
  }
}

/**
 * Measures the level offset of `mount` for this process. Throws a BackendError naming the
 * problem when it cannot: counting at wrong levels would silently count nothing.
 */
export function calibrateLevels(mount: Cgroup2Mount): LevelCalibration {
  const own = ownCgroup(mount);
  const ancestors = kernelAncestors();
  const absolute = ancestors.lastIndexOf(own.id);
  const relative = cgroupLevel(own.path);
  if (absolute < 0) {
    const deep = ancestors.length >= CALIBRATE_MAX_LEVELS;
    throw new BackendError(
      `Calibrating cgroup levels failed: this process's cgroup "${own.path}" (id ${own.id}) ` +
        `is not among the ancestors the kernel reports for its sockets ` +
        `(${ancestors.join(", ") || "none"})` +
        (deep
          ? `: it sits deeper than ${CALIBRATE_MAX_LEVELS} levels; run from a shallower cgroup`
          : `: the cgroup2 mount "${mount.mountPoint}" is not this process's hierarchy; ` +
            `mount cgroup2 from inside this cgroup namespace`),
    );
  }
  if (absolute < relative) {
    throw new BackendError(
      `Calibrating cgroup levels failed: the kernel puts this process's cgroup ` +
        `"${own.path}" at level ${absolute}, above its ${relative} levels below the mount ` +
        `"${mount.mountPoint}"; is "${mount.mountPoint}" a cgroup2 mount of this namespace?`,
    );
  }
  return { offset: absolute - relative, path: own.path, relative, absolute, id: own.id };
}
