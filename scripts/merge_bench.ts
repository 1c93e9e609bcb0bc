/**
 * Merges benchmark JSON fragments (each an object of top-level sections) into one results
 * file, stamped with when and on what machine they ran, so figures are never read without
 * their context.
 *   usage: deno run -A scripts/merge_bench.ts OUT.json FRAGMENT.json...
 */

const [out, ...fragments] = Deno.args;
if (!out || fragments.length === 0) {
  console.error("usage: merge_bench.ts OUT.json FRAGMENT.json...");
  Deno.exit(2);
}
const cpuModel = Deno.readTextFileSync("/proc/cpuinfo").match(/^model name\s*:\s*(.*)$/m)?.[1];
const merged: Record<string, unknown> = {
  generated_at: new Date().toISOString(),
  machine: {
    kernel: Deno.osRelease(),
    cpus: navigator.hardwareConcurrency,
    cpu_model: cpuModel ?? "unknown",
    memory_gib: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
  },
};
for (const f of fragments) Object.assign(merged, JSON.parse(Deno.readTextFileSync(f)));
Deno.writeTextFileSync(out, JSON.stringify(merged, null, 2) + "\n");
