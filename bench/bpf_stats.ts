/**
 * How often the kernel ran a BPF program: run_cnt from `bpftool prog show`, counted while
 * BPF_ENABLE_STATS (bpf/libbpf.ts enableRunStats) holds the kernel's statistics on. The
 * benches' mirror of tests/harness/bpf_stats.ts (the benches import nothing from tests/).
 */

import { sh } from "./lab.ts";

/** run_cnt of each program id in `ids` (0 for one bpftool does not list). */
export async function bpfRunCounts(ids: readonly number[]): Promise<Map<number, number>> {
  const all = JSON.parse(await sh("bpftool", "-j", "prog", "show")) as {
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

/** The kernel's name of each program id in `ids` (as bpftool shows it, 15 characters at most). */
export async function programNames(ids: readonly number[]): Promise<Map<number, string>> {
  const all = JSON.parse(await sh("bpftool", "-j", "prog", "show")) as {
    id: number;
    name?: string;
  }[];
  return new Map(all.filter((p) => ids.includes(p.id)).map((p) => [p.id, p.name ?? "?"]));
}
