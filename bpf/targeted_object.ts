/**
 * A loaded BPF object whose programs count or report for a set of service cgroups: the one
 * owner of what the counting programs (backends/ebpf.ts) and the connect events programs
 * (events/collector.ts) both keep. Both include bpf/targets.h, so both hold a `config` map
 * of two slots and an `active` selector: targets are written into the slot no packet reads,
 * then `active` flips with one aligned 4-byte write, and a program sees the old list or the
 * new one, never a mix.
 *
 * Each service gets an index for the life of the object (its counter slot, its name in
 * events); target levels are counted from the cgroup2 mount and written with the offset
 * bpf/levels.ts measures (non-zero inside a cgroup namespace). The programs are linked at
 * the service cgroups themselves (bpf/cgroup_links.ts), so they run for StB's sockets only,
 * and follow every target change: new targets go into the config first, then the cgroups
 * that appeared are linked, so a new cgroup's first packet already finds its id.
 */

import { BackendError } from "../lib/errors.ts";
import { type Cgroup2Mount, cgroupLevel, type ServiceTarget } from "../lib/cgroup.ts";
import {
  check,
  checkPointer,
  cString,
  decodeEmbeddedObject,
  lib,
  objectMapFd,
  openAndLoadObject,
  programAttachType,
} from "./libbpf.ts";
import { attachPoints, CgroupLinks } from "./cgroup_links.ts";
import {
  encodeConfig,
  encodeU32,
  MAX_LEVELS,
  MAX_SERVICES,
  type TargetEntry,
} from "./netacct_abi.ts";
import { calibrateLevels } from "./levels.ts";

/** Which object, and how errors name it. */
export interface ObjectSpec {
  /** The object's name for libbpf, e.g. "netacct". */
  name: string;
  /** The embedded ELF (bpf/NAME_object.ts). */
  base64: string;
  /** Its two target maps (bpf/targets.h): the config slots and the active selector. */
  maps: { config: string; active: string };
  /** The programs in load errors, e.g. "the BPF programs". */
  programs: string;
  /** The programs in target-switch errors, e.g. "the counting programs". */
  switched: string;
  /** The object in map and link errors, e.g. "the BPF object". */
  object: string;
  /** Who probes the levels, for the too-many-depths error, e.g. "the ebpf backend". */
  who: string;
  /** How the service limit is stated, e.g. "the ebpf backend counts at most 512 services". */
  serviceLimit: string;
}

/** Two services named the same cgroup: `kept` counts its traffic, `shadowed` nothing. */
export interface SharedCgroup {
  id: bigint;
  shadowed: string;
  kept: string;
}

export class TargetedObject {
  /** The ELF image libbpf parsed; kept referenced while the object lives. */
  #bytes: Uint8Array<ArrayBuffer> | null;
  #pointer: Deno.PointerObject | null;
  readonly #mount: Cgroup2Mount;
  #links: CgroupLinks | null = null;
  #config: number;
  #activeMap: number;
  /** The config slot packets read now (the value of the `active` map). */
  #active = 0;
  /** Service name -> index, fixed for the life of the object, and the reverse. */
  #index = new Map<string, number>();
  #names: string[] = [];
  /** Service paths, to know which cgroup levels the programs must probe. */
  #paths = new Map<string, string>();
  #levels: number[] = [];
  /** Added to every level written: the depth of the mount's root in the kernel's hierarchy. */
  readonly levelOffset: number;
  /** Possible CPUs: the number of values a per-CPU map holds per key. */
  readonly cpus: number;

  /**
   * Registers `targets` (throws before loading anything when they do not fit), loads the
   * object and measures the level offset. Targets are written by `applyTargets`.
   */
  constructor(
    readonly spec: ObjectSpec,
    targets: ServiceTarget[],
    mount: Cgroup2Mount,
    /** Maps (by name) the object uses instead of making its own: pinned by an earlier run. */
    reuse: ReadonlyMap<string, number> = new Map(),
  ) {
    this.cpus = check("Counting possible CPUs", lib().libbpf_num_possible_cpus());
    this.#mount = mount;
    this.register(targets);
    this.#bytes = decodeEmbeddedObject(spec.base64);
    this.#pointer = openAndLoadObject(this.#bytes, spec.name, spec.programs, reuse).pointer;
    try {
      this.#config = this.mapFd(spec.maps.config);
      this.#activeMap = this.mapFd(spec.maps.active);
      this.levelOffset = calibrateLevels(mount).offset;
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** The fd of one of the object's maps. */
  mapFd(name: string): number {
    return objectMapFd(this.#live(), name, this.spec.object);
  }

  /** A loaded program's fd (for BPF_PROG_TEST_RUN in tests and benchmarks). */
  programFd(name: string): number {
    const b = lib();
    const prog = checkPointer(
      `Finding program "${name}" in ${this.spec.object}`,
      b.bpf_object__find_program_by_name(this.#live(), cString(name)),
    );
    return check(`Getting the fd of program "${name}"`, b.bpf_program__fd(prog));
  }

  /**
   * Links the named programs at the cgroups of `targets` (attachPoints), and from then on
   * wherever `applyTargets` says; `close` ends the links. With `pins`, links are pinned
   * in its directory, and those an earlier run pinned there are taken over first.
   */
  linkAt(
    programs: readonly string[],
    targets: readonly ServiceTarget[],
    pins: { dir: string; log: (message: string) => void } | null = null,
  ): { adopted: number; cgroups: number } {
    const object = this.#live();
    const links = this.#links = new CgroupLinks({
      mount: this.#mount,
      programs: programs.map((name) => ({
        name,
        ...programAttachType(object, name, this.spec.object),
      })),
      what: this.spec.object,
      pinDir: pins?.dir ?? null,
      log: pins?.log ?? (() => {}),
    });
    const adopted = links.adopt();
    links.sync(attachPoints(targets));
    return { adopted, cgroups: links.cgroups.length };
  }

  /** The cgroups the programs are linked at now, by id. */
  get linkedCgroups(): bigint[] {
    return this.#links?.cgroups ?? [];
  }

  /** The service index of a registered name. */
  indexOf(name: string): number | undefined {
    return this.#index.get(name);
  }

  /** Registered services by index. */
  get names(): readonly string[] {
    return this.#names;
  }

  /** The distinct target levels, deepest first, counted from the mount. */
  get levels(): readonly number[] {
    return this.#levels;
  }

  /** The target levels as the kernel counts them. */
  kernelLevels(): number[] {
    return this.#levels.map((level) => level + this.levelOffset);
  }

  /** Gives new service names an index and checks what fits the programs' arrays. */
  register(targets: ServiceTarget[]): void {
    for (const t of targets) {
      this.#paths.set(t.name, t.path);
      if (this.#index.has(t.name)) continue;
      if (this.#index.size >= MAX_SERVICES) {
        throw new BackendError(`Service "${t.name}" is one too many: ${this.spec.serviceLimit}`);
      }
      this.#index.set(t.name, this.#index.size);
      this.#names.push(t.name);
    }
    this.#levels = targetLevels(this.#paths.values(), this.spec.who);
  }

  /**
   * Makes the programs follow exactly `targets` (registering new names first): the whole
   * list goes into the config slot no packet reads, then `active` flips to it; then, once
   * linked, the links follow (new cgroups linked, gone ones released). Returns the
   * services that name a cgroup another one names too (the later one keeps it).
   */
  applyTargets(targets: ServiceTarget[], gsoCorrection = false): SharedCgroup[] {
    this.register(targets);
    const wanted = new Map<bigint, TargetEntry>();
    const owner = new Map<bigint, string>();
    const shared: SharedCgroup[] = [];
    for (const t of targets) {
      if (t.id === null) continue;
      const service = this.#index.get(t.name)!; // registered above
      const before = owner.get(t.id);
      if (before !== undefined) shared.push({ id: t.id, shadowed: before, kept: t.name });
      owner.set(t.id, t.name);
      wanted.set(t.id, { id: t.id, service });
    }
    this.#switchTo(encodeConfig(this.kernelLevels(), [...wanted.values()], gsoCorrection));
    this.#links?.sync(attachPoints(targets));
    return shared;
  }

  /** Writes `config` into the slot no packet reads, then flips `active` to it. */
  #switchTo(config: Uint8Array<ArrayBuffer>): void {
    const b = lib();
    const what = this.spec.switched;
    const next = this.#active ^ 1;
    check(
      `Writing the target cgroup ids of ${what}`,
      b.bpf_map_update_elem(this.#config, encodeU32(next), config, 0n),
    );
    check(
      `Switching ${what} to the new target cgroup ids`,
      b.bpf_map_update_elem(this.#activeMap, encodeU32(0), encodeU32(next), 0n),
    );
    this.#active = next;
  }

  /**
   * Ends the links (`keep`: pinned ones stay, see CgroupLinks.close), then closes the
   * object. Every step is tried; the errors come back for the owner to report. Safe to
   * call twice.
   */
  close(keep = false): unknown[] {
    const errors = this.#links?.close(keep) ?? [];
    this.#links = null;
    if (this.#pointer) lib().bpf_object__close(this.#pointer);
    this.#pointer = null;
    this.#bytes = null;
    return errors;
  }

  #live(): Deno.PointerObject {
    if (this.#pointer === null) throw new BackendError(`${this.spec.object} is closed`);
    return this.#pointer;
  }
}

/**
 * The distinct depths of the service cgroups, deepest first (with nested targets the most
 * specific service wins). `who` names the programs in the error, e.g. "the ebpf backend".
 */
function targetLevels(paths: Iterable<string>, who: string): number[] {
  const levels = [...new Set([...paths].map(cgroupLevel))].sort((a, b) => b - a);
  if (levels.length > MAX_LEVELS) {
    throw new BackendError(
      `The service cgroups sit at ${levels.length} different depths (${levels.join(", ")}), ` +
        `${who} probes at most ${MAX_LEVELS}: move services to fewer depths`,
    );
  }
  return levels;
}
