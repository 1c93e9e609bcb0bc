/**
 * `graph` in a real pseudo-terminal (tmux), as a person sees it. Golden frames at 80x24 and
 * 120x40, with colour and without, for each file state the issue names: three services,
 * one service absent, a counter reset, a stale file, a ts_unix in the future and an
 * implausible jump. The frames are made deterministic by handing the graph one sample at a
 * time and waiting until every pane has drawn it before writing the next; the chart's time
 * runs on the samples' own ts_monotonic. Then the keys, typed into the terminal.
 *
 * `UPDATE=1 deno test -A tests/graph_tty_test.ts` rewrites the golden frames in
 * tests/testdata/graph_tty/; review the diff.
 */

import { assert, assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import { formatBytes } from "../lib/units.ts";
import { cliArgv, sleep } from "./harness/mod.ts";
import { Tty } from "./harness/tty.ts";

const GOLDEN = new URL("./testdata/graph_tty/", import.meta.url);
const MiB = 1024 * 1024;
const SGR = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");
const SIZES = [[80, 24], [120, 40]] as const;

interface Service {
  rx: number;
  tx: number;
  present: boolean;
}

/** One sample as the sampler writes it; `services` in the order StB's config names them. */
function sampleText(t: number, services: Record<string, Service>, tsUnix: number): string {
  let rx = 0n, tx = 0n;
  const out: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(services)) {
    out[name] = {
      rx_bytes_total: s.rx,
      tx_bytes_total: s.tx,
      rx_packets_total: 0,
      tx_packets_total: 0,
      cgroup: `/user.slice/app.slice/${name}.service`,
      present: s.present,
    };
    rx += BigInt(s.rx);
    tx += BigInt(s.tx);
  }
  return `{"schema":1,"backend":"ebpf","boot_id":"golden","started_at":1,` +
    `"rx_bytes_total":${rx},"tx_bytes_total":${tx},"rx_packets_total":0,"tx_packets_total":0,` +
    `"ts_monotonic":${5000 + t},"ts_unix":${tsUnix},"interval_s":0.5,` +
    `"services":${JSON.stringify(out)}}\n`;
}

/** A scenario: its samples, each a file's text given the wall clock when it is written. */
interface Scenario {
  name: string;
  samples: ((nowUnix: number) => { text: string; rx: bigint })[];
  /** What the final frame's status line must say. */
  status: RegExp;
}

type Stb = { "host-agent": Service; server: Service; shell: Service };

/** StB's three services moving bytes, sample by sample (0.5 s apart); `edit` changes one. */
function stb(
  count: number,
  edit: (i: number, s: Stb) => void = () => {},
  tsUnix: (now: number) => number = (now) => now,
): Scenario["samples"] {
  const tot: Stb = {
    "host-agent": { rx: 100 * 1024, tx: 4 * 1024, present: true },
    "server": { rx: 50 * 1024, tx: 20 * 1024, present: true },
    "shell": { rx: 10 * 1024, tx: 1024, present: true },
  };
  const out: Scenario["samples"] = [];
  for (let i = 0; i < count; i++) {
    const s = structuredClone(tot);
    edit(i, s);
    const rx = BigInt(s["host-agent"].rx + s.server.rx + s.shell.rx);
    out.push((now) => ({ text: sampleText(i * 0.5, s, tsUnix(now)), rx }));
    const wave = [0.5, 1.5, 3, 4, 3, 1.5][i % 6]!;
    tot["host-agent"].rx += Math.round(wave * MiB * 0.5);
    tot["host-agent"].tx += 20 * 1024;
    tot.server.rx += Math.round((200 + (i % 4) * 100) * 1024 * 0.5);
    tot.server.tx += Math.round((150 + (i % 3) * 50) * 1024 * 0.5);
    if (i >= 10) tot.shell.rx += Math.round(1.5 * MiB * 0.5);
  }
  return out;
}

const SCENARIOS: Scenario[] = [
  { name: "three_services", samples: stb(31), status: /^status: ok/ },
  {
    name: "one_absent",
    // The server's cgroup goes away at sample 18: its totals stand still from there.
    samples: (() => {
      let gone: Service | null = null;
      return stb(31, (i, s) => {
        if (i === 18) gone = { ...s.server, present: false };
        if (gone !== null) s.server = gone;
      });
    })(),
    status: /^status: ok/,
  },
  {
    name: "reset",
    // The sampler restarts at sample 20 with totals from zero.
    samples: stb(28, (i, s) => {
      if (i < 20) return;
      for (const v of Object.values(s)) {
        v.rx = Math.round(v.rx / 50);
        v.tx = Math.round(v.tx / 50);
      }
    }),
    status: /^status: counter reset/,
  },
  {
    name: "stale",
    samples: stb(1, () => {}, (now) => now - 3600),
    status: /^status: stale: the last sample is 1\.0 h old/,
  },
  {
    name: "future",
    samples: stb(20, () => {}, (now) => now + 3600),
    status: /^status: clock: its ts_unix is 1\.0 h in the future/,
  },
  {
    name: "implausible_jump",
    // 10^15 bytes in half a second at sample 24: no link carries that.
    samples: stb(25, (i, s) => {
      if (i === 24) s.server.rx += 1e15;
    }),
    status: /^status: discontinuity: ↓ all rose by 909 TiB in 0\.5 s/,
  },
];

async function publish(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

/** The "─ all" row shows `rx` (formatted as the table does): the sample is drawn. */
function shows(rx: bigint) {
  const want = formatBytes(rx);
  return (screen: string[]) => screen.some((l) => l.startsWith("─ all") && l.includes(want));
}

async function golden(name: string, lines: string[]): Promise<void> {
  const url = new URL(`${name}.txt`, GOLDEN);
  const text = lines.join("\n") + "\n";
  if (Deno.env.get("UPDATE")) {
    await Deno.mkdir(GOLDEN, { recursive: true });
    await Deno.writeTextFile(url, text);
    return;
  }
  const want = await Deno.readTextFile(url).catch(() => {
    throw new Error(`no golden frame ${name}: run with UPDATE=1 to create it`);
  });
  if (want === text) return;
  const got = text.split("\n"), exp = want.split("\n");
  const at = got.findIndex((l, i) => l !== exp[i]);
  throw new Error(
    `${name} differs at line ${at + 1}:\n  want: ${JSON.stringify(exp[at])}\n` +
      `  got:  ${JSON.stringify(got[at])}\nthe screen:\n${got.join("\n")}\n(UPDATE=1 rewrites)`,
  );
}

/** Four panes (two sizes, colour on and off) watching one file, fed one sample at a time. */
async function runScenario(sc: Scenario): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-graph-tty-" });
  const panes: { tty: Tty; name: string; color: boolean }[] = [];
  try {
    const path = `${dir}/counters.json`;
    const first = sc.samples[0]!(Date.now() / 1000);
    await publish(path, first.text);
    for (const [columns, rows] of SIZES) {
      for (const color of [true, false]) {
        // A relative --input keeps the temporary directory out of the title.
        const argv = cliArgv(["graph", "--input", "counters.json", "--window", "15", "-n"]);
        if (!color) argv.push("--no-color");
        const tty = await Tty.start({ columns, rows, argv, cwd: dir });
        panes.push({ tty, name: `${sc.name}_${columns}x${rows}`, color });
      }
    }
    const drawn = (rx: bigint) =>
      Promise.all(panes.map((p) => p.tty.waitFor(`sample (${formatBytes(rx)})`, shows(rx))));
    await drawn(first.rx);
    for (const next of sc.samples.slice(1)) {
      const s = next(Date.now() / 1000);
      await publish(path, s.text);
      await drawn(s.rx);
    }
    for (const p of panes) {
      const colored = await p.tty.screen({ color: true });
      const plain = colored.map((l) => l.replace(SGR, ""));
      const status = plain.find((l) => l.startsWith("status: ")) ?? "";
      assert(sc.status.test(status), `${p.name}: ${status}\n${plain.join("\n")}`);
      if (p.color) {
        assert(colored.join("").includes("\x1b["), `${p.name}: no colour`);
        await golden(`${p.name}_color`, colored);
      } else {
        assertEquals(colored, plain, `${p.name} --no-color: colour on the screen`);
        await golden(p.name, plain);
      }
    }
    // Colour adds colour and nothing else.
    for (let i = 0; i < panes.length; i += 2) {
      const [c, n] = [panes[i]!, panes[i + 1]!];
      const a = (await c.tty.screen({ color: true })).map((l) => l.replace(SGR, ""));
      assertEquals(a, await n.tty.screen(), `${c.name}: colour changed the text`);
    }
  } finally {
    for (const p of panes) await p.tty.close();
    await Deno.remove(dir, { recursive: true });
  }
}

for (const sc of SCENARIOS) {
  Deno.test(`graph in a terminal, golden frames: ${sc.name} (80x24, 120x40, colour and not)`, () =>
    runScenario(sc));
}

/** A writer standing in for the sampler: a sample every 0.25 s until stopped. */
function liveWriter(path: string): () => Promise<void> {
  let stop = false;
  const samples = stb(100_000);
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      await publish(path, samples[i]!(Date.now() / 1000).text);
      await sleep(250);
    }
  })();
  return async () => {
    stop = true;
    await done;
  };
}

/**
 * Runs graph, then, after it exits, prints the terminal's mode: "icanon" and "echo" mean it
 * was put back (a graph that left raw mode on would show "-icanon -echo").
 */
async function graphThenStty(dir: string): Promise<Tty> {
  const script = '"$@"; code=$?; stty -a | tr " " "\\n" | grep -x -e "-*icanon" -e "-*echo"; ' +
    'exit "$code"';
  return await Tty.start({
    columns: 100,
    rows: 34,
    cwd: dir,
    argv: ["sh", "-c", script, "sh", ...cliArgv(["graph", "--input", "counters.json", "-n"])],
  });
}

Deno.test("graph in a terminal: q, Esc and Ctrl-C quit and give the terminal back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-graph-keys-" });
  const stop = liveWriter(`${dir}/counters.json`);
  try {
    for (const key of ["q", "Escape", "C-c"]) {
      const tty = await graphThenStty(dir);
      try {
        await tty.waitFor("the first frame", (s) => s.some((l) => l.startsWith("─ all")));
        // An arrow key sends ESC [ A: not Esc, it must not quit.
        await tty.keys("Up");
        await sleep(300);
        assertEquals(await tty.exitStatus(), null, `${key}: an arrow key quit`);
        await tty.keys(key);
        assertEquals(await tty.waitExit(), 0, key);
        const after = await tty.screen();
        assertEquals(
          after.filter((l) => /^-?(icanon|echo)$/.test(l)),
          ["icanon", "echo"],
          `${key}: ${after.join("\n")}`,
        );
        // The alternate screen is left: nothing of the frame remains.
        assert(!after.some((l) => l.includes("status: ")), `${key}: frame left on screen`);
      } finally {
        await tty.close();
      }
    }
  } finally {
    await stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("graph in a terminal: p pauses, b switches to bits, s hides the services", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-graph-keys-" });
  const stop = liveWriter(`${dir}/counters.json`);
  const tty = await Tty.start({
    columns: 100,
    rows: 34,
    cwd: dir,
    argv: cliArgv(["graph", "--input", "counters.json", "-n"]),
  });
  const all = (s: string[]) => s.find((l) => l.startsWith("─ all")) ?? "";
  const keysLine = (s: string[]) => s.at(-1) ?? "";
  try {
    let s = await tty.waitFor("a rate", (s) => /MiB\/s/.test(all(s)));
    assertStringIncludes(keysLine(s), "q quit · p pause · b bits · s hide services");
    await tty.keys("b");
    s = await tty.waitFor("bits", (s) => /Mbit\/s/.test(all(s)));
    assert(!s.some((l) => /iB\/s/.test(l)), `bytes left after b:\n${s.join("\n")}`);
    assertStringIncludes(keysLine(s), "b bytes");
    await tty.keys("s");
    s = await tty.waitFor("services hidden", (s) => s[1]?.includes("(services hidden)") ?? false);
    const chart = s.slice(2, s.findIndex((l) => l.startsWith("↑ upload"))).join("\n");
    assert(!/[●▲■]/.test(chart), `service lines drawn while hidden:\n${chart}`);
    await tty.keys("p");
    s = await tty.waitFor("paused", (s) => keysLine(s).includes("PAUSED"));
    const frozen = all(s);
    await sleep(1200); // the writer goes on: 4 samples
    assertEquals(all(await tty.screen()), frozen, "the frame moved while paused");
    await tty.keys("p");
    s = await tty.waitFor("resumed", (s) => !keysLine(s).includes("PAUSED") && all(s) !== frozen);
    await tty.keys("b", "s");
    s = await tty.waitFor(
      "bytes and services back",
      (s) => /iB\/s/.test(all(s)) && /[●▲■]/.test(s.join("")),
    );
    await tty.keys("q");
    assertEquals(await tty.waitExit(), 0);
  } finally {
    await tty.close();
    await stop();
    await Deno.remove(dir, { recursive: true });
  }
});
