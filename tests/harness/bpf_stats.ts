/**
 * How often the kernel ran a BPF program: run_cnt from `bpftool prog show`, counted while
 * `enableRunStats` (BPF_ENABLE_STATS, bpf/libbpf.ts) holds the kernel's statistics on. A
 * program's runs are what a packet or a connect of any cgroup costs the host, so "no run"
 * is the proof that it costs nothing.
 */

import { output } from "./exec.ts";

/** run_cnt of each program id in `ids` (0 for one bpftool does not list). */
export async function bpfRunCounts(ids: readonly number[]): Promise<Map<number, number>> {
  const all = JSON.parse(await output(["bpftool", "-j", "prog", "show"])) as {
    id: number;
    run_cnt?: number;
  }[];
  const counts = new Map<number, number>(ids.map((id) => [id, 0]));
  for (const p of all) if (counts.has(p.id)) counts.set(p.id, p.run_cnt ?? 0);
  return counts;
}

/** The programs whose run count moved between two readings, as "id: before -> after". */
export function movedRuns(before: Map<number, number>, after: Map<number, number>): string[] {
  return [...before].filter(([id, n]) => after.get(id) !== n)
    .map(([id, n]) => `${id}: ${n} -> ${after.get(id)}`);
}
