/**
 * CPU and memory of `run --backend ebpf` at a 0.5 s interval. Root only:
 *
 *   deno run -A bench/footprint.ts [OUT.json] [--seconds N] [--backend NAME]
 *     defaults: --seconds 60 --backend ebpf
 *
 * Starts the real CLI ($STB_NETACCT_BIN, else `deno run -A main.ts`) counting one target
 * cgroup the bench makes, waits until it has written counters.json and settled (start-up,
 * module loading and JIT are not the steady state the target is about), then samples
 * /proc/<pid>/stat (utime+stime, and cutime+cstime for any child it waited for) and
 * /proc/<pid>/status (VmRSS, VmHWM) over N seconds. CPU is reported as % of one core.
 * The run is stopped with SIGTERM and must exit 0; everything made is removed in `finally`.
 */

import { cgroupDir, findCgroup2Mount } from "../lib/cgroup.ts";
import { startRun } from "./throughput.ts";

const TARGET_CPU_PCT = 0.5;
const TARGET_RSS_MB = 80;
const SETTLE_MS = 3000;
const SAMPLE_MS = 500;

function parseArgs(args: string[]) {
  let out: string | null = null, seconds = 60, backend = "ebpf";
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--seconds") seconds = Number(args[++i]);
    else if (a === "--backend") backend = args[++i] ?? "";
    else if (a === "--help" || a === "-h") {
      console.log(
        "usage: deno run -A bench/footprint.ts [OUT.json] [--seconds N] [--backend NAME]\n" +
          "  defaults: --seconds 60 --backend ebpf",
      );
      Deno.exit(0);
    } else if (!a.startsWith("-") && out === null) out = a;
    else {
      console.error(`footprint: unknown argument "${a}": see --help`);
      Deno.exit(2);
    }
  }
  if (!(Number.isFinite(seconds) && seconds >= 2)) {
    console.error(`footprint: --seconds "${seconds}" must be a number of seconds >= 2`);
    Deno.exit(2);
  }
  if (!["ebpf", "nft", "iptables"].includes(backend)) {
    console.error(`footprint: --backend "${backend}" must be ebpf, nft or iptables`);
    Deno.exit(2);
  }
  return { out, seconds, backend };
}

/** Clock ticks per second of /proc/<pid>/stat times. */
async function clockTicks(): Promise<number> {
  const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
  const n = Number(new TextDecoder().decode(out.stdout).trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
}

/** utime+stime+cutime+cstime in ticks (fields 14-17; the name in field 2 may hold spaces). */
export function parseCpuTicks(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state): field N is rest[N - 3].
  return [14, 15, 16, 17].reduce((sum, f) => sum + Number(rest[f - 3]), 0);
}

/** VmRSS and VmHWM in kB from /proc/<pid>/status. */
export function parseMemory(status: string): { rssKb: number; hwmKb: number } {
  const kb = (key: string) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1]);
  return { rssKb: kb("VmRSS"), hwmKb: kb("VmHWM") };
}

async function main(): Promise<void> {
  const { out, seconds, backend } = parseArgs(Deno.args);
  if (Deno.uid() !== 0) {
    console.error("footprint: run as root (`run` needs it)");
    Deno.exit(1);
  }
  const mount = findCgroup2Mount();
  const tag = crypto.randomUUID().slice(0, 6);
  const service = `/stb-netacct-footprint-${tag}`;
  const tmp = await Deno.makeTempDir({ prefix: "stb-netacct-footprint-" });
  let run: Awaited<ReturnType<typeof startRun>> | null = null;
  let madeCgroup = false;
  try {
    await Deno.mkdir(cgroupDir(mount, service));
    madeCgroup = true;
    const hz = await clockTicks();
    run = await startRun(backend, service, tmp, null, 0.5);
    const pid = run.child.pid;
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const stat = () => Deno.readTextFile(`/proc/${pid}/stat`);
    const status = () => Deno.readTextFile(`/proc/${pid}/status`);
    const rss: number[] = [];
    let hwm = 0;
    const t0 = performance.now();
    const ticks0 = parseCpuTicks(await stat());
    const firstRss = parseMemory(await status()).rssKb;
    while (performance.now() - t0 < seconds * 1000) {
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
      const m = parseMemory(await status());
      rss.push(m.rssKb);
      hwm = Math.max(hwm, m.hwmKb);
    }
    const ticks1 = parseCpuTicks(await stat());
    const elapsedS = (performance.now() - t0) / 1000;
    const cpuPct = (ticks1 - ticks0) / hz / elapsedS * 100;
    const mb = (kb: number) => Number((kb / 1024).toFixed(1));
    const maxRss = Math.max(...rss);
    const lastRss = rss[rss.length - 1];
    const result = {
      footprint: {
        method:
          `run --backend ${backend} --interval 0.5 (one target cgroup); after ${
            SETTLE_MS / 1000
          } s settling, CPU from /proc/<pid>/stat utime+stime(+children) over the window, ` +
          `RSS from /proc/<pid>/status every ${SAMPLE_MS / 1000} s`,
        backend,
        interval_s: 0.5,
        seconds: Number(elapsedS.toFixed(1)),
        clock_ticks_per_s: hz,
        cpu_ticks: ticks1 - ticks0,
        cpu_pct_of_one_core: Number(cpuPct.toFixed(3)),
        rss_mb_start: mb(firstRss),
        rss_mb_end: mb(lastRss),
        rss_mb_max: mb(maxRss),
        rss_growth_mb: mb(lastRss - firstRss),
        hwm_mb: mb(hwm),
        targets: { cpu_pct_of_one_core: TARGET_CPU_PCT, rss_mb: TARGET_RSS_MB },
        cpu_target_met: cpuPct <= TARGET_CPU_PCT,
        rss_target_met: hwm / 1024 <= TARGET_RSS_MB,
      },
    };
    await run.stop();
    run = null;
    const f = result.footprint;
    console.log(
      `run --backend ${backend} at 0.5 s over ${f.seconds} s (after ${
        SETTLE_MS / 1000
      } s settling)`,
    );
    console.log("measure                 value      target");
    const row = (name: string, value: string, target: string, ok: boolean) =>
      console.log(`${name.padEnd(22)}${value.padStart(8)}    ${target} ${ok ? "ok" : "missed"}`);
    row(
      "CPU, % of one core",
      f.cpu_pct_of_one_core.toFixed(3),
      `<= ${TARGET_CPU_PCT}`,
      f.cpu_target_met,
    );
    row(
      "RSS max (MB)",
      f.rss_mb_max.toFixed(1),
      `<= ${TARGET_RSS_MB}`,
      f.rss_mb_max <= TARGET_RSS_MB,
    );
    row("VmHWM (MB)", f.hwm_mb.toFixed(1), `<= ${TARGET_RSS_MB}`, f.rss_target_met);
    console.log(
      `RSS start..end (MB)   ${f.rss_mb_start}..${f.rss_mb_end} (growth ${f.rss_growth_mb})`,
    );
    if (out) {
      await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
      console.log(`wrote ${out}`);
    }
  } finally {
    await run?.stop().catch((e) => console.error(`footprint: ${(e as Error).message}`));
    if (madeCgroup) {
      await Deno.remove(cgroupDir(mount, service)).catch((e) =>
        console.error(`footprint: could not remove cgroup "${service}": ${e}`)
      );
    }
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) await main();
