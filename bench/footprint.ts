/**
 * CPU and memory of `run --backend ebpf` at a 0.5 s interval, and of `graph` (plain lines into
 * a pipe) reading what that run publishes, side by side over a long window. Root only:
 *
 *   deno run -A bench/footprint.ts [OUT.json] [--seconds N] [--warmup N] [--backend NAME]
 *     defaults: --seconds 600 (the 10 minutes the RSS-growth target is about) --warmup 300
 *     --backend ebpf
 *
 * Warm-up: a fresh `graph` grows by a few MB over its first minutes (V8 tiering up code,
 * its heap finding its size) and then stays flat; measured from the start, that read as
 * growth. The window starts after --warmup seconds; the warm-up's own RSS change is reported
 * beside it, so it is not hidden.
 *
 * RSS growth is the median RSS of the last tenth of the samples minus that of the first tenth
 * (after settling), so one garbage-collection swing does not read as growth; the least-squares
 * slope (MB per 10 minutes) is given too.
 * Starts the real CLI ($STB_NETACCT_BIN, else `deno run -A main.ts`) counting one target
 * cgroup the bench makes, waits until it has written counters.json and settled (start-up,
 * module loading and JIT are not the steady state the target is about), then samples
 * /proc/<pid>/stat (utime+stime, and cutime+cstime for any child it waited for) and
 * /proc/<pid>/status (VmRSS, VmHWM) over N seconds. CPU is reported as % of one core.
 * The run is stopped with SIGTERM and must exit 0; everything made is removed in `finally`.
 */

import { cgroupDir, findCgroup2Mount } from "../lib/cgroup.ts";
import { command, makeRunDir, removeRunDir } from "./lab.ts";
import { cliCommand, startRun } from "./cli.ts";

const TARGET_CPU_PCT = 0.5;
const TARGET_RSS_MB = 60;
const TARGET_GRAPH_CPU_PCT = 1;
/** RSS may move this much over the window (heap and GC noise) and count as no growth. */
const GROWTH_TOLERANCE_MB = 2;
const SETTLE_MS = 3000;
const SAMPLE_MS = 1000;

function parseArgs(args: string[]) {
  let out: string | null = null, seconds = 600, backend = "ebpf", warmup = 300;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!; // i < args.length
    if (a === "--seconds") seconds = Number(args[++i]);
    else if (a === "--warmup") warmup = Number(args[++i]);
    else if (a === "--backend") backend = args[++i] ?? "";
    else if (a === "--help" || a === "-h") {
      console.log(
        "usage: deno run -A bench/footprint.ts [OUT.json] [--seconds N] [--warmup N] " +
          "[--backend NAME]\n  defaults: --seconds 600 --warmup 300 --backend ebpf",
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
  if (!(Number.isFinite(warmup) && warmup >= 0)) {
    console.error(`footprint: --warmup "${warmup}" must be a number of seconds >= 0`);
    Deno.exit(2);
  }
  return { out, seconds, backend, warmup };
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

interface Track {
  pid: number;
  ticks0: number;
  rss: number[];
  hwm: number;
}

const mb = (kb: number) => Number((kb / 1024).toFixed(1));
/** The upper median (no averaging of the middle two); 0 for none. */
const medianOf = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};

/** MB per 10 minutes, least squares over samples SAMPLE_MS apart. */
function slopeMbPer10Min(kb: number[]): number {
  const n = kb.length;
  if (n < 2) return 0;
  const xs = kb.map((_, i) => i * SAMPLE_MS / 1000);
  const mx = xs.reduce((a, b) => a + b) / n, my = kb.reduce((a, b) => a + b) / n;
  let num = 0, den = 0;
  xs.forEach((x, i) => {
    num += (x - mx) * (kb[i]! - my); // xs has one entry per kb sample
    den += (x - mx) ** 2;
  });
  return Number((num / den * 600 / 1024).toFixed(2));
}

function summary(t: Track, ticks1: number, hz: number, elapsedS: number) {
  const tenth = Math.max(1, Math.floor(t.rss.length / 10));
  const growthKb = medianOf(t.rss.slice(-tenth)) - medianOf(t.rss.slice(0, tenth));
  return {
    cpu_ticks: ticks1 - t.ticks0,
    cpu_pct_of_one_core: Number(((ticks1 - t.ticks0) / hz / elapsedS * 100).toFixed(3)),
    rss_mb_start: mb(t.rss[0] ?? 0),
    rss_mb_end: mb(t.rss.at(-1) ?? 0),
    rss_mb_max: mb(Math.max(...t.rss)),
    rss_growth_mb: mb(growthKb),
    rss_slope_mb_per_10min: slopeMbPer10Min(t.rss),
    hwm_mb: mb(t.hwm),
  };
}

async function main(): Promise<void> {
  const { out, seconds, backend, warmup } = parseArgs(Deno.args);
  if (Deno.uid() !== 0) {
    console.error("footprint: run as root (`run` needs it)");
    Deno.exit(1);
  }
  const mount = findCgroup2Mount();
  const tag = crypto.randomUUID().slice(0, 6);
  const service = `/stb-netacct-footprint-${tag}`;
  const tmp = await makeRunDir("stb-netacct-footprint-");
  let run: Awaited<ReturnType<typeof startRun>> | null = null;
  let graph: Deno.ChildProcess | null = null;
  let madeCgroup = false;
  try {
    await Deno.mkdir(cgroupDir(mount, service));
    madeCgroup = true;
    const hz = await clockTicks();
    run = await startRun({ backend, service, dir: tmp, netns: null });
    const argv = [...cliCommand(), "graph", "--input", run.output, "--interval", "0.5", "-n"];
    graph = command(argv, {
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const drain = graph.stdout.pipeTo(new WritableStream()).catch(() => {});
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const stat = (pid: number) => Deno.readTextFileSync(`/proc/${pid}/stat`);
    const status = (pid: number) => Deno.readTextFileSync(`/proc/${pid}/status`);
    const rssNow = () => ({
      run: parseMemory(status(run!.child.pid)).rssKb,
      graph: parseMemory(status(graph!.pid)).rssKb,
    });
    const warmupStart = rssNow();
    for (let left = warmup; left > 0; left -= 60) {
      console.error(
        `footprint: warming up, ${Math.ceil(left)} s left (RSS run ${mb(rssNow().run)} MB, ` +
          `graph ${mb(rssNow().graph)} MB)`,
      );
      await new Promise((r) => setTimeout(r, Math.min(60, left) * 1000));
    }
    const warmupEnd = rssNow();
    const tracks: Record<"run" | "graph", Track> = {
      run: { pid: run.child.pid, ticks0: 0, rss: [], hwm: 0 },
      graph: { pid: graph.pid, ticks0: 0, rss: [], hwm: 0 },
    };
    const t0 = performance.now();
    for (const t of Object.values(tracks)) t.ticks0 = parseCpuTicks(stat(t.pid));
    let lastLog = t0;
    while (performance.now() - t0 < seconds * 1000) {
      for (const t of Object.values(tracks)) {
        const m = parseMemory(status(t.pid));
        t.rss.push(m.rssKb);
        t.hwm = Math.max(t.hwm, m.hwmKb);
      }
      if (performance.now() - lastLog > 60_000) {
        lastLog = performance.now();
        console.error(
          `footprint: ${Math.round((lastLog - t0) / 1000)} s, RSS run ${
            mb(tracks.run.rss.at(-1)!)
          } MB, graph ${mb(tracks.graph.rss.at(-1)!)} MB`,
        );
      }
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
    }
    const elapsedS = (performance.now() - t0) / 1000;
    const withWarmup = (who: "run" | "graph", x: ReturnType<typeof summary>) => ({
      ...x,
      rss_mb_warmup_start: mb(warmupStart[who]),
      rss_mb_warmup_end: mb(warmupEnd[who]),
      rss_mb_by_minute: tracks[who].rss.filter((_, i) => i % (60_000 / SAMPLE_MS) === 0).map(mb),
    });
    const r = withWarmup(
      "run",
      summary(tracks.run, parseCpuTicks(stat(tracks.run.pid)), hz, elapsedS),
    );
    const g = withWarmup(
      "graph",
      summary(tracks.graph, parseCpuTicks(stat(tracks.graph.pid)), hz, elapsedS),
    );
    const result = {
      footprint: {
        method:
          `run --backend ${backend} --interval 0.5 (one target cgroup) and graph --interval ` +
          `0.5 reading its output into a pipe, publishing into a tmpfs as into /run; after ` +
          `${SETTLE_MS / 1000} s settling and ${warmup} s warm-up, CPU from ` +
          `/proc/<pid>/stat utime+stime(+children) over the window, RSS from /proc/<pid>/status ` +
          `every ${SAMPLE_MS / 1000} s; growth = median of the last tenth minus the first tenth`,
        backend,
        interval_s: 0.5,
        seconds: Number(elapsedS.toFixed(1)),
        warmup_s: warmup,
        clock_ticks_per_s: hz,
        growth_tolerance_mb: GROWTH_TOLERANCE_MB,
        targets: {
          cpu_pct_of_one_core: TARGET_CPU_PCT,
          rss_mb: TARGET_RSS_MB,
          graph_cpu_pct_of_one_core: TARGET_GRAPH_CPU_PCT,
        },
        // Kept at the top level for older readers of results.json.
        cpu_pct_of_one_core: r.cpu_pct_of_one_core,
        rss_mb_max: r.rss_mb_max,
        run: {
          ...r,
          cpu_target_met: r.cpu_pct_of_one_core <= TARGET_CPU_PCT,
          rss_target_met: r.hwm_mb <= TARGET_RSS_MB,
          growth_target_met: r.rss_growth_mb <= GROWTH_TOLERANCE_MB,
        },
        graph: {
          ...g,
          cpu_target_met: g.cpu_pct_of_one_core <= TARGET_GRAPH_CPU_PCT,
          growth_target_met: g.rss_growth_mb <= GROWTH_TOLERANCE_MB,
        },
      },
    };
    graph.kill("SIGTERM");
    await graph.status;
    await drain;
    graph = null;
    await run.stop();
    run = null;
    const f = result.footprint;
    console.log(
      `run --backend ${backend} and graph at 0.5 s over ${f.seconds} s (after ${
        SETTLE_MS / 1000
      } s settling)`,
    );
    console.log("process  measure                 value      target");
    const row = (who: string, name: string, value: string, target: string, ok: boolean) =>
      console.log(
        `${who.padEnd(9)}${name.padEnd(22)}${value.padStart(8)}    ${target} ${
          ok ? "PASS" : "MISS"
        }`,
      );
    for (const [who, x] of [["run", f.run], ["graph", f.graph]] as const) {
      const cpuTarget = who === "run" ? TARGET_CPU_PCT : TARGET_GRAPH_CPU_PCT;
      row(
        who,
        "CPU, % of one core",
        x.cpu_pct_of_one_core.toFixed(3),
        `<= ${cpuTarget}`,
        x.cpu_pct_of_one_core <= cpuTarget,
      );
      if (who === "run") {
        row(
          who,
          "VmHWM (MB)",
          x.hwm_mb.toFixed(1),
          `<= ${TARGET_RSS_MB}`,
          x.hwm_mb <= TARGET_RSS_MB,
        );
      } else {console.log(
          `${who.padEnd(9)}${"VmHWM (MB)".padEnd(22)}${x.hwm_mb.toFixed(1).padStart(8)}`,
        );}
      row(
        who,
        "RSS growth (MB)",
        x.rss_growth_mb.toFixed(1),
        `<= ${GROWTH_TOLERANCE_MB} (slope ${x.rss_slope_mb_per_10min} MB/10 min; ${x.rss_mb_start}..${x.rss_mb_end})`,
        x.rss_growth_mb <= GROWTH_TOLERANCE_MB,
      );
    }
    if (out) {
      await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
      console.log(`wrote ${out}`);
    }
  } finally {
    if (graph) {
      try {
        graph.kill("SIGTERM");
      } catch { /* gone */ }
      await graph.status;
    }
    await run?.stop().catch((e) => console.error(`footprint: ${(e as Error).message}`));
    if (madeCgroup) {
      await Deno.remove(cgroupDir(mount, service)).catch((e) =>
        console.error(`footprint: could not remove cgroup "${service}": ${e}`)
      );
    }
    await removeRunDir(tmp);
  }
}

if (import.meta.main) await main();
