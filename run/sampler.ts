/**
 * The sampling loop of `run`, with everything it talks to handed in: the started backend,
 * the clock, how it sleeps, where counters.json and the saved state go, the sinks and the
 * connect events. run/mod.ts wires the real ones; run/sampler_test.ts drives the loop with
 * the in-memory backend (backends/stub.ts), a fake clock and sleeper, without root or a
 * kernel.
 *
 * Every interval: retarget when the service cgroups changed, read the backend, fold the
 * reading into totals that never go back, publish. Signals only call `stop` or
 * `requestReset`; the loop looks at them between samples.
 */

import {
  type Backend,
  BackendError,
  type DestinationCounters,
  type ServiceCounters,
  type ServiceTarget,
} from "../backends/mod.ts";
import { type CountersV1, MAX_DESTINATIONS } from "../lib/contract.ts";
import type { WakeReason } from "../lib/sleeper.ts";
import type { EventsRuntime } from "../events/run.ts";
import type { NamesRuntime } from "../names/run.ts";
import { buildCounters, type ServiceState } from "./output.ts";
import { HEALTHY, type HistorySink, type RunHealth, type Sink } from "./sinks.ts";
import { type SavedRun, STATE_SAVE_MS } from "./state.ts";
import { type KernelRecord, Totals } from "./totals.ts";

/**
 * Service cgroups are looked up when the watch reports a change, and at least this often:
 * a safety net for what a watch can miss (a full inotify queue).
 */
export const TARGETS_POLL_MS = 10_000;
/** Without the reset signal (it could not be sent) a request is still found this often. */
export const RESET_POLL_MS = 2_000;
/** After a failed save of the disk copy (disk full, directory gone) it is tried again this late. */
export const STATE_RETRY_MS = 10_000;

export interface SamplerClock {
  /** Milliseconds of a monotonic timer: when to sample, look for changes and save. */
  now(): number;
  /** CLOCK_MONOTONIC seconds, counters.json's ts_monotonic. */
  monotonicSeconds(): number;
  /** Seconds since the Unix epoch, counters.json's ts_unix. */
  unixSeconds(): number;
}

export interface SamplerSleeper {
  /** Sleeps up to `ms`, or until `wake` or a watched change; says which. */
  sleep(ms: number): Promise<WakeReason>;
  /** Ends a sleep in progress (a stop). */
  wake(): void;
}

/** Where the totals outlive the process (run/state.ts), and where `reset` leaves its request. */
export interface StateStore {
  /** The runtime copy, every sample whose totals moved: cheap, survives a SIGKILL. */
  keep(services: Record<string, ServiceCounters>, run: SavedRun): void;
  /** The disk copy, durably: survives a power loss. */
  save(services: Record<string, ServiceCounters>, run: SavedRun): void;
  /** After a clean stop whose final save succeeded: the runtime copy has nothing to add. */
  discardRuntime(): void;
  resetRequested(): boolean;
  clearResetRequest(): void;
}

/** counters.json. */
export interface CountersOutput {
  readonly path: string;
  publish(counters: CountersV1): void;
  /** After a failed publish: make again what vanished (directories, lock files). */
  recover(): void;
}

/** Tells when the service cgroups may have changed (lib/cgroup_watch.ts). */
export interface TargetWatch {
  takeChanged(): boolean;
  /** What the sleeper wakes on; null when watching failed (then it always says changed). */
  readonly fd: number | null;
}

export interface SamplerParts {
  /** Started with `targets`; the sampler retargets it, the caller stops it. */
  backend: Backend;
  /** The service cgroups now (ids looked up). */
  lookupTargets: () => ServiceTarget[];
  watch: TargetWatch;
  clock: SamplerClock;
  sleeper: SamplerSleeper;
  state: StateStore;
  output: CountersOutput;
  sinks: Sink[];
  events: EventsRuntime | null;
  /** DNS names of destinations (names/); absent or null when off or unavailable. */
  names?: NamesRuntime | null;
  /** Traffic history (history/); absent or null when it is off. */
  history?: HistorySink | null;
  /** sd_notify: "READY=1" once counting, "STOPPING=1" on the way out. */
  notify: (state: string) => void;
  log: (message: string) => void;
}

export interface SamplerSettings {
  /** The targets the backend was started with. */
  targets: ServiceTarget[];
  intervalS: number;
  /** Why auto did not get its first choice (counters.json's backend_fallback_reason). */
  fallbackReason: string | null;
  /** Unix seconds this run started, and the boot it runs in. */
  startedAt: number;
  bootId: string;
  /** Totals to continue from (the newest good copy of the saved totals). */
  startTotals?: Record<string, ServiceCounters>;
  /** What `startTotals` include of kernel state that outlives runs (saved with them). */
  startKernel?: KernelRecord[];
  /** Copies of the saved totals found unusable at start (a metric). */
  stateCopiesRejected?: number;
  /** eBPF programs this run tried and could not attach (counters.json, a metric). */
  ebpfAttachFailures?: number;
}

/** What a cgroup did between two lookups, for the log. */
export function describeChanges(before: ServiceTarget[], after: ServiceTarget[]): string[] {
  const out: string[] = [];
  after.forEach((t, i) => {
    const a = before[i]?.id ?? null, b = t.id;
    if (a === b) return;
    const what = a === null ? "appeared" : b === null ? "is gone" : "was recreated";
    out.push(`service ${t.name}: cgroup ${what}${b === null ? "" : ` (id ${b})`}`);
  });
  return out;
}

export class Sampler {
  readonly #parts: SamplerParts;
  readonly #settings: SamplerSettings;
  readonly #totals: Totals;
  #targets: ServiceTarget[];
  #stopping = false;
  #resetSignalled = false;
  /** The totals' key at the last save of the disk copy; -1n: save with the next sample. */
  #savedStateKey = -1n;
  #nextStateSave = 0;
  /** The totals' key in the runtime copy; -1n: write it with the next sample. */
  #keptStateKey = -1n;
  /** Why the last save of the disk copy failed (logged once), and when to try again. */
  #saveFailure: string | null = null;
  #saveRetryAt = 0;
  #nextResetPoll = 0;
  /**
   * Destinations change only with counted packets, which move the totals first (the
   * programs add to `counters`, then to `pending`). Read while the totals move and once
   * after they stop (a packet counted during the last read may reach `pending` only after
   * it); otherwise the last list stands. Stale: read with the next sample whatever the
   * totals (first sample, new targets).
   */
  #destinations: { key: bigint; stale: boolean; list?: DestinationCounters[] } = {
    key: -1n,
    stale: true,
  };
  /** Logged once per distinct failure of a sink, not every interval. */
  readonly #sinkFailures = new Map<string, string>();
  #ready = false;
  /** Replaced kernel state waits for totals that include it to be kept, then goes. */
  #replacedPending: boolean;
  readonly #health: RunHealth;

  constructor(parts: SamplerParts, settings: SamplerSettings) {
    this.#parts = parts;
    this.#settings = settings;
    this.#health = { ...HEALTHY, stateCopiesRejected: settings.stateCopiesRejected ?? 0 };
    this.#targets = settings.targets;
    const replaced = parts.backend.replaced?.() ?? [];
    this.#replacedPending = replaced.length > 0;
    this.#totals = Totals.continuing(settings.targets.map((t) => t.name), {
      saved: settings.startTotals ?? {},
      included: settings.startKernel,
      current: parts.backend.kernelState?.() ?? null,
      replaced,
    });
  }

  /** Ends `run` after the sample in progress, with one final sample. */
  stop(): void {
    this.#stopping = true;
    this.#parts.sleeper.wake();
  }

  /** `reset` asked: look for its request file with the next sample rather than later. */
  requestReset(): void {
    this.#resetSignalled = true;
  }

  /** Samples every interval until `stop`, then writes a final sample. */
  async run(): Promise<void> {
    const { clock, watch, sleeper } = this.#parts;
    const intervalMs = this.#settings.intervalS * 1000;
    let next = clock.now();
    let nextPoll = next + TARGETS_POLL_MS;
    /** Whether the watch may hold events: not after a sleep its descriptor did not end. */
    let watchMayHaveNews = true;
    while (!this.#stopping) {
      if ((watchMayHaveNews && watch.takeChanged()) || clock.now() >= nextPoll) {
        nextPoll = clock.now() + TARGETS_POLL_MS;
        await this.#retarget();
      }
      // A timer may fire a fraction of a millisecond early; that is not a reason to wake again.
      if (clock.now() >= next - 1) {
        await this.#sampleOrRecover();
        next += intervalMs;
        const now = clock.now();
        if (next < now) next = now; // overslept (suspend, load): do not burst to catch up
      }
      // Woken early by a stop, or by a service cgroup change to retarget at once.
      const woke = await sleeper.sleep(Math.max(0, next - clock.now()));
      // A failed watch has no descriptor, and says "changed" every time (poll every sample).
      watchMayHaveNews = woke !== "timeout" || watch.fd === null;
    }
    this.#parts.notify("STOPPING=1\nSTATUS=Stopping: writing the final sample");
    await this.sample(true);
    if (this.#saveFailure === null) this.#discardRuntimeCopy();
    this.#parts.log("stopped; final totals written");
  }

  #discardRuntimeCopy(): void {
    try {
      this.#parts.state.discardRuntime();
    } catch (e) {
      this.#parts.log(`cannot remove the runtime copy of the totals: ${(e as Error).message}`);
    }
  }

  /** Looks the service cgroups up and retargets the backend (and events) when they changed. */
  async #retarget(): Promise<void> {
    const fresh = this.#parts.lookupTargets();
    const changes = describeChanges(this.#targets, fresh);
    if (changes.length > 0) {
      for (const c of changes) this.#parts.log(c);
      await this.#parts.backend.retarget(fresh);
      this.#parts.events?.retarget(fresh);
      this.#parts.names?.retarget(fresh);
      this.#destinations.stale = true; // services may have new names
    }
    this.#targets = fresh;
  }

  /**
   * One sample; a failure to publish it (someone cleaned /run) recreates what vanished and
   * publishes again at once. A BackendError, and a lock another run took meanwhile, end
   * the run.
   */
  async #sampleOrRecover(): Promise<void> {
    const { output, log } = this.#parts;
    try {
      await this.sample();
      if (!this.#ready) {
        this.#ready = true;
        // Type=notify: `systemctl start` returns now, with a first counters.json in place.
        this.#parts.notify(
          `READY=1\nSTATUS=Counting ${this.#targets.length} services with ` +
            `${this.#parts.backend.name}, writing ${output.path} every ${this.#settings.intervalS} s`,
        );
      }
    } catch (e) {
      if (e instanceof BackendError) throw e;
      log(`cannot publish ${output.path}: ${(e as Error).message}; recreating its directory`);
      // The copies of the totals may have gone with their directories.
      this.#savedStateKey = this.#keptStateKey = -1n;
      try {
        output.recover();
        // Publish now rather than a whole interval late: readers judge staleness by gaps.
        await this.sample();
      } catch (e) {
        if (e instanceof BackendError) throw e;
        /* otherwise retried, and reported, on the next interval */
      }
    }
  }

  /**
   * Reads the backend, folds the reading in and publishes: the copies of the totals first
   * (the runtime one when they moved, the disk one when due), then counters.json, then the
   * sinks: what readers see is never ahead of what a restart continues from. `final`: the
   * last one, which saves changed totals to disk now.
   */
  async sample(final = false): Promise<void> {
    const { backend, clock, output } = this.#parts;
    const sampleStart = clock.now();
    this.#totals.add(await backend.read(), backend.kernelState?.().id);
    this.#resetIfRequested(sampleStart);
    const sum = this.#totals.sum();
    // Totals only grow, or are reset to zero, so their sum tells whether they moved.
    const totalsKey = sum.rxBytes + sum.txBytes + sum.rxPackets + sum.txPackets;
    const names = this.#parts.names ?? null;
    names?.refresh();
    const counters = buildCounters({
      backend: backend.name,
      fallbackReason: this.#settings.fallbackReason,
      services: this.#serviceStates(),
      total: sum,
      tsMonotonic: clock.monotonicSeconds(),
      tsUnix: clock.unixSeconds(),
      intervalS: this.#settings.intervalS,
      bootId: this.#settings.bootId,
      startedAt: this.#settings.startedAt,
      destinations: await this.#destinationsFor(totalsKey),
      nameOf: names ? (address) => names.nameOf(address) : undefined,
    });
    if (names) counters.names = names.status();
    if (this.#parts.events) counters.events_dropped_total = this.#parts.events.tick();
    counters.ebpf_attach_failures_total = this.#settings.ebpfAttachFailures ?? 0;
    this.#toHistory((h) => {
      h.record(counters);
      counters.history = h.status();
    });
    const sampleDurationS = (clock.now() - sampleStart) / 1000;
    this.#keepState(totalsKey);
    this.#saveStateIfDue({ totalsKey, sampleStart, final });
    output.publish(counters);
    await this.#releaseReplaced();
    await this.#publishToSinks(counters, sampleDurationS);
  }

  /**
   * Kernel state `start` replaced is removed once the runtime copy holds totals that include
   * its last counts; until then a crash finds it again, and the copy says what is counted.
   */
  async #releaseReplaced(): Promise<void> {
    if (!this.#replacedPending || this.#keptStateKey === -1n) return;
    try {
      await this.#parts.backend.releaseReplaced?.();
      this.#totals.forgetReplaced();
      this.#replacedPending = false;
    } catch (e) {
      this.#parts.log(
        `cannot remove the replaced kernel state: ${(e as Error).message}; trying again`,
      );
    }
  }

  /** The reset request is looked for when signalled, and every RESET_POLL_MS anyway. */
  #resetIfRequested(sampleStart: number): void {
    const { state, log } = this.#parts;
    const due = this.#resetSignalled || sampleStart >= this.#nextResetPoll;
    this.#resetSignalled = false;
    if (!due) return;
    this.#nextResetPoll = sampleStart + RESET_POLL_MS;
    if (!state.resetRequested()) return;
    this.#totals.reset();
    this.#toHistory((h) => h.totalsReset()); // before the request goes: `reset` waits for it
    state.clearResetRequest();
    // Saved (both copies) before it is published: a crash must not undo it.
    this.#savedStateKey = this.#keptStateKey = -1n;
    this.#saveRetryAt = 0;
    log("totals reset on request");
  }

  #serviceStates(): Record<string, ServiceState> {
    const services: Record<string, ServiceState> = {};
    for (const t of this.#targets) {
      services[t.name] = {
        path: t.path,
        present: t.id !== null,
        counters: this.#totals.service(t.name),
      };
    }
    return services;
  }

  /**
   * Destinations are optional: a failed read (the batch lookup's ENOSPC while the LRU
   * churns, say) keeps the last list, is counted (a metric), logged once, and tried again
   * with the next sample. Whatever it throws, counting goes on.
   */
  async #destinationsFor(totalsKey: bigint): Promise<DestinationCounters[] | undefined> {
    const d = this.#destinations;
    if (!d.stale && totalsKey === d.key) return d.list;
    try {
      d.list = await this.#parts.backend.readDestinations?.(MAX_DESTINATIONS);
    } catch (e) {
      this.#health.destinationsErrors++;
      const why = (e as Error).message;
      if (this.#sinkFailures.get("destinations") !== why) {
        this.#parts.log(
          `cannot read the top destinations: ${why}; the last list is kept, counting goes on`,
        );
      }
      this.#sinkFailures.set("destinations", why);
      d.stale = true;
      return d.list;
    }
    if (this.#sinkFailures.delete("destinations")) this.#parts.log("destinations: reading again");
    d.stale = totalsKey !== d.key;
    d.key = totalsKey;
    return d.list;
  }

  #savedRun(): SavedRun {
    return {
      startedAt: this.#settings.startedAt,
      monotonicNow: this.#parts.clock.monotonicSeconds(),
      kernel: this.#totals.kernelRecords(),
    };
  }

  /** The runtime copy whenever the totals moved; a failure is a publishing failure (recover). */
  #keepState(totalsKey: bigint): void {
    if (totalsKey === this.#keptStateKey) return;
    this.#parts.state.keep(this.#totals.all(), this.#savedRun());
    this.#keptStateKey = totalsKey;
  }

  /**
   * The disk copy at the first sample, then only when the totals moved and STATE_SAVE_MS
   * has passed, or on the way out. A failed save never stops counting: it is logged once
   * (the runtime copy still holds the totals) and tried again after STATE_RETRY_MS, with
   * the directories made and held anew.
   */
  #saveStateIfDue(s: { totalsKey: bigint; sampleStart: number; final: boolean }): void {
    const due = this.#savedStateKey === -1n ||
      (s.totalsKey !== this.#savedStateKey && (s.final || s.sampleStart >= this.#nextStateSave));
    if (!due || (!s.final && s.sampleStart < this.#saveRetryAt)) return;
    const { state, log } = this.#parts;
    try {
      if (this.#saveFailure !== null) this.#parts.output.recover();
      state.save(this.#totals.all(), this.#savedRun());
      if (this.#saveFailure !== null) log("saving the totals again");
      this.#saveFailure = null;
    } catch (e) {
      if (e instanceof BackendError) throw e;
      const why = (e as Error).message;
      if (this.#saveFailure !== why) {
        log(
          `cannot save the totals to disk: ${why}; counting goes on (the runtime copy holds ` +
            `them), retrying every ${STATE_RETRY_MS / 1000} s`,
        );
      }
      this.#saveFailure = why;
      this.#saveRetryAt = s.sampleStart + STATE_RETRY_MS;
      return;
    }
    this.#savedStateKey = s.totalsKey;
    this.#nextStateSave = s.sampleStart + STATE_SAVE_MS;
  }

  /**
   * History contains its own failures; should one escape, it is logged like a sink's and
   * the sample goes on: an optional feature never stops counting.
   */
  #toHistory(use: (history: HistorySink) => void): void {
    const history = this.#parts.history;
    if (!history) return;
    try {
      use(history);
      this.#sinkFailures.delete("history");
    } catch (e) {
      const why = (e as Error).message;
      if (this.#sinkFailures.get("history") !== why) this.#parts.log(`history: ${why}`);
      this.#sinkFailures.set("history", why);
    }
  }

  /** A failing sink is logged once per distinct failure and retried every interval. */
  async #publishToSinks(counters: CountersV1, sampleDurationS: number): Promise<void> {
    const { log } = this.#parts;
    for (const sink of this.#parts.sinks) {
      try {
        await sink.publish({ counters, sampleDurationS, health: this.#health });
        if (this.#sinkFailures.delete(sink.name)) log(`${sink.name}: publishing again`);
      } catch (e) {
        const why = (e as Error).message;
        if (this.#sinkFailures.get(sink.name) !== why) {
          log(`${sink.name}: ${why}; retrying every interval`);
        }
        this.#sinkFailures.set(sink.name, why);
      }
    }
  }
}
