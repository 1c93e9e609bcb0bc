/**
 * The ebpf backend: bpf/netacct.bpf.o, embedded in the code as bpf/netacct_object.ts (so
 * the compiled binary, the bundle and an installed copy need no file beside them), loaded
 * through libbpf (FFI) and linked, ingress and egress, at each service cgroup (not below
 * another one), so its programs run for StB's packets only. Which service a packet counts
 * for is data: the target ids in the `config` map, which `retarget` rewrites (into the
 * inactive slot, then flips `active`) when a service restarts or appears, and then links
 * the new cgroup and releases the gone one's link; totals, kept per service index in
 * per-CPU slots, survive every change.
 *
 * Excluded interfaces and on-link prefixes (config exclude_interfaces, internal_onlink):
 * `read` first resolves the names to ifindexes again and re-reads the connected routes
 * (lib/interfaces.ts, lib/onlink.ts) and writes what changed: the `skip_ifs` global, and
 * the exclusion trie and verdict table as the static exclusions plus the on-link prefixes.
 * So a change takes effect within one sample; a failure there is logged and counting goes on.
 *
 * Kernel state kept: the counters (and the destination maps) and the links are pinned
 * (bpf/pins.ts), so the kernel counts on while no `run` lives. `start` adopts a pinned set
 * of the same digest (its maps reused, its links switched to the new programs, nothing
 * linked twice) and takes over one of another digest: the links are switched to the new
 * programs in place (BPF_LINK_UPDATE: each packet runs the old program or the new), then the
 * old counters are read once (`replaced`) and removed once `run` saved them.
 *
 * Levels: targets' depths are counted from the cgroup2 mount; the program compares at the
 * kernel's absolute levels. `start` measures the difference once (bpf/levels.ts: non-zero
 * inside a cgroup namespace, i.e. a container) and adds it to every level it writes.
 */

import {
  type Backend,
  BackendError,
  type BackendOptions,
  type CounterSample,
  type DestinationCounters,
  type KernelState,
  type ReplacedState,
  type ServiceTarget,
  type StopOptions,
} from "./backend.ts";
import { type Cidr, formatAddress, protocolName } from "../lib/cidr.ts";
import { InterfaceIndexes } from "../lib/interfaces.ts";
import { OnlinkWatch } from "../lib/onlink.ts";
import {
  ensureBpffs,
  makeSetDir,
  type PinnedSet,
  pinnedSets,
  pruneEmpty,
  removeTree,
  setDigest,
  stateDir,
} from "../bpf/pins.ts";
import { MAP_INFO, mapId, objectInfo, openPinned, pinObject } from "../bpf/libbpf.ts";
import { bootId } from "../run/state.ts";
import { check, closeFd, decodeEmbeddedObject, lib, openDirectory } from "../bpf/libbpf.ts";
import { TargetedObject } from "../bpf/targeted_object.ts";
import { attachPoints } from "../bpf/cgroup_links.ts";
import { cgroupDir } from "../lib/cgroup.ts";
import {
  COUNTER_SIZE,
  counterSlot,
  decodeDests,
  DEST_KEY_SIZE,
  DIR_RX,
  DIR_TX,
  encodeLpmKey,
  encodeSkipIfs,
  encodeU32,
  encodeVerdicts,
  MAP_ACTIVE,
  MAP_CONFIG,
  MAP_COUNTERS,
  MAP_DESTS,
  MAP_EXCLUDE_V4,
  MAP_EXCLUDE_V6,
  MAP_PENDING,
  MAP_SKIP_IFS,
  MAP_VERDICTS,
  MAX_DESTS,
  MAX_EXCLUDE,
  MAX_SERVICES,
  PENDING_SIZE,
  prefixVerdicts,
  PROG_EGRESS,
  PROG_INGRESS,
  sumCounterWords,
  triePrefixes,
} from "../bpf/netacct_abi.ts";
import { OBJECT_BASE64 } from "../bpf/netacct_object.ts";

/** Fds of a pinned set's kept maps, by map name; the caller closes them. */
function openSet(set: PinnedSet): Map<string, number> {
  const fds = new Map<string, number>();
  try {
    for (const name of KEPT_MAPS) {
      const fd = openPinned(`${set.dir}/${name}`);
      if (fd === null) throw new BackendError(`The pinned set "${set.dir}" lacks map "${name}"`);
      fds.set(name, fd);
    }
  } catch (e) {
    for (const fd of fds.values()) closeFd(fd);
    throw e;
  }
  return fds;
}

/** The ELF bytes of bpf/netacct.bpf.o, decoded from the embedded module. */
export function objectBytes(): Uint8Array<ArrayBuffer> {
  return decodeEmbeddedObject(OBJECT_BASE64);
}

const NETACCT = {
  name: "netacct",
  base64: OBJECT_BASE64,
  maps: { config: MAP_CONFIG, active: MAP_ACTIVE },
  programs: "the BPF programs",
  switched: "the counting programs",
  object: "the BPF object",
  who: "the ebpf backend",
  serviceLimit: `the ebpf backend counts at most ${MAX_SERVICES} services ` +
    "(MAX_SERVICES in bpf/netacct.h)",
};

interface Maps {
  verdicts: number;
  excludeV4: number;
  excludeV6: number;
  counters: number;
  dests: number;
  pending: number;
  skipIfs: number;
}

/**
 * Slots 0..slots-1 of an array map (per-CPU or not) in one batch syscall, into buffers
 * reused by every read. `valueSize`: the bytes one slot's lookup returns.
 */
class ArrayBatch {
  readonly keys: Uint8Array<ArrayBuffer>;
  readonly values: Uint8Array<ArrayBuffer>;
  readonly #outBatch = new Uint8Array(4);
  readonly #count = new Uint8Array(4);
  constructor(readonly slots: number, valueSize: number) {
    this.keys = new Uint8Array(slots * 4);
    this.values = new Uint8Array(slots * valueSize);
  }
  /** Fills `values` from the map `fd`; `what` names the map in errors. */
  read(fd: number, what: string): void {
    const count = new DataView(this.#count.buffer);
    count.setUint32(0, this.slots, true);
    const rc = lib().bpf_map_lookup_batch(
      fd,
      null,
      this.#outBatch,
      this.keys,
      this.values,
      this.#count,
      null,
    );
    // ENOENT only says the batch reached the end of the array.
    if (rc !== -2) check(`Reading ${what}`, rc);
    if (count.getUint32(0, true) !== this.slots) {
      throw new BackendError(
        `Reading ${what} returned ${count.getUint32(0, true)} of ${this.slots} slots`,
      );
    }
  }
}

/** Reused by every read of the `dests` map: one batch holds the whole map. */
class DestBuffers {
  keys = new Uint8Array(MAX_DESTS * DEST_KEY_SIZE);
  values = new Uint8Array(MAX_DESTS * COUNTER_SIZE);
  inBatch = new Uint8Array(4);
  outBatch = new Uint8Array(4);
  count = new Uint8Array(4);
  /** Both `pending` slots (one per direction), each `cpus` structs, read in one batch. */
  pendingBatch: ArrayBatch;
  /** pendingBatch's values, slot by slot. */
  pending: Uint8Array<ArrayBuffer>[];
  constructor(cpus: number) {
    const slot = PENDING_SIZE * cpus;
    this.pendingBatch = new ArrayBatch(2, slot);
    this.pending = [DIR_RX, DIR_TX].map((dir) =>
      this.pendingBatch.values.subarray(dir * slot, (dir + 1) * slot)
    );
  }
}

/**
 * Reused by every read of `counters`: the slots of all services (contiguous from 0, see
 * counterSlot) in one batch syscall rather than one lookup per service and direction.
 */
class CounterBuffers extends ArrayBatch {
  readonly words: Uint32Array;
  constructor(slots: number, readonly cpus: number) {
    super(slots, cpus * COUNTER_SIZE);
    this.words = new Uint32Array(this.values.buffer);
  }
  /** The sums of one slot's per-CPU structs. */
  sum(index: number): { bytes: bigint; packets: bigint } {
    return sumCounterWords(this.words, (index * this.cpus * COUNTER_SIZE) / 4, this.cpus);
  }
}

/** The maps that hold counts, pinned and reused across runs; the rest each run fills anew. */
const KEPT_MAPS = [MAP_COUNTERS, MAP_DESTS, MAP_PENDING] as const;

/** The kernel state of a started backend: where it is pinned, and what it took over. */
interface Pins {
  /** The state file's directory (links/ and the sets); null: nothing pinned (no bpffs). */
  dir: string | null;
  /** This run's set; null while unpinned. */
  set: string | null;
  state: KernelState;
  replaced: ReplacedState[];
  /** Sets taken over, removed by releaseReplaced. */
  replacedDirs: string[];
}

export class EbpfBackend implements Backend {
  readonly name = "ebpf";
  #pins: Pins | null = null;

  #object: TargetedObject | null = null;
  #maps: Maps | null = null;
  #counterBuffers: CounterBuffers | null = null;
  #gsoCorrection = true;
  #dests: DestBuffers | null = null;
  #log: (message: string) => void = () => {};
  /** The config's exclusions: always in the trie/table, whatever the on-link prefixes do. */
  #static: Cidr[] = [];
  /** Prefixes in the tries now, by text; and the verdict table as last written. */
  #trie = new Map<string, Cidr>();
  #verdicts: Uint8Array | null = null;
  #interfaces: InterfaceIndexes | null = null;
  #onlink: OnlinkWatch | null = null;
  /** The last refresh failure, logged once until it changes. */
  #refreshError = "";

  async start(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
    if (this.#object) throw new BackendError("The ebpf backend is already started: stop it first");
    try {
      const dir = await this.#pinDir(options);
      const digest = await setDigest(objectBytes(), targets.map((t) => t.name));
      const sets = dir === null ? [] : pinnedSets(dir);
      const same = sets.find((p) => p.digest === digest) ?? null;
      const reuse = same ? openSet(same) : new Map<string, number>();
      let object: TargetedObject;
      try {
        object = this.#load(targets, options, reuse);
      } finally {
        for (const fd of reuse.values()) closeFd(fd);
      }
      const id = mapId(object.mapFd(MAP_COUNTERS));
      const pins: Pins = this.#pins = {
        dir,
        set: same?.dir ?? null,
        state: { id: `ebpf:${bootId()}:${same?.mapId ?? id}`, adopted: same !== null },
        replaced: [],
        replacedDirs: [],
      };
      if (dir !== null && same === null) pins.set = this.#pinSet(object, dir, digest);
      const linked = object.linkAt(
        [PROG_INGRESS, PROG_EGRESS],
        targets,
        dir === null ? null : { dir: `${dir}/links`, log: options.log },
      );
      const others = sets.filter((p) => p !== same);
      // A packet that entered an old program before its link switched finishes first.
      if (others.length > 0) await new Promise((r) => setTimeout(r, 20));
      for (const old of others) this.#takeOver(old, object.cpus);
      const kernel = object.levelOffset ? ` (kernel: ${object.kernelLevels().join(",")})` : "";
      options.log(
        `ebpf: counting ${targets.length} service(s) at cgroup levels ` +
          `${object.levels.join(",")}${kernel}; programs linked at ${linked.cgroups} service ` +
          `cgroup(s), and at each one that appears` +
          (same
            ? `; adopted the pinned counters in ${same.dir} and ${linked.adopted} link(s)`
            : "") +
          (pins.replacedDirs.length ? `; took over ${pins.replacedDirs.join(", ")}` : ""),
      );
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /**
   * The state file's pin directory, made (and a bpffs mounted) when missing; null: none.
   * Without a state file (tests, benchmarks) nothing is pinned: no saved totals could say
   * what a later start may add.
   */
  async #pinDir(options: BackendOptions): Promise<string | null> {
    if (options.stateKey === undefined) return null;
    const dir = await stateDir(options.stateKey);
    try {
      await ensureBpffs();
      Deno.mkdirSync(`${dir}/links`, { recursive: true, mode: 0o700 });
      return dir;
    } catch (e) {
      options.log(
        `WARNING: cannot keep the counters pinned in "${dir}" (${(e as Error).message}): ` +
          "they live as long as this run, and traffic while no run lives is not counted",
      );
      return null;
    }
  }

  /** Pins this object's counting maps as a new set; returns its directory. */
  #pinSet(object: TargetedObject, dir: string, digest: string): string {
    const path = makeSetDir({
      dir,
      mapId: mapId(object.mapFd(MAP_COUNTERS)),
      digest,
      names: object.names,
    });
    for (const name of KEPT_MAPS) pinObject(object.mapFd(name), `${path}/${name}`);
    return path;
  }

  /**
   * Reads the counters of a set of another digest once (its links were switched to this
   * object's programs already, so it counts no more), for `run` to add what its saved
   * totals lack; the set is removed by releaseReplaced.
   */
  #takeOver(old: PinnedSet, cpus: number): void {
    const pins = this.#pins!;
    pins.replacedDirs.push(old.dir);
    const fd = openPinned(`${old.dir}/${MAP_COUNTERS}`);
    if (fd === null) return;
    try {
      const info = objectInfo(fd, MAP_INFO.size, "a pinned counters map");
      const slots = info.getUint32(MAP_INFO.max_entries, true);
      const sizeOk = info.getUint32(MAP_INFO.value_size, true) === COUNTER_SIZE &&
        info.getUint32(MAP_INFO.key_size, true) === 4;
      const names = old.names.filter((_, i) => counterSlot(i, DIR_TX) < slots);
      if (!sizeOk || names.length === 0) {
        this.#log(`ebpf: the counters in ${old.dir} have another layout; not taken over`);
        return;
      }
      const buf = new CounterBuffers(old.names.length * 2, cpus);
      buf.read(fd, `the counters pinned in ${old.dir}`);
      const services: CounterSample = {};
      old.names.forEach((name, index) => {
        if (name === undefined) return;
        const rx = buf.sum(counterSlot(index, DIR_RX)), tx = buf.sum(counterSlot(index, DIR_TX));
        services[name] = {
          rxBytes: rx.bytes,
          txBytes: tx.bytes,
          rxPackets: rx.packets,
          txPackets: tx.packets,
        };
      });
      pins.replaced.push({ id: `ebpf:${bootId()}:${old.mapId}`, services });
    } finally {
      closeFd(fd);
    }
  }

  kernelState(): KernelState {
    if (!this.#pins) throw new BackendError("The ebpf backend is not started");
    return { ...this.#pins.state };
  }

  replaced(): ReplacedState[] {
    return this.#pins?.replaced ?? [];
  }

  async releaseReplaced(): Promise<void> {
    const pins = this.#pins;
    if (!pins) return;
    for (const dir of pins.replacedDirs.splice(0)) removeTree(dir);
    pins.replaced = [];
    await Promise.resolve();
  }

  /**
   * Everything `start` does but linking: the verifier checks the programs, the object's
   * own maps take the exclusions and targets, the service cgroups that exist are opened.
   * Then all of it is closed: an unpinned, unlinked object leaves nothing in the kernel.
   */
  async probe(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
    if (this.#object) throw new BackendError("The ebpf backend is started: probe a new one");
    try {
      this.#load(targets, { ...options, log: () => {} });
      for (const p of attachPoints(targets)) {
        const fd = openDirectory(cgroupDir(options.mount, p.path), { missingOk: true });
        if (fd !== null) closeFd(fd);
      }
    } finally {
      await this.stop();
    }
  }

  /**
   * Opens and loads the object (with `reuse`: pinned maps instead of new ones) and fills
   * its maps; `stop` undoes it.
   */
  #load(
    targets: ServiceTarget[],
    options: BackendOptions,
    reuse: ReadonlyMap<string, number> = new Map(),
  ): TargetedObject {
    this.#log = options.log;
    this.#gsoCorrection = options.gsoCorrection ?? true;
    this.#static = options.exclude;
    this.#trie = new Map();
    this.#verdicts = null;
    this.#onlink = options.internalOnlink ? new OnlinkWatch(options.exclude, options.log) : null;
    const names = options.excludeInterfaces ?? [];
    this.#interfaces = names.length ? new InterfaceIndexes(names, options.log) : null;
    // Checked before loading anything: the limits hold for the config's own list.
    this.#exclusionPlan(options.exclude);
    const object = this.#object = new TargetedObject(NETACCT, targets, options.mount, reuse);
    this.#maps = {
      verdicts: object.mapFd(MAP_VERDICTS),
      excludeV4: object.mapFd(MAP_EXCLUDE_V4),
      excludeV6: object.mapFd(MAP_EXCLUDE_V6),
      counters: object.mapFd(MAP_COUNTERS),
      dests: object.mapFd(MAP_DESTS),
      pending: object.mapFd(MAP_PENDING),
      skipIfs: object.mapFd(MAP_SKIP_IFS),
    };
    if (object.levelOffset !== 0) {
      options.log(
        `ebpf: cgroup namespace detected: levels offset by ${object.levelOffset} ` +
          `("${options.mount.mountPoint}" is not the kernel's cgroup root)`,
      );
    }
    // Before the programs are attached, so no packet counts by a partial list.
    this.#writeExclusions(this.#onlink?.poll() ?? []);
    const indexes = this.#interfaces?.resolve();
    if (indexes) this.#writeSkipIfs(indexes);
    this.#applyTargets(object, targets);
    return object;
  }

  /**
   * The trie prefixes and verdict table for the static exclusions plus `dynamic`; throws
   * when the tries would hold more than they can.
   */
  #exclusionPlan(dynamic: Cidr[]) {
    const all = [...this.#static, ...dynamic];
    // Prefixes up to /16 only fill the table; the tries hold what it leaves to them.
    const verdicts = prefixVerdicts(all);
    const trie = triePrefixes(all, verdicts);
    for (const family of [4, 6] as const) {
      const count = trie.filter((c) => c.family === family).length;
      if (count > MAX_EXCLUDE) {
        throw new BackendError(
          `${count} excluded IPv${family} prefixes longer than /16, the ebpf backend holds at ` +
            `most ${MAX_EXCLUDE}: merge prefixes in "exclude"`,
        );
      }
    }
    return { trie, verdicts: encodeVerdicts(verdicts) };
  }

  /**
   * Makes the tries and the verdict table say "internal" for the static exclusions plus
   * `dynamic`. In an order no packet can be misjudged by: new trie entries first (no
   * verdict sends a packet to them yet), then the table, then the entries it no longer
   * sends packets to are removed.
   */
  #writeExclusions(dynamic: Cidr[]): void {
    const maps = this.#maps!;
    const plan = this.#exclusionPlan(dynamic);
    const b = lib();
    const one = new Uint8Array([1]);
    const want = new Map(plan.trie.map((c) => [c.text, c]));
    for (const [text, cidr] of want) {
      if (this.#trie.has(text)) continue;
      const fd = cidr.family === 4 ? maps.excludeV4 : maps.excludeV6;
      check(
        `Adding excluded prefix "${cidr.text}"`,
        b.bpf_map_update_elem(fd, encodeLpmKey(cidr), one, 0n),
      );
      this.#trie.set(text, cidr);
    }
    const old = this.#verdicts;
    if (
      !old || old.length !== plan.verdicts.length || !old.every((v, i) => v === plan.verdicts[i])
    ) {
      // Only the bytes of changed entries differ; each is one byte, so a packet reads the
      // old or the new verdict of its entry.
      check(
        "Writing the verdicts of the excluded prefixes",
        b.bpf_map_update_elem(maps.verdicts, encodeU32(0), plan.verdicts, 0n),
      );
      this.#verdicts = plan.verdicts;
    }
    for (const [text, cidr] of this.#trie) {
      if (want.has(text)) continue;
      const fd = cidr.family === 4 ? maps.excludeV4 : maps.excludeV6;
      check(`Removing on-link prefix "${text}"`, b.bpf_map_delete_elem(fd, encodeLpmKey(cidr)));
      this.#trie.delete(text);
    }
  }

  #writeSkipIfs(indexes: number[]): void {
    check(
      "Writing the excluded interfaces",
      lib().bpf_map_update_elem(this.#maps!.skipIfs, encodeU32(0), encodeSkipIfs(indexes), 0n),
    );
  }

  /** Follows the excluded interfaces and on-link prefixes; never stops counting. */
  #refresh(): void {
    try {
      const indexes = this.#interfaces?.resolve();
      if (indexes) this.#writeSkipIfs(indexes);
      const onlink = this.#onlink?.poll();
      if (onlink) this.#writeExclusions(onlink);
      this.#refreshError = "";
    } catch (e) {
      const said = e instanceof Error ? e.message : String(e);
      if (said !== this.#refreshError) {
        this.#log(`ebpf: cannot follow excluded interfaces or on-link networks: ${said}`);
      }
      this.#refreshError = said;
    }
  }

  async read(): Promise<CounterSample> {
    const maps = this.#maps, object = this.#object;
    if (!maps || !object) throw new BackendError("The ebpf backend is not started");
    this.#refresh();
    const names = object.names;
    const slots = names.length * 2;
    if (this.#counterBuffers?.slots !== slots) {
      this.#counterBuffers = new CounterBuffers(slots, object.cpus);
    }
    const buf = this.#counterBuffers;
    buf.read(maps.counters, "the counters map");
    const sample: CounterSample = {};
    for (const [index, name] of names.entries()) {
      const rx = buf.sum(counterSlot(index, DIR_RX));
      const tx = buf.sum(counterSlot(index, DIR_TX));
      sample[name] = {
        rxBytes: rx.bytes,
        txBytes: tx.bytes,
        rxPackets: rx.packets,
        txPackets: tx.packets,
      };
    }
    return await Promise.resolve(sample);
  }

  /**
   * The `limit` endpoints with the most bytes, most first: the whole `dests` LRU map in one
   * batch syscall (ENOENT ends it), then the per-CPU `pending` sums not yet moved into it
   * (read after `dests`: a move in between shows up one read late, never twice).
   */
  async readDestinations(limit: number): Promise<DestinationCounters[]> {
    const maps = this.#maps, object = this.#object;
    if (!maps || !object) throw new BackendError("The ebpf backend is not started");
    const b = lib();
    const buf = this.#dests ??= new DestBuffers(object.cpus);
    const count = new DataView(buf.count.buffer);
    let total = 0;
    let first = true;
    while (total < MAX_DESTS) {
      count.setUint32(0, MAX_DESTS - total, true);
      const rc = b.bpf_map_lookup_batch(
        maps.dests,
        first ? null : buf.inBatch,
        buf.outBatch,
        buf.keys.subarray(total * DEST_KEY_SIZE),
        buf.values.subarray(total * COUNTER_SIZE),
        buf.count,
        null,
      );
      total += count.getUint32(0, true);
      if (rc === -2) break; // ENOENT: no more entries
      check("Reading the destinations map", rc);
      buf.inBatch.set(buf.outBatch);
      first = false;
    }
    buf.pendingBatch.read(maps.pending, "the pending destination sums");
    const { keys, values, pending } = buf;
    const top = decodeDests({ keys, values, count: total, pending, cpus: object.cpus })
      .sort((x, y) => y.bytes > x.bytes ? 1 : y.bytes < x.bytes ? -1 : 0)
      .slice(0, Math.max(0, limit));
    return await Promise.resolve(top.map((d) => ({
      service: object.names[d.service] ?? `#${d.service}`,
      direction: d.dir === DIR_TX ? "tx" as const : "rx" as const,
      address: formatAddress(d.addr),
      port: d.port,
      protocol: protocolName(d.proto),
      bytes: d.bytes,
      packets: d.packets,
    })));
  }

  async retarget(targets: ServiceTarget[]): Promise<void> {
    if (!this.#object) throw new BackendError("The ebpf backend is not started");
    this.#applyTargets(this.#object, targets);
    await Promise.resolve();
  }

  async stop(options: StopOptions = {}): Promise<void> {
    // Reverse order of start: links first, then the object (programs and maps).
    const pins = this.#pins;
    const keep = options.keep === true && pins?.set != null;
    const errors = this.#object?.close(keep) ?? [];
    if (pins?.dir && !keep) {
      // Unpinned now, the maps go with the last fd; links were detached by close.
      try {
        if (pins.set) removeTree(pins.set);
        for (const dir of pins.replacedDirs) removeTree(dir);
        removeTree(`${pins.dir}/links`);
        pruneEmpty(pins.dir);
      } catch (e) {
        errors.push(e);
      }
    }
    this.#pins = null;
    this.#object = null;
    this.#maps = null;
    this.#counterBuffers = null;
    this.#dests = null;
    this.#interfaces = null;
    this.#onlink = null;
    await Promise.resolve();
    if (errors.length > 0) {
      throw new BackendError("Stopping the ebpf backend failed", { cause: errors[0] });
    }
  }

  /**
   * Makes the program count exactly what `targets` says, never a mix of old and new (see
   * the header of bpf/netacct.bpf.c); a cgroup two services name counts for the later one.
   */
  #applyTargets(object: TargetedObject, targets: ServiceTarget[]): void {
    for (const s of object.applyTargets(targets, this.#gsoCorrection)) {
      this.#log(
        `ebpf: services "${s.shadowed}" and "${s.kept}" are the same cgroup ${s.id}; ` +
          `its traffic counts for "${s.kept}"`,
      );
    }
  }

  /**
   * Puts these ifindexes in the excluded-interface set directly, for bench/bpf_bench.ts;
   * they stay until the configured names next resolve differently (a `read` after a change).
   */
  writeSkipIfindexes(indexes: number[]): void {
    if (!this.#maps) throw new BackendError("The ebpf backend is not started");
    this.#writeSkipIfs(indexes);
  }

  /** A loaded program's fd, for BPF_PROG_TEST_RUN in ebpf_test.ts and bench/bpf_bench.ts. */
  programFd(direction: "ingress" | "egress"): number {
    if (!this.#object) throw new BackendError("The ebpf backend is not started");
    return this.#object.programFd(direction === "ingress" ? PROG_INGRESS : PROG_EGRESS);
  }
}
