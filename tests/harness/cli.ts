/**
 * Driving the real CLI: `deno run -A main.ts ...` from this checkout, or the built binary
 * named by STB_NETACCT_BIN (e.g. ./stb-netacct after `make build`).
 */

import { command, DENO, endProcess, run, type RunResult, sleep, SLOW_FACTOR } from "./exec.ts";
import type { Layout } from "./layouts.ts";
import { pruneEmpty, removeTree, stateDir } from "../../bpf/pins.ts";

const MAIN_TS = new URL("../../main.ts", import.meta.url).pathname;

export function cliArgv(args: string[]): string[] {
  const bin = Deno.env.get("STB_NETACCT_BIN");
  if (!bin) return [DENO, "run", "-A", MAIN_TS, ...args];
  try {
    if (!(Deno.statSync(bin).mode! & 0o111)) throw new Error("not executable");
  } catch (e) {
    throw new Error(
      `STB_NETACCT_BIN="${bin}" cannot be run (${(e as Error).message}): ` +
        "build it with `make build`, or unset STB_NETACCT_BIN to test main.ts from source",
    );
  }
  return [bin, ...args];
}

/** A counters.json sample as the test reads it: raw JSON, checked by the tests themselves. */
export interface Sample {
  schema: number;
  backend: string;
  rx_bytes_total: number;
  tx_bytes_total: number;
  rx_packets_total: number;
  tx_packets_total: number;
  ts_monotonic: number;
  ts_unix: number;
  interval_s: number;
  services: Record<string, {
    rx_bytes_total: number;
    tx_bytes_total: number;
    rx_packets_total: number;
    tx_packets_total: number;
    cgroup: string;
    present: boolean;
  }>;
}

export interface StopResult {
  code: number;
  signal: Deno.Signal | null;
  stderr: string;
  /** The file after the process ended (its final write). */
  final: Sample | null;
}

export interface RunCliOptions {
  backend: string;
  config: string;
  output: string;
  interval?: number;
  /** Saved totals; default: beside the output (`run` derives OUTPUT.state). */
  state?: string;
  /** More `run` flags (e.g. --history-db PATH). */
  extraArgs?: string[];
  /** More environment, e.g. INVOCATION_ID (as systemd sets it for a service). */
  env?: Record<string, string>;
}

/** One `run` process. Its stderr is collected so failures can quote it. */
export class RunningCli {
  #child: Deno.ChildProcess;
  #stderr = "";
  #stderrDone: Promise<void>;
  #exited = false;
  readonly output: string;
  readonly interval: number;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(prefix: string[], readonly options: RunCliOptions) {
    this.output = options.output;
    this.interval = options.interval ?? 0.5;
    const argv = [
      ...prefix,
      ...cliArgv([
        "run",
        "--backend",
        options.backend,
        "--config",
        options.config,
        "--output",
        options.output,
        "--interval",
        String(this.interval),
        ...(options.state ? ["--state", options.state] : []),
        ...(options.extraArgs ?? []),
      ]),
    ];
    const child = command(argv, {
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      ...(options.env ? { env: options.env } : {}),
    }).spawn();
    this.#child = child;
    this.#stderrDone = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr += chunk;
      }
    })();
    this.status = this.#child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  get pid(): number {
    return this.#child.pid;
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** Reads the output file now; null when it is missing or not JSON (yet). */
  async read(): Promise<Sample | null> {
    try {
      return JSON.parse(await Deno.readTextFile(this.output)) as Sample;
    } catch {
      return null;
    }
  }

  /**
   * Waits for a sample written after `sinceUnix` (seconds since the epoch; default: now),
   * so it includes everything the kernel counted before this call. Fails loudly with the
   * CLI's stderr when `run` died or never wrote.
   */
  async sampleAfter(sinceUnix = Date.now() / 1000, timeoutS = 15 * SLOW_FACTOR): Promise<Sample> {
    const deadline = Date.now() + timeoutS * 1000;
    while (Date.now() < deadline) {
      if (this.#exited) {
        const s = await this.status;
        await this.#stderrDone;
        throw new Error(
          `\`run --backend ${this.options.backend}\` exited (code ${s.code}, signal ${s.signal}) ` +
            `before writing a fresh sample; stderr:\n${this.#stderr.trim()}`,
        );
      }
      const s = await this.read();
      if (s && s.ts_unix > sinceUnix) return s;
      await sleep(50);
    }
    throw new Error(
      `\`run --backend ${this.options.backend}\` wrote no sample newer than ${sinceUnix} to ` +
        `${this.output} within ${timeoutS}s; stderr:\n${this.#stderr.trim()}`,
    );
  }

  /** Waits until a sample satisfies `predicate` (e.g. a recreated cgroup shows present). */
  async waitFor(
    predicate: (s: Sample) => boolean,
    what: string,
    timeoutS = 10 * SLOW_FACTOR,
  ): Promise<Sample> {
    const deadline = Date.now() + timeoutS * 1000;
    while (Date.now() < deadline) {
      const s = await this.sampleAfter();
      if (predicate(s)) return s;
    }
    throw new Error(
      `timed out after ${timeoutS}s waiting for ${what}; stderr:\n${this.#stderr.trim()}`,
    );
  }

  /** Where this run's totals are saved (its kernel state is kept per state file). */
  get statePath(): string {
    return this.options.state ?? `${this.output}.state`;
  }

  /**
   * SIGTERM (or another signal), wait for the exit, read the final write. A SIGKILL leaves
   * the ebpf backend's pinned counters and links counting (as it should); they are removed
   * here unless `keepKernelState`, so a test's cleanup leaves nothing behind.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    timeoutS = 10 * SLOW_FACTOR,
    opts: { keepKernelState?: boolean } = {},
  ): Promise<StopResult> {
    const s = await endProcess(this.#child, timeoutS * 1000, this.#exited ? null : signal);
    if (signal === "SIGKILL" && !opts.keepKernelState) {
      const dir = await stateDir(this.statePath);
      removeTree(dir);
      pruneEmpty(dir.slice(0, dir.lastIndexOf("/"))); // the pin root too, when it was the last
    }
    await this.#stderrDone;
    return { code: s.code, signal: s.signal, stderr: this.#stderr, final: await this.read() };
  }
}

/** Starts `run` inside the layout and netns, and waits for its first sample. */
export async function startRun(
  layout: Layout,
  netnsPath: string,
  options: RunCliOptions,
): Promise<RunningCli> {
  const started = Date.now() / 1000;
  const cli = new RunningCli(layout.wrap(netnsPath), options);
  try {
    await cli.sampleAfter(started, 30 * SLOW_FACTOR);
  } catch (e) {
    await cli.stop("SIGKILL");
    throw e;
  }
  return cli;
}

/** `graph --input PATH --once`, as an unprivileged reader would run it. */
export function graphOnce(input: string, extra: string[] = []): Promise<RunResult> {
  return run(cliArgv(["graph", "--input", input, "--once", "-n", ...extra]), {
    allowFail: true,
    env: { NO_COLOR: "1", COLUMNS: "100", LINES: "30" },
  });
}
