/**
 * Frames rendered from fixed sample sequences, compared with graph/testdata/*.txt.
 * `UPDATE=1 deno test -A graph/render_test.ts` rewrites the snapshots; review the diff.
 */

import type { CountersV1 } from "../lib/contract.ts";
import { GraphModel } from "./model.ts";
import { renderFrame, renderPlainLine } from "./render.ts";

const testdata = new URL("./testdata/", import.meta.url);
const PATH = "/run/stb-netacct/counters.json";
const MONO0 = 5000;
const UNIX0 = 1795000000;
const MiB = 1024 * 1024;

function counters(t: number, rx: number, tx: number, extra: Partial<CountersV1> = {}): CountersV1 {
  return {
    schema: 1,
    backend: "ebpf",
    boot_id: "3f1c0d52-7d7e-4c1a-9a53-6f0e1b2c3d4e",
    started_at: UNIX0 - 100,
    rx_bytes_total: BigInt(Math.round(rx)),
    tx_bytes_total: BigInt(Math.round(tx)),
    rx_packets_total: 0n,
    tx_packets_total: 0n,
    ts_monotonic: MONO0 + t,
    ts_unix: UNIX0 + t,
    interval_s: 0.5,
    services: {},
    ...extra,
  };
}

/** A download that ramps up and back down, and a steadier upload, every 0.5 s. */
function traffic(from: number, to: number, rx0 = 3 * 1024 ** 3, tx0 = 200 * MiB) {
  const out: CountersV1[] = [];
  let rx = rx0, tx = tx0;
  for (let i = from; i <= to; i++) {
    const t = i * 0.5;
    out.push(counters(t, rx, tx));
    const phase = (i % 40) / 40;
    rx += Math.round((phase < 0.5 ? phase : 1 - phase) * 8 * MiB * 0.5);
    tx += Math.round((300 * 1024 + (i % 7) * 40 * 1024) * 0.5);
  }
  return out;
}

type Rates = Record<string, [number, number]>;

/**
 * StB as it runs: host-agent downloads in waves, server moves a steady trickle both ways,
 * shell starts halfway (absent before) and downloads steadily. Totals are their sums.
 */
function stbTraffic(from: number, to: number, absent: (i: number) => string[] = () => []) {
  const out: CountersV1[] = [];
  const tot: Record<string, [number, number]> = {
    "host-agent": [2 * 1024 ** 3, 50 * MiB],
    "server": [400 * MiB, 150 * MiB],
    "shell": [20 * MiB, MiB],
  };
  for (let i = from; i <= to; i++) {
    const t = i * 0.5;
    const services: CountersV1["services"] = {};
    let rx = 0n, tx = 0n;
    for (const [name, [r, w]] of Object.entries(tot)) {
      const present = !(name === "shell" && i < 50) && !absent(i).includes(name);
      services[name] = {
        rx_bytes_total: BigInt(r),
        tx_bytes_total: BigInt(w),
        rx_packets_total: 0n,
        tx_packets_total: 0n,
        cgroup: `/app.slice/${name}.service`,
        present,
      };
      rx += BigInt(r);
      tx += BigInt(w);
    }
    out.push({ ...counters(t, 0, 0, { services }), rx_bytes_total: rx, tx_bytes_total: tx });
    const phase = (i % 40) / 40;
    const rates: Rates = {
      "host-agent": [(phase < 0.5 ? phase : 1 - phase) * 8 * MiB, 40 * 1024],
      "server": [300 * 1024 + (i % 7) * 40 * 1024, 250 * 1024 + (i % 5) * 30 * 1024],
      "shell": [i >= 50 ? 1.5 * MiB : 0, i >= 50 ? 80 * 1024 : 0],
    };
    for (const [name, [r, w]] of Object.entries(rates)) {
      if (!services[name]?.present) continue;
      tot[name]![0] += Math.round(r * 0.5);
      tot[name]![1] += Math.round(w * 0.5);
    }
  }
  return out;
}

function feed(m: GraphModel, samples: CountersV1[]): number {
  let now = 0;
  for (const c of samples) {
    now = c.ts_monotonic - MONO0;
    m.update({ kind: "ok", counters: c, changed: true }, now);
  }
  return now;
}

async function snapshot(name: string, lines: string[]): Promise<void> {
  const text = lines.join("\n") + "\n";
  const url = new URL(name, testdata);
  if (Deno.env.get("UPDATE")) {
    await Deno.writeTextFile(url, text);
    return;
  }
  let want: string;
  try {
    want = await Deno.readTextFile(url);
  } catch {
    throw new Error(`no snapshot ${name}: run with UPDATE=1 to create it`);
  }
  if (want !== text) {
    const got = text.split("\n"), exp = want.split("\n");
    const at = got.findIndex((l, i) => l !== exp[i]);
    throw new Error(
      `frame differs from ${name} at line ${at + 1}:\n  want: ${JSON.stringify(exp[at])}\n` +
        `  got:  ${JSON.stringify(got[at])}\n(UPDATE=1 rewrites snapshots)`,
    );
  }
}

function plain(lines: string[]): void {
  for (const l of lines) {
    if (l.includes("\x1b")) {
      throw new Error(`escape code in a colourless frame: ${JSON.stringify(l)}`);
    }
  }
}

const ANSI_SGR = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");

function fits(lines: string[], columns: number, rows: number): void {
  if (lines.length > rows) throw new Error(`${lines.length} lines for ${rows} rows`);
  for (const l of lines) {
    const visible = [...l.replace(ANSI_SGR, "")].length;
    if (visible > columns) throw new Error(`line of ${visible} > ${columns}: ${l}`);
  }
}

Deno.test("frame: steady traffic, 80x24, no colour", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 100));
  const lines = renderFrame(m.frame(UNIX0 + now + 0.2, now + 0.2), {
    columns: 80,
    rows: 24,
    color: false,
  });
  plain(lines);
  fits(lines, 80, 24);
  await snapshot("frame_ok_80x24.txt", lines);
});

Deno.test("frame: colour on uses escape codes for series and status", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 100));
  const lines = renderFrame(m.frame(UNIX0 + now, now), { columns: 80, rows: 24, color: true });
  if (!lines.join("\n").includes("\x1b[32m")) throw new Error("no colour");
  fits(lines, 80, 24);
  await snapshot("frame_ok_color_80x24.txt", lines);
});

Deno.test("frame: narrow and short terminal", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 100));
  const lines = renderFrame(m.frame(UNIX0 + now, now), { columns: 60, rows: 14, color: false });
  fits(lines, 60, 14);
  await snapshot("frame_narrow_60x14.txt", lines);
});

Deno.test("frame: wide terminal shows one column per interval", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 30 });
  const now = feed(m, traffic(0, 100));
  const lines = renderFrame(m.frame(UNIX0 + now, now), { columns: 160, rows: 20, color: false });
  fits(lines, 160, 20);
  await snapshot("frame_wide_160x20.txt", lines);
});

Deno.test("frame: one sample shows the totals and 'rates after the next sample', no rates", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, stbTraffic(60, 60));
  const lines = renderFrame(m.frame(UNIX0 + now, now), { columns: 80, rows: 24, color: false });
  const text = lines.join("\n");
  if (!text.includes("rates after the next sample")) throw new Error(text);
  if (/\d B\/s|KiB\/s|MiB\/s /.test(lines.slice(-10).join("\n"))) {
    throw new Error(`a rate: ${text}`);
  }
  if (!lines.find((l) => l.startsWith("─ all"))?.includes("GiB")) throw new Error(text);
  await snapshot("frame_collecting.txt", lines);
});

Deno.test("frame: waiting for a missing file", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  m.update({
    kind: "missing",
    reason: `it does not exist yet; start the sampler with "sudo stb-netacct run" or ` +
      `point --input at its output file`,
  }, 0);
  const lines = renderFrame(m.frame(UNIX0, 0), { columns: 100, rows: 16, color: false });
  await snapshot("frame_waiting.txt", lines);
});

Deno.test("frame: stale file (sampler stopped writing)", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 60));
  // 12 s later the same file is still there.
  const later = now + 12;
  m.update({ kind: "ok", counters: m.last!, changed: false }, later);
  const f = m.frame(UNIX0 + later, later);
  if (f.status.kind !== "stale") throw new Error(f.status.text);
  await snapshot("frame_stale.txt", renderFrame(f, { columns: 100, rows: 18, color: false }));
});

Deno.test("frame: malformed file keeps the last good values", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 60));
  m.update(
    { kind: "malformed", reason: "it is not valid JSON (Unexpected end of JSON input)" },
    now,
  );
  const f = m.frame(UNIX0 + now, now);
  const lines = renderFrame(f, { columns: 100, rows: 18, color: false });
  if (!lines.find((l) => l.startsWith("─ all"))?.includes("GiB")) throw new Error("totals lost");
  await snapshot("frame_malformed.txt", lines);
});

Deno.test("frame: a counter reset leaves a hole, never a spike", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  feed(m, traffic(0, 60));
  // The sampler restarts 3 s later with totals from zero.
  const now = feed(m, traffic(66, 100, 0, 0));
  const f = m.frame(UNIX0 + now, now);
  const lines = renderFrame(f, { columns: 90, rows: 20, color: false });
  const peak = f.stats!.rx.peak;
  if (peak > 4 * MiB) throw new Error(`spike: peak ${peak}`);
  await snapshot("frame_reset.txt", lines);
  // Right after the reset the status line says so.
  const m2 = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  feed(m2, traffic(0, 60));
  const t = feed(m2, traffic(66, 67, 0, 0));
  const s = m2.frame(UNIX0 + t, t).status;
  if (s.kind !== "reset") throw new Error(s.text);
});

Deno.test("frame: a gap of missed samples is averaged, not dropped", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const all = traffic(0, 100);
  const now = feed(m, [...all.slice(0, 40), ...all.slice(60)]);
  await snapshot(
    "frame_gap.txt",
    renderFrame(m.frame(UNIX0 + now, now), { columns: 80, rows: 20, color: false }),
  );
});

Deno.test("frame: --host adds the whole host's traffic and StB's share", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60, host: true });
  const samples = traffic(0, 100);
  const base = Deno.readTextFileSync(new URL("proc_net_dev_vm.txt", testdata));
  let now = 0;
  const first = samples[0]!; // traffic() makes samples from t=0 on
  for (const c of samples) {
    now = c.ts_monotonic - MONO0;
    m.update({ kind: "ok", counters: c, changed: true }, now);
    // The host moves StB's bytes plus 1 MiB/s down and 100 KiB/s up of its own.
    const extraRx = Number(c.rx_bytes_total - first.rx_bytes_total) + Math.round(now * MiB);
    const extraTx = Number(c.tx_bytes_total - first.tx_bytes_total) +
      Math.round(now * 100 * 1024);
    m.updateHost(
      base.replace("68067418", String(68067418 + extraRx)).replace(
        "90312",
        String(90312 + extraTx),
      ),
      now,
    );
  }
  const f = m.frame(UNIX0 + now, now);
  const lines = renderFrame(f, { columns: 90, rows: 22, color: false });
  if (!lines.some((l) => l.startsWith("host"))) throw new Error("no host line");
  await snapshot("frame_host.txt", lines);
  await snapshot("plain_host.txt", [renderPlainLine(f)]);
});

Deno.test("plain lines: one per state, no escape codes", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const out: string[] = [];
  m.update({ kind: "missing", reason: "it does not exist yet" }, 0);
  out.push(renderPlainLine(m.frame(UNIX0, 0)));
  let now = feed(m, traffic(0, 0));
  out.push(renderPlainLine(m.frame(UNIX0 + now, now)));
  now = feed(m, traffic(0, 20));
  out.push(renderPlainLine(m.frame(UNIX0 + now, now)));
  m.update({ kind: "malformed", reason: "the file is empty" }, now);
  out.push(renderPlainLine(m.frame(UNIX0 + now, now)));
  plain(out);
  await snapshot("plain_lines.txt", out);
});

/** Traffic as above, with a busy download, a steadier upload and a few quiet endpoints. */
function withDestinations(samples: CountersV1[]): CountersV1[] {
  return samples.map((c, i) => ({
    ...c,
    destinations: [
      dest("server", "rx", "198.51.100.7", 443, "tcp", 5 * MiB + i * 1536 * 1024),
      dest("server", "tx", "2001:db8::7", 443, "tcp", MiB + i * 200 * 1024),
      dest("shell", "rx", "203.0.113.9", 53, "udp", 70_000 + i * 500),
      dest("host-agent", "tx", "198.51.100.8", 8443, "tcp", 4 * MiB),
      dest("server", "rx", "2001:db8::7", 443, "tcp", 900 + i * 100),
      dest("shell", "tx", "203.0.113.9", 53, "udp", 10_000 + i * 400),
      // Appears in the last sample only: no rate yet.
      ...(i === samples.length - 1 ? [dest("server", "tx", "198.51.100.9", 0, "47", 9)] : []),
    ],
  }));
}

function dest(
  service: string,
  direction: "rx" | "tx",
  address: string,
  port: number,
  protocol: string,
  bytes: number,
) {
  return {
    service,
    direction,
    address,
    port,
    protocol,
    bytes: BigInt(Math.round(bytes)),
    packets: BigInt(Math.ceil(bytes / 1400)),
  };
}

Deno.test("frame: top destinations under the chart, busiest now first", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, withDestinations(traffic(0, 100)));
  const frame = m.frame(UNIX0 + now + 0.2, now + 0.2);
  const lines = renderFrame(frame, { columns: 80, rows: 24, color: false });
  plain(lines);
  fits(lines, 80, 24);
  await snapshot("frame_destinations_80x24.txt", lines);
  const at = lines.findIndex((l) => l.startsWith("top destinations"));
  if (at < 0) throw new Error("no destinations table");
  const rows = lines.slice(at + 1, at + 6);
  const want = [
    "↓ 198.51.100.7:443 tcp · server",
    "↑ [2001:db8::7]:443 tcp · server",
    "↓ 203.0.113.9:53 udp · shell",
    "↑ 203.0.113.9:53 udp · shell",
    "↓ [2001:db8::7]:443 tcp · server",
  ];
  rows.forEach((r, i) => {
    const w = want[i] ?? "(no row)";
    if (!r.startsWith(w)) throw new Error(`row ${i}: ${r} (want ${w}...)`);
  });
  // 1.5 MiB per 0.5 s interval = 3.00 MiB/s; the idle host-agent endpoint is not shown.
  if (!rows[0]?.includes("3.00 MiB/s")) throw new Error(rows[0]);
  if (lines.some((l) => l.includes("198.51.100.8"))) throw new Error("idle endpoint shown");
  const hidden = renderFrame(frame, { columns: 80, rows: 24, color: false, destinations: false });
  if (hidden.some((l) => l.startsWith("top destinations"))) throw new Error("not hidden");
  fits(hidden, 80, 24);
  // Short or narrow terminals: fewer rows, never wider than the terminal.
  for (const [columns, rows] of [[40, 14], [60, 12], [40, 10]] as const) {
    const small = renderFrame(frame, { columns, rows, color: false });
    fits(small, columns, rows);
  }
});

Deno.test("frame: no destinations table for a sample without them, one line for none yet", () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 10).map((c) => ({ ...c, destinations: [] })));
  const lines = renderFrame(m.frame(UNIX0 + now, now), { columns: 80, rows: 24, color: false });
  if (!lines.includes("top destinations: none yet")) throw new Error(lines.join("\n"));
  const m2 = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now2 = feed(m2, traffic(0, 10));
  const without = renderFrame(m2.frame(UNIX0 + now2, now2), {
    columns: 80,
    rows: 24,
    color: false,
  });
  if (without.some((l) => l.includes("destinations"))) throw new Error("table without data");
});

const ESC_RE = new RegExp(String.fromCharCode(27), "g");

Deno.test("frame: three services at 80x24 and 120x40, colour adds nothing but colour", async () => {
  for (const [columns, rows] of [[80, 24], [120, 40]] as const) {
    const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
    const now = feed(m, stbTraffic(0, 130));
    const f = m.frame(UNIX0 + now + 0.2, now + 0.2);
    const bare = renderFrame(f, { columns, rows, color: false, keys: true });
    const colored = renderFrame(f, { columns, rows, color: true, keys: true });
    plain(bare);
    fits(bare, columns, rows);
    fits(colored, columns, rows);
    assertEqualLines(colored.map((l) => l.replace(ANSI_SGR, "")), bare);
    if (!colored.join("").match(ESC_RE)) throw new Error("no colour");
    await snapshot(`frame_stb_${columns}x${rows}.txt`, bare);
    await snapshot(`frame_stb_color_${columns}x${rows}.txt`, colored);
    // The legend names every service by its glyph, and each glyph is in the chart.
    const legend = bare.find((l) => l.startsWith("↓ download")) ?? "";
    for (const item of ["● host-agent", "▲ server", "■ shell", "─ all"]) {
      if (!legend.includes(item)) throw new Error(`legend lacks ${item}: ${legend}`);
    }
    const chart = bare.slice(2, bare.findIndex((l) => l.startsWith("↑ upload"))).join("\n");
    for (const g of ["●", "▲", "■"]) if (!chart.includes(g)) throw new Error(`no ${g}:\n${chart}`);
    // Each service has its row (or two) in the table: now, peak, average, total, present.
    for (const name of ["host-agent", "server", "shell"]) {
      if (!bare.some((l) => l.includes(name) && l.includes("present"))) throw new Error(name);
    }
  }
});

function assertEqualLines(actual: string[], expected: string[]): void {
  actual.forEach((l, i) => {
    if (l !== expected[i]) throw new Error(`line ${i}:\n${l}\n${expected[i]}`);
  });
  if (actual.length !== expected.length) throw new Error("line counts differ");
}

Deno.test("frame: an absent service is not drawn and says so in the table", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, stbTraffic(60, 130, (i) => i > 100 ? ["server"] : []));
  const lines = renderFrame(m.frame(UNIX0 + now, now), { columns: 80, rows: 24, color: false });
  const row = lines.find((l) => l.startsWith("▲ server")) ?? "";
  if (!/▲ server +absent/.test(row)) throw new Error(row);
  await snapshot("frame_absent_80x24.txt", lines);
});

Deno.test("frame: bits, services hidden, paused: the keys line says what the keys do now", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, stbTraffic(0, 130));
  const f = m.frame(UNIX0 + now, now);
  const o = { columns: 80, rows: 24, color: false, keys: true };
  const normal = renderFrame(f, o);
  if (!normal.at(-1)!.endsWith("q quit · p pause · b bits · s hide services")) {
    throw new Error(normal.at(-1));
  }
  const bits = renderFrame(f, { ...o, bits: true });
  if (!bits.join("\n").includes("Mbit/s") || bits.join("\n").includes("MiB/s")) {
    throw new Error(bits.join("\n"));
  }
  if (!bits.at(-1)!.includes("b bytes")) throw new Error(bits.at(-1));
  const hidden = renderFrame(f, { ...o, services: false, paused: true });
  const chart = hidden.slice(2, hidden.findIndex((l) => l.startsWith("↑ upload"))).join("");
  if (/[●▲■]/.test(chart)) throw new Error(`service lines drawn while hidden:\n${chart}`);
  if (!hidden[1]!.includes("(services hidden)")) throw new Error(hidden[1]);
  if (!hidden.at(-1)!.includes("PAUSED · q quit · p resume")) throw new Error(hidden.at(-1));
  await snapshot(
    "frame_bits_hidden_paused_80x24.txt",
    renderFrame(f, { ...o, bits: true, services: false, paused: true }),
  );
});

Deno.test("frame: the window in seconds is the same whatever the width", () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, stbTraffic(0, 130));
  const f = m.frame(UNIX0 + now, now);
  for (const columns of [60, 80, 120, 200]) {
    const lines = renderFrame(f, { columns, rows: 30, color: false });
    const axis = lines.find((l) => l.trimEnd().endsWith("now")) ?? "";
    if (!axis.includes("-60 s") || !axis.includes("-30 s")) throw new Error(`${columns}: ${axis}`);
    if (lines.some((l) => l.includes("per column"))) throw new Error("per-column seconds shown");
  }
});

Deno.test("frame: today's totals go in the title when a history provides them", () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, stbTraffic(0, 10));
  if (
    renderFrame(m.frame(UNIX0 + now, now), { columns: 100, rows: 24, color: false })[0]!.includes(
      "today",
    )
  ) {
    throw new Error("today shown without a history");
  }
  m.today = {
    since: UNIX0 - 3600,
    rx: 5n * 1024n ** 3n,
    tx: 300n * 1024n * 1024n,
    recordedUntil: UNIX0,
  };
  const title = renderFrame(m.frame(UNIX0 + now, now), {
    columns: 140,
    rows: 24,
    color: false,
  })[0]!;
  // Labelled with the time they count from, and how far history goes (it lags a minute).
  const want =
    /^StB external traffic · today since \d\d:\d\d: ↓ 5\.00 GiB ↑ 300 MiB \(history to \d\d:\d\d\)/;
  if (!want.test(title)) throw new Error(title);
});

Deno.test("frame: a discontinuity is on the status line and never on the chart", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const all = stbTraffic(0, 104);
  const before = all.slice(0, 101);
  const jump = 10n ** 15n;
  const after = all.slice(101).map((c) => ({
    ...c,
    rx_bytes_total: c.rx_bytes_total + jump,
    services: {
      ...c.services,
      server: { ...c.services.server!, rx_bytes_total: c.services.server!.rx_bytes_total + jump },
    },
  }));
  const now = feed(m, [...before, ...after.slice(0, 1)]);
  const f = m.frame(UNIX0 + now, now);
  const lines = renderFrame(f, { columns: 80, rows: 24, color: false });
  if (f.status.kind !== "discontinuity") throw new Error(f.status.text);
  const top = lines[2] ?? "";
  if (/TiB|PiB/.test(top)) throw new Error(`the jump sets the scale: ${top}`);
  await snapshot("frame_discontinuity_80x24.txt", lines);
});

Deno.test("frame: a ts_unix in the future, and a file without one, say so on the status line", () => {
  for (const ts of [UNIX0 + 7200, 0]) {
    const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
    const now = feed(m, stbTraffic(0, 20).map((c) => ({ ...c, ts_unix: ts })));
    const lines = renderFrame(m.frame(UNIX0, now), { columns: 80, rows: 24, color: false });
    const status = lines.find((l) => l.startsWith("status:")) ?? "";
    const want = ts === 0 ? "no ts_unix" : "2.0 h in the future";
    if (!status.startsWith("status: clock:") || !status.includes(want)) throw new Error(status);
  }
});

Deno.test("frame: a destination's name goes before its address: run's, else the reader's", () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const named = withDestinations(traffic(0, 100)).map((c) => ({
    ...c,
    destinations: c.destinations!.map((d) =>
      d.address === "198.51.100.7" ? { ...d, name: "cdn.example.com" } : d
    ),
  }));
  const asked: string[] = [];
  m.nameOf = (address) => {
    asked.push(address);
    return address === "2001:db8::7" ? "v6.example.org" : undefined;
  };
  const now = feed(m, named);
  const lines = renderFrame(m.frame(UNIX0 + now + 0.2, now + 0.2), {
    columns: 100,
    rows: 30,
    color: false,
  });
  const at = lines.findIndex((l) => l.startsWith("top destinations"));
  const rows = lines.slice(at + 1);
  if (!rows[0]?.startsWith("↓ cdn.example.com 198.51.100.7:443 tcp · server")) {
    throw new Error(rows.join("\n"));
  }
  if (!rows[1]?.startsWith("↑ v6.example.org [2001:db8::7]:443 tcp · server")) {
    throw new Error(rows.join("\n"));
  }
  if (asked.includes("198.51.100.7")) throw new Error("run's name was looked up again");
});
