/**
 * CPU and memory of `graph` against a sampler stand-in that publishes StB's three services
 * every 0.5 s, as the user runs it (the built CLI, $STB_NETACCT_BIN, else main.ts). Target:
 * at most 1% of one core at the default 0.5 s interval with the three services drawn, and
 * memory flat over 10 minutes. Measures drawing on a real pseudo-terminal at 120x40
 * (script(1)), plain lines into a pipe, and the terminal with --host (whose `cat` children
 * are counted too); then, with --memory-seconds, RSS of the terminal mode over a long window
 * after a warm-up (a fresh V8 grows for its first minutes, then stays flat).
 *
 *   deno run -A bench/graph_cpu.ts [--seconds 30] [--memory-seconds 600]
 *     [--memory-warmup 120] [--json PATH]
 *
 * Prints one line per measurement and a JSON summary; with --json also writes it to PATH.
 */

import { command } from "./lab.ts";
import { cliCommand } from "./cli.ts";

const CLK_TCK = 100;
const TARGET_CPU_PCT = 1;
/** RSS may move this much over the window (heap and GC noise) and count as flat. */
const GROWTH_TOLERANCE_MB = 2;

function arg(name: string, fallback: string): string {
  const i = Deno.args.indexOf(name);
  return (i >= 0 ? Deno.args[i + 1] : undefined) ?? fallback;
}

const seconds = Number(arg("--seconds", "30"));
const memorySeconds = Number(arg("--memory-seconds", "0"));
const memoryWarmup = Number(arg("--memory-warmup", "120"));
const jsonPath = arg("--json", "");

/** utime+stime of the process and of its reaped children, in seconds; RSS in MiB. */
function usage(pid: number): { cpu: number; rssMiB: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14-17 of proc(5) (utime stime cutime cstime) are 11-14 after the comm.
  const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? "0") / 1024;
  return { cpu: ticks / CLK_TCK, rssMiB: rss };
}

/** The deno process below `ppid` (script(1) runs a shell that execs the CLI). */
function descendant(ppid: number, comm: string): number | null {
  const children = new Map<number, number[]>();
  const names = new Map<number, string>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const pid = Number(e.name), parent = Number(f[1]);
      names.set(pid, stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")));
      children.set(parent, [...(children.get(parent) ?? []), pid]);
    } catch { /* gone */ }
  }
  const queue = [...(children.get(ppid) ?? [])];
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    if (names.get(pid) === comm) return pid;
    queue.push(...(children.get(pid) ?? []));
  }
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Bytes each way so far, per service, in the order StB's config names them. */
type Totals = Record<"host-agent" | "server" | "shell", [number, number]>;
const SERVICES = 3;

/** One sample of three services, each moving a different, varying amount. */
async function publish(path: string, t: number, totals: Totals): Promise<void> {
  const services: Record<string, unknown> = {};
  for (const [name, [rx, tx]] of Object.entries(totals)) {
    services[name] = {
      rx_bytes_total: rx,
      tx_bytes_total: tx,
      rx_packets_total: 0,
      tx_packets_total: 0,
      cgroup: `/app.slice/${name}.service`,
      present: true,
    };
  }
  const all = Object.values(totals);
  const text = JSON.stringify({
    schema: 1,
    backend: "ebpf",
    boot_id: "bench",
    started_at: 1,
    rx_bytes_total: all.reduce((a, x) => a + x[0], 0),
    tx_bytes_total: all.reduce((a, x) => a + x[1], 0),
    rx_packets_total: 0,
    tx_packets_total: 0,
    ts_monotonic: t,
    ts_unix: Date.now() / 1000,
    interval_s: 0.5,
    services,
  }) + "\n";
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

interface Result {
  mode: string;
  services_drawn: number;
  seconds: number;
  cpu_percent_of_one_core: number;
  rss_mib: number;
}

/** graph in `mode` ("tty", "pipe", "tty+host"): its pid and how to stop it. */
function startGraph(mode: string, input: string) {
  const argv = [
    ...cliCommand(),
    "graph",
    "--input",
    input,
    ...(mode.includes("host") ? ["--host"] : []),
  ];
  const tty = mode.startsWith("tty");
  const shellQuote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const child = tty
    ? new Deno.Command("script", {
      args: ["-qfc", `stty cols 120 rows 40; exec ${argv.map(shellQuote).join(" ")}`, "/dev/null"],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn()
    : command(argv, { stdout: "piped", stderr: "null" }).spawn();
  // Drain the pipe so writes never block.
  const drain = !tty ? child.stdout.pipeTo(new WritableStream()) : Promise.resolve();
  const pid = () => {
    const p = tty ? descendant(child.pid, "deno") : child.pid;
    if (p === null) throw new Error("graph process not found under script(1)");
    return p;
  };
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await drain.catch(() => {});
  };
  return { pid, stop };
}

async function measure(mode: string, input: string): Promise<Result> {
  const graph = startGraph(mode, input);
  try {
    await sleep(3000); // start-up and JIT warm-up are not the steady state
    const pid = graph.pid();
    const a = usage(pid);
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const b = usage(pid);
    const wall = (performance.now() - t0) / 1000;
    return {
      mode,
      services_drawn: mode === "pipe" ? 0 : SERVICES,
      seconds: Math.round(wall * 10) / 10,
      cpu_percent_of_one_core: Math.round((b.cpu - a.cpu) / wall * 1000) / 10,
      rss_mib: Math.round(b.rssMiB * 10) / 10,
    };
  } finally {
    await graph.stop();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const round2 = (x: number) => Math.round(x * 100) / 100;

/** RSS of the terminal mode every second over `memorySeconds`, after `memoryWarmup`. */
async function memory(input: string) {
  const graph = startGraph("tty", input);
  try {
    await sleep(3000);
    const pid = graph.pid();
    const warmStart = usage(pid).rssMiB;
    for (let left = memoryWarmup; left > 0; left -= 60) {
      console.error(`graph memory: warming up, ${left} s left (RSS ${usage(pid).rssMiB} MiB)`);
      await sleep(Math.min(60, left) * 1000);
    }
    const a = usage(pid);
    const rss: number[] = [];
    const t0 = performance.now();
    while (performance.now() - t0 < memorySeconds * 1000) {
      rss.push(usage(pid).rssMiB);
      if (rss.length % 60 === 0) {
        console.error(`graph memory: ${rss.length} s, RSS ${rss.at(-1)} MiB`);
      }
      await sleep(1000);
    }
    const b = usage(pid);
    const wall = (performance.now() - t0) / 1000;
    const tenth = Math.max(1, Math.floor(rss.length / 10));
    const growth = median(rss.slice(-tenth)) - median(rss.slice(0, tenth));
    return {
      mode: "tty",
      services_drawn: SERVICES,
      seconds: Math.round(wall),
      warmup_s: memoryWarmup,
      rss_mib_warmup_start: round2(warmStart),
      rss_mib_start: round2(rss[0] ?? 0),
      rss_mib_end: round2(rss.at(-1) ?? 0),
      rss_mib_max: round2(Math.max(...rss)),
      rss_growth_mib: round2(growth),
      rss_mib_by_minute: rss.filter((_, i) => i % 60 === 0).map(round2),
      cpu_percent_of_one_core: Math.round((b.cpu - a.cpu) / wall * 1000) / 10,
      growth_tolerance_mib: GROWTH_TOLERANCE_MB,
      flat: growth <= GROWTH_TOLERANCE_MB,
    };
  } finally {
    await graph.stop();
  }
}

const dir = await Deno.makeTempDir({ prefix: "stb-graph-bench-" });
let stop = false;
let writer: Promise<void> = Promise.resolve();
try {
  const input = `${dir}/counters.json`;
  let t = 1000;
  const totals: Totals = { "host-agent": [0, 0], server: [0, 0], shell: [0, 0] };
  const random = (max: number) => Math.round(Math.random() * max);
  await publish(input, t, totals);
  writer = (async () => {
    for (let i = 0; !stop; i++) {
      await sleep(500);
      t += 0.5;
      totals["host-agent"][0] += random(4 * 1024 * 1024);
      totals["host-agent"][1] += random(100 * 1024);
      totals.server[0] += random(400 * 1024);
      totals.server[1] += random(400 * 1024);
      if (i % 20 < 10) totals.shell[0] += random(2 * 1024 * 1024);
      await publish(input, t, totals);
    }
  })();
  const results: Result[] = [];
  for (const mode of ["tty", "pipe", "tty+host"]) {
    const r = await measure(mode, input);
    console.log(
      `graph ${r.mode.padEnd(8)} ${r.cpu_percent_of_one_core.toFixed(2)}% of one core over ` +
        `${r.seconds} s, RSS ${r.rss_mib} MiB, ${r.services_drawn} services drawn ` +
        `(target <= ${TARGET_CPU_PCT}%)`,
    );
    results.push(r);
  }
  const mem = memorySeconds > 0 ? await memory(input) : null;
  if (mem) {
    console.log(
      `graph tty memory over ${mem.seconds} s after ${mem.warmup_s} s: RSS ${mem.rss_mib_start} ` +
        `-> ${mem.rss_mib_end} MiB (growth ${mem.rss_growth_mib} MiB, max ${mem.rss_mib_max}), ` +
        `${mem.cpu_percent_of_one_core}% of one core`,
    );
  }
  const summary = {
    graph_cpu: results,
    ...(mem ? { graph_memory: mem } : {}),
    interval_s: 0.5,
    target_cpu_percent: TARGET_CPU_PCT,
  };
  console.log(JSON.stringify(summary));
  if (jsonPath) await Deno.writeTextFile(jsonPath, JSON.stringify(summary, null, 2) + "\n");
  if (results.some((r) => r.cpu_percent_of_one_core > TARGET_CPU_PCT) || mem?.flat === false) {
    Deno.exitCode = 1;
  }
} finally {
  stop = true;
  await writer;
  await Deno.remove(dir, { recursive: true });
}
