/**
 * Merges benchmark JSON fragments (each an object of top-level sections) into one results
 * file, stamped with when and on what machine they ran, so figures are never read without
 * their context; then prints every target with PASS or MISS (bench/summary.ts) and stores
 * that verdict list in the file too.
 *   usage: deno run -A scripts/merge_bench.ts OUT.json FRAGMENT.json...
 */

import { printSummary, summarize } from "../bench/summary.ts";

const [out, ...fragments] = Deno.args;
if (!out || fragments.length === 0) {
  console.error("usage: merge_bench.ts OUT.json FRAGMENT.json...");
  Deno.exit(2);
}
const cpuModel = Deno.readTextFileSync("/proc/cpuinfo").match(/^model name\s*:\s*(.*)$/m)?.[1];
const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).map(Number);
const merged: Record<string, unknown> = {
  generated_at: new Date().toISOString(),
  command: Deno.env.get("BENCH_COMMAND") ?? "sudo make bench",
  quick: Deno.env.get("BENCH_QUICK") === "1",
  machine: {
    kernel: Deno.osRelease(),
    cpus: navigator.hardwareConcurrency,
    cpu_model: cpuModel ?? "unknown",
    memory_gib: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    load_average_at_merge: load,
  },
};
for (const f of fragments) Object.assign(merged, JSON.parse(Deno.readTextFileSync(f)));
const rows = summarize(merged);
merged.targets = rows;
Deno.writeTextFileSync(out, JSON.stringify(merged, null, 2) + "\n");
console.log("== targets ==");
printSummary(rows);
