/**
 * The measured side of bench/history.ts, run in its own process (with `run`'s V8 flags
 * for the CPU figure). Every sample goes through the real HistoryRecorder into a real
 * database, with a fake clock (history/testing.ts builds the samples).
 *
 *   deno run -A bench/history_worker.ts cpu DIR HOURS     CPU of history at 0.5 s
 *   deno run -A bench/history_worker.ts year PATH DAYS    write DAYS (a year) ending now
 *   deno run -A bench/history_worker.ts query PATH        `report --days` over it, in-process
 *
 * Prints one JSON object.
 */

import { HistoryRecorder } from "../history/recorder.ts";
import { defaultRetention } from "../history/retention.ts";
import { sample, type Totals } from "../history/testing.ts";
import { HistoryReader } from "../history/reader.ts";
import { buildReport } from "../history/report_data.ts";
import { renderJson, renderTable } from "../history/report_render.ts";
import type { CountersV1 } from "../lib/contract.ts";

const ZONE = "Europe/Berlin";
const SERVICES = ["host-agent", "server", "shell"];
const CLK_TCK = 100;

/** utime + stime of this process, seconds. */
function cpuSeconds(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

function recorder(path: string, log: string[]): HistoryRecorder {
  return new HistoryRecorder({
    path,
    retention: defaultRetention(),
    ownerGid: null,
    zone: () => ZONE,
    clearRequest: `${path}.clear`,
    log: (m) => void log.push(m),
  });
}

/** A busy evening, a quiet night: bytes per second of each service at hour `h` of the day. */
function rate(service: number, h: number): bigint {
  const base = [2_000n, 400_000n, 60_000n][service]!;
  return h >= 8 && h < 23 ? base * BigInt(1 + (h % 5)) : base / 10n;
}

/** `count` samples `step` seconds apart from `unix0`; calls `each` with every sample. */
function walk(
  unix0: number,
  count: number,
  step: number,
  each: (c: CountersV1, i: number) => void,
): void {
  const totals: Totals = Object.fromEntries(SERVICES.map((s) => [s, { rx: 0n, tx: 0n }]));
  let unix = unix0, mono = 50_000;
  for (let i = 0; i < count; i++) {
    unix += step;
    mono += step;
    const h = Math.floor(unix / 3600) % 24;
    const ms = BigInt(Math.round(step * 1000));
    SERVICES.forEach((s, k) => {
      const t = totals[s]!;
      t.rx += rate(k, h) * ms / 1000n;
      t.tx += rate(k, h) * ms / 8000n;
    });
    each(sample(unix, mono, totals), i);
  }
}

/** History's CPU per simulated second at 0.5 s: the same walk with and without it. */
function cpu(dir: string, hours: number) {
  const count = hours * 7200;
  const unix0 = Date.now() / 1000 - hours * 3600;
  const c0 = cpuSeconds();
  walk(unix0, count, 0.5, () => {});
  const harness = cpuSeconds() - c0;
  const log: string[] = [];
  const r = recorder(`${dir}/history.sqlite`, log);
  let inRecord = 0;
  const c1 = cpuSeconds();
  walk(unix0, count, 0.5, (c) => {
    const t = performance.now();
    r.record(c);
    inRecord += performance.now() - t;
  });
  r.close();
  const withHistory = cpuSeconds() - c1;
  const simulated = count * 0.5;
  return {
    samples: count,
    simulated_s: simulated,
    cpu_s_with_history: withHistory,
    cpu_s_harness: harness,
    cpu_pct_of_one_core: Math.max(0, withHistory - harness) / simulated * 100,
    record_wall_pct_of_one_core: inRecord / 1000 / simulated * 100,
    record_us_per_sample: inRecord * 1000 / count,
    size_bytes: Deno.statSync(`${dir}/history.sqlite`).size,
    log,
  };
}

/** `days` ending now, a sample a minute (each one a batch, as a minute's batch is). */
function year(path: string, days: number) {
  const count = days * 1440;
  const log: string[] = [];
  const r = recorder(path, log);
  const t0 = performance.now();
  walk(Date.now() / 1000 - days * 86400, count, 60, (c) => r.record(c));
  r.close();
  const reader = HistoryReader.open(path);
  const rows: Record<string, number> = {};
  for (const unit of ["minute", "hour", "day", "month"] as const) {
    rows[unit] = reader.rows(unit, 0, 4e9).reduce((n, row) => n + row.services.size, 0);
  }
  reader.close();
  return {
    samples: count,
    write_s: (performance.now() - t0) / 1000,
    size_bytes: Deno.statSync(path).size,
    rows,
    log,
  };
}

/** Open, a year of days, table and JSON: the median of 20 in-process. */
function query(path: string) {
  const times: number[] = [];
  let rows = 0;
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    const reader = HistoryReader.open(path);
    const now = Date.now() / 1000;
    const r = buildReport(reader, {
      unit: "day",
      since: now - 366 * 86400,
      until: now,
      service: null,
      zone: ZONE,
    });
    renderTable(r, 100);
    renderJson(r);
    reader.close();
    times.push(performance.now() - t);
    rows = r.rows.length;
  }
  times.sort((a, b) => a - b);
  return { rows, median_ms: times[10]!, max_ms: times.at(-1)! };
}

const [mode, where, arg] = Deno.args;
const result = mode === "cpu"
  ? cpu(where!, Number(arg ?? 6))
  : mode === "year"
  ? year(where!, Number(arg ?? 365))
  : mode === "query"
  ? query(where!)
  : null;
if (result === null) {
  console.error("usage: history_worker.ts cpu DIR HOURS | year PATH DAYS | query PATH");
  Deno.exit(2);
}
console.log(JSON.stringify(result));
