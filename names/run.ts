/**
 * Names inside `run`: starts the DNS capture beside the ebpf backend and keeps the name
 * cache current, so counters.json's destinations and the connect events carry the name
 * StB resolved for each address. Names are a convenience, counting is the job: when the
 * capture cannot work here (another backend, a refused program) `run` logs the one
 * reason and goes on without names. The sampler never sends a DNS query itself.
 */

import type { Cgroup2Mount, ServiceTarget } from "../lib/cgroup.ts";
import type { Config } from "../lib/config.ts";
import { monotonicSeconds } from "../lib/clock.ts";
import { DnsCollector } from "./collector.ts";
import { type NameStats, NameTracker } from "./tracker.ts";
import { MAX_NAMES } from "./cache.ts";

/** counters.json's `names`: what the capture saw since `run` started. */
export interface NamesStatus extends NameStats {
  /** Address -> name entries held now (at most `max_entries`). */
  entries: number;
  max_entries: number;
  /** Messages the kernel dropped: its ring buffer was full. */
  dropped_total: number;
}

export interface NamesRuntime {
  /** Takes in what was captured since the last call (before names are looked up). */
  refresh(): void;
  /** The name StB resolved for `address` (lib/cidr.ts text), while it is kept. */
  nameOf(address: string): string | undefined;
  retarget(targets: ServiceTarget[]): void;
  status(): NamesStatus;
  stop(): void;
}

export interface StartNamesOptions {
  config: Config;
  backend: string;
  targets: ServiceTarget[];
  mount: Cgroup2Mount;
  log: (message: string) => void;
}

/** Null when names are off or the capture is unavailable (the reason logged once). */
export function startNames(o: StartNamesOptions): NamesRuntime | null {
  if (!o.config.names.enabled) return null;
  const unavailable = (why: string): null => {
    o.log(`names: DNS capture is unavailable: ${why}; counting goes on without names`);
    return null;
  };
  if (o.backend !== "ebpf") {
    return unavailable(
      `it needs the ebpf backend, and this run counts with ${o.backend} ` +
        "(`graph` and `events` can still look names up by reverse DNS)",
    );
  }
  const tracker = new NameTracker(monotonicSeconds);
  const collector = new DnsCollector(tracker);
  try {
    collector.start(o.targets, o.mount);
  } catch (e) {
    return unavailable((e as Error).message);
  }
  o.log("names: capturing the DNS answers StB receives");
  let failure: string | null = null;
  return {
    refresh() {
      try {
        collector.poll();
        failure = null;
      } catch (e) {
        const why = (e as Error).message;
        if (failure !== why) o.log(`names: ${why}; retrying every interval`);
        failure = why;
      }
    },
    nameOf: (address) => tracker.cache.get(address),
    retarget: (targets) => collector.retarget(targets),
    status() {
      let dropped = 0;
      try {
        dropped = collector.dropped();
      } catch { /* a failed read says nothing new: the next one tries again */ }
      return {
        ...tracker.stats,
        entries: tracker.cache.size,
        max_entries: MAX_NAMES,
        dropped_total: dropped,
      };
    },
    stop: () => collector.stop(),
  };
}
