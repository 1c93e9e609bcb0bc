/**
 * TCP throughput through a veth pair with and without accounting. Root only:
 *
 *   deno run -A bench/throughput.ts [OUT.json] [--backends ebpf,nft,iptables] [--runs N]
 *     [--seconds S]
 *
 * The bench makes two network namespaces joined by a veth (198.51.100.1 <-> .2, TEST-NET-2:
 * external for the default exclusions, so every packet takes the counted path) and a
 * target cgroup that holds the iperf3 client. Configuration "none" is the baseline; each
 * backend configuration runs the real CLI, `run --backend NAME`, inside the client netns
 * (nft and iptables rules only see their own netns; ebpf, linked at the cgroup2 root, sees
 * every netns), from before the iperf3 run until after it. Configurations alternate run by
 * run (veth throughput drifts over minutes), and each backend's counters.json must show the
 * bytes iperf3 sent, so a figure can not come from a backend that counted nothing.
 * Output: medians, min/max and the ratio to "none" per configuration.
 *
 * The CLI is $STB_NETACCT_BIN when set (e.g. ./stb-netacct), else `deno run -A main.ts`.
 * Everything made (netns, cgroups, processes, temp files) is removed in `finally`.
 */

import { cgroupDir, findCgroup2Mount } from "../lib/cgroup.ts";

const TARGET_LOSS = 0.03;
const SETTLE_MS = 1500;
const CLIENT_IP = "198.51.100.1";
const SERVER_IP = "198.51.100.2";

export interface BenchLab {
  tag: string;
  clientNetns: string;
  serverNetns: string;
  /** The target cgroup (relative to the cgroup2 mount) the iperf3 client runs in. */
  cgroup: string;
  /** Absolute directory of `cgroup`. */
  cgroupDir: string;
  /** Scratch directory (config, counters, logs); removed with the lab. */
  tmp: string;
}

/** One configuration: what is in place while iperf3 runs. */
export interface Configuration {
  name: string;
  /** Installs it; throws to abort the bench (teardown is still called). */
  setup(lab: BenchLab): Promise<void>;
  /** Counted tx bytes since setup, or null when the configuration counts nothing. */
  countedTxBytes(): Promise<number | null>;
  /** Removes everything setup made; called after every run, also after a failed setup. */
  teardown(): Promise<void>;
}

export async function sh(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`${cmd} ${args.join(" ")} failed: ${err}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** argv of the CLI: $STB_NETACCT_BIN, else this checkout's main.ts through this deno. */
export function cliCommand(): string[] {
  const bin = Deno.env.get("STB_NETACCT_BIN");
  if (bin) return [bin];
  return [Deno.execPath(), "run", "-A", new URL("../main.ts", import.meta.url).pathname];
}

export interface RunProcess {
  child: Deno.ChildProcess;
  output: string;
  log: string;
  /** Exit status after SIGTERM; throws when it was not a clean exit 0. */
  stop(): Promise<void>;
}

/**
 * Starts `run --backend NAME` counting the cgroup `service` (optionally inside a netns),
 * writing into `dir`; resolves once the first counters.json is there.
 */
export async function startRun(
  backend: string,
  service: string,
  dir: string,
  netns: string | null,
  intervalS = 0.5,
): Promise<RunProcess> {
  const config = `${dir}/config.json`;
  const output = `${dir}/counters.json`;
  const log = `${dir}/run-${backend}.log`;
  await Deno.remove(output).catch(() => {});
  await Deno.remove(`${output}.state`).catch(() => {});
  await Deno.writeTextFile(
    config,
    JSON.stringify({ services: { bench: service }, output, interval_s: intervalS }),
  );
  const argv = [
    ...(netns ? ["nsenter", `--net=/run/netns/${netns}`] : []),
    ...cliCommand(),
    "run",
    "--backend",
    backend,
    "--config",
    config,
    "--output",
    output,
  ];
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  // The child's stderr goes to the log when it stops (and into errors).
  const logText: string[] = [];
  const pump = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      logText.push(chunk);
    }
  })();
  let exited = false;
  child.status.then(() => exited = true);
  const stop = async () => {
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    const status = await child.status;
    clearTimeout(timer);
    await pump.catch(() => {});
    await Deno.writeTextFile(log, logText.join(""));
    if (status.code !== 0) {
      throw new Error(
        `run --backend ${backend} exited with ${status.code}${
          status.signal ? ` (${status.signal})` : ""
        }: ${logText.join("").trim().slice(-400)}`,
      );
    }
  };
  for (let waited = 0;; waited += 50) {
    try {
      const text = await Deno.readTextFile(output);
      JSON.parse(text);
      break;
    } catch { /* not yet */ }
    if (exited || waited > 30_000) {
      await stop().catch(() => {});
      throw new Error(
        `run --backend ${backend} wrote no "${output}" within 30 s: ${logText.join("").trim()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output, log, stop };
}

/** The configuration of a backend: the CLI's `run` in the client netns. */
export function backendConfiguration(backend: string): Configuration {
  let run: RunProcess | null = null;
  let before = 0;
  const tx = async () => JSON.parse(await Deno.readTextFile(run!.output)).tx_bytes_total as number;
  return {
    name: backend,
    async setup(lab) {
      run = await startRun(backend, lab.cgroup, lab.tmp, lab.clientNetns);
      // Let start-up work (module loading, JIT) finish: only steady state is measured.
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      before = await tx();
    },
    async countedTxBytes() {
      // Past one interval, so the last write includes the end of the transfer.
      await new Promise((r) => setTimeout(r, 700));
      return (await tx()) - before;
    },
    async teardown() {
      const r = run;
      run = null;
      await r?.stop();
    },
  };
}

/** The baseline: nothing counts. */
export const NONE: Configuration = {
  name: "none",
  setup: () => Promise.resolve(),
  countedTxBytes: () => Promise.resolve(null),
  teardown: () => Promise.resolve(),
};

export async function makeLab(): Promise<{ lab: BenchLab; cleanup: () => Promise<void> }> {
  const tag = crypto.randomUUID().slice(0, 6);
  const mount = findCgroup2Mount();
  const undo: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const f of undo.splice(0).reverse()) {
      await f().catch((e) => console.error(`cleanup: ${(e as Error).message}`));
    }
  };
  try {
    const tmp = await Deno.makeTempDir({ prefix: "stb-netacct-bench-" });
    undo.push(() => Deno.remove(tmp, { recursive: true }));
    const base = `/stb-netacct-bench-${tag}`;
    const cgroup = `${base}/client`;
    for (const p of [base, cgroup]) {
      await Deno.mkdir(cgroupDir(mount, p));
      undo.push(() => rmdirRetry(cgroupDir(mount, p)));
    }
    const lab: BenchLab = {
      tag,
      clientNetns: `stbb-c-${tag}`,
      serverNetns: `stbb-s-${tag}`,
      cgroup,
      cgroupDir: cgroupDir(mount, cgroup),
      tmp,
    };
    for (const ns of [lab.clientNetns, lab.serverNetns]) {
      await sh("ip", "netns", "add", ns);
      undo.push(() => sh("ip", "netns", "del", ns).then(() => {}));
      await sh("ip", "-n", ns, "link", "set", "lo", "up");
    }
    const [vc, vs] = [`vbc${tag}`, `vbs${tag}`];
    await sh(
      "ip",
      "link",
      "add",
      vc,
      "netns",
      lab.clientNetns,
      "type",
      "veth",
      "peer",
      "name",
      vs,
      "netns",
      lab.serverNetns,
    );
    for (
      const [ns, dev, ip] of [[lab.clientNetns, vc, CLIENT_IP], [lab.serverNetns, vs, SERVER_IP]]
    ) {
      await sh("ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", dev);
      await sh("ip", "-n", ns, "link", "set", dev, "up");
    }
    const server = new Deno.Command("nsenter", {
      args: [`--net=/run/netns/${lab.serverNetns}`, "iperf3", "-s", "-B", SERVER_IP],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    undo.push(async () => {
      try {
        server.kill("SIGKILL");
      } catch { /* gone */ }
      await server.status;
    });
    await waitForPort(lab.serverNetns, 5201);
    return { lab, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

async function rmdirRetry(dir: string): Promise<void> {
  for (let i = 0;; i++) {
    try {
      await Deno.remove(dir);
      return;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      if (i >= 100) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Waits until something listens on `port` in `netns` (iperf3 -s says nothing when ready). */
async function waitForPort(netns: string, port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const out = await sh("nsenter", `--net=/run/netns/${netns}`, "ss", "-Hltn", `sport = :${port}`);
    if (out.trim() !== "") return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`iperf3 -s in netns "${netns}" is not listening on port ${port} after 5 s`);
}

export interface IperfResult {
  gbps: number;
  sentBytes: number;
  senderCpuPct: number;
  receiverCpuPct: number;
}

/** One iperf3 TCP upload from the target cgroup in the client netns. */
export async function iperf(lab: BenchLab, seconds: number): Promise<IperfResult> {
  const out = await new Deno.Command("sh", {
    args: [
      "-c",
      'echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" iperf3 -c "$3" -t "$4" -J',
      "sh",
      lab.cgroupDir,
      `/run/netns/${lab.clientNetns}`,
      SERVER_IP,
      String(seconds),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${new TextDecoder().decode(out.stderr)}`);
  }
  if (json.error) throw new Error(`iperf3: ${json.error}`);
  return {
    gbps: json.end.sum_received.bits_per_second / 1e9,
    sentBytes: json.end.sum_sent.bytes,
    senderCpuPct: json.end.cpu_utilization_percent.host_total,
    receiverCpuPct: json.end.cpu_utilization_percent.remote_total,
  };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export interface ThroughputOptions {
  runs: number;
  seconds: number;
  log?: (line: string) => void;
}

export interface ConfigurationResult {
  name: string;
  gbps: number[];
  median_gbps: number;
  min_gbps: number;
  max_gbps: number;
  /** median / median of "none" (the first configuration). */
  ratio: number;
  loss_pct: number;
  /** Counted tx bytes / bytes iperf3 sent, per run (null for "none"). */
  counted_ratio: (number | null)[];
  sender_cpu_pct_median: number;
}

/**
 * Runs every configuration `runs` times, alternating, each for one iperf3 run of
 * `seconds`; the first configuration is the baseline of the ratios.
 */
export async function measureThroughput(
  lab: BenchLab,
  configs: Configuration[],
  opts: ThroughputOptions,
): Promise<ConfigurationResult[]> {
  const log = opts.log ?? (() => {});
  const raw = configs.map(() => ({
    gbps: [] as number[],
    counted: [] as (number | null)[],
    cpu: [] as number[],
  }));
  for (let run = 0; run < opts.runs; run++) {
    for (const [i, c] of configs.entries()) {
      try {
        await c.setup(lab);
        const r = await iperf(lab, opts.seconds);
        const counted = await c.countedTxBytes();
        if (counted !== null && counted < r.sentBytes * 0.98) {
          throw new Error(
            `${c.name} counted ${counted} tx bytes for ${r.sentBytes} sent by iperf3: ` +
              `it is not counting the benchmark's traffic`,
          );
        }
        raw[i].gbps.push(r.gbps);
        raw[i].counted.push(counted === null ? null : Number((counted / r.sentBytes).toFixed(4)));
        raw[i].cpu.push(r.senderCpuPct);
        log(`run ${run + 1}/${opts.runs} ${c.name.padEnd(9)} ${r.gbps.toFixed(2)} Gbit/s`);
      } finally {
        await c.teardown();
      }
    }
  }
  const base = median(raw[0].gbps);
  return configs.map((c, i) => {
    const m = median(raw[i].gbps);
    return {
      name: c.name,
      gbps: raw[i].gbps.map((g) => Number(g.toFixed(3))),
      median_gbps: Number(m.toFixed(3)),
      min_gbps: Number(Math.min(...raw[i].gbps).toFixed(3)),
      max_gbps: Number(Math.max(...raw[i].gbps).toFixed(3)),
      ratio: Number((m / base).toFixed(4)),
      loss_pct: Number(((1 - m / base) * 100).toFixed(2)),
      counted_ratio: raw[i].counted,
      sender_cpu_pct_median: Number(median(raw[i].cpu).toFixed(1)),
    };
  });
}

function parseArgs(args: string[]) {
  let out: string | null = null, runs = 5, seconds = 5;
  let backends = ["ebpf"];
  const usage =
    "usage: deno run -A bench/throughput.ts [OUT.json] [--backends ebpf,nft,iptables] " +
    "[--runs N] [--seconds S]\n  defaults: --backends ebpf --runs 5 --seconds 5";
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--runs") runs = Number(args[++i]);
    else if (a === "--seconds") seconds = Number(args[++i]);
    else if (a === "--backends") backends = (args[++i] ?? "").split(",").filter((b) => b);
    else if (a === "--help" || a === "-h") {
      console.log(usage);
      Deno.exit(0);
    } else if (!a.startsWith("-") && out === null) out = a;
    else {
      console.error(`throughput: unknown argument "${a}": see --help`);
      Deno.exit(2);
    }
  }
  const bad = backends.filter((b) => !["ebpf", "nft", "iptables"].includes(b));
  if (backends.length === 0 || bad.length > 0) {
    console.error(`throughput: --backends "${bad.join(",")}" is not a list of ebpf, nft, iptables`);
    Deno.exit(2);
  }
  if (!(Number.isInteger(runs) && runs > 0)) {
    console.error(`throughput: --runs "${runs}" must be a whole number above 0`);
    Deno.exit(2);
  }
  if (!(Number.isInteger(seconds) && seconds >= 1)) {
    console.error(`throughput: --seconds "${seconds}" must be a whole number of seconds >= 1`);
    Deno.exit(2);
  }
  return { out, runs, seconds, backends };
}

async function main(): Promise<void> {
  const { out, runs, seconds, backends } = parseArgs(Deno.args);
  if (Deno.uid() !== 0) {
    console.error("throughput: run as root (netns, cgroups and the backends need it)");
    Deno.exit(1);
  }
  const { lab, cleanup } = await makeLab();
  const configs = [NONE, ...backends.map(backendConfiguration)];
  try {
    const results = await measureThroughput(lab, configs, {
      runs,
      seconds,
      log: (l) => console.error(l),
    });
    console.log(
      `TCP throughput, iperf3 ${seconds} s x ${runs} runs per configuration, interleaved, ` +
        `veth between two netns, client in a target cgroup`,
    );
    console.log(
      "configuration  median Gbit/s  min..max        ratio   loss   counted/sent  target",
    );
    for (const r of results) {
      const counted = r.counted_ratio.every((c) => c === null)
        ? "-"
        : median(r.counted_ratio.map((c) => c ?? 0)).toFixed(4);
      console.log(
        [
          r.name.padEnd(14),
          r.median_gbps.toFixed(2).padStart(13),
          `  ${r.min_gbps.toFixed(2)}..${r.max_gbps.toFixed(2)}`.padEnd(16),
          r.ratio.toFixed(3).padStart(7),
          `${r.loss_pct.toFixed(1)}%`.padStart(7),
          counted.padStart(13),
          r.name === "none"
            ? ""
            : `  loss <= ${TARGET_LOSS * 100}% ${
              r.loss_pct <= TARGET_LOSS * 100 ? "ok" : "missed"
            }`,
        ].join(" "),
      );
    }
    const result = {
      throughput: {
        method: "iperf3 -J TCP upload through a veth pair between two netns; configurations " +
          "alternate run by run; median, min, max; ratio = median / median of none",
        kernel: Deno.osRelease(),
        cpus: navigator.hardwareConcurrency,
        runs,
        seconds,
        target_loss_pct: TARGET_LOSS * 100,
        configurations: results,
        targets_met: Object.fromEntries(
          results.filter((r) => r.name !== "none").map((r) => [
            r.name,
            r.loss_pct <= TARGET_LOSS * 100,
          ]),
        ),
      },
    };
    if (out) {
      await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
      console.log(`wrote ${out}`);
    }
  } finally {
    await cleanup();
  }
}

if (import.meta.main) await main();
