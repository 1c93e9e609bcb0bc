/**
 * `stb-netacct status`: is the accounting healthy, and if not, what to do. Unprivileged:
 * it reads the unit file, `systemctl show`, the config, counters.json and who holds its
 * lock, and never imports a backend. The verdict is also the exit code (lib/health.ts, the
 * same numbers as `graph --once`), for scripts and monitoring.
 *
 * Each verdict says one true thing and offers only a fix that can work on this host: no
 * `install` or `systemctl` where systemd is not the service manager.
 */

import { KEPT_STATE_FIX, keptKernelState } from "../backends/kept_state.ts";
import { stringifyExact } from "../lib/exact_json.ts";
import { Command } from "@commander-js/extra-typings";
import { cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { type Config, ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from "../lib/config.ts";
import { UsageError } from "../lib/errors.ts";
import {
  CountersFileReader,
  type CountersV1,
  DEFAULT_COUNTERS_PATH,
  outputLockPath,
  type ReadResult,
  staleAfterS,
} from "../lib/contract.ts";
import {
  clockProblem,
  EXIT,
  exitStatusHelp,
  fileVerdict,
  formatDuration,
  type Freshness,
  isImplausible,
  judgeFreshness,
  MAX_WATCH_S,
  type SampleClock,
  sampleClock,
} from "../lib/health.ts";
import { lockHolder } from "../lib/lock.ts";
import { printable, terminalJson } from "../lib/text.ts";
import { formatBytes, formatRate } from "../lib/units.ts";
import { showUnit, systemdBooted } from "./system.ts";
import { UNIT_NAME, UNIT_PATH } from "./unit.ts";

export type Verdict =
  | "healthy"
  | "stale"
  | "not running"
  | "not installed"
  | "malformed"
  | "unreadable";

/** Exit status per verdict; 1 and 2 stay "error" and "usage error" as everywhere. */
export const VERDICT_EXIT: Record<Verdict, number> = {
  "healthy": EXIT.healthy,
  "stale": EXIT.stale,
  "not running": EXIT.not_running,
  "not installed": EXIT.not_installed,
  "malformed": EXIT.malformed,
  "unreadable": EXIT.unreadable,
};

export interface ServiceFacts {
  /** systemd is PID 1 (else the unit fields are null). */
  systemd: boolean;
  unit_file: boolean;
  load_state: string | null;
  active_state: string | null;
  sub_state: string | null;
  unit_file_state: string | null;
  result: string | null;
  restarts: number | null;
  since: string | null;
  /** The backend the unit's ExecStart names. */
  unit_backend: string | null;
}

/** Bytes per second each way. */
type Rates = { rx: number; tx: number };

export interface CounterFacts {
  path: string;
  kind: ReadResult["kind"];
  reason: string | null;
  counters: CountersV1 | null;
  /** The sample's time: "dated" (age_s), "undated" (no ts_unix), "future" (ahead_s). */
  clock: SampleClock["kind"] | null;
  age_s: number | null;
  ahead_s: number | null;
  /** Seconds status watched the file, and whether it changed meanwhile. */
  watched_s: number;
  changed: boolean;
  freshness: Freshness | null;
  /** The process holding the file's lock: a sampler writing it (null: none seen). */
  sampler_pid: number | null;
  /** Bytes per second over the last two samples, when two distinct samples were seen. */
  rates: (Rates & { services: Record<string, Rates> }) | null;
}

export interface StatusReport {
  verdict: Verdict;
  fix: string | null;
  /** Something true that is not a fault: no StB service running, a clock in the future. */
  note: string | null;
  exit_code: number;
  service: ServiceFacts;
  counters: CounterFacts;
  config: { path: string; source: string; error: string | null };
  cgroups: Record<string, { path: string; exists: boolean }>;
  /**
   * Kernel state of ours (ebpf pins, the nft table, iptables chains) found while no sampler reads it: it
   * counts on for the next run; empty: none; null: not looked at (needs root), or a sampler
   * runs.
   */
  kernel_state?: string[] | null;
}

type Judgement = { verdict: Verdict; fix: string | null; note: string | null };

const JOURNAL = "`journalctl -u stb-netacct -n 20` says why";
const RESTART = "`sudo systemctl restart stb-netacct`";

/** What the host offers for running the sampler, for the fixes. */
function hostOf(service: ServiceFacts) {
  const installed = service.unit_file ||
    (service.load_state !== null && service.load_state !== "not-found");
  return {
    systemd: service.systemd,
    installed: service.systemd && installed,
    active: service.systemd && service.active_state === "active",
    failed: service.systemd && service.active_state === "failed",
  };
}

/** How to start a sampler for `path` by hand. */
function runCommand(path: string): string {
  return path === DEFAULT_COUNTERS_PATH
    ? "`sudo stb-netacct run`"
    : `\`sudo stb-netacct run --output ${path}\``;
}

/** The fix for a service that is installed but not running. */
function restartFix(service: ServiceFacts): string {
  const failed = service.active_state === "failed";
  return (failed ? `the service failed (${service.result ?? "?"}); ${JOURNAL}; then ` : "") +
    `run ${RESTART}`;
}

export function judge(service: ServiceFacts, counters: CounterFacts): Judgement {
  const host = hostOf(service);
  const path = counters.path;
  // What the file and its lock say, as graph --once says it; then what the service adds.
  const base = fileVerdict(counters.kind, counters.freshness, counters.sampler_pid);
  if (base === "unreadable") {
    return {
      verdict: "unreadable",
      fix: `${counters.reason}; the sampler publishes it readable by everyone (0644) in a ` +
        `directory anyone may enter: check \`ls -ld ${dirOf(path)} ${path}\`, or read it as ` +
        "root: `sudo stb-netacct status`",
      note: null,
    };
  }
  if (base === "malformed") return judgeMalformed(service, counters);
  if (base === "healthy") return judgeHealthy(service, counters);
  const what = counters.kind === "missing"
    ? `${path} does not exist`
    : `${path} is not being updated (${staleWhy(counters)})`;
  if (host.installed && !host.active) {
    return { verdict: "not running", fix: `${what}: ${restartFix(service)}`, note: null };
  }
  if (base === "stale" || host.active) {
    const who = counters.sampler_pid !== null ? ` (pid ${counters.sampler_pid})` : "";
    const fix = host.active
      ? `${JOURNAL}; then run ${RESTART}`
      : `stop it and start it again: ${runCommand(path)}`;
    return { verdict: "stale", fix: `${what}, but a sampler runs${who}: ${fix}`, note: null };
  }
  if (host.systemd && !host.installed && counters.kind === "missing") {
    return {
      verdict: "not installed",
      fix: `${what} and no service is installed: run \`sudo stb-netacct install\` (or count ` +
        `by hand with ${runCommand(path)})`,
      note: null,
    };
  }
  const keep = host.systemd
    ? `; \`sudo stb-netacct install\` keeps it running across reboots`
    : "; systemd is not the service manager here, so keep it running yourself (a terminal, " +
      "your init system)";
  return {
    verdict: "not running",
    fix: `${what}: start it with ${runCommand(path)}${keep}`,
    note: null,
  };
}

function judgeMalformed(service: ServiceFacts, counters: CounterFacts): Judgement {
  const host = hostOf(service);
  const path = counters.path;
  const start = host.installed ? `run ${RESTART}` : `start ${runCommand(path)}`;
  const fix = counters.sampler_pid !== null || host.active
    ? `a sampler runs but ${path} holds something else: is another program writing that ` +
      `path? Give it another path, then ${start}`
    : `it was not written by \`stb-netacct run\`: point --input at the file \`run\` writes, ` +
      `or remove it (\`sudo rm ${path}\`) and ${start}`;
  return { verdict: "malformed", fix: `${counters.reason}; ${fix}`, note: null };
}

function judgeHealthy(service: ServiceFacts, counters: CounterFacts): Judgement {
  const host = hostOf(service);
  const notes: string[] = [];
  const c = counters.counters;
  const services = c === null ? [] : Object.entries(c.services);
  if (services.length > 0 && services.every(([, s]) => !s.present)) {
    notes.push(
      `no StB service is running (${services.map(([n]) => n).join(", ")} absent): start StB; ` +
        "counting follows its services as they start",
    );
  }
  const problem = counters.clock === "undated" || counters.clock === "future"
    ? clockProblem(
      counters.clock === "future"
        ? { kind: "future", aheadS: counters.ahead_s ?? 0 }
        : { kind: "undated" },
    )
    : null;
  if (problem !== null) notes.push(`${problem}; it changed while status watched, so it is live`);
  if (host.systemd && host.installed && !host.active) {
    notes.push("counters come from a `run` outside the service; fine while it runs");
  }
  return { verdict: "healthy", fix: null, note: notes.length > 0 ? notes.join("; ") : null };
}

function staleWhy(c: CounterFacts): string {
  if (c.clock === "dated" && c.age_s !== null && c.counters !== null) {
    if (c.age_s > staleAfterS(c.counters.interval_s)) {
      return `last written ${formatDuration(c.age_s)} ago`;
    }
  }
  const problem = c.clock === "future"
    ? `its ts_unix is ${formatDuration(c.ahead_s ?? 0)} in the future`
    : c.clock === "undated"
    ? "it has no ts_unix"
    : null;
  const quiet = `it did not change in the ${formatDuration(c.watched_s)} status watched`;
  return problem === null ? quiet : `${problem}, and ${quiet}`;
}

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

function unitBackend(): { exists: boolean; backend: string | null } {
  try {
    const text = Deno.readTextFileSync(UNIT_PATH);
    return { exists: true, backend: text.match(/^ExecStart=.* --backend (\S+)/m)?.[1] ?? null };
  } catch {
    return { exists: false, backend: null };
  }
}

/** A host without systemd: no unit, nothing known of a service. */
export const NO_SERVICE: ServiceFacts = {
  systemd: false,
  unit_file: false,
  load_state: null,
  active_state: null,
  sub_state: null,
  unit_file_state: null,
  result: null,
  restarts: null,
  since: null,
  unit_backend: null,
};

async function serviceFacts(): Promise<ServiceFacts> {
  const booted = systemdBooted();
  const unit = unitBackend();
  const facts: ServiceFacts = {
    ...NO_SERVICE,
    systemd: booted,
    unit_file: unit.exists,
    unit_backend: unit.backend,
  };
  if (!booted) return facts;
  const s = await showUnit(UNIT_NAME).catch(() => new Map<string, string>());
  facts.load_state = s.get("LoadState") ?? null;
  facts.active_state = s.get("ActiveState") ?? null;
  facts.sub_state = s.get("SubState") ?? null;
  facts.unit_file_state = s.get("UnitFileState") || null;
  facts.result = s.get("Result") ?? null;
  facts.restarts = s.has("NRestarts") ? Number(s.get("NRestarts")) : null;
  facts.since = s.get("ActiveEnterTimestamp") || null;
  return facts;
}

/**
 * Reads the file, then watches it: for a second sample (rates), and, when its ts_unix
 * cannot be believed, long enough to tell a live file from a dead one by whether it changes.
 */
export async function counterFacts(path: string): Promise<CounterFacts> {
  const reader = new CountersFileReader(path);
  const t0 = Date.now();
  let r = await reader.read();
  const first = r.kind === "ok" ? r.counters : null;
  let changed = false;
  if (first) {
    const byChange = sampleClock(first, Date.now() / 1000).kind !== "dated";
    const waitMs = byChange
      ? Math.min(staleAfterS(first.interval_s) + 0.3, MAX_WATCH_S) * 1000
      : Math.min(first.interval_s * 1000 + 300, 2500);
    while (Date.now() - t0 < waitMs) {
      await new Promise((res) => setTimeout(res, 100));
      r = await reader.read();
      if (r.kind !== "ok" || r.counters.ts_monotonic !== first.ts_monotonic) break;
    }
    changed = r.kind === "ok" && r.counters.ts_monotonic !== first.ts_monotonic;
  }
  const counters = r.kind === "ok" ? r.counters : first;
  const watched = (Date.now() - t0) / 1000;
  const clock = counters === null ? null : sampleClock(counters, Date.now() / 1000);
  return {
    path,
    kind: r.kind,
    reason: r.kind === "ok" ? null : r.reason,
    counters,
    clock: clock?.kind ?? null,
    age_s: clock?.kind === "dated" ? clock.ageS : null,
    ahead_s: clock?.kind === "future" ? clock.aheadS : null,
    watched_s: watched,
    changed,
    freshness: counters === null || clock === null
      ? null
      : judgeFreshness(clock, counters.interval_s, {
        quietS: changed ? 0 : watched,
        changed,
        done: true,
      }),
    sampler_pid: lockHolder(outputLockPath(path)),
    rates: first && r.kind === "ok" ? ratesBetween(first, r.counters) : null,
  };
}

/** Rates between two samples of one run; null when they are not (or a step is implausible). */
function ratesBetween(a: CountersV1, b: CountersV1): CounterFacts["rates"] {
  const dt = b.ts_monotonic - a.ts_monotonic;
  if (!(dt > 0) || b.boot_id !== a.boot_id) return null;
  let plausible = true;
  const rate = (x: bigint, y: bigint) => {
    if (y < x) return 0;
    if (isImplausible(y - x, dt)) plausible = false;
    return Number(y - x) / dt;
  };
  const services: Record<string, Rates> = {};
  for (const [n, s] of Object.entries(b.services)) {
    const p = a.services[n];
    if (p) {
      services[n] = {
        rx: rate(p.rx_bytes_total, s.rx_bytes_total),
        tx: rate(p.tx_bytes_total, s.tx_bytes_total),
      };
    }
  }
  const all = {
    rx: rate(a.rx_bytes_total, b.rx_bytes_total),
    tx: rate(a.tx_bytes_total, b.tx_bytes_total),
  };
  return plausible ? { ...all, services } : null;
}

export async function gatherStatus(
  configPath: string,
  o: { explicit: boolean; input?: string },
): Promise<StatusReport> {
  let config: Config;
  let configError: string | null = null;
  try {
    config = loadConfig(configPath, o.explicit);
  } catch (e) {
    if (o.explicit || !(e instanceof ConfigError)) {
      throw e instanceof ConfigError ? new UsageError(e.message, { cause: e }) : e;
    }
    // A broken config is a finding, not a reason to show nothing: fall back to defaults.
    configError = e.message;
    config = loadConfig("/nonexistent/stb-netacct/config.json", false);
  }
  const [service, counters] = await Promise.all([
    serviceFacts(),
    counterFacts(o.input ?? config.output),
  ]);
  const cgroups: StatusReport["cgroups"] = {};
  let mount = null;
  try {
    mount = findCgroup2Mount();
  } catch { /* no cgroup2: every cgroup reads as missing */ }
  for (const [name, path] of Object.entries(config.services)) {
    cgroups[name] = { path, exists: mount !== null && cgroupId(mount, path) !== null };
  }
  const { verdict, fix, note } = judge(service, counters);
  const unread = verdict === "not running" || verdict === "not installed";
  const kept = unread ? await keptKernelState() : null;
  const keptNote = kept?.length
    ? `kernel state counts with no sampler reading it (${kept.join(", ")}); the next run ` +
      `adopts it, ${KEPT_STATE_FIX}`
    : null;
  return {
    verdict,
    fix: configError ? `${fix ? fix + "; " : ""}fix ${configPath}: ${configError}` : fix,
    note: [note, keptNote].filter((x) => x !== null).join("; ") || null,
    kernel_state: kept,
    exit_code: VERDICT_EXIT[verdict],
    service,
    counters,
    config: { path: configPath, source: config.source, error: configError },
    cgroups,
  };
}

function serviceLine(s: ServiceFacts): string {
  const state = !s.systemd
    ? "systemd is not the service manager here"
    : !s.unit_file && s.load_state === "not-found"
    ? "not installed"
    : `${s.active_state ?? "?"} (${s.sub_state ?? "?"})` +
      (s.unit_file_state ? `, ${s.unit_file_state}` : "") +
      (s.active_state === "active" && s.since ? `, since ${s.since}` : "") +
      (s.restarts ? `, ${s.restarts} restarts` : "");
  return `service   ${UNIT_NAME}: ${state}`;
}

function countersLine(r: StatusReport): string {
  const f = r.counters, c = f.counters;
  const by = f.sampler_pid !== null ? `, by pid ${f.sampler_pid}` : "";
  if (c === null) return `counters  ${f.path}: ${f.reason ?? f.kind}${by}`;
  const when = f.clock === "dated"
    ? `written ${formatDuration(f.age_s ?? 0)} ago`
    : f.clock === "future"
    ? `ts_unix ${formatDuration(f.ahead_s ?? 0)} in the future`
    : "no ts_unix";
  const change = f.clock === "dated" ? "" : f.changed ? ", changing" : ", not changing";
  const bad = f.kind !== "ok" ? ` (now ${f.kind}: ${f.reason})` : "";
  return `counters  ${f.path}: ${when} (every ${c.interval_s} s)${change}${by}${bad}`;
}

/** The report for people; file content in it is made printable. */
export function formatStatus(r: StatusReport): string {
  const out: string[] = [serviceLine(r.service)];
  const s = r.service;
  const c = r.counters.counters;
  out.push(
    `backend   ${c ? c.backend : "-"}` +
      (s.unit_backend ? ` (unit asks for ${s.unit_backend})` : "") +
      (c?.backend_fallback_reason ? `; fell back: ${c.backend_fallback_reason}` : ""),
  );
  out.push(countersLine(r));
  if (c) {
    const rate = r.counters.rates;
    /** One row: `totals` (rx, tx bytes), and rates when two samples were seen. */
    const line = (
      name: string,
      totals: { rx: bigint; tx: bigint },
      more: { rates?: Rates | undefined; tag?: string },
    ) => {
      const rr = more.rates, tag = more.tag ?? "";
      return `  ${name.padEnd(12)} down ${(rr ? formatRate(rr.rx) : "-").padStart(12)}  up ${
        (rr ? formatRate(rr.tx) : "-").padStart(12)
      }   totals down ${formatBytes(totals.rx)}, up ${formatBytes(totals.tx)}${tag}`;
    };
    out.push("traffic   (external only; rates over the last sample)");
    out.push(
      line("all", { rx: c.rx_bytes_total, tx: c.tx_bytes_total }, { rates: rate ?? undefined }),
    );
    for (const [n, sv] of Object.entries(c.services)) {
      const totals = { rx: sv.rx_bytes_total, tx: sv.tx_bytes_total };
      out.push(line(n, totals, { rates: rate?.services[n], tag: sv.present ? "" : "   (absent)" }));
    }
  }
  out.push(`cgroups   (config: ${r.config.source})`);
  for (const [n, g] of Object.entries(r.cgroups)) {
    out.push(`  ${n.padEnd(12)} ${g.exists ? "present" : "absent "}  ${g.path}`);
  }
  const idle = r.verdict === "healthy" && r.note?.startsWith("no StB service") === true;
  const verdict = idle ? "healthy, but no StB service is running" : r.verdict;
  const detail = [r.fix, r.note].filter((x) => x !== null).join("; ");
  out.push(`verdict   ${verdict}${detail ? `: ${detail}` : ""}`);
  return out.map(printable).join("\n");
}

export function statusCommand() {
  return new Command("status")
    .summary("is the accounting healthy? (no root needed)")
    .description(
      "Show the service state, backend, when counters.json was last written and by which " +
        "process, the current rates and totals per service, which configured cgroups exist " +
        "now, and a verdict with a fix that can work on this host. It watches the file for " +
        "about one interval to compute rates (longer when the file's time cannot be " +
        "believed, to see whether it changes).",
    )
    .option("-c, --config <path>", "config file to read", DEFAULT_CONFIG_PATH)
    .option("--input <path>", 'counters file to judge (default: the config\'s "output")')
    .option("--json", "print the report as JSON", false)
    .addHelpText(
      "after",
      exitStatusHelp("status") +
        "\nExamples:\n" +
        "  stb-netacct status\n" +
        "  stb-netacct status --input /tmp/stb/counters.json\n" +
        "  stb-netacct status --json | jq .verdict\n",
    )
    .action(async (opts, cmd) => {
      const explicit = cmd.getOptionValueSource("config") === "cli";
      if (opts.input !== undefined && opts.input.trim() === "") {
        throw new UsageError("--input must name a counters file, e.g. --input ./counters.json");
      }
      const report = await gatherStatus(opts.config, { explicit, input: opts.input });
      console.log(opts.json ? terminalJson(stringifyExact(report, 2)) : formatStatus(report));
      // Exit explicitly: the verdict is the status, and a stuck read must not keep us alive.
      Deno.exit(report.exit_code);
    });
}
