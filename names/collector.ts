/**
 * DNS capture from bpf/dns.bpf.o (embedded as bpf/dns_object.ts): loaded through libbpf,
 * its two cgroup_skb programs linked at each service cgroup as the counting programs are
 * (bpf/targeted_object.ts), records read from the ring buffer with ring_buffer__consume
 * when the sampler asks (no thread; libbpf's callback runs inside the consume call) and
 * handed to the NameTracker. Nothing is pinned: the links die with this process's fds.
 */

import { BackendError } from "../lib/errors.ts";
import type { Cgroup2Mount, ServiceTarget } from "../lib/cgroup.ts";
import { check, checkPointer, lib } from "../bpf/libbpf.ts";
import { encodeU32, MAX_SERVICES } from "../bpf/netacct_abi.ts";
import { TargetedObject } from "../bpf/targeted_object.ts";
import { OBJECT_BASE64 } from "../bpf/dns_object.ts";
import {
  decodeDnsRecord,
  DIR_QUERY,
  DNS_MAP_ACTIVE,
  DNS_MAP_CONFIG,
  DNS_MAP_DROPPED,
  DNS_MAP_RING,
  DNS_PROGRAMS,
  DNS_RECORD_SIZE,
} from "../bpf/dns_abi.ts";
import type { NameTracker } from "./tracker.ts";

/**
 * Records one consume takes at most: a flood refills the ring as fast as it is read, and
 * the sampler's tick must end. The rest waits for the next one.
 */
export const MAX_RECORDS_PER_POLL = 4096;
const STOP_CONSUME = -125; // -ECANCELED

const DNS = {
  name: "dns",
  base64: OBJECT_BASE64,
  maps: { config: DNS_MAP_CONFIG, active: DNS_MAP_ACTIVE },
  programs: "the DNS capture programs",
  switched: "the DNS capture programs",
  object: "the DNS capture object",
  who: "DNS capture",
  serviceLimit: `DNS capture follows at most ${MAX_SERVICES} services`,
};

const SAMPLE_FN = { parameters: ["pointer", "pointer", "usize"], result: "i32" } as const;

export class DnsCollector {
  #object: TargetedObject | null = null;
  #ring: Deno.PointerObject | null = null;
  #callback: Deno.UnsafeCallback<typeof SAMPLE_FN> | null = null;
  #dropped = -1;
  #droppedValue = new Uint8Array(0);
  #record = new Uint8Array(DNS_RECORD_SIZE);
  #taken = 0;

  constructor(readonly tracker: NameTracker) {}

  /** Loads, fills and links the programs; on failure leaves nothing and throws why. */
  start(targets: ServiceTarget[], mount: Cgroup2Mount): void {
    if (this.#object) throw new BackendError("DNS capture is already started");
    try {
      const object = this.#object = new TargetedObject(DNS, targets, mount);
      this.#droppedValue = new Uint8Array(8 * object.cpus);
      this.#dropped = object.mapFd(DNS_MAP_DROPPED);
      object.applyTargets(targets);
      object.linkAt(DNS_PROGRAMS, targets);
      this.#callback = new Deno.UnsafeCallback(SAMPLE_FN, (_ctx, data, size) => {
        this.#take(data, Number(size));
        return ++this.#taken >= MAX_RECORDS_PER_POLL ? STOP_CONSUME : 0;
      });
      this.#ring = checkPointer(
        "Opening the DNS capture ring buffer",
        lib().ring_buffer__new(object.mapFd(DNS_MAP_RING), this.#callback.pointer, null, null),
      );
    } catch (e) {
      this.stop();
      throw e;
    }
  }

  retarget(targets: ServiceTarget[]): void {
    this.#object?.applyTargets(targets);
  }

  /** Hands what the ring holds to the tracker; returns the records taken. */
  poll(): number {
    if (!this.#ring) return 0;
    this.#taken = 0;
    const rc = lib().ring_buffer__consume(this.#ring);
    if (rc === STOP_CONSUME && this.#taken >= MAX_RECORDS_PER_POLL) return this.#taken;
    return check("Reading captured DNS messages", rc);
  }

  /** Messages the kernel could not hand over since start (the ring buffer was full). */
  dropped(): number {
    if (this.#dropped < 0 || !this.#object) return 0;
    check(
      "Reading the dropped DNS messages counter",
      lib().bpf_map_lookup_elem(this.#dropped, encodeU32(0), this.#droppedValue),
    );
    const view = new DataView(this.#droppedValue.buffer);
    let n = 0;
    for (let cpu = 0; cpu < this.#object.cpus; cpu++) {
      n += Number(view.getBigUint64(8 * cpu, true));
    }
    return n;
  }

  /** Reverse order of start: ring buffer, links and object, callback. Safe twice. */
  stop(): void {
    if (this.#ring) {
      lib().ring_buffer__free(this.#ring);
      this.#ring = null;
    }
    const errors = this.#object?.close() ?? [];
    this.#object = null;
    this.#dropped = -1;
    this.#callback?.close();
    this.#callback = null;
    if (errors.length > 0) {
      throw new BackendError("Stopping DNS capture failed", { cause: errors[0] });
    }
  }

  #take(data: Deno.PointerValue, size: number): void {
    if (data === null || size < DNS_RECORD_SIZE) return;
    new Deno.UnsafePointerView(data).copyInto(this.#record);
    const r = decodeDnsRecord(this.#record);
    const complete = r.data.length >= r.len;
    if (r.dir === DIR_QUERY) this.tracker.query(r.data, complete);
    else this.tracker.answer(r.data, complete);
  }
}
