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

Deno.test("frame: one sample shows totals and 'collecting'", async () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 0));
  const lines = renderFrame(m.frame(UNIX0 + now, now), { columns: 80, rows: 20, color: false });
  if (!lines[2]?.includes("collecting")) throw new Error(lines[2]);
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
  if (!lines[2]?.includes("GiB")) throw new Error("totals lost");
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

Deno.test("frame: today's totals from history under the running totals, with when they count from", () => {
  const m = new GraphModel({ path: PATH, interval: 0.5, window: 60 });
  const now = feed(m, traffic(0, 10));
  const today = {
    since: UNIX0 - 3600,
    rx: 5n * BigInt(MiB),
    tx: BigInt(MiB),
    recordedUntil: UNIX0,
  };
  const lines = renderFrame({ ...m.frame(UNIX0 + 5, now), today }, {
    columns: 100,
    rows: 30,
    color: false,
  });
  const i = lines.findIndex((l) => l.includes("today since"));
  if (i !== 4) {
    throw new Error(`today's line is line ${i}, not right under RX/TX:\n${lines.join("\n")}`);
  }
  if (
    !/^ {6}today since \d\d:\d\d: ↓ 5\.00 MiB ↑ 1\.00 MiB \(history to \d\d:\d\d\)$/.test(lines[i]!)
  ) {
    throw new Error(`today's line: ${lines[i]}`);
  }
  const without = renderFrame(m.frame(UNIX0 + 5, now), { columns: 100, rows: 30, color: false });
  if (without.some((l) => l.includes("today"))) throw new Error("a today line without history");
});
