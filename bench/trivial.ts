/**
 * Links bench/trivial.bpf.o's floor programs to a cgroup, as the benches that judge
 * netacct's programs against them need: real_cost.ts (`trivial` beside the programs, for
 * BPF_ENABLE_STATS) and throughput.ts's "floor" configuration (`trivial` and
 * `trivial_ingress` at the cgroup2 root, for the throughput any cgroup_skb program costs).
 */

import {
  check,
  checkPointer,
  closeFd,
  closeLinksAndObject,
  cString,
  lib,
  openAndLoadObject,
  openDirectory,
} from "../bpf/libbpf.ts";

export interface TrivialLinks {
  /** Kernel program id by program name, to find their stats. */
  ids: Record<string, number>;
  /** Detaches the links, then frees the object; throws the first failure after trying all. */
  close(): void;
}

/** Loads bench/trivial.bpf.o and links each of `programs` to `cgroupDir` at its section's direction. */
export async function linkTrivial(cgroupDir: string, programs: string[]): Promise<TrivialLinks> {
  const b = lib();
  const bytes = await Deno.readFile(new URL("./trivial.bpf.o", import.meta.url));
  const obj = openAndLoadObject(bytes, "trivial", "bench/trivial.bpf.o").pointer;
  const links: Deno.PointerObject[] = [];
  const close = () => {
    const errors = closeLinksAndObject(links, obj);
    if (errors.length > 0) throw errors[0];
  };
  try {
    const ids: Record<string, number> = {};
    const fd = openDirectory(cgroupDir);
    try {
      for (const name of programs) {
        const prog = checkPointer(
          `Finding program "${name}"`,
          b.bpf_object__find_program_by_name(obj, cString(name)),
        );
        links.push(checkPointer(
          `Attaching "${name}" to "${cgroupDir}"`,
          b.bpf_program__attach_cgroup(prog, fd),
        ));
        const progFd = check(`Getting the fd of "${name}"`, b.bpf_program__fd(prog));
        const info = Deno.readTextFileSync(`/proc/self/fdinfo/${progFd}`);
        ids[name] = Number(info.match(/^prog_id:\s+(\d+)/m)?.[1]);
      }
    } finally {
      closeFd(fd);
    }
    return { ids, close };
  } catch (e) {
    closeLinksAndObject(links, obj);
    throw e;
  }
}
