/**
 * What naming destinations costs `run` per DNS answer: parseDnsAnswer alone, and the
 * whole path an answer takes in the sampler (its query remembered, the answer parsed and
 * matched, its addresses put in the name cache), on answers captured from the lab's DNS
 * server (names/testdata/), and an answer no query waits for (dropped after its
 * question). Measured in a process with `run`'s own V8 flags
 * (scripts/deno_flags.txt: an interpreter, no optimizing compiler), as `run` pays it.
 *
 *   deno run -A bench/dns_parse.ts [OUT.json] [--answers N]
 *
 * Writes {"dns_parse": {...}} to OUT.json when given. Needs no root.
 */

import { encodeDnsQuery, parseDnsAnswer } from "../names/dns.ts";
import { NameTracker } from "../names/tracker.ts";

const args = [...Deno.args];
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  return v;
};
const answers = flag("--answers", 200_000);
const inner = args.includes("--inner");
const out = args.find((a) => !a.startsWith("--")) ?? null;

const CASES = [
  ["A", "a_record", "a.stb.test", 1],
  ["AAAA", "aaaa_record", "a.stb.test", 28],
  ["CNAME chain (2 hops) + A", "cname_chain", "www.stb.test", 1],
] as const;

const ROUNDS = 7;
/** Median milliseconds of `rounds` runs of `fn`. */
function median(rounds: number, fn: () => void): number {
  const ms: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return ms.sort((a, b) => a - b)[Math.floor(rounds / 2)]!;
}

function measure(): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  for (const [what, file, name, type] of CASES) {
    const bytes = Deno.readFileSync(new URL(`../names/testdata/${file}.bin`, import.meta.url));
    const id = new DataView(bytes.buffer, bytes.byteOffset).getUint16(0);
    const query = encodeDnsQuery(id, name, type);
    // Warm-up, then ROUNDS timed loops each; the median round (GC lands in some).
    for (let i = 0; i < 2000; i++) parseDnsAnswer(bytes);
    const n = Math.ceil(answers / ROUNDS);
    const parseUs = median(ROUNDS, () => {
      for (let i = 0; i < n; i++) parseDnsAnswer(bytes);
    }) * 1000 / n;
    const tracker = new NameTracker(() => 0);
    const pathUs = median(ROUNDS, () => {
      for (let i = 0; i < n; i++) {
        tracker.query(query, true);
        tracker.answer(bytes, true);
      }
    }) * 1000 / n;
    if (tracker.stats.answers_used_total !== n * ROUNDS) throw new Error(`${what}: not all used`);
    // The same answer with no query waiting: dropped after its question, records unread.
    const unasked = new NameTracker(() => 0);
    const unaskedUs = median(ROUNDS, () => {
      for (let i = 0; i < n; i++) unasked.answer(bytes, true);
    }) * 1000 / n;
    if (unasked.stats.answers_used_total !== 0) throw new Error(`${what}: unasked used`);
    rows.push({
      answer: what,
      bytes: bytes.length,
      parse_us: parseUs,
      query_answer_cache_us: pathUs,
      unasked_us: unaskedUs,
    });
  }
  return rows;
}

if (inner) {
  console.log(JSON.stringify(measure()));
} else {
  const text = Deno.readTextFileSync(new URL("../scripts/deno_flags.txt", import.meta.url));
  const v8 = text.split("\n").filter((l) => l.startsWith("--v8-flags="));
  const o = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...v8,
      new URL(import.meta.url).pathname,
      "--inner",
      "--answers",
      String(answers),
    ],
    stderr: "inherit",
  }).output();
  if (!o.success) throw new Error("dns_parse: the measuring process failed");
  const rows = JSON.parse(new TextDecoder().decode(o.stdout)) as Record<string, number | string>[];
  console.log(`DNS answers, ${answers} each, with run's V8 flags (${v8.join(" ")}):`);
  for (const r of rows) {
    console.log(
      `  ${String(r.answer).padEnd(26)} ${String(r.bytes).padStart(4)} B  parse ` +
        `${Number(r.parse_us).toFixed(2)} µs  query+answer+cache ` +
        `${Number(r.query_answer_cache_us).toFixed(2)} µs  unasked ${
          Number(r.unasked_us).toFixed(2)
        } µs`,
    );
  }
  if (out) {
    await Deno.writeTextFile(
      out,
      JSON.stringify({ dns_parse: { answers_per_case: answers, v8_flags: v8, rows } }, null, 2),
    );
  }
}
