/**
 * `stb-netacct graph`: the unprivileged live chart of counters.json.
 *
 * It only reads files (counters.json, /proc/net/dev with --host) and never imports
 * backends/: it needs --allow-read and --allow-env, no FFI, no root. Freshness is judged
 * from the file itself (ts_unix against the wall clock, ts_monotonic advancing), since
 * reading CLOCK_MONOTONIC from Deno takes FFI.
 *
 * Live mode redraws once per interval in the terminal's alternate screen and puts the
 * terminal back on Ctrl-C or SIGTERM (signals only flip a flag; cleanup is in finally).
 * Without a terminal it prints one plain line per interval instead, with no escape codes.
 */

import { Command, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import {
  DEFAULT_INTERVAL_S,
  isInterval,
  MAX_INTERVAL_S,
  MIN_INTERVAL_S,
  parseIntervalFlag,
} from "../lib/interval.ts";
import { GraphModel } from "./model.ts";
import { CountersFileReader, DEFAULT_COUNTERS_PATH, pendingStuckOpens } from "../lib/contract.ts";
import { renderFrame, renderPlainLine } from "./render.ts";
import { defaultHistoryPath } from "../history/paths.ts";
import { type TodayTotals, todayTotals } from "../history/today.ts";

export const DEFAULT_WINDOW_S = 60;
export const WINDOW_RANGE = [5, 3600] as const;

export interface GraphOptions {
  input: string;
  /** Seconds between redraws (and reads of the file). */
  interval: number;
  /** Seconds of history in the chart and in peak/average. */
  window: number;
  once: boolean;
  host: boolean;
  /** False for --no-color; NO_COLOR and a non-terminal stdout also turn colour off. */
  color: boolean;
  /** False for --no-destinations: no top-destinations table under the chart. */
  destinations?: boolean;
}

/** Everything runGraph touches outside itself, so tests can drive it. */
export interface GraphIo {
  write(text: string): Promise<void>;
  isTerminal: boolean;
  /** Terminal size now, or null when there is no terminal. */
  size(): { columns: number; rows: number } | null;
  env(name: string): string | undefined;
  /** Wall clock, seconds since the epoch. */
  nowUnix(): number;
  /** This process's own monotonic timer, seconds (not comparable with ts_monotonic). */
  nowMono(): number;
  /** /proc/net/dev's text; throws with a reason when it cannot be had. */
  readProcNetDev(): Promise<string>;
  /** Calls `handler` on SIGINT/SIGTERM; returns the undo. */
  onStop(handler: () => void): () => void;
  /** Calls `handler` when the terminal is resized; returns the undo. */
  onResize(handler: () => void): () => void;
  /**
   * Calls `handler` soon after something in the file's directory changes (the sampler
   * renames a new sample into place); returns the undo. Throws when it cannot watch (the
   * directory does not exist yet): the caller retries on its next tick.
   */
  onFileChange(path: string, handler: () => void): () => void;
}

export function denoIo(): GraphIo {
  const encoder = new TextEncoder();
  return {
    async write(text) {
      const bytes = encoder.encode(text);
      let off = 0;
      while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
    },
    isTerminal: Deno.stdout.isTerminal(),
    size() {
      try {
        return Deno.consoleSize();
      } catch {
        return null;
      }
    },
    env(name) {
      try {
        return Deno.env.get(name);
      } catch {
        return undefined; // no --allow-env: behave as if unset
      }
    },
    nowUnix: () => Date.now() / 1000,
    nowMono: () => performance.now() / 1000,
    readProcNetDev,
    onStop(handler) {
      const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
      for (const s of signals) Deno.addSignalListener(s, handler);
      return () => {
        for (const s of signals) Deno.removeSignalListener(s, handler);
      };
    },
    onResize(handler) {
      Deno.addSignalListener("SIGWINCH", handler);
      return () => Deno.removeSignalListener("SIGWINCH", handler);
    },
    onFileChange(path, handler) {
      const dir = path.slice(0, path.lastIndexOf("/")) || "/";
      const watcher = Deno.watchFs(dir, { recursive: false });
      (async () => {
        try {
          for await (const event of watcher) {
            if (event.paths.some((p) => p === path)) handler();
          }
        } catch { /* directory removed: the next tick re-arms */ }
      })();
      return () => {
        try {
          watcher.close();
        } catch { /* already closed */ }
      };
    },
  };
}

/**
 * Deno refuses /proc/net/dev (a link into /proc/self) without --allow-all, so the usual
 * way is one `cat` per interval (needs --allow-run=cat); a read when all is allowed.
 */
async function readProcNetDev(): Promise<string> {
  try {
    return await Deno.readTextFile("/proc/net/dev");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable)) throw e;
  }
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("cat", {
      args: ["/proc/net/dev"],
      stdin: "null",
      stderr: "null",
    }).output();
  } catch (e) {
    throw new Error(
      "Deno needs --allow-run=cat to read /proc/net/dev",
      { cause: e },
    );
  }
  if (!out.success) throw new Error("cat /proc/net/dev failed");
  return new TextDecoder().decode(out.stdout);
}

/** Size used when there is no terminal to ask (pipes, --once into a file). */
const FALLBACK_SIZE = { columns: 80, rows: 24 };

const ALT_SCREEN_ON = "\x1b[?1049h\x1b[?25l";
const ALT_SCREEN_OFF = "\x1b[?25h\x1b[?1049l";
const HOME = "\x1b[H";
const CLEAR_EOL = "\x1b[K";
const CLEAR_BELOW = "\x1b[J";

class Stopper {
  stopped = false;
  #wake: (() => void) | null = null;

  stop(): void {
    this.stopped = true;
    this.wake();
  }

  wake(): void {
    this.#wake?.();
  }

  /** Sleeps until `ms` pass, stop() or wake(). */
  sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.#wake = done;
    });
  }
}

function validate(opts: GraphOptions): void {
  if (!isInterval(opts.interval)) {
    throw new RangeError(
      `--interval ${opts.interval} is out of range; use ${MIN_INTERVAL_S} to ${MAX_INTERVAL_S}`,
    );
  }
  if (!(opts.window >= WINDOW_RANGE[0] && opts.window <= WINDOW_RANGE[1])) {
    throw new RangeError(`--window ${opts.window} is out of range`);
  }
  if (opts.window < 2 * opts.interval) {
    throw new RangeError(
      `--window ${opts.window} is shorter than two intervals (${2 * opts.interval} s); ` +
        "make it longer or the interval shorter",
    );
  }
}

/** One graph invocation: its options, its world, and what it has read so far. */
interface GraphRun {
  opts: GraphOptions;
  io: GraphIo;
  model: GraphModel;
  reader: CountersFileReader;
  color: boolean;
  /** Today's totals from the history beside the input, read once a minute. */
  today: { path: string; value: TodayTotals | null; readAt: number };
}

/** How often graph reads today's totals from history (written once a minute). */
const TODAY_EVERY_S = 60;

/**
 * Runs the graph until stopped (or one frame with `once`). Returns the exit status:
 * 0, or 1 when `once` found no usable current data (file missing, unreadable,
 * malformed or stale).
 */
export async function runGraph(opts: GraphOptions, io: GraphIo = denoIo()): Promise<number> {
  validate(opts);
  const noColor = (io.env("NO_COLOR") ?? "") !== "";
  const run: GraphRun = {
    opts,
    io,
    model: new GraphModel({
      path: opts.input,
      interval: opts.interval,
      window: opts.window,
      host: opts.host,
    }),
    reader: new CountersFileReader(opts.input),
    color: opts.color && io.isTerminal && !noColor,
    today: { path: defaultHistoryPath(opts.input), value: null, readAt: -Infinity },
  };
  if (opts.once) return await once(run);
  await live(run);
  return 0;
}

/** Reads the counters file (and /proc/net/dev with --host) into the model. */
async function sample(run: GraphRun): Promise<void> {
  const { io, model } = run;
  model.update(await run.reader.read(), io.nowMono());
  if (io.nowMono() - run.today.readAt >= TODAY_EVERY_S) {
    run.today.readAt = io.nowMono();
    run.today.value = todayTotals(run.today.path, io.nowUnix());
  }
  if (run.opts.host) {
    let text: string | Error;
    try {
      text = await io.readProcNetDev();
    } catch (e) {
      text = e as Error;
    }
    model.updateHost(text, io.nowMono());
  }
}

/** Redraws until stopped, in the alternate screen on a terminal, which is put back after. */
async function live(run: GraphRun): Promise<void> {
  const { io } = run;
  const stopper = new Stopper();
  const undoStop = io.onStop(() => stopper.stop());
  const resize = { pending: false };
  const undoResize = io.isTerminal
    ? io.onResize(() => {
      resize.pending = true;
      stopper.wake();
    })
    : () => {};
  let screen = false;
  try {
    if (io.isTerminal) {
      await io.write(ALT_SCREEN_ON);
      screen = true;
    }
    await redrawLoop(run, stopper, resize);
  } catch (e) {
    // The reader went away (`graph | head`): a normal way to finish.
    if (!(e instanceof Deno.errors.BrokenPipe)) throw e;
  } finally {
    undoResize();
    undoStop();
    if (screen) await io.write(ALT_SCREEN_OFF).catch(() => {});
  }
}

/**
 * The sampler renames each sample into place: a directory watch (inotify) wakes the loop
 * right after, so a frame follows the write closely without polling. Ticks still come
 * every interval, for staleness and the host line, and re-arm a watch that failed.
 */
async function redrawLoop(
  run: GraphRun,
  stopper: Stopper,
  resize: { pending: boolean },
): Promise<void> {
  const { io, opts, model } = run;
  const period = opts.interval * 1000;
  let fileChanged = false;
  let undoWatch = null as (() => void) | null;
  const armWatch = () => {
    if (undoWatch) return;
    try {
      undoWatch = io.onFileChange(opts.input, () => {
        fileChanged = true;
        stopper.wake();
      });
    } catch { /* no directory yet */ }
  };
  let next = io.nowMono() * 1000;
  const screen = { last: "" };
  let drawnSinceTick = false;
  try {
    while (!stopper.stopped) {
      const nowMs = io.nowMono() * 1000;
      let draw = resize.pending;
      resize.pending = false;
      if (nowMs >= next) {
        armWatch();
        await sample(run);
        // Skip ticks missed (suspend, slow terminal) instead of racing to catch up.
        next += period * Math.max(1, Math.ceil((nowMs - next + 1) / period));
        // A tick always redraws on a terminal (staleness ages); plain output prints a
        // line per tick only when no new sample was printed since the last one.
        draw ||= io.isTerminal || !drawnSinceTick;
        drawnSinceTick = false;
      } else if (fileChanged) {
        fileChanged = false;
        const read = await run.reader.read();
        if (read.kind === "ok" && read.changed) {
          model.update(read, io.nowMono());
          draw = true;
          drawnSinceTick = true;
        }
      }
      if (draw) await drawFrame(run, screen);
      await stopper.sleep(next - io.nowMono() * 1000);
    }
  } finally {
    undoWatch?.();
  }
}

/** The whole screen on a terminal (skipped when it would not change), else a plain line. */
async function drawFrame(run: GraphRun, screen: { last: string }): Promise<void> {
  const { io, model, opts } = run;
  const frame = { ...model.frame(io.nowUnix(), io.nowMono()), today: run.today.value };
  if (!io.isTerminal) {
    await io.write(renderPlainLine(frame) + "\n");
    return;
  }
  const size = io.size() ?? FALLBACK_SIZE;
  const text = HOME +
    renderFrame(frame, { ...size, color: run.color, destinations: opts.destinations })
      .join(CLEAR_EOL + "\r\n") +
    CLEAR_EOL + CLEAR_BELOW;
  if (text !== screen.last) await io.write(text);
  screen.last = text;
}

async function once(run: GraphRun): Promise<number> {
  const { io, model, opts } = run;
  const start = io.nowMono();
  await sample(run);
  const usable = () => {
    const k = model.status(io.nowUnix(), io.nowMono()).kind;
    return k === "ok" || k === "reset";
  };
  // A rate needs a second sample: wait up to two of the sampler's intervals for one.
  if (usable()) {
    const writerInterval = model.last?.interval_s ?? opts.interval;
    const deadline = start + Math.min(20, 2 * Math.max(opts.interval, writerInterval));
    const poll = Math.min(50, opts.interval * 250);
    const hostReady = () => !opts.host || io.nowMono() - start >= opts.interval;
    while (io.nowMono() < deadline && !(model.hasRate && hostReady())) {
      await new Promise((r) => setTimeout(r, poll));
      await sample(run);
      if (!usable()) break;
    }
  }
  const frame = { ...model.frame(io.nowUnix(), io.nowMono()), today: run.today.value };
  const size = io.size() ?? FALLBACK_SIZE;
  await io.write(
    renderFrame(frame, { ...size, color: run.color, destinations: opts.destinations })
      .join("\n") + "\n",
  );
  return usable() ? 0 : 1;
}

function parseNumber(flag: string, range: readonly [number, number]) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n)) {
      throw new InvalidArgumentError(`It must be a number of seconds, e.g. ${flag} 1.`);
    }
    if (n < range[0] || n > range[1]) {
      throw new InvalidArgumentError(`Use ${range[0]} to ${range[1]} seconds.`);
    }
    return n;
  };
}

export function graphCommand() {
  return new Command("graph")
    .summary("live terminal chart of StB's download and upload rates (no root needed)")
    .description(
      "Draw StB's external download (RX) and upload (TX) rates from the counters file that " +
        "`stb-netacct run` publishes: a header with the current, peak and average rate over " +
        "the window and the totals, a chart that fits the terminal and follows resizes, and a " +
        "status line (ok, waiting for file, stale, malformed, counter reset). Rates are in " +
        "binary units (1 KiB/s = 1024 bytes per second). A bad or missing file never stops " +
        "it: the last good values stay on screen and the status line says what is wrong. " +
        "Without a terminal it prints one plain line per interval.",
    )
    .option("--input <path>", "counters file to read", DEFAULT_COUNTERS_PATH)
    .addOption(
      new Option(
        "-i, --interval <seconds>",
        `seconds between redraws, ${MIN_INTERVAL_S} to ${MAX_INTERVAL_S}`,
      ).argParser(parseIntervalFlag).default(DEFAULT_INTERVAL_S),
    )
    .addOption(
      new Option(
        "-w, --window <seconds>",
        `seconds of history in the chart and in peak/average, ${WINDOW_RANGE[0]} to ${
          WINDOW_RANGE[1]
        }`,
      ).argParser(parseNumber("--window", WINDOW_RANGE)).default(DEFAULT_WINDOW_S),
    )
    .option(
      "--once",
      "print one frame and exit (waits up to two intervals for a rate); exit 1 when the file " +
        "is missing, unreadable, malformed or stale",
    )
    .option(
      "--host",
      "also show the whole host's traffic (all interfaces but lo, from /proc/net/dev) and " +
        "StB's share of it",
    )
    .option("--no-color", "no colours (also when NO_COLOR is set or stdout is not a terminal)")
    .option(
      "--no-destinations",
      "hide the top-destinations table (the 5 busiest remote endpoints now, with their " +
        "rates and totals; shown when the sampler's backend reports them: ebpf)",
    )
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  stb-netacct graph                              # live chart, Ctrl-C to quit\n" +
        "  stb-netacct graph --host --window 300          # 5 minutes, with the host's traffic\n" +
        "  stb-netacct graph --once --no-color            # one frame, for scripts\n" +
        "  stb-netacct graph --input /tmp/stb/counters.json --interval 1\n",
    )
    .action(async (opts, cmd) => {
      const options: GraphOptions = {
        input: opts.input,
        interval: opts.interval,
        window: opts.window,
        once: opts.once ?? false,
        host: opts.host ?? false,
        color: opts.color,
        destinations: opts.destinations,
      };
      try {
        validate(options);
      } catch (e) {
        cmd.error(`error: ${(e as Error).message}`, { exitCode: 2, code: "stb.usage" });
      }
      const code = await runGraph(options);
      Deno.exitCode = code;
      // An open parked on a FIFO would keep the process alive after the last frame.
      if (pendingStuckOpens() > 0) Deno.exit(code);
    });
}
