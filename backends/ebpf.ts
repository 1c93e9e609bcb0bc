/**
 * The ebpf backend: bpf/netacct.bpf.o loaded through libbpf (FFI) and linked once at the
 * cgroup2 root, ingress and egress. Which cgroups count is data, not attachment: the
 * `targets` map (cgroup id -> service index) that `retarget` rewrites when a service
 * restarts or appears, so counting never stops and totals, kept per service index in
 * per-CPU slots, survive every change.
 *
 * Nothing is pinned: the two BPF links live as long as this process's fds, so a crashed
 * daemon leaves nothing attached and `start` has no leftovers to clean.
 */

import {
  type Backend,
  BackendError,
  type BackendOptions,
  type CounterSample,
  type ServiceTarget,
} from "./backend.ts";
import { cgroupLevel } from "../lib/cgroup.ts";
import { check, checkPointer, closeFd, cString, lib, OPEN_OPTS, openDirectory } from "./libbpf.ts";
import {
  COUNTER_SIZE,
  counterSlot,
  DIR_RX,
  DIR_TX,
  encodeConfig,
  encodeLpmKey,
  encodeU32,
  encodeU64,
  idBits,
  MAP_CONFIG,
  MAP_COUNTERS,
  MAP_EXCLUDE_V4,
  MAP_EXCLUDE_V6,
  MAP_TARGETS,
  MAX_EXCLUDE,
  MAX_LEVELS,
  MAX_SERVICES,
  PROG_EGRESS,
  PROG_INGRESS,
  sumPerCpu,
} from "./bpf_abi.ts";

/** The committed object, found beside the sources and embedded by `deno compile --include`. */
export const OBJECT_URL = new URL("../bpf/netacct.bpf.o", import.meta.url);

interface Maps {
  config: number;
  targets: number;
  excludeV4: number;
  excludeV6: number;
  counters: number;
}

/** Reused every read: one key and one value buffer per counter slot. */
interface SlotBuffers {
  key: Uint8Array<ArrayBuffer>;
  value: Uint8Array<ArrayBuffer>;
}

export class EbpfBackend implements Backend {
  readonly name = "ebpf";

  /** The ELF image libbpf parsed; kept referenced while the object lives. */
  #objectBytes: Uint8Array<ArrayBuffer> | null = null;
  #object: Deno.PointerObject | null = null;
  #links: Deno.PointerObject[] = [];
  #maps: Maps | null = null;
  #cpus = 0;
  /** Service name -> index into the counter slots, fixed for the life of the object. */
  #index = new Map<string, number>();
  /** Service paths, to know which cgroup levels the program must probe. */
  #paths = new Map<string, string>();
  #levels: number[] = [];
  /** What the targets map holds now: cgroup id -> service index. */
  #installed = new Map<bigint, number>();
  #slots: SlotBuffers[][] = [];
  #log: (message: string) => void = () => {};

  async start(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
    if (this.#object) throw new BackendError("The ebpf backend is already started: stop it first");
    this.#log = options.log;
    const excludeV4 = options.exclude.filter((c) => c.family === 4);
    const excludeV6 = options.exclude.filter((c) => c.family === 6);
    for (const [family, list] of [[4, excludeV4], [6, excludeV6]] as const) {
      if (list.length > MAX_EXCLUDE) {
        throw new BackendError(
          `${list.length} excluded IPv${family} prefixes, the ebpf backend holds at most ` +
            `${MAX_EXCLUDE}: merge prefixes in "exclude"`,
        );
      }
    }
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await Deno.readFile(OBJECT_URL);
    } catch (cause) {
      throw new BackendError(
        `Cannot read the BPF object "${OBJECT_URL.pathname}": rebuild it with \`make bpf\` ` +
          `(or \`make build\` for the binary)`,
        { cause },
      );
    }
    try {
      const b = lib();
      this.#cpus = check("Counting possible CPUs", b.libbpf_num_possible_cpus());
      this.#register(targets);
      this.#objectBytes = bytes;
      const name = cString("netacct");
      const opts = new Uint8Array(OPEN_OPTS.size);
      const view = new DataView(opts.buffer);
      view.setBigUint64(OPEN_OPTS.sz, BigInt(OPEN_OPTS.size), true);
      view.setBigUint64(
        OPEN_OPTS.object_name,
        BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(name))),
        true,
      );
      this.#object = checkPointer(
        "Opening the BPF object",
        b.bpf_object__open_mem(bytes, BigInt(bytes.length), opts),
      );
      check("Loading the BPF programs into the kernel", b.bpf_object__load(this.#object));
      this.#maps = {
        config: this.#mapFd(MAP_CONFIG),
        targets: this.#mapFd(MAP_TARGETS),
        excludeV4: this.#mapFd(MAP_EXCLUDE_V4),
        excludeV6: this.#mapFd(MAP_EXCLUDE_V6),
        counters: this.#mapFd(MAP_COUNTERS),
      };
      const one = new Uint8Array([1]);
      for (const cidr of options.exclude) {
        const fd = cidr.family === 4 ? this.#maps.excludeV4 : this.#maps.excludeV6;
        check(
          `Adding excluded prefix "${cidr.text}"`,
          b.bpf_map_update_elem(fd, encodeLpmKey(cidr), one, 0n),
        );
      }
      this.#applyTargets(targets);
      this.#attach(options.mount.mountPoint);
      options.log(
        `ebpf: counting ${targets.length} service(s) at cgroup levels ` +
          `${this.#levels.join(",")}, programs linked at "${options.mount.mountPoint}"`,
      );
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  async read(): Promise<CounterSample> {
    const maps = this.#maps;
    if (!maps) throw new BackendError("The ebpf backend is not started");
    const b = lib();
    const sample: CounterSample = {};
    for (const [name, index] of this.#index) {
      const [rx, tx] = this.#slots[index].map(({ key, value }) => {
        check(`Reading counters of "${name}"`, b.bpf_map_lookup_elem(maps.counters, key, value));
        return sumPerCpu(value, this.#cpus);
      });
      sample[name] = {
        rxBytes: rx.bytes,
        txBytes: tx.bytes,
        rxPackets: rx.packets,
        txPackets: tx.packets,
      };
    }
    return await Promise.resolve(sample);
  }

  async retarget(targets: ServiceTarget[]): Promise<void> {
    if (!this.#maps) throw new BackendError("The ebpf backend is not started");
    this.#register(targets);
    this.#applyTargets(targets);
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    const b = this.#object || this.#links.length > 0 ? lib() : null;
    const errors: unknown[] = [];
    // Reverse order of start: links (detach) first, then the object (programs and maps).
    for (const link of this.#links.splice(0).reverse()) {
      try {
        check("Detaching a BPF link", b!.bpf_link__destroy(link));
      } catch (e) {
        errors.push(e);
      }
    }
    if (this.#object) {
      b!.bpf_object__close(this.#object);
      this.#object = null;
    }
    if (this.#objectBytes) this.#objectBytes = null;
    this.#maps = null;
    this.#installed.clear();
    this.#index.clear();
    this.#paths.clear();
    this.#levels = [];
    this.#slots = [];
    await Promise.resolve();
    if (errors.length > 0) {
      throw new BackendError("Stopping the ebpf backend failed", { cause: errors[0] });
    }
  }

  /** Gives new service names a counter index and checks what fits the program's arrays. */
  #register(targets: ServiceTarget[]): void {
    for (const t of targets) {
      this.#paths.set(t.name, t.path);
      if (this.#index.has(t.name)) continue;
      if (this.#index.size >= MAX_SERVICES) {
        throw new BackendError(
          `Service "${t.name}" is one too many: the ebpf backend counts at most ` +
            `${MAX_SERVICES} services (MAX_SERVICES in bpf/netacct.h)`,
        );
      }
      const index = this.#index.size;
      this.#index.set(t.name, index);
      this.#slots[index] = [DIR_RX, DIR_TX].map((dir) => ({
        key: encodeU32(counterSlot(index, dir)),
        value: new Uint8Array(COUNTER_SIZE * this.#cpus),
      }));
    }
    // Deepest first: with nested targets, the most specific service wins.
    const levels = [...new Set([...this.#paths.values()].map(cgroupLevel))].sort((a, b) => b - a);
    if (levels.length > MAX_LEVELS) {
      throw new BackendError(
        `The service cgroups sit at ${levels.length} different depths (${levels.join(", ")}), ` +
          `the ebpf backend probes at most ${MAX_LEVELS}: move services to fewer depths`,
      );
    }
    this.#levels = levels;
  }

  /**
   * Makes the config and targets maps say exactly what `targets` says. The id filter in
   * config must cover every id in `targets` at every moment, or a target's packets would
   * skip the lookup: widen it to old + new ids first, narrow it to the new ids last.
   */
  #applyTargets(targets: ServiceTarget[]): void {
    const maps = this.#maps;
    if (!maps) return;
    const b = lib();
    const wanted = new Map<bigint, number>();
    const owner = new Map<bigint, string>();
    for (const t of targets) {
      if (t.id === null) continue;
      if (owner.has(t.id)) {
        this.#log(
          `ebpf: services "${owner.get(t.id)}" and "${t.name}" are the same cgroup ${t.id}; ` +
            `its traffic counts for "${t.name}"`,
        );
      }
      owner.set(t.id, t.name);
      wanted.set(t.id, this.#index.get(t.name)!);
    }
    const writeConfig = (ids: Iterable<bigint>) =>
      check(
        "Writing the cgroup levels and id filter",
        b.bpf_map_update_elem(
          maps.config,
          encodeU32(0),
          encodeConfig(this.#levels, idBits(ids)),
          0n,
        ),
      );
    writeConfig([...this.#installed.keys(), ...wanted.keys()]);
    for (const [id, index] of wanted) {
      if (this.#installed.get(id) === index) continue;
      check(
        `Adding target cgroup ${id}`,
        b.bpf_map_update_elem(maps.targets, encodeU64(id), encodeU32(index), 0n),
      );
      this.#installed.set(id, index);
    }
    for (const id of [...this.#installed.keys()]) {
      if (wanted.has(id)) continue;
      const rc = b.bpf_map_delete_elem(maps.targets, encodeU64(id));
      if (rc !== -2) check(`Removing target cgroup ${id}`, rc); // -ENOENT: already gone
      this.#installed.delete(id);
    }
    writeConfig(wanted.keys());
  }

  #attach(mountPoint: string): void {
    const b = lib();
    const object = this.#object!;
    const fd = openDirectory(mountPoint);
    try {
      for (const prog of [PROG_INGRESS, PROG_EGRESS]) {
        const p = checkPointer(
          `Finding program "${prog}" in the BPF object`,
          b.bpf_object__find_program_by_name(object, cString(prog)),
        );
        this.#links.push(checkPointer(
          `Attaching "${prog}" to the cgroup2 root "${mountPoint}"`,
          b.bpf_program__attach_cgroup(p, fd),
        ));
      }
    } finally {
      closeFd(fd);
    }
  }

  /** A loaded program's fd, for BPF_PROG_TEST_RUN in ebpf_test.ts and bench/bpf_bench.ts. */
  programFd(direction: "ingress" | "egress"): number {
    if (!this.#object) throw new BackendError("The ebpf backend is not started");
    const b = lib();
    const name = direction === "ingress" ? PROG_INGRESS : PROG_EGRESS;
    const prog = checkPointer(
      `Finding program "${name}" in the BPF object`,
      b.bpf_object__find_program_by_name(this.#object, cString(name)),
    );
    return check(`Getting the fd of program "${name}"`, b.bpf_program__fd(prog));
  }

  #mapFd(name: string): number {
    const b = lib();
    const map = checkPointer(
      `Finding map "${name}" in the BPF object`,
      b.bpf_object__find_map_by_name(this.#object!, cString(name)),
    );
    return check(`Getting the fd of map "${name}"`, b.bpf_map__fd(map));
  }
}
