/**
 * Connect events inside `run`: starts the collector beside the ebpf backend, and every
 * interval moves what it recorded into events.jsonl. Events are a convenience, counting
 * is the job: when they cannot work here (another backend, an old kernel, a refused
 * program) `run` logs the one reason and goes on without them, unless the config says
 * `"events": {"required": true}`, then `run` fails with that reason.
 *
 * With events on, the file also gets one line at start about each set of eBPF programs
 * (events/lifecycle.ts): attached, or unavailable and why, so a reader can tell "no
 * connects" from "no events".
 */

import { BackendError } from "../lib/errors.ts";
import type { ServiceTarget } from "../lib/cgroup.ts";
import type { Cgroup2Mount } from "../lib/cgroup.ts";
import type { Config } from "../lib/config.ts";
import { monotonicSeconds } from "../lib/clock.ts";
import type { UserIds } from "../lib/users.ts";
import { type ConnectEvent, EventCollector } from "./collector.ts";
import type { HeldDir } from "../lib/held_dir.ts";
import { EventsLog } from "./log.ts";
import { CAP_NET_ADMIN, capabilityName, effectiveCaps, missingCaps } from "../lib/capabilities.ts";
import { attachedEvent, type LifecycleEvent, unavailableEvent } from "./lifecycle.ts";

export interface EventsRuntime {
  readonly path: string;
  retarget(targets: ServiceTarget[]): void;
  /** Publishes what was recorded since the last tick; returns events dropped so far. */
  tick(): number;
  stop(): void;
}

export interface StartEventsOptions {
  config: Config;
  backend: string;
  targets: ServiceTarget[];
  mount: Cgroup2Mount;
  /** Directory of counters.json as held now: events.jsonl goes beside it. */
  outDir: () => HeldDir;
  owner: UserIds | null;
  log: (message: string) => void;
  /** Why `auto` could not count with ebpf (it tried, then fell back); null: it did not try. */
  ebpfSkipped?: string | null;
  /** Names events' addresses by the DNS answers StB received (names/run.ts), when on. */
  names?: { refresh(): void; nameOf(address: string): string | undefined } | null;
}

/**
 * Adds the name StB resolved for each event's address. The answer came before the connect,
 * so taking in what the DNS capture holds after the events were read names every one.
 */
function named(events: ConnectEvent[], names: StartEventsOptions["names"]): ConnectEvent[] {
  if (!names || events.length === 0) return events;
  names.refresh();
  for (const e of events) {
    const name = names.nameOf(e.address);
    if (name !== undefined) e.name = name;
  }
  return events;
}

/** Null when events are off or unavailable (the reason logged); throws when required. */
export function startEvents(o: StartEventsOptions): EventsRuntime | null {
  const { config, log } = o;
  if (!config.events.enabled) return null;
  const file = new EventsLog(o.outDir, { owner: o.owner });
  const note = (e: LifecycleEvent) => {
    try {
      file.append([e]);
    } catch (err) {
      log(`connect events: cannot write ${file.path}: ${(err as Error).message}`);
    }
  };
  const now = () => ({ unixS: Date.now() / 1000, monotonicS: monotonicSeconds() });
  const present = o.targets.filter((t) => t.id !== null).map((t) => t.name);
  if (o.backend === "ebpf") note(attachedEvent(now(), "counting", present));
  else if (o.ebpfSkipped) {
    note(
      unavailableEvent(now(), { programs: "counting", backend: o.backend, reason: o.ebpfSkipped }),
    );
  }
  const unavailable = (why: string, cause?: unknown): null => {
    const message = `Connect events are unavailable: ${why}`;
    note(unavailableEvent(now(), { programs: "events", backend: o.backend, reason: why }));
    file.close();
    if (config.events.required) {
      throw new BackendError(
        `${message} (the config says "events": {"required": true}; set it to false to ` +
          `count without events)`,
        { cause },
      );
    }
    log(`${message}; counting goes on without them`);
    return null;
  };
  if (o.backend !== "ebpf") {
    return unavailable(`they need the ebpf backend, and this run counts with ${o.backend}`);
  }
  // Said as the backends say it, rather than as the EPERM the kernel would answer.
  const missing = missingCaps(effectiveCaps(), [CAP_NET_ADMIN]);
  if (missing.length > 0) {
    return unavailable(
      `they need ${missing.map(capabilityName).join(", ")}, which this process lacks`,
    );
  }
  const collector = new EventCollector();
  try {
    collector.start(o.targets, {
      mount: o.mount,
      exclude: config.exclude,
      monotonicNow: monotonicSeconds,
    });
  } catch (e) {
    return unavailable((e as Error).message, e);
  }
  note(attachedEvent(now(), "events", present));
  const path = file.path;
  log(`connect events: writing ${path}`);
  let reportedDrops = 0;
  let reportedAt = -Infinity;
  let failure: string | null = null;
  return {
    path,
    retarget: (targets) => collector.retarget(targets),
    tick() {
      try {
        file.append(named(collector.poll(), o.names ?? null));
        if (failure !== null) log("connect events: publishing again");
        failure = null;
      } catch (e) {
        // Logged once per distinct failure; the next tick retries.
        const why = (e as Error).message;
        if (failure !== why) log(`connect events: ${why}; retrying every interval`);
        failure = why;
      }
      const dropped = collector.dropped();
      // Counted in counters.json every interval; logged at most once a minute.
      if (dropped > reportedDrops && performance.now() - reportedAt >= 60_000) {
        log(
          `connect events: ${dropped - reportedDrops} dropped (ring buffer full), ` +
            `${dropped} since start`,
        );
        reportedDrops = dropped;
        reportedAt = performance.now();
      }
      return dropped;
    },
    stop() {
      try {
        file.close();
      } finally {
        collector.stop();
      }
    },
  };
}
