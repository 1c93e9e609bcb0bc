/**
 * `stb-netacct status`: is the accounting healthy, and if not, what to do. Unprivileged:
 * it reads the unit file, `systemctl show`, the config and counters.json, and never
 * imports a backend. The verdict is also the exit code, for scripts and monitoring.
 */

import { stringifyExact } from "../lib/exact_json.ts";
import { Command } from "@commander-js/extra-typings";
import { cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { type Config, ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from "../lib/config.ts";
import { UsageError } from "../lib/errors.ts";
import {
  CountersFileReader,
  type CountersV1,
  isFreshAge,
  type ReadResult,
} from "../lib/contract.ts";
import { formatBytes, formatRate } from "../lib/units.ts";
import { showUnit, systemdBooted } from "./system.ts";
import { UNIT_NAME, UNIT_PATH } from "./unit.ts";

export type Verdict = "healthy" | "stale" | "not running" | "not installed";

/** Exit status per verdict; 1 and 2 stay "error" and "usage error" as everywhere. */
export const VERDICT_EXIT: Record<Verdict, number> = {
  "healthy": 0,
  "stale": 3,
  "not running": 4,
  "not installed": 5,
};

export interface ServiceFacts {
  /** systemd is PID 1 (else the unit fields are null). */
  systemd: boolean;
  unitFile: boolean;
  loadState: string | null;
  activeState: string | null;
  subState: string | null;
  unitFileState: string | null;
  result: string | null;
  restarts: number | null;
  since: string | null;
  /** The backend the unit's ExecStart names. */
  unitBackend: string | null;
}

/** Bytes (or bytes per second) each way. */
type Rates = { rx: number; tx: number };

export interface CounterFacts {
  path: string;
  kind: ReadResult["kind"];
  reason: string | null;
  counters: CountersV1 | null;
  ageS: number | null;
  /** Bytes per second over the last two samples, when two distinct samples were seen. */
  rates: { rx: number; tx: number; services: Record<string, { rx: number; tx: number }> } | null;
}

export interface StatusReport {
  verdict: Verdict;
  fix: string | null;
  exit_code: number;
  service: ServiceFacts;
  counters: CounterFacts;
  config: { path: string; source: string; error: string | null };
  cgroups: Record<string, { path: string; exists: boolean }>;
}

export function judge(
  service: ServiceFacts,
  counters: CounterFacts,
): { verdict: Verdict; fix: string | null } {
  const c = counters.counters;
  const fresh = c !== null && isFreshAge(counters.ageS, c.interval_s);
  const journal = "`journalctl -u stb-netacct -n 20` says why";
  if (fresh) {
    const outside = service.systemd && service.activeState !== "active";
    return {
      verdict: "healthy",
      fix: outside ? "counters come from a `run` outside the service; fine while it runs" : null,
    };
  }
  const installed = service.unitFile || (service.loadState !== null &&
    service.loadState !== "not-found");
  if (!installed) {
    if (c !== null || counters.kind === "malformed") {
      return {
        verdict: "stale",
        fix: `${counters.path} is not being updated and no service is installed: ` +
          "run `sudo stb-netacct install`",
      };
    }
    return {
      verdict: service.systemd ? "not installed" : "not running",
      fix: service.systemd
        ? "run `sudo stb-netacct install`"
        : "systemd is not running here: start `sudo stb-netacct run` yourself",
    };
  }
  if (service.systemd && service.activeState !== "active") {
    const failed = service.activeState === "failed";
    return {
      verdict: "not running",
      fix: (failed ? `the service failed (${service.result ?? "?"}); ${journal}; then ` : "") +
        "run `sudo systemctl restart stb-netacct`",
    };
  }
  return {
    verdict: "stale",
    fix: `${counters.path} ${
      c === null ? `is not there (${counters.reason})` : "is not updated"
    }; ${journal}; then run \`sudo systemctl restart stb-netacct\``,
  };
}

function unitBackend(): { exists: boolean; backend: string | null } {
  try {
    const text = Deno.readTextFileSync(UNIT_PATH);
    return { exists: true, backend: text.match(/^ExecStart=.* --backend (\S+)/m)?.[1] ?? null };
  } catch {
    return { exists: false, backend: null };
  }
}

async function serviceFacts(): Promise<ServiceFacts> {
  const booted = systemdBooted();
  const unit = unitBackend();
  const facts: ServiceFacts = {
    systemd: booted,
    unitFile: unit.exists,
    loadState: null,
    activeState: null,
    subState: null,
    unitFileState: null,
    result: null,
    restarts: null,
    since: null,
    unitBackend: unit.backend,
  };
  if (!booted) return facts;
  const s = await showUnit(UNIT_NAME).catch(() => new Map<string, string>());
  facts.loadState = s.get("LoadState") ?? null;
  facts.activeState = s.get("ActiveState") ?? null;
  facts.subState = s.get("SubState") ?? null;
  facts.unitFileState = s.get("UnitFileState") || null;
  facts.result = s.get("Result") ?? null;
  facts.restarts = s.has("NRestarts") ? Number(s.get("NRestarts")) : null;
  facts.since = s.get("ActiveEnterTimestamp") || null;
  return facts;
}

async function counterFacts(path: string, sampleRates: boolean): Promise<CounterFacts> {
  const reader = new CountersFileReader(path);
  let r = await reader.read();
  const first = r.kind === "ok" ? r.counters : null;
  let rates: CounterFacts["rates"] = null;
  if (first && sampleRates) {
    // Rates need two samples: wait for the next one, at most a little over one interval.
    const deadline = Date.now() + Math.min(first.interval_s * 1000 + 300, 2500);
    while (Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 100));
      r = await reader.read();
      if (r.kind !== "ok" || r.counters.ts_monotonic !== first.ts_monotonic) break;
    }
    if (r.kind === "ok" && r.counters.ts_monotonic > first.ts_monotonic) {
      const b = r.counters, dt = b.ts_monotonic - first.ts_monotonic;
      const rate = (x: bigint, y: bigint) => Math.max(0, Number(y - x) / dt);
      const services: Record<string, { rx: number; tx: number }> = {};
      for (const [n, s] of Object.entries(b.services)) {
        const a = first.services[n];
        if (a) {
          services[n] = {
            rx: rate(a.rx_bytes_total, s.rx_bytes_total),
            tx: rate(a.tx_bytes_total, s.tx_bytes_total),
          };
        }
      }
      rates = {
        rx: rate(first.rx_bytes_total, b.rx_bytes_total),
        tx: rate(first.tx_bytes_total, b.tx_bytes_total),
        services,
      };
    }
  }
  const counters = r.kind === "ok" ? r.counters : first;
  return {
    path,
    kind: r.kind,
    reason: r.kind === "ok" ? null : r.reason,
    counters,
    ageS: counters ? Math.max(0, Date.now() / 1000 - counters.ts_unix) : null,
    rates,
  };
}

export async function gatherStatus(configPath: string, explicit: boolean): Promise<StatusReport> {
  let config: Config;
  let configError: string | null = null;
  try {
    config = loadConfig(configPath, explicit);
  } catch (e) {
    if (explicit || !(e instanceof ConfigError)) {
      throw e instanceof ConfigError ? new UsageError(e.message, { cause: e }) : e;
    }
    // A broken config is a finding, not a reason to show nothing: fall back to defaults.
    configError = e.message;
    config = loadConfig("/nonexistent/stb-netacct/config.json", false);
  }
  const [service, counters] = await Promise.all([
    serviceFacts(),
    counterFacts(config.output, true),
  ]);
  const cgroups: StatusReport["cgroups"] = {};
  let mount = null;
  try {
    mount = findCgroup2Mount();
  } catch { /* no cgroup2: every cgroup reads as missing */ }
  for (const [name, path] of Object.entries(config.services)) {
    cgroups[name] = { path, exists: mount !== null && cgroupId(mount, path) !== null };
  }
  const { verdict, fix } = judge(service, counters);
  return {
    verdict,
    fix: configError ? `${fix ? fix + "; " : ""}fix ${configPath}: ${configError}` : fix,
    exit_code: VERDICT_EXIT[verdict],
    service,
    counters,
    config: { path: configPath, source: config.source, error: configError },
    cgroups,
  };
}

function ago(s: number): string {
  return s < 120 ? `${s.toFixed(1)} s ago` : `${Math.round(s / 60)} min ago`;
}

export function formatStatus(r: StatusReport): string {
  const out: string[] = [];
  const s = r.service;
  const svc = !s.systemd
    ? "systemd not running (no service manager)"
    : !s.unitFile && s.loadState === "not-found"
    ? "not installed"
    : `${s.activeState ?? "?"} (${s.subState ?? "?"})` +
      (s.unitFileState ? `, ${s.unitFileState}` : "") +
      (s.activeState === "active" && s.since ? `, since ${s.since}` : "") +
      (s.restarts ? `, ${s.restarts} restarts` : "");
  out.push(`service   ${UNIT_NAME}: ${svc}`);
  const c = r.counters.counters;
  out.push(
    `backend   ${c ? c.backend : "-"}` +
      (s.unitBackend ? ` (unit asks for ${s.unitBackend})` : "") +
      (c?.backend_fallback_reason ? `; fell back: ${c.backend_fallback_reason}` : ""),
  );
  out.push(
    `counters  ${r.counters.path}: ` +
      (c && r.counters.ageS !== null
        ? `written ${ago(r.counters.ageS)} (every ${c.interval_s} s)`
        : r.counters.reason ?? r.counters.kind),
  );
  if (c) {
    const rate = r.counters.rates;
    /** One row: `totals` (rx, tx bytes), and rates when two samples were seen. */
    const line = (name: string, totals: { rx: bigint; tx: bigint }, rr?: Rates) =>
      `  ${name.padEnd(12)} down ${(rr ? formatRate(rr.rx) : "-").padStart(12)}  up ${
        (rr ? formatRate(rr.tx) : "-").padStart(12)
      }   totals down ${formatBytes(totals.rx)}, up ${formatBytes(totals.tx)}`;
    out.push("traffic   (external only; rates over the last sample)");
    out.push(line("all", { rx: c.rx_bytes_total, tx: c.tx_bytes_total }, rate ?? undefined));
    for (const [n, sv] of Object.entries(c.services)) {
      out.push(line(n, { rx: sv.rx_bytes_total, tx: sv.tx_bytes_total }, rate?.services[n]));
    }
  }
  out.push(`cgroups   (config: ${r.config.source})`);
  for (const [n, g] of Object.entries(r.cgroups)) {
    out.push(`  ${n.padEnd(12)} ${g.exists ? "present" : "absent "}  ${g.path}`);
  }
  out.push(`verdict   ${r.verdict}${r.fix ? `: ${r.fix}` : ""}`);
  return out.join("\n");
}

export function statusCommand() {
  return new Command("status")
    .summary("is the accounting healthy? (no root needed)")
    .description(
      "Show the service state, backend, when counters.json was last written, the current\n" +
        "rates and totals per service, which configured cgroups exist now, and a verdict\n" +
        "with the fix. It waits for one more sample to compute rates (about one interval).",
    )
    .option("-c, --config <path>", "config file to read", DEFAULT_CONFIG_PATH)
    .option("--json", "print the report as JSON", false)
    .addHelpText(
      "after",
      "\nExit status:\n" +
        "  0  healthy: counters.json is fresh\n" +
        "  3  stale: the service is installed but counters.json is old or missing\n" +
        "  4  not running: the service is stopped or failed (or, without systemd, no sampler)\n" +
        "  5  not installed: no service and no counters\n" +
        "  1  error, 2  usage error\n" +
        "\nExamples:\n" +
        "  stb-netacct status\n" +
        "  stb-netacct status --json | jq .verdict\n",
    )
    .action(async (opts, cmd) => {
      const explicit = cmd.getOptionValueSource("config") === "cli";
      const report = await gatherStatus(opts.config, explicit);
      console.log(opts.json ? stringifyExact(report, 2) : formatStatus(report));
      // Exit explicitly: the verdict is the status, and a stuck read must not keep us alive.
      Deno.exit(report.exit_code);
    });
}
