/**
 * 10,000 generated bad (and some good) counters files through the real reader, the model
 * and both renderers: none may throw, hang, draw outside the terminal, or lose the last
 * good totals. Seeded, so a failure names a case that can be replayed (FUZZ_SEED, FUZZ_N).
 */

import { stringifyExact } from "../lib/exact_json.ts";
import { GraphModel } from "./model.ts";
import { CountersFileReader } from "../lib/contract.ts";
import { renderFrame, renderPlainLine } from "./render.ts";

const N = Number(Deno.env.get("FUZZ_N") ?? 10_000);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20260501);

/** mulberry32: small, seedable, good enough to pick mutations. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VALUES = [
  "-1",
  "NaN",
  "Infinity",
  "1e999",
  "-0",
  "0.5",
  "9007199254740993",
  "null",
  "true",
  '"12"',
  "[]",
  "{}",
  '"\\u0000"',
  "1e-400",
  "[1,[2,[3]]]",
  '{"a":{"b":{}}}',
  "0x10",
  "١٢",
  '""',
];
const TOKENS = ["{", "}", "[", "]", ",", ":", '"', "\\", "\u0000", "\uFFFD", "\n", " ", "-", "e"];
const FIELDS = [
  "schema",
  "backend",
  "rx_bytes_total",
  "tx_bytes_total",
  "ts_monotonic",
  "ts_unix",
  "interval_s",
  "services",
  "boot_id",
  "started_at",
];

function good(i: number): Record<string, unknown> {
  return {
    schema: 1,
    backend: "ebpf",
    boot_id: "fuzz",
    started_at: 1,
    rx_bytes_total: 1000 * i,
    tx_bytes_total: 100 * i,
    rx_packets_total: i,
    tx_packets_total: i,
    ts_monotonic: 50 + i * 0.5,
    ts_unix: Date.now() / 1000,
    interval_s: 0.5,
    services: { server: { rx_bytes_total: 1, tx_bytes_total: 2, cgroup: "/x", present: true } },
  };
}

function mutate(r: () => number, i: number): string | Uint8Array {
  const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)]!; // non-empty lists below
  const base = JSON.stringify(good(i));
  switch (Math.floor(r() * 9)) {
    case 0: // truncated anywhere
      return base.slice(0, Math.floor(r() * base.length));
    case 1: { // a field's value replaced
      const o = good(i) as Record<string, unknown>;
      const f = pick(FIELDS);
      return JSON.stringify(o).replace(
        new RegExp(`"${f}":(\\{[^}]*\\}\\}|"[^"]*"|[^,}]*)`),
        `"${f}":${pick(VALUES)}`,
      );
    }
    case 2: { // random tokens spliced in
      let s = base;
      for (let k = 0, n = 1 + Math.floor(r() * 5); k < n; k++) {
        const at = Math.floor(r() * s.length);
        s = s.slice(0, at) + pick(TOKENS) + s.slice(at);
      }
      return s;
    }
    case 3: { // random bytes, sometimes not UTF-8
      const b = new Uint8Array(Math.floor(r() * 300));
      for (let k = 0; k < b.length; k++) b[k] = Math.floor(r() * 256);
      return b;
    }
    case 4: { // deep nesting, as a value or as the whole document
      const d = 1 + Math.floor(r() * 50_000);
      const nest = "[".repeat(d) + "]".repeat(d);
      return r() < 0.5 ? nest : base.replace(/"services":/, `"services":${nest},"x":`);
    }
    case 5: // a field deleted
      return base.replace(new RegExp(`"${pick(FIELDS)}":`), '"deleted":');
    case 6: // empty or whitespace
      return r() < 0.5 ? "" : " \n\t ".repeat(Math.floor(r() * 10));
    case 7: // other JSON documents
      return pick(["null", "1", '"counters"', "[]", "true", "{}", '{"schema":1}']);
    default: // a valid sample, to interleave with the bad ones
      return base;
  }
}

Deno.test(`fuzz: ${N} generated counters files never break the graph`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-graph-fuzz-" });
  const r = rng(SEED);
  const model = new GraphModel({
    path: `${dir}/counters.json`,
    interval: 0.5,
    window: 60,
    host: false,
  });
  const seen: Record<string, number> = {};
  let lastGood: { rx: bigint; tx: bigint } | null = null;
  try {
    for (let i = 0; i < N; i++) {
      const content = mutate(r, i);
      const p = `${dir}/counters.json`;
      if (typeof content === "string") await Deno.writeTextFile(`${p}.tmp`, content);
      else await Deno.writeFile(`${p}.tmp`, content);
      await Deno.rename(`${p}.tmp`, p);
      const what = `case ${i} (FUZZ_SEED=${SEED}): ${
        JSON.stringify(
          typeof content === "string" ? content.slice(0, 200) : [...content.slice(0, 40)],
        )
      }`;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const read = await Promise.race([
        new CountersFileReader(p).read(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`read hung: ${what}`)), 3000);
        }),
      ]).finally(() => clearTimeout(timer));
      seen[read.kind] = (seen[read.kind] ?? 0) + 1;
      if (read.kind === "ok") {
        lastGood = { rx: read.counters.rx_bytes_total, tx: read.counters.tx_bytes_total };
      } else if (!read.reason) {
        throw new Error(`no reason given: ${what}`);
      }
      model.update(read, i * 0.5);
      const frame = model.frame(Date.now() / 1000, i * 0.5);
      if (stringifyExact(frame.totals) !== stringifyExact(lastGood)) {
        throw new Error(`last good totals lost: ${what}`);
      }
      const cols = 40 + (i % 100);
      const lines = renderFrame(frame, { columns: cols, rows: 10 + (i % 30), color: false });
      for (const l of lines) {
        if ([...l].length > cols) throw new Error(`line wider than ${cols}: ${l}\n${what}`);
      }
      // Numbers this program formats (the status may quote the file's own text).
      const all = lines.findIndex((l) => l.startsWith("─ all"));
      const ours = [
        // The total's row, and its ↑ row when the table has two per entry.
        ...(all < 0 ? [] : lines.slice(all, all + 2).filter((l, i) => i === 0 || /^ +↑/.test(l))),
        renderPlainLine(frame).split(" | ")[0] ?? "",
      ];
      for (const l of ours) {
        if (/NaN|undefined|Infinity|\?/.test(l)) throw new Error(`"${l}"\n${what}`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  console.log(`${N} cases: ${JSON.stringify(seen)}`);
  if (!seen.ok || !seen.malformed) {
    throw new Error(`fuzz did not cover both: ${JSON.stringify(seen)}`);
  }
});
