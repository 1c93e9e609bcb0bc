/**
 * CPU and memory of `graph` against a sampler stand-in that publishes every 0.5 s. Target:
 * at most 1% of one core at the default 0.5 s interval. Measures three ways: drawing on a
 * real pseudo-terminal (script(1)), plain lines into a pipe, and the terminal with --host
 * (whose `cat` children are counted too).
 *
 *   deno run -A bench/graph_cpu.ts [--seconds 30] [--json PATH]
 *
 * Prints one line per mode and a JSON summary; with --json also writes it to PATH.
 */

import { command } from "./lab.ts";

const repo = new URL("../", import.meta.url);
const CLK_TCK = 100;

function arg(name: string, fallback: string): string {
  const i = Deno.args.indexOf(name);
  return (i >= 0 ? Deno.args[i + 1] : undefined) ?? fallback;
}

const seconds = Number(arg("--seconds", "30"));
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

function childOf(ppid: number, comm: string): number | null {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) === ppid && name === comm) return Number(e.name);
    } catch { /* gone */ }
  }
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function publish(path: string, t: number, rx: number, tx: number): Promise<void> {
  const text = JSON.stringify({
    schema: 1,
    backend: "ebpf",
    boot_id: "bench",
    started_at: 1,
    rx_bytes_total: rx,
    tx_bytes_total: tx,
    rx_packets_total: 0,
    tx_packets_total: 0,
    ts_monotonic: t,
    ts_unix: Date.now() / 1000,
    interval_s: 0.5,
    services: {},
  }) + "\n";
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

interface Result {
  mode: string;
  seconds: number;
  cpu_percent_of_one_core: number;
  rss_mib: number;
}

async function measure(mode: string, dir: string, input: string): Promise<Result> {
  const entry = `${dir}/entry.ts`;
  const deno = [
    Deno.execPath(),
    "run",
    "--config",
    new URL("deno.json", repo).pathname,
    "--allow-read",
    "--allow-env",
    "--allow-run=cat",
    entry,
    "--input",
    input,
    ...(mode === "tty+host" ? ["--host"] : []),
  ];
  const tty = mode.startsWith("tty");
  const shellQuote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const child = tty
    ? new Deno.Command("script", {
      args: ["-qfc", `stty cols 120 rows 40; exec ${deno.map(shellQuote).join(" ")}`, "/dev/null"],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn()
    : command(deno, { stdout: "piped", stderr: "null" }).spawn();
  // Drain the pipe so writes never block.
  const drain = !tty ? child.stdout.pipeTo(new WritableStream()) : Promise.resolve();
  try {
    await sleep(3000); // start-up and JIT warm-up are not the steady state
    const pid = tty ? childOf(child.pid, "deno") : child.pid;
    if (pid === null) throw new Error("graph process not found under script(1)");
    const a = usage(pid);
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const b = usage(pid);
    const wall = (performance.now() - t0) / 1000;
    Deno.kill(pid, "SIGTERM");
    return {
      mode,
      seconds: Math.round(wall * 10) / 10,
      cpu_percent_of_one_core: Math.round((b.cpu - a.cpu) / wall * 1000) / 10,
      rss_mib: Math.round(b.rssMiB * 10) / 10,
    };
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await drain.catch(() => {});
  }
}

const dir = await Deno.makeTempDir({ prefix: "stb-graph-bench-" });
let stop = false;
try {
  await Deno.writeTextFile(
    `${dir}/entry.ts`,
    `import { graphCommand } from ${JSON.stringify(new URL("graph/mod.ts", repo).href)};\n` +
      "await graphCommand().parseAsync(Deno.args, { from: 'user' });\n",
  );
  const input = `${dir}/counters.json`;
  let t = 1000, rx = 0, tx = 0;
  await publish(input, t, rx, tx);
  const writer = (async () => {
    while (!stop) {
      await sleep(500);
      t += 0.5;
      rx += Math.round(Math.random() * 4 * 1024 * 1024);
      tx += Math.round(Math.random() * 400 * 1024);
      await publish(input, t, rx, tx);
    }
  })();
  const results: Result[] = [];
  for (const mode of ["tty", "pipe", "tty+host"]) {
    const r = await measure(mode, dir, input);
    console.log(
      `graph ${r.mode.padEnd(8)} ${r.cpu_percent_of_one_core.toFixed(2)}% of one core over ` +
        `${r.seconds} s, RSS ${r.rss_mib} MiB (target <= 1%)`,
    );
    results.push(r);
  }
  stop = true;
  await writer;
  const summary = { graph_cpu: results, interval_s: 0.5, target_cpu_percent: 1 };
  console.log(JSON.stringify(summary));
  if (jsonPath) await Deno.writeTextFile(jsonPath, JSON.stringify(summary, null, 2) + "\n");
  if (results.some((r) => r.cpu_percent_of_one_core > 1)) Deno.exitCode = 1;
} finally {
  stop = true;
  await Deno.remove(dir, { recursive: true });
}
