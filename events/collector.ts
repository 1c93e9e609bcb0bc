/**
 * Connect events from bpf/events.bpf.o (embedded as bpf/events_object.ts): loaded through
 * libbpf, its four cgroup/connect and cgroup/sendmsg programs linked at each service
 * cgroup as the counting programs are (so other cgroups' connects run none of them, and a
 * cgroup that appears is linked at once), targets written into its own config map with
 * netacct's encoder (same ids, same buckets), records read from the ring buffer with
 * ring_buffer__consume on the sampler's tick: no thread, no blocking poll, and the libbpf
 * callback runs synchronously inside the consume call, on this thread.
 *
 * Target levels get the offset bpf/levels.ts measures at start, as the ebpf
 * backend's do: inside a cgroup namespace the mount's levels are not the kernel's.
 *
 * Nothing is pinned: the links die with this process's fds, like the ebpf backend's.
 */

import { BackendError } from "../lib/errors.ts";
import type { Cgroup2Mount, ServiceTarget } from "../lib/cgroup.ts";
import { type Cidr, formatAddress, isExcluded, protocolName } from "../lib/cidr.ts";
import { check, checkPointer, lib } from "../bpf/libbpf.ts";
import { encodeU32, MAX_SERVICES } from "../bpf/netacct_abi.ts";
import { TargetedObject } from "../bpf/targeted_object.ts";
import { OBJECT_BASE64 } from "../bpf/events_object.ts";
import {
  decodeEvent,
  EVENT_SIZE,
  KIND_SENDMSG,
  MAP_ACTIVE,
  MAP_CONFIG,
  MAP_DROPPED,
  MAP_EVENTS,
  PROGRAMS,
} from "../bpf/events_abi.ts";

/** One event as `run` publishes it (a line of events.jsonl) and `events` prints it. */
export interface ConnectEvent {
  ts_unix: number;
  ts_monotonic: number;
  /** "connect": connect(2); "sendmsg": an unconnected UDP socket's first datagram. */
  kind: "connect" | "sendmsg";
  service: string;
  pid: number;
  tgid: number;
  comm: string;
  family: 4 | 6;
  protocol: string;
  address: string;
  port: number;
  /** False when the remote is in the exclusions (internal: never counted). */
  external: boolean;
  /**
   * The socket's cookie (the kernel's SO_COOKIE, a u64 written as an exact JSON integer):
   * the events of one socket share it, another socket's differ. Absent in files written
   * before it existed.
   */
  cookie?: bigint;
  /** The DNS name StB resolved for `address` (names/), when `run` saw the answer. */
  name?: string;
}

export interface EventCollectorOptions {
  mount: Cgroup2Mount;
  /** The counters' exclusions: an event's remote is internal exactly when they say so. */
  exclude: Cidr[];
  /** CLOCK_MONOTONIC seconds now, to date events in Unix time. */
  monotonicNow: () => number;
}

/** Events held between polls at most; more are counted as dropped (a stalled reader). */
const MAX_PENDING = 65536;
/**
 * Records one poll takes at most (half the ring). A connect flood refills the ring as fast
 * as it is read, and libbpf's consume loop runs until the ring is empty: unbounded, it
 * would hold the sampler's tick (and its signal checks) as long as the flood lasts. What
 * is left waits in the ring for the next poll; what the full ring refuses meanwhile the
 * kernel counts as dropped.
 */
export const MAX_RECORDS_PER_POLL = 2048;
/** What the callback returns to end a consume early: libbpf hands it back as the result. */
const STOP_CONSUME = -125; // -ECANCELED

const EVENTS = {
  name: "events",
  base64: OBJECT_BASE64,
  maps: { config: MAP_CONFIG, active: MAP_ACTIVE },
  programs: "the connect events programs",
  switched: "the connect events programs",
  object: "the connect events object",
  who: "connect events",
  serviceLimit: `connect events follow at most ${MAX_SERVICES} services`,
};

const SAMPLE_FN = { parameters: ["pointer", "pointer", "usize"], result: "i32" } as const;

export class EventCollector {
  #object: TargetedObject | null = null;
  #ring: Deno.PointerObject | null = null;
  #callback: Deno.UnsafeCallback<typeof SAMPLE_FN> | null = null;
  #maps: { events: number; dropped: number } | null = null;
  #pending: ConnectEvent[] = [];
  /** Records the callback was handed in this poll. */
  #taken = 0;
  #overflow = 0;
  /** The kernel's `dropped` sum as last read, and the polls in a row that found nothing. */
  #kernelDropped = 0;
  #emptyPolls = 0;
  /** One per-CPU `dropped` value, sized when the CPUs are counted. */
  #droppedValue = new Uint8Array(0);
  #options: EventCollectorOptions | null = null;
  #record = new Uint8Array(EVENT_SIZE);

  /** Loads, fills and links the programs; on failure leaves nothing and throws why. */
  start(targets: ServiceTarget[], options: EventCollectorOptions): void {
    if (this.#object) throw new BackendError("Connect events are already started");
    try {
      const object = this.#load(targets, options);
      object.linkAt(PROGRAMS, targets);
      const b = lib();
      this.#callback = new Deno.UnsafeCallback(SAMPLE_FN, (_ctx, data, size) => {
        this.#take(data, Number(size));
        // Consumed already: libbpf moved past it before calling us.
        return ++this.#taken >= MAX_RECORDS_PER_POLL ? STOP_CONSUME : 0;
      });
      this.#ring = checkPointer(
        "Opening the connect events ring buffer",
        b.ring_buffer__new(object.mapFd(MAP_EVENTS), this.#callback.pointer, null, null),
      );
    } catch (e) {
      this.stop();
      throw e;
    }
  }

  /** The verifier accepts the programs; nothing is linked. */
  probe(targets: ServiceTarget[], options: EventCollectorOptions): void {
    if (this.#object) throw new BackendError("Connect events are started: probe a new one");
    try {
      this.#load(targets, options);
    } finally {
      this.stop();
    }
  }

  retarget(targets: ServiceTarget[]): void {
    if (!this.#object) throw new BackendError("Connect events are not started");
    this.#object.applyTargets(targets);
  }

  /**
   * The events recorded since the last poll, oldest first: at most MAX_RECORDS_PER_POLL,
   * the rest in the next polls.
   */
  poll(): ConnectEvent[] {
    if (!this.#ring) throw new BackendError("Connect events are not started");
    this.#taken = 0;
    const rc = lib().ring_buffer__consume(this.#ring);
    const records = rc === STOP_CONSUME && this.#taken >= MAX_RECORDS_PER_POLL
      ? this.#taken
      : check("Reading connect events", rc);
    this.#emptyPolls = records > 0 ? 0 : this.#emptyPolls + 1;
    return this.#pending.splice(0);
  }

  /**
   * Events lost since start: the ring buffer was full, or polls stalled. The kernel drops
   * only while the ring is full, and a full ring gives the next poll records: after two
   * empty polls in a row (the second covers a drop counted just after the first read) the
   * count cannot have moved, and the syscall that reads it is skipped.
   */
  dropped(): number {
    if (!this.#maps || !this.#object) return this.#overflow;
    if (this.#emptyPolls < 2) {
      const value = this.#droppedValue;
      check(
        "Reading the dropped events counter",
        lib().bpf_map_lookup_elem(this.#maps.dropped, encodeU32(0), value),
      );
      const view = new DataView(value.buffer);
      let n = 0;
      for (let cpu = 0; cpu < this.#object.cpus; cpu++) {
        n += Number(view.getBigUint64(8 * cpu, true));
      }
      this.#kernelDropped = n;
    }
    return this.#overflow + this.#kernelDropped;
  }

  /** Reverse order of start: ring buffer, links, object, callback. Safe twice. */
  stop(): void {
    if (this.#ring) {
      lib().ring_buffer__free(this.#ring);
      this.#ring = null;
    }
    const errors = this.#object?.close() ?? [];
    this.#object = null;
    this.#callback?.close();
    this.#callback = null;
    this.#maps = null;
    this.#kernelDropped = this.#emptyPolls = 0;
    this.#pending = [];
    if (errors.length > 0) {
      throw new BackendError("Stopping connect events failed", { cause: errors[0] });
    }
  }

  #take(data: Deno.PointerValue, size: number): void {
    if (data === null || size < EVENT_SIZE) return;
    if (this.#pending.length >= MAX_PENDING) {
      this.#overflow++;
      return;
    }
    new Deno.UnsafePointerView(data).copyInto(this.#record);
    const raw = decodeEvent(this.#record);
    const opts = this.#options!;
    const ageS = Math.max(0, opts.monotonicNow() - raw.tsMonotonic);
    this.#pending.push({
      ts_unix: Math.round((Date.now() / 1000 - ageS) * 1e3) / 1e3,
      ts_monotonic: Math.round(raw.tsMonotonic * 1e6) / 1e6,
      kind: raw.kind === KIND_SENDMSG ? "sendmsg" : "connect",
      service: this.#object?.names[raw.service] ?? `#${raw.service}`,
      pid: raw.pid,
      tgid: raw.tgid,
      comm: raw.comm,
      family: raw.family,
      protocol: protocolName(raw.proto),
      address: formatAddress(raw.addr),
      port: raw.port,
      external: !isExcluded(raw.addr, opts.exclude),
      cookie: raw.cookie,
    });
  }

  #load(targets: ServiceTarget[], options: EventCollectorOptions): TargetedObject {
    this.#options = options;
    const object = this.#object = new TargetedObject(EVENTS, targets, options.mount);
    this.#droppedValue = new Uint8Array(8 * object.cpus);
    this.#maps = { events: object.mapFd(MAP_EVENTS), dropped: object.mapFd(MAP_DROPPED) };
    object.applyTargets(targets);
    return object;
  }
}
