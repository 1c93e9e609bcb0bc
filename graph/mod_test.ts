import { CommanderError } from "@commander-js/extra-typings";
import {
  absolutePath,
  denoIo,
  graphCommand,
  type GraphIo,
  type GraphOptions,
  runGraph,
} from "./mod.ts";
import { assert, assertStringIncludes } from "../lib/test_assert.ts";

const MiB = 1024 * 1024;
const ESC = String.fromCharCode(27);
const ANY_ESCAPE = new RegExp(`${ESC}\\[[0-9;?]*[A-Za-z]`, "g");
const SGR = new RegExp(`${ESC}\\[\\d+m`);
const GREEN = `${ESC}[32m`;

function counters(t: number, rx: number, tx: number, unix = Date.now() / 1000): string {
  return JSON.stringify({
    schema: 1,
    backend: "ebpf",
    boot_id: "b",
    started_at: 1,
    rx_bytes_total: rx,
    tx_bytes_total: tx,
    rx_packets_total: 0,
    tx_packets_total: 0,
    ts_monotonic: t,
    ts_unix: unix,
    interval_s: 0.5,
    services: {},
  }) + "\n";
}

/** As the sampler publishes: temp file, then rename. */
async function publish(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-graph-mod-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

interface FakeIo extends GraphIo {
  out: string[];
  err: string[];
  /** Sends bytes as if typed (when the fake terminal has a keyboard). */
  type(text: string): void;
  keysUndone: boolean;
  stop(): void;
  resize(): void;
  sizes: { columns: number; rows: number }[];
  stopListeners: number;
}

/** Real clocks and files; captured output; a terminal only if asked for. */
function fakeIo(
  o: {
    tty?: boolean;
    env?: Record<string, string>;
    sizes?: { columns: number; rows: number }[];
    onWrite?: (io: FakeIo) => void;
    procNetDev?: () => Promise<string>;
    keyboard?: boolean;
    /** Who holds the sampler's lock (default: nobody). */
    lockHolder?: number | null | undefined;
  } = {},
): FakeIo {
  let stopHandler: (() => void) | null = null;
  let keyHandler: ((b: Uint8Array) => void) | null = null;
  let resizeHandler: (() => void) | null = null;
  const sizes = o.sizes ?? [{ columns: 80, rows: 24 }];
  let frame = 0;
  const io: FakeIo = {
    out: [],
    err: [],
    keysUndone: false,
    sizes,
    stopListeners: 0,
    async write(text) {
      io.out.push(text);
      o.onWrite?.(io);
      await Promise.resolve();
    },
    async writeError(text) {
      io.err.push(text);
      await Promise.resolve();
    },
    isTerminal: o.tty ?? false,
    size: () => (o.tty ? sizes[Math.min(frame++, sizes.length - 1)] ?? null : null),
    env: (name) => o.env?.[name],
    nowUnix: () => Date.now() / 1000,
    nowMono: () => performance.now() / 1000,
    readProcNetDev: o.procNetDev ?? (() => Promise.reject(new Error("no host in this test"))),
    lockHolder: () => "lockHolder" in o ? o.lockHolder : null,
    onStop(handler) {
      stopHandler = handler;
      io.stopListeners++;
      return () => {
        stopHandler = null;
        io.stopListeners--;
      };
    },
    onResize(handler) {
      resizeHandler = handler;
      return () => (resizeHandler = null);
    },
    onKeys(handler) {
      if (!o.keyboard) return null;
      keyHandler = handler;
      return () => {
        keyHandler = null;
        io.keysUndone = true;
        return Promise.resolve();
      };
    },
    onFileChange: (path, handler) => denoIo().onFileChange(path, handler),
    type: (text) => keyHandler?.(new TextEncoder().encode(text)),
    stop: () => stopHandler?.(),
    resize: () => resizeHandler?.(),
  };
  return io;
}

/** The table's rows of the total: ↓ and ↑ (two lines at 80 columns, one when wide). */
function allRows(text: string): { rx: string; tx: string } {
  const lines = text.split("\n");
  const at = lines.findIndex((l) => l.startsWith("─ all"));
  const rx = lines[at] ?? "";
  return { rx, tx: rx.includes("↑") ? rx : lines[at + 1] ?? "" };
}

function opts(input: string, more: Partial<GraphOptions> = {}): GraphOptions {
  return { input, interval: 0.5, window: 60, once: false, host: false, color: true, ...more };
}

Deno.test("--once waits for a second sample and shows its rates", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await publish(p, counters(1000, 5 * MiB, MiB));
    const io = fakeIo();
    const running = runGraph(opts(p, { once: true }), io);
    await new Promise((r) => setTimeout(r, 300));
    // 0.3 s later by the sampler's clock: 1 MiB/s down, 100 KiB/s up.
    await publish(p, counters(1000.3, 5 * MiB + Math.round(0.3 * MiB), MiB + 30 * 1024));
    const code = await running;
    const text = io.out.join("");
    if (code !== 0) throw new Error(`exit ${code}:\n${text}`);
    const { rx, tx } = allRows(text);
    if (!rx.includes("1.00 MiB/s") || !rx.includes("5.30 MiB")) throw new Error(text);
    if (!tx.includes("100 KiB/s") || !tx.includes("1.03 MiB")) throw new Error(text);
    if (io.err.length !== 0) throw new Error(`stderr on success: ${io.err}`);
    if (text.includes(ESC)) throw new Error("escape codes without a terminal");
    if (!text.includes("status: ok")) throw new Error(text);
  });
});

Deno.test("--once with one sample shows the totals and 'rates after the next sample'", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await publish(p, counters(1000, 2 * MiB, 0));
    const io = fakeIo();
    const t0 = performance.now();
    const code = await runGraph(opts(p, { once: true, interval: 0.2 }), io);
    const took = performance.now() - t0;
    const text = io.out.join("");
    // The sampler's interval (0.5 s) bounds the wait: 2 × 0.5 s.
    if (took > 1500) throw new Error(`waited ${took} ms`);
    if (code !== 0 || !text.includes("rates after the next sample")) {
      throw new Error(`exit ${code}:\n${text}`);
    }
    if (!allRows(text).rx.includes("2.00 MiB") || /\d B\/s|iB\/s/.test(text)) {
      throw new Error(`totals, and no rate, wanted:\n${text}`);
    }
  });
});

Deno.test("--once: the verdict's exit status, the frame on stdout, the reason on stderr", async () => {
  await withTempDir(async (dir) => {
    const cases: [string, () => Promise<void>, number, RegExp][] = [
      ["missing", async () => {}, 4, /no counters file: it does not exist yet/],
      ["garbage", () => publish(`${dir}/garbage`, "{{{"), 6, /malformed: it is not valid JSON/],
      [
        "stale",
        () => publish(`${dir}/stale`, counters(1000, 1, 1, Date.now() / 1000 - 30)),
        4,
        /stale: the last sample is \d+ s old; no sampler holds its lock/,
      ],
      ["dir", () => Deno.mkdir(`${dir}/dir`), 6, /malformed: it is a directory/],
      [
        "absurd",
        () => publish(`${dir}/absurd`, counters(1000, 1, 1, 1e300)),
        4,
        /stale: its ts_unix is over 100 years in the future/,
      ],
    ];
    for (const [name, setup, want, reason] of cases) {
      await setup();
      const io = fakeIo();
      const code = await runGraph(opts(`${dir}/${name}`, { once: true }), io);
      const text = io.out.join("").replaceAll("\n", " ");
      const err = io.err.join("");
      if (code !== want) throw new Error(`${name}: exit ${code}, want ${want}\n${text}`);
      if (!reason.test(err) || !err.startsWith("stb-netacct graph: ")) {
        throw new Error(`${name}: stderr ${JSON.stringify(err)}`);
      }
      if (!text.includes("status: ")) throw new Error(`${name}: no frame on stdout`);
    }
    // A sampler holds the lock but writes nothing: stale (3), the same as status says.
    const stuck = fakeIo({ lockHolder: 4242 });
    const code = await runGraph(opts(`${dir}/stale`, { once: true }), stuck);
    const err = stuck.err.join("");
    if (code !== 3 || !err.includes("a sampler (pid 4242) holds its lock but does not write")) {
      throw new Error(`stuck sampler: exit ${code}: ${err}`);
    }
    // Where the lock cannot be read (no --allow-all): only "stale".
    const unknown = fakeIo({ lockHolder: undefined });
    if (await runGraph(opts(`${dir}/stale`, { once: true }), unknown) !== 3) {
      throw new Error(`unknown holder: ${unknown.err}`);
    }
  });
});

Deno.test("live mode without a terminal prints plain lines and stops on a signal", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await publish(p, counters(1000, 0, 0));
    const io = fakeIo({
      onWrite: (io) => {
        if (io.out.at(-1)!.includes("rx 100 KiB/s") || io.out.length >= 50) io.stop();
      },
    });
    const writer = (async () => {
      await new Promise((r) => setTimeout(r, 150));
      await publish(p, counters(1000.1, 1024 * 10, 1024));
    })();
    const t0 = performance.now();
    const code = await runGraph(opts(p, { interval: 0.1, window: 10 }), io);
    const took = performance.now() - t0;
    await writer;
    const text = io.out.join("");
    if (code !== 0) throw new Error(`exit ${code}`);
    if (text.includes(ESC)) throw new Error("escape codes in plain mode");
    const lines = text.trimEnd().split("\n");
    if (lines.length !== io.out.length) throw new Error("not one line per write");
    if (
      !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d rx - tx - total rx 0 B/.test(lines[0] ?? "")
    ) {
      throw new Error(String(lines[0]));
    }
    if (!lines.at(-1)!.includes("rx 100 KiB/s tx 10.0 KiB/s total rx 10.0 KiB")) {
      throw new Error(text);
    }
    // One line per 0.1 s interval, not a busy loop.
    if (lines.length > took / 100 + 2) throw new Error(`${lines.length} lines in ${took} ms`);
    if (io.stopListeners !== 0) throw new Error("signal listener left installed");
  });
});

Deno.test("live mode on a terminal: alternate screen, redraw in place, restored on stop", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    let t = 1000, rx = 0;
    await publish(p, counters(t, rx, 0));
    let frames = 0;
    const io = fakeIo({
      tty: true,
      sizes: [{ columns: 100, rows: 30 }, { columns: 60, rows: 14 }],
      onWrite: (io) => {
        if (io.out.at(-1)!.startsWith(`${ESC}[H`) && ++frames === 3) io.stop();
      },
    });
    let inFlight = Promise.resolve();
    const writer = setInterval(() => {
      t += 0.1;
      rx += 1000;
      inFlight = publish(p, counters(t, rx, 0)).catch(() => {});
    }, 100);
    let code: number;
    try {
      code = await runGraph(opts(p, { interval: 0.1, window: 10 }), io);
    } finally {
      clearInterval(writer);
      await inFlight; // or it may recreate a file while the temp dir is being removed
    }
    if (code !== 0) throw new Error(`exit ${code}`);
    const out = io.out;
    if (out[0] !== `${ESC}[?1049h${ESC}[?25l`) throw new Error("alternate screen not entered");
    if (out.at(-1) !== `${ESC}[?25h${ESC}[?1049l`) throw new Error("terminal not restored");
    const drawn = out.slice(1, -1);
    if (drawn.length !== 3) throw new Error(`${drawn.length} frames`);
    for (const f of drawn) {
      if (!f.startsWith(`${ESC}[H`) || !f.endsWith(`${ESC}[K${ESC}[J`)) {
        throw new Error("not in place");
      }
    }
    const [first = "", , third = ""] = drawn;
    if (!first.includes(`${ESC}[32m`)) throw new Error("no colour on a terminal");
    // The second and later frames follow the smaller size.
    const visible = (f: string) =>
      f.split(`${ESC}[K\r\n`).map((l) => [...l.replace(ANY_ESCAPE, "")].length);
    if (Math.max(...visible(third)) > 60) throw new Error("frame wider than the terminal");
    if (visible(third).length > 14) throw new Error("frame taller than the terminal");
    if (Math.max(...visible(first)) <= 60) {
      throw new Error("first frame did not use 100 columns");
    }
  });
});

Deno.test("NO_COLOR and --no-color remove colour but keep the terminal handling", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await publish(p, counters(1000, 0, 0));
    for (const [env, color] of [[{ NO_COLOR: "1" }, true], [{}, false]] as const) {
      const io = fakeIo({ tty: true, env, onWrite: (io) => io.out.length === 2 && io.stop() });
      await runGraph(opts(p, { color }), io);
      const frame = io.out[1] ?? "";
      if (!frame.startsWith(`${ESC}[H`)) throw new Error("no frame");
      if (SGR.test(frame)) throw new Error(`colour with ${JSON.stringify(env)}/${color}`);
    }
    // An empty NO_COLOR does not count (no-color.org).
    const io = fakeIo({
      tty: true,
      env: { NO_COLOR: "" },
      onWrite: (io) => io.out.length === 2 && io.stop(),
    });
    await runGraph(opts(p), io);
    if (!io.out[1]?.includes(GREEN)) throw new Error("empty NO_COLOR turned colour off");
  });
});

Deno.test("a closed stdout (graph | head) ends live mode cleanly", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await publish(p, counters(1000, 0, 0));
    const io = fakeIo({ tty: false });
    io.write = () => Promise.reject(new Deno.errors.BrokenPipe("broken pipe"));
    const code = await runGraph(opts(p, { interval: 0.1, window: 10 }), io);
    if (code !== 0) throw new Error(`exit ${code}`);
  });
});

Deno.test("--host shows the host line from /proc/net/dev, or why it cannot", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await publish(p, counters(1000, 0, 0));
    const base = await Deno.readTextFile(
      new URL("./testdata/proc_net_dev_vm.txt", import.meta.url),
    );
    let reads = 0;
    const io = fakeIo({
      procNetDev: () =>
        Promise.resolve(base.replace("68067418", String(68067418 + 50 * 1024 * reads++))),
    });
    const running = runGraph(opts(p, { once: true, host: true, interval: 0.2 }), io);
    await new Promise((r) => setTimeout(r, 200));
    await publish(p, counters(1000.2, 1000, 1000));
    await running;
    const host = io.out.join("").split("\n").find((l) => l.startsWith("host"));
    if (!host || !/host \(not lo\) ↓ \S+ (KiB|MiB)\/s ↑ 0 B\/s/.test(host)) {
      throw new Error(`host line: ${host}\n${io.out.join("")}`);
    }
    const io2 = fakeIo();
    await runGraph(opts(p, { once: true, host: true }), io2);
    if (!io2.out.join("").includes("host (not lo) unavailable: no host in this test")) {
      throw new Error(io2.out.join(""));
    }
  });
});

Deno.test("the real /proc/net/dev reader works here (cat fallback without --allow-all)", async () => {
  const text = await denoIo().readProcNetDev();
  if (!/^\s*lo:/m.test(text)) throw new Error(text);
});

async function parse(args: string[]): Promise<{ error: CommanderError | null; stderr: string }> {
  let stderr = "";
  const cmd = graphCommand().exitOverride().configureOutput({
    writeErr: (s) => (stderr += s),
    writeOut: (s) => (stderr += s),
  });
  // Parsing only: the action would start drawing.
  cmd.action(() => {});
  try {
    await cmd.parseAsync(args, { from: "user" });
    return { error: null, stderr };
  } catch (e) {
    if (e instanceof CommanderError) return { error: e, stderr };
    throw e;
  }
}

Deno.test("bad option values are usage errors naming the value and the range", async () => {
  for (
    const [args, want] of [
      [
        ["--interval", "0.05"],
        /argument '0.05' is invalid\. use a number of seconds from 0.1 to 10/,
      ],
      [["--interval", "abc"], /'abc' is invalid\. use a number of seconds from 0.1 to 10/],
      [["--interval", ""], /use a number of seconds/],
      [["--window", "1e9"], /Use 5 to 3600 seconds/],
      [["--bogus"], /unknown option '--bogus'/],
    ] as const
  ) {
    const { error, stderr } = await parse([...args]);
    if (error === null || error.exitCode === 0 || !want.test(stderr)) {
      throw new Error(`${args.join(" ")}: ${error?.code}: ${stderr}`);
    }
  }
});

Deno.test("a window shorter than two intervals is refused with exit 2", async () => {
  let stderr = "";
  const cmd = graphCommand().exitOverride().configureOutput({ writeErr: (s) => (stderr += s) });
  try {
    await cmd.parseAsync(["--window", "5", "--interval", "3"], { from: "user" });
    throw new Error("accepted");
  } catch (e) {
    if (!(e instanceof CommanderError) || e.exitCode !== 2) throw e;
  }
  if (!stderr.includes("--window 5 is shorter than two intervals (6 s)")) throw new Error(stderr);
});

Deno.test("defaults and --help", async () => {
  let parsed: Record<string, unknown> = {};
  const cmd = graphCommand().exitOverride();
  cmd.action((o) => {
    parsed = o;
  });
  await cmd.parseAsync([], { from: "user" });
  const want = { input: "/run/stb-netacct/counters.json", interval: 0.5, window: 60, color: true };
  for (const [k, v] of Object.entries(want)) {
    if (parsed[k] !== v) throw new Error(`${k}: ${parsed[k]}`);
  }
  // Commander wraps to the terminal width: compare with whitespace collapsed.
  const help = (graphCommand().helpInformation() + (await parse(["--help"])).stderr)
    .replace(/\s+/g, " ");
  for (
    const s of [
      "--input <path>",
      '(default: "/run/stb-netacct/counters.json")',
      "(default: 0.5)",
      "(default: 60)",
      "--once",
      "--host",
      "--no-color",
      "NO_COLOR",
      "Examples:",
      "stb-netacct graph --once --no-color",
    ]
  ) {
    if (!help.includes(s)) throw new Error(`help lacks ${s}:\n${help}`);
  }
});

const repo = new URL("../", import.meta.url);

Deno.test("graph's module graph never reaches backends/, bpf/ or FFI", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("graph/mod.ts", repo).pathname],
    cwd: repo.pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  const local = (info.modules as { specifier: string }[])
    .map((m) => m.specifier)
    .filter((s) => s.startsWith(repo.href))
    .map((s) => s.slice(repo.href.length));
  if (!local.includes("graph/render.ts")) throw new Error(`odd module list: ${local}`);
  const bad = local.filter((s) =>
    s.startsWith("backends/") || s.startsWith("bpf/") || s === "lib/clock.ts" ||
    s === "lib/libc.ts"
  );
  if (bad.length > 0) throw new Error(`graph imports ${bad.join(", ")}`);
});

Deno.test("graph --once in a subprocess with only --allow-read --allow-env", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    const entry = `${dir}/entry.ts`;
    await Deno.writeTextFile(
      entry,
      `import { graphCommand } from ${JSON.stringify(new URL("graph/mod.ts", repo).href)};\n` +
        "await graphCommand().parseAsync(Deno.args, { from: 'user' });\n",
    );
    // A sampler stand-in: a sample every 0.3 s of its clock, 2 MiB/s down and 50 KiB/s up.
    let t = 500, rx = 7 * MiB, tx = 0;
    await publish(p, counters(t, rx, tx));
    let inFlight = Promise.resolve();
    const writer = setInterval(() => {
      t += 0.3;
      rx += Math.round(0.3 * 2 * MiB);
      tx += Math.round(0.3 * 50 * 1024);
      inFlight = publish(p, counters(t, rx, tx)).catch(() => {});
    }, 300);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--config",
          new URL("deno.json", repo).pathname,
          "--allow-read",
          "--allow-env",
          entry,
          "--once",
          "--input",
          p,
        ],
        env: { NO_COLOR: "" },
        stdout: "piped",
        stderr: "piped",
      }).output();
    } finally {
      clearInterval(writer);
      await inFlight; // or it may recreate a file while the temp dir is being removed
    }
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    if (out.code !== 0) throw new Error(`exit ${out.code}\n${stdout}\n${stderr}`);
    const { rx: rxLine, tx: txLine } = allRows(stdout);
    if (!/↓ +2\.00 MiB\/s/.test(rxLine) || !/↑ +50\.0 KiB\/s/.test(txLine)) {
      throw new Error(`rates not shown:\n${stdout}\n${stderr}`);
    }
    if (stdout.includes(ESC)) throw new Error("escape codes in a pipe");
  });
});

Deno.test("a new sample is drawn as soon as it is renamed into place, not at the next tick", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await publish(p, counters(1000, 5 * MiB, MiB));
    const io = fakeIo();
    // A 5 s interval: without the directory watch the new sample would wait for the next tick.
    const running = runGraph(opts(p, { interval: 5, window: 60 }), io);
    await new Promise((r) => setTimeout(r, 200));
    const before = io.out.length;
    const written = performance.now();
    await publish(p, counters(1001, 6 * MiB, 2 * MiB));
    while (io.out.length === before && performance.now() - written < 3000) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const latencyMs = performance.now() - written;
    io.stop();
    await running;
    assert(io.out.length > before, "no line was printed for the new sample");
    assert(latencyMs < 1000, `the new sample took ${latencyMs.toFixed(0)} ms to be drawn`);
    assertStringIncludes(io.out.at(-1) ?? "", "6.00 MiB");
  });
});

Deno.test("keys: q quits, p pauses (nothing read meanwhile), b and s redraw the view", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    let t = 1000, rx = 0;
    await publish(p, counters(t, rx, 0));
    const frames = () => io.out.filter((f) => f.startsWith(`${ESC}[H`));
    const io = fakeIo({ tty: true, keyboard: true });
    const running = runGraph(opts(p, { interval: 0.1, window: 10 }), io);
    const waitFor = async (what: string, ok: () => boolean) => {
      const t0 = performance.now();
      while (!ok()) {
        if (performance.now() - t0 > 3000) throw new Error(`${what}: ${frames().at(-1)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await waitFor("first frame", () => frames().length > 0);
    if (!frames().at(-1)!.includes("q quit · p pause · b bits · s hide services")) {
      throw new Error("no keys line");
    }
    io.type("b");
    await waitFor("bits", () => frames().at(-1)!.includes("b bytes"));
    io.type("s");
    await waitFor("services hidden", () => frames().at(-1)!.includes("s show services"));
    io.type("p");
    await waitFor("paused", () => frames().at(-1)!.includes("PAUSED"));
    const paused = frames().length;
    for (let i = 0; i < 5; i++) {
      t += 0.1;
      rx += 1000;
      await publish(p, counters(t, rx, 0));
      await new Promise((r) => setTimeout(r, 60));
    }
    if (frames().length !== paused) throw new Error("redrawn while paused");
    io.type(" ");
    await waitFor("resumed with the newest sample", () => {
      const f = frames().at(-1)!;
      return !f.includes("PAUSED") && f.includes("4.88 KiB");
    });
    io.type("\x1b[A"); // an arrow key is not Esc
    await new Promise((r) => setTimeout(r, 150));
    io.type("q");
    const code = await running;
    if (code !== 0 || !io.keysUndone) throw new Error(`exit ${code}, keys undone ${io.keysUndone}`);
    if (io.out.at(-1) !== `${ESC}[?25h${ESC}[?1049l`) throw new Error("terminal not restored");
  });
});

Deno.test("absolutePath resolves a relative --input the way the directory watch reports it", () => {
  const cwd = Deno.cwd();
  assert(absolutePath("counters.json") === `${cwd}/counters.json`, absolutePath("counters.json"));
  assert(absolutePath("./a/../b.json") === `${cwd}/b.json`, absolutePath("./a/../b.json"));
  assert(absolutePath("/run//x/./y.json") === "/run/x/y.json", absolutePath("/run//x/./y.json"));
});
