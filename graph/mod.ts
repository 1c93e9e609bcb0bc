/**
 * `stb-netacct graph`: the unprivileged live chart of counters.json.
 *
 * It only reads files (counters.json, /proc/net/dev with --host) and never imports
 * backends/: it needs --allow-read and --allow-env, no FFI, no root. Freshness is judged
 * from the file itself (ts_unix against the wall clock, ts_monotonic advancing), since
 * reading CLOCK_MONOTONIC from Deno takes FFI.
 *
 * Live mode redraws once per interval in the terminal's alternate screen, reads keys from
 * the terminal (q/Esc quit, p pause, b bits, s services) and puts the terminal back on quit,
 * Ctrl-C or SIGTERM (signals and keys only flip flags; cleanup is in finally). Without a
 * terminal it prints one plain line per interval instead, with no escape codes.
 */

import { Command, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import { DEFAULT_INTERVAL_S, isInterval, MAX_INTERVAL_S, MIN_INTERVAL_S } from "../lib/interval.ts";
import { parseIntervalFlag } from "../lib/interval_flag.ts";
import {
  CountersFileReader,
  DEFAULT_COUNTERS_PATH,
  outputLockPath,
  pendingStuckOpens,
  staleAfterS,
} from "../lib/contract.ts";
import { EXIT, exitOf, exitStatusHelp, MAX_WATCH_S } from "../lib/health.ts";
import { lockHolderIfKnown } from "../lib/lock_holder.ts";
import { GraphModel, type StatusKind } from "./model.ts";
import { renderFrame, renderPlainLine } from "./render.ts";
import { applyKey, decodeKeys, type View } from "./keys.ts";
import { defaultHistoryPath } from "../history/paths.ts";
import { type TodayTotals, todayTotals } from "../history/today.ts";
import { ReverseNames } from "../names/reverse.ts";

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
  /** Rates in bits per second (--bits); the `b` key switches. */
  bits?: boolean;
  /** False for --no-destinations: no top-destinations table under the chart. */
  destinations?: boolean;
  /**
   * Reverse DNS (PTR, in the background) for destinations `run` gave no name; only when
   * true (the command sets it unless -n/--no-resolve).
   */
  resolve?: boolean;
}

/** Everything runGraph touches outside itself, so tests can drive it. */
export interface GraphIo {
  write(text: string): Promise<void>;
  /** Writes to stderr: why --once failed. */
  writeError(text: string): Promise<void>;
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
  /** Who holds the lock of the sampler writing `path` (see lib/lock_holder.ts). */
  lockHolder(path: string): number | null | undefined;
  /** Calls `handler` on SIGINT/SIGTERM; returns the undo. */
  onStop(handler: () => void): () => void;
  /** Calls `handler` when the terminal is resized; returns the undo. */
  onResize(handler: () => void): () => void;
  /**
   * Calls `handler` with each read of the keyboard, the terminal in raw mode meanwhile;
   * returns the undo (which puts the terminal back), or null when stdin is no terminal.
   */
  onKeys(handler: (bytes: Uint8Array) => void): (() => Promise<void>) | null;
  /**
   * Calls `handler` soon after something in the file's directory changes (the sampler
   * renames a new sample into place); returns the undo. Throws when it cannot watch (the
   * directory does not exist yet): the caller retries on its next tick.
   */
  onFileChange(path: string, handler: () => void): () => void;
}

async function writeAll(file: { write(p: Uint8Array): Promise<number> }, text: string) {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += await file.write(bytes.subarray(off));
}

export function denoIo(): GraphIo {
  return {
    write: (text) => writeAll(Deno.stdout, text),
    writeError: (text) => writeAll(Deno.stderr, text),
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
    lockHolder: (path) => lockHolderIfKnown(outputLockPath(absolutePath(path))),
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
    onKeys: keyboard,
    onFileChange(path, handler) {
      // Events name absolute paths; a relative --input is relative to where we started.
      const abs = absolutePath(path);
      const dir = abs.slice(0, abs.lastIndexOf("/")) || "/";
      const watcher = Deno.watchFs(dir, { recursive: false });
      (async () => {
        try {
          for await (const event of watcher) {
            if (event.paths.some((p) => p === abs)) handler();
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

/** `path` made absolute against the working directory, "." and ".." resolved. */
export function absolutePath(path: string): string {
  const parts: string[] = [];
  for (const p of (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`).split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") parts.pop();
    else parts.push(p);
  }
  return "/" + parts.join("/");
}

/** The terminal's keys, in raw mode until the undo; null when stdin is no terminal. */
function keyboard(handler: (bytes: Uint8Array) => void): (() => Promise<void>) | null {
  if (!Deno.stdin.isTerminal()) return null;
  try {
    Deno.stdin.setRaw(true);
  } catch {
    return null;
  }
  const reader = Deno.stdin.readable.getReader();
  const done = (async () => {
    try {
      for (;;) {
        const r = await reader.read();
        if (r.done) return;
        handler(r.value);
      }
    } catch { /* cancelled, or stdin went away: no more keys */ }
  })();
  return async () => {
    await reader.cancel().catch(() => {});
    await done;
    try {
      Deno.stdin.setRaw(false);
    } catch { /* the terminal is gone */ }
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

/**
 * The frame's size: the terminal's; without one (pipes, --once into a file) COLUMNS and
 * LINES when set, as shells and scripts set them, else 80x24.
 */
function frameSize(io: GraphIo): { columns: number; rows: number } {
  const size = io.size();
  if (size !== null) return size;
  const env = (name: string, min: number) => {
    const v = Number(io.env(name) ?? "");
    return Number.isInteger(v) && v >= min && v <= 1000 ? v : null;
  };
  return { columns: env("COLUMNS", 20) ?? 80, rows: env("LINES", 5) ?? 24 };
}

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
  view: View;
  /** The reader's clocks when the view was paused: the frame stays as it was then. */
  pausedAt: { unix: number; mono: number } | null;
  /** Today's totals from the history beside the input, read once a minute. */
  today: { path: string; value: TodayTotals | null; readAt: number };
  /** Reverse DNS for destinations without a name; null with --no-resolve. */
  reverse: ReverseNames | null;
}

/** How long `--once` waits for reverse lookups before it prints its frame anyway. */
const ONCE_RESOLVE_MS = 1500;

/** How often graph reads today's totals from history (written once a minute). */
const TODAY_EVERY_S = 60;

/**
 * Runs the graph until stopped (or one frame with `once`). Returns the exit status: 0, or
 * for `once` the verdict's status shared with `status` (lib/health.ts EXIT).
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
    view: { paused: false, bits: opts.bits ?? false, services: true },
    pausedAt: null,
    today: { path: defaultHistoryPath(opts.input), value: null, readAt: -Infinity },
    reverse: opts.resolve === true ? new ReverseNames() : null,
  };
  const reverse = run.reverse;
  if (reverse) run.model.nameOf = (address) => reverse.lookup(address);
  if (opts.once) return await once(run);
  await live(run);
  return 0;
}

/**
 * Reads the counters file (and /proc/net/dev with --host) into the model; when the file is
 * not fresh, also who holds the sampler's lock, to tell a stuck sampler from none.
 */
async function sample(run: GraphRun): Promise<void> {
  const { io, model } = run;
  model.update(await run.reader.read(), io.nowMono());
  const v = model.verdict(io.nowUnix(), io.nowMono());
  model.sampler = v === "stale" || v === "not running" ? io.lockHolder(run.opts.input) : null;
  if (io.nowMono() - run.today.readAt >= TODAY_EVERY_S) {
    run.today.readAt = io.nowMono();
    run.today.value = todayTotals(run.today.path, io.nowUnix());
    model.today = run.today.value;
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

/** What the loop is asked to do besides its ticks: set by signals, keys and resizes. */
interface Wakeups {
  redraw: boolean;
  resumed: boolean;
}

/** Redraws until stopped, in the alternate screen on a terminal, which is put back after. */
async function live(run: GraphRun): Promise<void> {
  const { io } = run;
  const stopper = new Stopper();
  const wake: Wakeups = { redraw: false, resumed: false };
  const undoStop = io.onStop(() => stopper.stop());
  // A name found in the background shows in the next frame, drawn at once.
  if (run.reverse) {
    run.reverse.onName = () => {
      wake.redraw = true;
      stopper.wake();
    };
  }
  const undoResize = io.isTerminal
    ? io.onResize(() => {
      wake.redraw = true;
      stopper.wake();
    })
    : () => {};
  const undoKeys = io.isTerminal ? io.onKeys((b) => onKeys(run, b, { stopper, wake })) : null;
  let screen = false;
  try {
    if (io.isTerminal) {
      await io.write(ALT_SCREEN_ON);
      screen = true;
    }
    await redrawLoop(run, { stopper, wake, keys: undoKeys !== null });
  } catch (e) {
    // The reader went away (`graph | head`): a normal way to finish.
    if (!(e instanceof Deno.errors.BrokenPipe)) throw e;
  } finally {
    await undoKeys?.();
    undoResize();
    undoStop();
    if (screen) await io.write(ALT_SCREEN_OFF).catch(() => {});
  }
}

/** Applies the keys of one read: quit stops, the others change the view and redraw. */
function onKeys(
  run: GraphRun,
  bytes: Uint8Array,
  loop: { stopper: Stopper; wake: Wakeups },
): void {
  for (const action of decodeKeys(bytes)) {
    if (action === "quit") {
      loop.stopper.stop();
      return;
    }
    const was = run.view.paused;
    run.view = applyKey(run.view, action);
    if (!was && run.view.paused) {
      run.pausedAt = { unix: run.io.nowUnix(), mono: run.io.nowMono() };
    }
    if (was && !run.view.paused) {
      run.pausedAt = null;
      loop.wake.resumed = true;
    }
    loop.wake.redraw = true;
  }
  loop.stopper.wake();
}

/**
 * The sampler renames each sample into place: a directory watch (inotify) wakes the loop
 * right after, so a frame follows the write closely without polling. Ticks still come
 * every interval, for staleness and the host line, and re-arm a watch that failed. While
 * paused nothing is read: the frame stays as it was, and the first tick after resuming
 * takes the sampler's totals from where they are then.
 */
async function redrawLoop(
  run: GraphRun,
  loop: { stopper: Stopper; wake: Wakeups; keys: boolean },
): Promise<void> {
  const { io, opts, model } = run;
  const { stopper, wake, keys } = loop;
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
      let draw = wake.redraw;
      wake.redraw = false;
      if (wake.resumed) {
        wake.resumed = false;
        next = nowMs;
      }
      if (run.view.paused) {
        fileChanged = false;
      } else if (nowMs >= next) {
        armWatch();
        await sample(run);
        // Skip ticks missed (suspend, slow terminal) instead of racing to catch up.
        next += period * Math.max(1, Math.ceil((nowMs - next + 1) / period));
        // A tick redraws only when no new sample was drawn since the last one: then the
        // status must still age (stale) on a terminal, and plain output keeps its line per
        // interval; while samples come, each is drawn once, which halves the work.
        draw ||= !drawnSinceTick;
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
      if (draw) await drawFrame(run, screen, keys);
      await stopper.sleep(run.view.paused ? 3_600_000 : next - io.nowMono() * 1000);
    }
  } finally {
    undoWatch?.();
  }
}

/** The whole screen on a terminal (skipped when it would not change), else a plain line. */
async function drawFrame(run: GraphRun, screen: { last: string }, keys: boolean): Promise<void> {
  const { io, model, opts, view } = run;
  const at = run.pausedAt ?? { unix: io.nowUnix(), mono: io.nowMono() };
  const frame = model.frame(at.unix, at.mono);
  if (!io.isTerminal) {
    await io.write(renderPlainLine(frame, view.bits) + "\n");
    return;
  }
  const size = frameSize(io);
  const lines = renderFrame(frame, {
    ...size,
    color: run.color,
    destinations: opts.destinations,
    bits: view.bits,
    services: view.services,
    paused: view.paused,
    keys,
  });
  const text = HOME + lines.join(CLEAR_EOL + "\r\n") + CLEAR_EOL + CLEAR_BELOW;
  if (text !== screen.last) await io.write(text);
  screen.last = text;
}

/** Whether the file said all it can: no use waiting longer for it. */
function settled(kind: StatusKind): boolean {
  return kind === "waiting" || kind === "malformed" || kind === "unreadable" || kind === "stale";
}

/**
 * One frame from what the file tells within a short wait: a second sample for rates (up to
 * two of the sampler's intervals), or, when its ts_unix cannot be believed, long enough to
 * see whether it changes at all. The frame goes to stdout; when the verdict is not healthy
 * its reason goes to stderr, and the exit status is the verdict's.
 */
async function once(run: GraphRun): Promise<number> {
  const { io, model, opts } = run;
  const start = io.nowMono();
  await sample(run);
  const kind = () => model.status(io.nowUnix(), io.nowMono()).kind;
  const writerInterval = model.last?.interval_s ?? opts.interval;
  const judgeByChange = () => model.freshness(io.nowUnix(), io.nowMono()) === "unknown";
  const wait = judgeByChange() ? staleAfterS(writerInterval) + 0.3 : 2 * writerInterval;
  const deadline = start + Math.min(MAX_WATCH_S, Math.max(2 * opts.interval, wait));
  const poll = Math.min(50, opts.interval * 250);
  const hostReady = () => !opts.host || io.nowMono() - start >= opts.interval;
  while (
    !settled(kind()) && io.nowMono() < deadline &&
    !(model.hasRate && hostReady() && !judgeByChange())
  ) {
    await new Promise((r) => setTimeout(r, poll));
    await sample(run);
  }
  model.endWatch();
  await sample(run);
  if (run.reverse) {
    // One frame, no later one to show a name in: starts the lookups, waits a little.
    model.frame(io.nowUnix(), io.nowMono());
    await run.reverse.settle(ONCE_RESOLVE_MS);
  }
  const frame = model.frame(io.nowUnix(), io.nowMono());
  const size = frameSize(io);
  await io.write(
    renderFrame(frame, {
      ...size,
      color: run.color,
      destinations: opts.destinations,
      bits: run.view.bits,
    }).join("\n") + "\n",
  );
  const code = exitOf(frame.verdict);
  if (code !== EXIT.healthy) await io.writeError(`stb-netacct graph: ${frame.status.text}\n`);
  return code;
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

const GRAPH_DESCRIPTION =
  "Draw StB's external download and upload rates from the counters file that " +
  "`stb-netacct run` publishes: a chart per direction, each with its own round " +
  "scale, one line per service (each its own glyph and colour, so they can be told " +
  "apart without colour) and the total; a time axis over the same window of seconds " +
  "whatever the terminal's width; a table per service with the rate now, its peak and " +
  "average over the window, the total, and whether the service is present; and a " +
  "status line (ok, no counters file, stale, malformed, counter reset, discontinuity, " +
  "a clock that cannot be believed). Rates are in bytes per second in binary units " +
  "(1 KiB/s = 1024 bytes per second), or in bits per second in decimal units with " +
  "--bits. A bad or missing file never stops it: the last good values stay on screen " +
  "and the status line says what is wrong. Keys: q or Esc quits, p pauses, b switches " +
  "bits and bytes, s shows or hides the per-service lines. Without a terminal it " +
  "prints one plain line per interval.";

export function graphCommand() {
  return new Command("graph")
    .summary("live terminal chart of StB's download and upload, per service (no root needed)")
    .description(GRAPH_DESCRIPTION)
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
    .option("--bits", "rates in bits per second (kbit/s, Mbit/s) instead of bytes")
    .option(
      "--once",
      "print one frame and exit (waits up to two intervals for a rate), COLUMNS x LINES " +
        "when stdout is no terminal (default 80x24); the exit status says whether the file " +
        "is healthy (below), the reason goes to stderr",
    )
    .option(
      "--host",
      "also show the whole host's traffic (all interfaces but lo, from /proc/net/dev) and " +
        "StB's share of it",
    )
    .option("--no-color", "no colours (also when NO_COLOR is set or stdout is not a terminal)")
    .option(
      "-n, --no-resolve",
      "no reverse DNS: destinations show the name `run` saw StB resolve, or their address " +
        "(by default, an address without one is looked up (PTR) in the background)",
    )
    .option(
      "--no-destinations",
      "hide the top-destinations table (the 5 busiest remote endpoints now, with their " +
        "rates and totals; shown when the sampler's backend reports them: ebpf)",
    )
    .addHelpText(
      "after",
      exitStatusHelp("graph") +
        "\nExamples:\n" +
        "  stb-netacct graph                          # live chart; q quits\n" +
        "  stb-netacct graph --bits --window 300      # 5 minutes, in Mbit/s\n" +
        "  stb-netacct graph --once --no-color        # one frame, for scripts\n" +
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
        bits: opts.bits ?? false,
        destinations: opts.destinations,
        resolve: opts.resolve,
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
