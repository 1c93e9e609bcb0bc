/**
 * The target-matching half shared by the counting programs and the connect events programs
 * (both include bpf/targets.h): which cgroup levels to probe, and the double-buffered config
 * slot that userspace rewrites while packets keep reading the other one.
 */

import { BackendError } from "../lib/errors.ts";
import { cgroupLevel } from "../lib/cgroup.ts";
import { encodeU32, MAX_LEVELS } from "./netacct_abi.ts";
import { check, lib } from "./libbpf.ts";

/**
 * The distinct depths of the service cgroups, deepest first (with nested targets the most
 * specific service wins). `who` names the programs in the error, e.g. "the ebpf backend".
 */
export function targetLevels(paths: Iterable<string>, who: string): number[] {
  const levels = [...new Set([...paths].map(cgroupLevel))].sort((a, b) => b - a);
  if (levels.length > MAX_LEVELS) {
    throw new BackendError(
      `The service cgroups sit at ${levels.length} different depths (${levels.join(", ")}), ` +
        `${who} probes at most ${MAX_LEVELS}: move services to fewer depths`,
    );
  }
  return levels;
}

/**
 * Writes `config` into the slot no packet reads, then flips `active` to it with one aligned
 * 4-byte write, so a packet sees the old target list or the new one, never a mix. Returns
 * the new active slot. `what` names the programs in errors, e.g. "the counting programs".
 */
export function switchConfigSlot(
  maps: { config: number; active: number },
  active: number,
  config: Uint8Array<ArrayBuffer>,
  what: string,
): number {
  const b = lib();
  const next = active ^ 1;
  check(
    `Writing the target cgroup ids of ${what}`,
    b.bpf_map_update_elem(maps.config, encodeU32(next), config, 0n),
  );
  check(
    `Switching ${what} to the new target cgroup ids`,
    b.bpf_map_update_elem(maps.active, encodeU32(0), encodeU32(next), 0n),
  );
  return next;
}
