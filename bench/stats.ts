/** Figures the benchmarks take: medians, and CPU time of a process or of the machine. */

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/**
 * CPU seconds of `pid`: its threads' run time in ns from /proc/<pid>/task/<tid>/schedstat
 * (utime+stime come in 10 ms ticks, too coarse for a sampler using ~1 ms a second over a
 * few seconds' run), plus reaped children's cutime+cstime from /proc/<pid>/stat.
 */
export function processCpuSeconds(pid: number): number {
  let ns = 0;
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/schedstat`).split(" ")[0]);
    } catch { /* the thread just ended */ }
  }
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // proc(5) fields 16-17 are f[13..14] (f[0] is field 3).
  return ns / 1e9 + (Number(f[13]) + Number(f[14])) / USER_HZ;
}

/** Busy CPU seconds of the whole machine, all cores (everything but idle and iowait). */
export function systemBusySeconds(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0] ?? "";
  const [user = 0, nice = 0, system = 0, _idle, _iowait, irq = 0, softirq = 0, steal = 0] = line
    .trim().split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) / USER_HZ;
}

/** Linux reports /proc times in USER_HZ, 100 on every architecture that matters here. */
const USER_HZ = 100;

/**
 * A percentile bootstrap interval of the median of `xs`: `resamples` draws with replacement
 * (a fixed-seed generator, so the same figures give the same interval), the `level` share
 * of their medians in the middle. With few values it is wide, as it should be: it says how
 * far the median could move if the rounds were run again under the same noise.
 */
export function bootstrapMedianInterval(
  xs: number[],
  level = 0.95,
  resamples = 4000,
): { low: number; high: number } {
  if (xs.length === 0) return { low: NaN, high: NaN };
  let seed = 0x9e3779b9;
  const next = () => {
    // xorshift32: deterministic, good enough to pick indexes.
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const medians: number[] = [];
  for (let r = 0; r < resamples; r++) {
    medians.push(median(xs.map(() => xs[Math.floor(next() * xs.length)]!)));
  }
  medians.sort((a, b) => a - b);
  const tail = (1 - level) / 2;
  return {
    low: medians[Math.floor(tail * (resamples - 1))]!,
    high: medians[Math.ceil((1 - tail) * (resamples - 1))]!,
  };
}
