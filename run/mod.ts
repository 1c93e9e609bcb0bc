/**
 * `stb-netacct run`: the root sampler. Starts one backend, and every interval refreshes
 * the service cgroup ids, reads the kernel counters and publishes counters.json.
 *
 * This file parses the command and wires the real collaborators to the Sampler
 * (run/sampler.ts): privileges, directories and locks, saved totals, the backend, events,
 * sinks, signals. What it sets up is undone in reverse order, also after a failure.
 */

import { Command, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import {
  AUTO,
  AUTO_SUMMARY,
  BACKEND_CHOICES,
  BACKEND_INFO,
  BACKEND_NAMES,
  type BackendChoice,
  BackendError,
  checkPrivileges,
  type ServiceTarget,
  type StartedBackend,
  startWithFallback,
} from "../backends/mod.ts";
import { CAP_CHOWN, effectiveCaps, missingCaps } from "../lib/capabilities.ts";
import { type Cgroup2Mount, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { monotonicSeconds } from "../lib/clock.ts";
import {
  checkListenAllowed,
  type Config,
  ConfigError,
  DEFAULT_CONFIG_PATH,
  parseListenAddress,
} from "../lib/config.ts";
import { loadTrustedConfig } from "../lib/trusted_config.ts";
import { UsageError } from "../lib/errors.ts";
import { DEFAULT_INTERVAL_S, MAX_INTERVAL_S, MIN_INTERVAL_S } from "../lib/interval.ts";
import { parseIntervalFlag } from "../lib/interval_flag.ts";
import { DEFAULT_COUNTERS_PATH } from "../lib/contract.ts";
import { startEvents } from "../events/run.ts";
import { attachFailures } from "../events/lifecycle.ts";
import { startNames } from "../names/run.ts";
import { CgroupWatch } from "../lib/cgroup_watch.ts";
import { Sleeper } from "../lib/sleeper.ts";
import { sdNotify } from "../lib/sd_notify.ts";
import { lookupUser, type UserIds } from "../lib/users.ts";
import { OutputFiles } from "./output.ts";
import { Totals } from "./totals.ts";
import { createSinks } from "./metrics.ts";
import { Sampler } from "./sampler.ts";
import { EpollSleep, RunSignals } from "./sleep.ts";
import { bootId, DEFAULT_STATE_PATH, type StartingState, StateFiles } from "./state.ts";
import { Teardown } from "./teardown.ts";
import { PIN_ROOT_ENV, prepareForService } from "../bpf/pins.ts";
import { defaultHistoryPath, startHistory } from "../history/mod.ts";

export interface RunOptions {
  backend: BackendChoice;
  config: Config;
  output: string;
  /** Saved totals; a new run continues from them. */
  statePath: string;
  intervalS: number;
  /** The history database `run` writes; null: history off (--no-history). */
  historyPath: string | null;
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
      "also serve Prometheus metrics at http://ADDRESS/metrics, e.g. 127.0.0.1:9877; loopback " +
        'only unless the config says "prometheus.allow_remote": true (default: config ' +
        '"prometheus.listen", else off)',
      parseMetricsListenFlag,
    )
    .option(
      "--history-db <path>",
      "where history goes, for `report` (default: /var/lib/stb-netacct-history/history.sqlite " +
        "for the default output, else OUTPUT.history.sqlite)",
    )
    .option("--no-history", 'record no history (as the config\'s "history.enabled": false)')
    .addOption(
      // The unit's privileged ExecStartPre (install/unit.ts): not for people.
      new Option("--prepare-kernel-state", "make the pin directory the service's").hideHelp(),
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
      if (opts.prepareKernelState) {
        const state = opts.state ?? DEFAULT_STATE_PATH;
        const root = Deno.env.get(PIN_ROOT_ENV);
        if (!root) throw new UsageError(`--prepare-kernel-state needs ${PIN_ROOT_ENV} set`);
        return await prepareForService(root, state.slice(0, state.lastIndexOf("/")) || "/");
      }
      let config = trustedConfig(opts.config, cmd.getOptionValueSource("config") === "cli");
      if (opts.metricsListen) {
        checkListenAllowed(opts.metricsListen, config.prometheus.allowRemote, "--metrics-listen");
        config = { ...config, prometheus: { ...config.prometheus, listen: opts.metricsListen } };
      }
      const output = opts.output ?? config.output;
      await runSampler({
        backend: opts.backend,
        config,
        output,
        statePath: opts.state ?? defaultStatePath(output),
        intervalS: opts.interval ?? config.interval_s,
        historyPath: opts.history ? opts.historyDb ?? defaultHistoryPath(output) : null,
        log: (m) => console.error(`stb-netacct: ${m}`),
      });
    });
}

/** Separate outputs get separate totals, so side-by-side runs (tests, comparisons) never mix. */
export function defaultStatePath(output: string): string {
  return output === DEFAULT_COUNTERS_PATH ? DEFAULT_STATE_PATH : `${output}.state`;
}

/** Refused before it is even parsed: a config others can change must not steer root. */
function trustedConfig(path: string, explicit: boolean): Config {
  try {
    return loadTrustedConfig(path, explicit);
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message, { cause: e });
    throw e;
  }
}

/**
 * The uid and gid counters.json is given to: the config's "owner", root's when it is null.
 * Root is named, not left to whoever writes: the installed service writes as a dynamic user.
 */
function ownerIds(config: Config): UserIds {
  const ids = config.owner === null ? { uid: 0, gid: 0 } : lookupUser(config.owner);
  if (!ids) {
    throw new UsageError(
      `"owner" is "${config.owner}" in ${config.source}, but no such user exists: ` +
        `name an existing user or a numeric uid`,
    );
  }
  if (ids.uid !== Deno.uid() && missingCaps(effectiveCaps(), [CAP_CHOWN]).length) {
    // Found now rather than as a failed publish every interval.
    throw new BackendError(
      `counters.json is to belong to ${
        config.owner === null ? 'root ("owner" is null)' : `"${config.owner}"`
      }, and giving a file away needs ` +
        `CAP_CHOWN, which this process lacks: run as root, or add CAP_CHOWN to the service`,
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

const COPY_LABELS = {
  state: "saved totals",
  backup: "backup of the saved totals",
  runtime: "runtime copy of the totals",
} as const;

/**
 * The totals to continue from: the newest good copy (run/state.ts). A bad copy is passed
 * over loudly, never a reason to stop counting.
 */
function startTotals(state: StateFiles, opts: RunOptions): StartingState {
  const start = state.load();
  for (const r of start.rejected) {
    opts.log(`WARNING: the ${COPY_LABELS[r.copy]} "${r.path}" cannot be used: ${r.reason}`);
  }
  for (const f of start.foreign) {
    opts.log(`the runtime copy "${f}" belongs to another state file; this run replaces it`);
  }
  const chosen = start.chosen;
  if (!chosen) {
    if (start.rejected.length > 0) {
      opts.log("WARNING: no good copy of the saved totals is left: counting from zero");
    }
    return start;
  }
  const t = new Totals(Object.keys(opts.config.services), chosen.state.services).sum();
  opts.log(
    `continuing from the ${COPY_LABELS[chosen.copy]} "${chosen.path}" (rx ${t.rxBytes} B, ` +
      `tx ${t.txBytes} B` +
      (chosen.state.boot_id !== bootId() ? ", saved before the last reboot)" : ")"),
  );
  return start;
}

export async function runSampler(opts: RunOptions): Promise<void> {
  checkPrivileges(opts.backend);
  const mount = findCgroup2Mount();
  const owner = ownerIds(opts.config);
  const files = new OutputFiles({ output: opts.output, statePath: opts.statePath, owner });
  const teardown = new Teardown();
  try {
    const sampler = await startSampler({ opts, mount, owner, files, teardown });
    await sampler.run();
  } finally {
    await teardown.run();
  }
}

interface SamplerSetup {
  opts: RunOptions;
  mount: Cgroup2Mount;
  owner: UserIds | null;
  files: OutputFiles;
  /** Everything started is registered here to be undone. */
  teardown: Teardown;
}

/** Locks, saved totals, the watch, the backend, events and sinks, and the Sampler on them. */
async function startSampler(setup: SamplerSetup): Promise<Sampler> {
  const { opts, mount, owner, files, teardown } = setup;
  const { config, log } = opts;
  const sleeper = new Sleeper();
  teardown.add(() => sleeper.close());
  const signals = new RunSignals();
  teardown.add(() => signals.close());
  // After the signals: a stop signal heard once their listeners are gone would end the
  // process with the locks still in place.
  files.prepare();
  teardown.add(() => files.close());
  files.lock();
  files.checkExisting();
  const state = new StateFiles(files.places);
  const start = startTotals(state, opts);
  const startedAt = Math.round(Date.now()) / 1000;
  const watch = new CgroupWatch(mount, Object.values(config.services), log);
  teardown.add(() => watch.close());
  if (watch.fd !== null) sleeper.watch(watch.fd);
  const targets = currentTargets(mount, config);
  const started = await startWithFallback(opts.backend, targets, {
    mount,
    exclude: config.exclude,
    excludeInterfaces: config.exclude_interfaces,
    internalOnlink: config.internal_onlink,
    ctMark: config.ct_mark,
    ctMask: config.ct_mask,
    log,
    gsoCorrection: config.gso_correction,
    stateKey: opts.statePath,
  });
  teardown.add(() => {
    const keep = keepKernelState(signals.stoppedBy);
    if (keep && started.backend.kernelState) {
      log("kernel state kept counting for the next run (stopped under systemd)");
    }
    return started.backend.stop({ keep });
  });
  logCounting({ opts, mount, targets, started });
  const backend = started.backend.name;
  const ebpfSkipped = started.skipped?.find((s) => s.backend === "ebpf")?.reason ?? null;
  const names = startNames({ config, backend, targets, mount, log });
  if (names) teardown.addLogged(() => names.stop(), log);
  const events = startEvents({
    config,
    backend,
    targets,
    mount,
    outDir: () => files.dir,
    owner,
    log,
    ebpfSkipped,
    names,
  });
  if (events) teardown.addLogged(() => events.stop(), log);
  const sinks = await createSinks({ config, log });
  for (const sink of sinks) {
    teardown.addLogged(() => sink.close(), (m) => log(`${sink.name}: ${m}`));
  }
  if (opts.historyPath === null) log("history: off (--no-history)");
  const history = opts.historyPath === null ? null : startHistory({
    path: opts.historyPath,
    config: config.history,
    ownerGid: owner?.gid ?? null,
    statePath: opts.statePath,
    log,
  });
  // Closed after the final sample: its batch is the one transaction at stop.
  if (history) teardown.addLogged(() => history.close(), log);
  const sampler = new Sampler({
    backend: started.backend,
    lookupTargets: () => currentTargets(mount, config),
    watch,
    clock: { now: () => performance.now(), monotonicSeconds, unixSeconds: () => Date.now() / 1000 },
    sleeper: new EpollSleep(sleeper, signals, sinks.some((s) => s.servesBetweenSamples)),
    state,
    output: files,
    sinks,
    events,
    names,
    history,
    notify: (state) => tellSystemd(state, log),
    log,
  }, {
    targets,
    intervalS: opts.intervalS,
    fallbackReason: started.fallbackReason,
    startedAt,
    bootId: bootId(),
    startTotals: start.chosen?.state.services,
    startKernel: start.chosen?.state.kernel,
    stateCopiesRejected: start.rejected.length,
    ebpfAttachFailures: attachFailures({
      ebpfSkipped,
      backend,
      eventsEnabled: config.events.enabled,
      eventsStarted: events !== null,
    }),
  });
  signals.attach(sampler);
  return sampler;
}

/**
 * Whether the kernel state stays when `run` ends: under systemd (INVOCATION_ID) a stop is a
 * restart or an upgrade as often as not, and the kernel goes on counting meanwhile; a
 * person's Ctrl-C (SIGINT), or any stop outside systemd, removes everything. `uninstall`
 * removes what a service left.
 */
export function keepKernelState(
  stoppedBy: Deno.Signal | null,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): boolean {
  return (env("INVOCATION_ID") ?? "") !== "" && stoppedBy !== "SIGINT";
}

function logCounting(o: {
  opts: RunOptions;
  mount: Cgroup2Mount;
  targets: ServiceTarget[];
  started: StartedBackend;
}): void {
  const { opts, targets } = o;
  const why = o.started.fallbackReason;
  const present = targets.filter((t) => t.id !== null).length;
  opts.log(
    `counting with ${o.started.backend.name}` + (why ? ` (fell back: ${why})` : "") +
      `; ${targets.length} services (${present} present now), cgroup2 at ` +
      `${o.mount.mountPoint}; writing ${opts.output} every ${opts.intervalS} s`,
  );
  for (const t of targets) {
    if (t.id === null) {
      opts.log(
        `service ${t.name}: cgroup ${t.path} does not exist yet; it is counted once it appears`,
      );
    }
  }
}

function tellSystemd(state: string, log: (message: string) => void): void {
  try {
    sdNotify(state);
  } catch (e) {
    log(`cannot tell systemd ${state.split("\n")[0]}: ${(e as Error).message}`);
  }
}
