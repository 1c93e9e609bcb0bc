/**
 * `stb-netacct run`: the root sampler. Starts one backend, and every interval refreshes
 * the service cgroup ids, reads the kernel counters and publishes counters.json.
 *
 * Order of teardown is the reverse of setup, in `finally`: a final publish, backend stop,
 * lock release. Signals only set a flag the loop checks.
 */

import { Command, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import {
  AUTO,
  AUTO_SUMMARY,
  type Backend,
  BACKEND_CHOICES,
  BACKEND_INFO,
  BACKEND_NAMES,
  type BackendChoice,
  BackendError,
  checkPrivileges,
  type DestinationCounters,
  type ServiceTarget,
  startWithFallback,
} from "../backends/mod.ts";
import { CAP_CHOWN, effectiveCaps, missingCaps } from "../lib/capabilities.ts";
import { type Cgroup2Mount, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { monotonicSeconds } from "../lib/clock.ts";
import {
  checkConfigTrusted,
  type Config,
  ConfigError,
  DEFAULT_CONFIG_PATH,
  loadConfig,
  parseListenAddress,
} from "../lib/config.ts";
import { UsageError } from "../lib/errors.ts";
import {
  DEFAULT_INTERVAL_S,
  MAX_INTERVAL_S,
  MIN_INTERVAL_S,
  parseIntervalFlag,
} from "../lib/interval.ts";
import {
  type CountersV1,
  DEFAULT_COUNTERS_PATH,
  MAX_DESTINATIONS,
  parseCounters,
} from "../lib/contract.ts";
import { type EventsRuntime, startEvents } from "../events/run.ts";
import { acquireLock, type Lock, LockHeldError } from "../lib/lock.ts";
import { pathInfo } from "../lib/libc.ts";
import { CgroupWatch } from "../lib/cgroup_watch.ts";
import { Sleeper, type WakeReason } from "../lib/sleeper.ts";
import { sdNotify } from "../lib/sd_notify.ts";
import { lookupUser, type UserIds } from "../lib/users.ts";
import { buildCounters, dirOf, prepareOutputDir, publish, type ServiceState } from "./output.ts";
import { Totals } from "./totals.ts";
import type { Sink } from "./sinks.ts";
import { createSinks } from "./metrics.ts";
import {
  bootId,
  DEFAULT_STATE_PATH,
  loadState,
  resetRequestPath,
  saveState,
  startingTotals,
  STATE_SAVE_MS,
  StateError,
} from "./state.ts";

/**
 * Service cgroups are looked up when the watch reports a change, and at least this often:
 * a safety net for what a watch can miss (a full inotify queue).
 */
const TARGETS_POLL_MS = 10_000;
/** How `reset` tells a running sampler to look for its request file. */
export const RESET_SIGNAL: Deno.Signal = "SIGUSR1";
/**
 * Without the signal (it could not be sent) the request is still found this often, well
 * within `reset`'s default 5 s wait.
 */
const RESET_POLL_MS = 2_000;
/**
 * `run` sleeps outside Deno's event loop (lib/sleeper.ts); a signal that arrives while it
 * is busy, not asleep, reaches its listener when the loop next turns, at the latest this
 * long after. A turn (a Deno timer: the only wake found to run a signal listener that
 * reliably) costs the main thread about 0.38 ms of CPU, as much as half a sample: every 2 s
 * that was 95 us per 0.5 s sample. `run` is busy about 0.5 ms of each interval, so 1 signal
 * in 1,000 lands then, and waits up to this long: under the unit's TimeoutStopSec (10 s), and
 * a reset request is also polled for (RESET_POLL_MS).
 */
const EVENT_LOOP_TURN_MS = 5_000;

export interface RunOptions {
  backend: BackendChoice;
  config: Config;
  output: string;
  /** Saved totals; a new run continues from them. */
  statePath: string;
  intervalS: number;
  log: (message: string) => void;
}

function parseMetricsListenFlag(value: string): { hostname: string; port: number } {
  try {
    return parseListenAddress(value, null);
  } catch (e) {
    if (e instanceof ConfigError) throw new InvalidArgumentError(e.message);
    throw e;
  }
}

export function runCommand() {
  return new Command("run")
    .summary("count StB's external traffic and publish counters.json (root)")
    .description(
      "Count the external network traffic of the configured service cgroups (and every\n" +
        "cgroup below them) in the kernel, and publish the totals every interval to a JSON\n" +
        "file that `graph` and `status` read without privileges. Runs until SIGINT/SIGTERM,\n" +
        "then writes a final sample and removes everything it installed.",
    )
    .addOption(
      new Option("-b, --backend <name>", "how to count: " + BACKEND_CHOICES.join(", "))
        .choices(BACKEND_CHOICES)
        .default(AUTO as BackendChoice),
    )
    .option(
      "-c, --config <path>",
      "config file (built-in StB defaults when the default path is absent)",
      DEFAULT_CONFIG_PATH,
    )
    .option(
      "-i, --interval <seconds>",
      `seconds between samples, ${MIN_INTERVAL_S} to ${MAX_INTERVAL_S} (default: config, else ` +
        `${DEFAULT_INTERVAL_S})`,
      parseIntervalFlag,
    )
    .option(
      "-o, --output <path>",
      `counters file (default: config "output", else ${DEFAULT_COUNTERS_PATH})`,
    )
    .option(
      "-s, --state <path>",
      `saved totals, continued across restarts (default: ${DEFAULT_STATE_PATH} for the default ` +
        "output, else OUTPUT.state)",
    )
    .option(
      "--metrics-listen <address>",
      "also serve Prometheus metrics at http://ADDRESS/metrics, e.g. 127.0.0.1:9877 (default: " +
        'config "prometheus.listen", else off)',
      parseMetricsListenFlag,
    )
    .addHelpText(
      "after",
      "\nBackends:\n" +
        BACKEND_NAMES.map((n) => `  ${n.padEnd(9)} ${BACKEND_INFO[n].summary}`).join("\n") +
        `\n  ${AUTO.padEnd(9)} ${AUTO_SUMMARY}\n` +
        "\nExamples:\n" +
        "  sudo stb-netacct run                          # auto backend, default config\n" +
        "  sudo stb-netacct run --backend nft --interval 1\n" +
        "  sudo stb-netacct run -c ./test.json -o /tmp/stb/counters.json\n" +
        "  sudo stb-netacct run --metrics-listen 127.0.0.1:9877   # also serve /metrics\n",
    )
    .action(async (opts, cmd) => {
      const explicitConfig = cmd.getOptionValueSource("config") === "cli";
      let config: Config;
      try {
        // Refused before it is even parsed: a file others can change must not steer root.
        checkConfigTrusted(opts.config);
        config = loadConfig(opts.config, explicitConfig);
      } catch (e) {
        if (e instanceof ConfigError) throw new UsageError(e.message, { cause: e });
        throw e;
      }
      if (opts.metricsListen) {
        config = { ...config, prometheus: { ...config.prometheus, listen: opts.metricsListen } };
      }
      const output = opts.output ?? config.output;
      await runSampler({
        backend: opts.backend,
        config,
        output,
        statePath: opts.state ?? defaultStatePath(output),
        intervalS: opts.interval ?? config.interval_s,
        log: (m) => console.error(`stb-netacct: ${m}`),
      });
    });
}

/** Separate outputs get separate totals, so side-by-side runs (tests, comparisons) never mix. */
export function defaultStatePath(output: string): string {
  return output === DEFAULT_COUNTERS_PATH ? DEFAULT_STATE_PATH : `${output}.state`;
}

/** The uid and gid counters.json is given to (the config's "owner"); null keeps it root's. */
function ownerIds(config: Config): UserIds | null {
  if (config.owner === null) return null;
  const ids = lookupUser(config.owner);
  if (!ids) {
    throw new UsageError(
      `"owner" is "${config.owner}" in ${config.source}, but no such user exists: ` +
        `name an existing user or a numeric uid`,
    );
  }
  return ids;
}

function currentTargets(mount: Cgroup2Mount, config: Config): ServiceTarget[] {
  return Object.entries(config.services).map(([name, path]) => ({
    name,
    path,
    id: cgroupId(mount, path),
  }));
}

function describeChanges(before: ServiceTarget[], after: ServiceTarget[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < after.length; i++) {
    const a = before[i].id, b = after[i].id;
    if (a === b) continue;
    const what = a === null ? "appeared" : b === null ? "is gone" : "was recreated";
    out.push(`service ${after[i].name}: cgroup ${what}${b === null ? "" : ` (id ${b})`}`);
  }
  return out;
}

/** The counters.json a previous run left, if it is one; anything else is not a source of totals. */
function readPublished(path: string): CountersV1 | null {
  try {
    return parseCounters(Deno.readTextFileSync(path));
  } catch {
    return null;
  }
}

function existsFile(path: string): boolean {
  return pathInfo(path, false)?.isFile ?? false;
}

export async function runSampler(opts: RunOptions): Promise<void> {
  const { config, log } = opts;
  checkPrivileges(opts.backend);
  const mount = findCgroup2Mount();
  const owner = ownerIds(config);
  if (owner && owner.uid !== Deno.uid() && missingCaps(effectiveCaps(), [CAP_CHOWN]).length) {
    // Found now rather than as a failed publish every interval.
    throw new BackendError(
      `counters.json is to belong to "${config.owner}", and giving a file away needs ` +
        `CAP_CHOWN, which this process lacks: run as root, or add CAP_CHOWN to the service`,
    );
  }
  const outDir = dirOf(opts.output);
  prepareOutputDir(outDir);
  const stateDir = dirOf(opts.statePath);
  // Saved totals are root's alone; beside counters.json the directory stays readable.
  const stateDirMode = stateDir === outDir ? 0o755 : 0o700;
  prepareOutputDir(stateDir, stateDirMode);

  let stopping = false;
  const sleeper = new Sleeper();
  /** Counts signals heard, so a wait for a listener to run can tell when one has. */
  let signalsHeard = 0;
  const onSignal = () => {
    stopping = true;
    signalsHeard++;
    sleeper.wake();
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  // `reset` drops its request file and then sends SIGUSR1: the file is looked for at once
  // rather than every interval.
  let resetSignalled = false;
  const onResetSignal = () => {
    resetSignalled = true;
    signalsHeard++;
  };
  Deno.addSignalListener(RESET_SIGNAL, onResetSignal);

  const names = Object.keys(config.services);
  const locks: Lock[] = [];
  let backend: Backend | null = null;
  let sinks: Sink[] = [];
  let events: EventsRuntime | null = null;
  let targetsWatch: CgroupWatch | null = null;
  try {
    const lockPaths = [
      `${outDir}/.${opts.output.slice(outDir.length + 1)}.lock`,
      `${opts.statePath}.lock`,
    ];
    for (const p of lockPaths) locks.push(acquireLock(p));
    // A removed directory takes its lock files along, and a new run could lock fresh ones
    // while this one still counts: take the locks again wherever the file is gone.
    const relock = () => {
      lockPaths.forEach((p, i) => {
        if (locks[i].intact()) return;
        locks[i].release();
        locks[i] = acquireLock(p);
      });
    };
    let saved;
    try {
      saved = loadState(opts.statePath);
    } catch (e) {
      if (e instanceof StateError) throw new BackendError(e.message, { cause: e });
      throw e;
    }
    const start = startingTotals(saved, saved ? readPublished(opts.output) : null);
    const totals = new Totals(names, start?.services ?? {});
    if (start) {
      const t = totals.sum();
      log(
        (start.from === "state"
          ? "continuing from saved totals"
          : "continuing from the last published totals, newer than the saved ones") +
          ` (rx ${t.rxBytes} B, tx ${t.txBytes} B` +
          (saved!.boot_id !== bootId() ? ", saved before the last reboot)" : ")"),
      );
    }
    const startedAt = Math.round(Date.now()) / 1000;
    const resetRequest = resetRequestPath(opts.statePath);
    targetsWatch = new CgroupWatch(mount, Object.values(config.services), log);
    if (targetsWatch.fd !== null) sleeper.watch(targetsWatch.fd);
    let targets = currentTargets(mount, config);
    const started = await startWithFallback(opts.backend, targets, {
      mount,
      exclude: config.exclude,
      ctMark: config.ct_mark,
      ctMask: config.ct_mask,
      log,
      gsoCorrection: config.gso_correction,
    });
    backend = started.backend;
    const present = targets.filter((t) => t.id !== null).length;
    log(
      `counting with ${backend.name}` +
        (started.fallbackReason ? ` (fell back: ${started.fallbackReason})` : "") +
        `; ${names.length} services (${present} present now), cgroup2 at ${mount.mountPoint}; ` +
        `writing ${opts.output} every ${opts.intervalS} s`,
    );
    for (const t of targets) {
      if (t.id === null) {
        log(
          `service ${t.name}: cgroup ${t.path} does not exist yet; it is counted once it appears`,
        );
      }
    }

    events = startEvents({
      config,
      backend: backend.name,
      targets,
      mount,
      outDir,
      owner,
      log,
    });
    sinks = await createSinks({ config, log });
    const sinkFailures = new Map<string, string>();

    /** -1: the state must be saved with the next sample, whatever its totals. */
    let savedStateKey = -1;
    let nextStateSave = 0;
    let nextResetPoll = 0;
    /**
     * Destinations change only with counted packets, which move the totals first (the
     * programs add to `counters`, then to `pending`). Read while the totals move and once
     * after they stop (a packet counted during the last read may have reached `pending`
     * only after it); otherwise the last list stands, sparing the `dests` walk when idle.
     * Stale: read with the next sample whatever the totals (first sample, new targets).
     */
    let destinationsKey = -1;
    let destinationsStale = true;
    let destinations: DestinationCounters[] | undefined;
    const sampleAndPublish = async (final = false) => {
      const sampleStart = performance.now();
      totals.add(await backend!.read());
      const resetDue = resetSignalled || sampleStart >= nextResetPoll;
      resetSignalled = false;
      if (resetDue) nextResetPoll = sampleStart + RESET_POLL_MS;
      if (resetDue && existsFile(resetRequest)) {
        totals.reset();
        Deno.removeSync(resetRequest);
        savedStateKey = -1; // saved before it is published: a crash must not undo it
        log("totals reset on request");
      }
      const services: Record<string, ServiceState> = {};
      for (const t of targets) {
        services[t.name] = {
          path: t.path,
          present: t.id !== null,
          counters: totals.service(t.name),
        };
      }
      const sum = totals.sum();
      // Totals only grow, or are reset to zero, so their sum tells whether they moved.
      const totalsKey = sum.rxBytes + sum.txBytes + sum.rxPackets + sum.txPackets;
      if (destinationsStale || totalsKey !== destinationsKey) {
        destinations = await backend!.readDestinations?.(MAX_DESTINATIONS);
        destinationsStale = totalsKey !== destinationsKey;
        destinationsKey = totalsKey;
      }
      const counters = buildCounters(
        backend!.name,
        started.fallbackReason,
        services,
        sum,
        monotonicSeconds(),
        Date.now() / 1000,
        opts.intervalS,
        { boot_id: bootId(), started_at: startedAt },
        destinations,
      );
      if (events) counters.events_dropped_total = events.tick();
      const sampleDurationS = (performance.now() - sampleStart) / 1000;
      // State before counters.json: the first sample's save names this run, which is what
      // lets a successor trust this run's counters.json over the state (startingTotals).
      // Then only when the totals moved and a minute has passed, or on the way out.
      if (
        savedStateKey === -1 ||
        (totalsKey !== savedStateKey && (final || sampleStart >= nextStateSave))
      ) {
        saveState(opts.statePath, totals.all(), { startedAt, monotonicNow: monotonicSeconds() });
        savedStateKey = totalsKey;
        nextStateSave = sampleStart + STATE_SAVE_MS;
      }
      publish(opts.output, counters, owner);
      for (const sink of sinks) {
        try {
          await sink.publish({ counters, sampleDurationS });
          if (sinkFailures.delete(sink.name)) log(`${sink.name}: publishing again`);
        } catch (e) {
          // Logged once per distinct failure, not every interval.
          const why = (e as Error).message;
          if (sinkFailures.get(sink.name) !== why) {
            log(`${sink.name}: ${why}; retrying every interval`);
          }
          sinkFailures.set(sink.name, why);
        }
      }
    };

    let told = false;
    const tellSystemd = (state: string) => {
      try {
        sdNotify(state);
      } catch (e) {
        log(`cannot tell systemd ${state.split("\n")[0]}: ${(e as Error).message}`);
      }
    };
    const intervalMs = opts.intervalS * 1000;
    // A metrics listener answers scrapes between samples: Deno's event loop must run.
    const servesBetweenSamples = sinks.some((s) => s.servesBetweenSamples);
    let nextTurn = performance.now() + EVENT_LOOP_TURN_MS;
    let next = performance.now();
    let nextPoll = next + TARGETS_POLL_MS;
    /** Whether the watch may hold events: not after a sleep its descriptor did not end. */
    let watchMayHaveNews = true;
    while (!stopping) {
      if ((watchMayHaveNews && targetsWatch.takeChanged()) || performance.now() >= nextPoll) {
        nextPoll = performance.now() + TARGETS_POLL_MS;
        const fresh = currentTargets(mount, config);
        const changes = describeChanges(targets, fresh);
        if (changes.length > 0) {
          for (const c of changes) log(c);
          await backend.retarget(fresh);
          events?.retarget(fresh);
          destinationsStale = true; // services may have new names
        }
        targets = fresh;
      }
      // A timer may fire a fraction of a millisecond early; that is not a reason to wake again.
      if (performance.now() >= next - 1) {
        try {
          await sampleAndPublish();
          if (!told) {
            told = true;
            // Type=notify: `systemctl start` returns now, with a first counters.json in place.
            tellSystemd(
              `READY=1\nSTATUS=Counting ${names.length} services with ${backend.name}, ` +
                `writing ${opts.output} every ${opts.intervalS} s`,
            );
          }
        } catch (e) {
          if (e instanceof BackendError) throw e;
          // A vanished output directory (someone cleaned /run) is recreated, not fatal.
          log(`cannot publish ${opts.output}: ${(e as Error).message}; recreating its directory`);
          savedStateKey = -1; // the state file may have gone with its directory
          try {
            prepareOutputDir(outDir);
            prepareOutputDir(stateDir, stateDirMode);
            relock();
            // Publish now rather than a whole interval late: readers judge staleness by gaps.
            await sampleAndPublish();
          } catch (e) {
            // Another run took the recreated lock: two samplers must never both publish.
            if (e instanceof LockHeldError) throw new BackendError(e.message, { cause: e });
            if (e instanceof BackendError) throw e;
            /* otherwise retried, and reported, on the next interval */
          }
        }
        next += intervalMs;
        const now = performance.now();
        if (next < now) next = now; // overslept (suspend, load): do not burst to catch up
      }
      // Woken early by a signal, or by a service cgroup change to retarget at once.
      const sleepMs = Math.max(0, next - performance.now());
      let woke: WakeReason;
      if (servesBetweenSamples) {
        woke = await sleeper.sleepAsync(sleepMs);
      } else {
        woke = sleeper.sleep(sleepMs);
        const interrupted = woke === "interrupted";
        if (interrupted || performance.now() >= nextTurn) {
          nextTurn = performance.now() + EVENT_LOOP_TURN_MS;
          // One turn runs any listener whose signal Deno has taken in. Just after an
          // interruption Deno's signal thread may still be passing it on: a few more turns.
          const heard = signalsHeard;
          for (let i = 0; i < (interrupted ? 4 : 1) && signalsHeard === heard; i++) {
            await new Promise((r) => setTimeout(r, i === 0 ? 0 : 5));
          }
        }
      }
      // A failed watch has no descriptor, and says "changed" every time (poll every sample).
      watchMayHaveNews = woke !== "timeout" || targetsWatch.fd === null;
    }
    tellSystemd("STOPPING=1\nSTATUS=Stopping: writing the final sample");
    await sampleAndPublish(true);
    log("stopped; final totals written");
  } finally {
    for (const sink of sinks.reverse()) {
      await Promise.resolve(sink.close()).catch((e) =>
        log(`${sink.name}: ${(e as Error).message}`)
      );
    }
    try {
      events?.stop();
    } catch (e) {
      log((e as Error).message);
    }
    try {
      await backend?.stop();
    } finally {
      targetsWatch?.close();
      sleeper.close();
      for (const l of locks.reverse()) l.release();
      Deno.removeSignalListener(RESET_SIGNAL, onResetSignal);
      for (const s of signals) Deno.removeSignalListener(s, onSignal);
    }
  }
}
