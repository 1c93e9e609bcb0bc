import { command, endProcess } from "./lab.ts";
/**
 * The CLI as the benchmarks run it: `run` counting a cgroup, started and stopped cleanly,
 * its log kept. The CLI is $STB_NETACCT_BIN when set (e.g. ./stb-netacct), else this
 * checkout's main.ts.
 */

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
  /** Exit status after SIGTERM (or `signal`); throws when it was not a clean exit 0. */
  stop(signal?: Deno.Signal): Promise<void>;
}

export interface RunRequest {
  backend: string;
  /** The cgroup counted (relative to the cgroup2 mount). */
  service: string;
  /** Where config, counters and log go. */
  dir: string;
  /** The netns `run` runs in; null: this one. */
  netns: string | null;
  intervalS?: number;
  /** More config keys. */
  extraConfig?: Record<string, unknown>;
  /**
   * Start against what an earlier run left (counters.json and its saved state), as a
   * restart does, and resolve once this run has published (a new `started_at`).
   */
  keepState?: boolean;
  /** argv of the CLI instead of cliCommand() (an upgrade: another copy of the program). */
  cli?: string[];
  /**
   * Run as the systemd service does (INVOCATION_ID set): a SIGTERM then keeps the kernel
   * state for the next run, as `systemctl restart` does. Stop such a run with `stop("SIGINT")`
   * (Ctrl-C), which removes it, or the kernel state outlives the benchmark.
   */
  asService?: boolean;
}

/**
 * Starts `run --backend NAME` counting the cgroup `service` (optionally inside a netns),
 * writing into `dir`; resolves once the first counters.json is there.
 */
export async function startRun(req: RunRequest): Promise<RunProcess> {
  const { backend, service, dir, netns, intervalS = 0.5, extraConfig = {} } = req;
  const config = `${dir}/config.json`;
  const output = `${dir}/counters.json`;
  const log = `${dir}/run-${backend}.log`;
  const startedAt = (text: string): unknown => JSON.parse(text).started_at;
  let previous: unknown = undefined;
  if (req.keepState) {
    previous = await Deno.readTextFile(output).then(startedAt, () => undefined);
  } else {
    await Deno.remove(output).catch(() => {});
    await Deno.remove(`${output}.state`).catch(() => {});
  }
  await Deno.writeTextFile(
    config,
    JSON.stringify({ services: { bench: service }, output, interval_s: intervalS, ...extraConfig }),
  );
  const argv = [
    ...(netns ? ["nsenter", `--net=/run/netns/${netns}`] : []),
    ...(req.cli ?? cliCommand()),
    "run",
    "--backend",
    backend,
    "--config",
    config,
    "--output",
    output,
  ];
  const child = command(argv, {
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: {
      DENO_NO_UPDATE_CHECK: "1",
      ...(req.asService ? { INVOCATION_ID: crypto.randomUUID().replaceAll("-", "") } : {}),
    },
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
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    const status = await endProcess(child, 10_000, signal);
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
      // A restart: the file the last run wrote is there already; wait for this run's.
      if (previous === undefined || startedAt(text) !== previous) break;
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
