/**
 * History's targets, measured through the code `run` uses with a fake clock
 * (bench/history_worker.ts): what it costs `run` at 0.5 s (in a process with run's own
 * V8 flags), how big a year at the default retention gets, and how long `report --days`
 * over that year takes through the real CLI. No root needed.
 *
 *   deno run -A bench/history.ts [OUT.json] [--hours N] [--quick]
 *     --hours: simulated hours for the CPU figure (default 6); --quick: 1 hour, and 60
 *     days instead of a year (the size then says nothing about a year: marked so)
 */

import { cliCommand } from "./cli.ts";
import { command } from "./lab.ts";

const TARGET_CPU_PCT = 0.05;
const TARGET_YEAR_MB = 20;
const TARGET_REPORT_MS = 200;
const ZONE = "Europe/Berlin";

let out: string | null = null, quick = false, hours = 0;
for (let i = 0; i < Deno.args.length; i++) {
  const a = Deno.args[i]!; // i < length
  if (a === "--quick") quick = true;
  else if (a === "--hours") hours = Number(Deno.args[++i]);
  else if (!a.startsWith("-") && out === null) out = a;
  else {
    console.error(`history bench: unknown argument "${a}": see the header of bench/history.ts`);
    Deno.exit(2);
  }
}
hours ||= quick ? 1 : 6;
const worker = new URL("./history_worker.ts", import.meta.url).pathname;

/** run's V8 flags (scripts/deno_flags.txt), so the CPU figure is the one run would pay. */
function runV8Flags(): string[] {
  const text = Deno.readTextFileSync(new URL("../scripts/deno_flags.txt", import.meta.url));
  return text.split("\n").filter((l) => l.startsWith("--v8-flags="));
}

async function work(flags: string[], ...rest: string[]) {
  const o = await command([Deno.execPath(), "run", "-A", ...flags, worker, ...rest], {
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!o.success) throw new Error(`history_worker ${rest.join(" ")} failed`);
  return JSON.parse(new TextDecoder().decode(o.stdout));
}

/** Wall time of one CLI command, ms; the median of `n`. */
async function timeCli(argv: string[], n: number): Promise<{ median_ms: number; max_ms: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const o = await command([...cliCommand(), ...argv], {
      stdout: "null",
      stderr: "piped",
      env: { TZ: ZONE },
    }).output();
    times.push(performance.now() - t);
    if (!o.success) throw new Error(`${argv.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  }
  times.sort((a, b) => a - b);
  return { median_ms: times[Math.floor(n / 2)]!, max_ms: times.at(-1)! };
}

const dir = await Deno.makeTempDir({ prefix: "stb-bench-history-" });
// The year on tmpfs: half a million batches, each fsynced, would take an hour on a disk;
// the file is the same size wherever it is.
const shm = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "stb-bench-history-" });
try {
  console.log(`history CPU: ${hours} simulated hours at 0.5 s with run's V8 flags ...`);
  const cpu = await work(runV8Flags(), "cpu", dir, String(hours));
  console.log(
    `  ${cpu.cpu_pct_of_one_core.toFixed(4)}% of a core (record() ${
      cpu.record_us_per_sample.toFixed(1)
    } µs a sample, batches included; wall-clock bound ${
      cpu.record_wall_pct_of_one_core.toFixed(4)
    }%)`,
  );
  const days = quick ? 60 : 365;
  console.log(`a synthetic ${days === 365 ? "year" : `${days} days`}, a sample a minute ...`);
  const path = `${shm}/history.sqlite`;
  const year = await work([], "year", path, String(days));
  console.log(
    `  ${(year.size_bytes / 1e6).toFixed(2)} MB after ${year.samples} samples ` +
      `(written in ${year.write_s.toFixed(0)} s); rows ${JSON.stringify(year.rows)}`,
  );
  const inProcess = await work(runV8Flags(), "query", path);
  const reportArgs = ["report", "--days", "--since", "1y", "--history-db", path];
  const table = await timeCli(reportArgs, 7);
  const json = await timeCli([...reportArgs, "--json"], 7);
  const start = await timeCli(["--version"], 7);
  console.log(
    `report --days over it: CLI ${table.median_ms.toFixed(0)} ms (table), ` +
      `${json.median_ms.toFixed(0)} ms (--json); in-process ${
        inProcess.median_ms.toFixed(1)
      } ms for ${inProcess.rows} rows; the CLI's start alone ${start.median_ms.toFixed(0)} ms`,
  );
  const result = {
    history: {
      quick,
      cpu: {
        ...cpu,
        target_pct: TARGET_CPU_PCT,
        target_met: cpu.cpu_pct_of_one_core <= TARGET_CPU_PCT,
      },
      year: {
        ...year,
        days,
        target_mb: TARGET_YEAR_MB,
        target_met: days === 365 && year.size_bytes / 1e6 < TARGET_YEAR_MB,
      },
      report: {
        cli_table: table,
        cli_json: json,
        cli_start: start,
        in_process: inProcess,
        target_ms: TARGET_REPORT_MS,
        target_met: Math.max(table.median_ms, json.median_ms) < TARGET_REPORT_MS,
      },
    },
  };
  if (out) await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
} finally {
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(shm, { recursive: true });
}
