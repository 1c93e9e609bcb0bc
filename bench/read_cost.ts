/**
 * Cost of one counter read per backend: wall ms per `Backend.read()` (median and p95) and
 * the CPU it burns, as CPU seconds per minute when `run` samples every 0.5 s. Root only:
 *
 *   deno run -A bench/read_cost.ts [OUT.json] [--reads N] [--min-ms T] [--services N] [--busy]
 *     [--variants nft,iptables,ebpf] [--exclude-count N]
 *
 * Each backend runs for real in a network namespace this script creates (a bench lab,
 * bench/lab.ts: netns pair, cgroup tree; removed in `finally`), measured by
 * bench/read_worker.ts there, with N services (3 by default, as in the user's config):
 *   nft            — libnftables via FFI (the default)
 *   nft-binary     — the nft binary (the fallback when libnftables does not load)
 *   iptables       — reads through libnftables (four `list chain` calls)
 *   iptables-save  — iptables-save + ip6tables-save (the fallback)
 *   ebpf           — per-CPU map lookups via libbpf (attaches at the cgroup2 root while
 *                    it runs; skipped with a note when this host cannot load it)
 * After 20 warm-up reads each does at least --reads reads (200) and keeps reading for at
 * least --min-ms (2000) so the CPU time, read from /proc/self/stat in 10 ms ticks (the
 * worker's own plus the tools it spawned and reaped), is well above the tick size. The CPU
 * per minute is that CPU per read times 120 reads. --busy keeps both cores busy with two
 * spinning processes meanwhile, as on a loaded desktop. --variants limits the variants measured;
 * --exclude-count N uses N exclusion prefixes (the 15 defaults plus non-overlapping generated
 * IPv4 /24s and IPv6 /48s, half each; bench/scale.ts uses it). Prints a table; with OUT.json,
 * writes {"read_cost": {...}} there.
 */

import { type BenchLab, pairLab, sh } from "./lab.ts";
import { DEFAULT_EXCLUDE } from "../lib/cidr.ts";

const TARGET_MS = 10;
const READS_PER_MINUTE = 120; // one read every 0.5 s
const VARIANTS = ["nft", "nft-binary", "iptables", "iptables-save", "ebpf"];

interface Row {
  backend: string;
  via: string | null;
  reads: number;
  ms_median: number | null;
  ms_p95: number | null;
  cpu_s_per_min: number | null;
  target_ms: number;
  meets_target: boolean | null;
  note?: string;
}

function usage(message: string): never {
  console.error(
    `${message}\nusage: deno run -A bench/read_cost.ts [OUT.json] [--reads N] [--min-ms T] ` +
      `[--services N] [--busy]`,
  );
  Deno.exit(2);
}

function parseArgs(args: string[]) {
  let out: string | null = null, reads = 200, minMs = 2000, services = 3, busy = false;
  let variants = VARIANTS, excludeCount: number = DEFAULT_EXCLUDE.length;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!; // i < args.length
    const num = () => {
      const v = Number(args[++i]);
      if (!Number.isInteger(v) || v < 1) usage(`"${a}" needs a positive integer, got "${args[i]}"`);
      return v;
    };
    if (a === "--reads") reads = num();
    else if (a === "--min-ms") minMs = num();
    else if (a === "--services") services = num();
    else if (a === "--busy") busy = true;
    else if (a === "--exclude-count") excludeCount = num();
    else if (a === "--variants") {
      variants = (args[++i] ?? "").split(",").filter((v) => v);
      const bad = variants.filter((v) => !VARIANTS.includes(v));
      if (variants.length === 0 || bad.length) usage(`--variants "${bad}": pick from ${VARIANTS}`);
    } else if (a.startsWith("-")) usage(`Unknown option "${a}"`);
    else if (out === null) out = a;
    else usage(`Unexpected argument "${a}"`);
  }
  return { out, reads, minMs, services, busy, variants, excludeCount };
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

/** The defaults plus generated prefixes no default covers: 11.0.0.0/24.. and 2001:db8:N::/48. */
export function generatedExclusions(count: number): string[] {
  const out = [...DEFAULT_EXCLUDE];
  for (let i = 0; out.length < count; i++) {
    if (i % 2 === 0) {
      const n = i / 2;
      out.push(`${11 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}.0/24`);
    } else out.push(`2001:db8:${((i - 1) / 2).toString(16)}::/48`);
  }
  return out.slice(0, count);
}

interface Measure {
  backend: string;
  services: Record<string, string>;
  reads: number;
  minMs: number;
  exclude: string[];
}

/** One backend's reads, by read_worker.ts in the lab's client netns. */
async function measure(lab: BenchLab, m: Measure): Promise<Row> {
  const request = {
    services: m.services,
    exclude: m.exclude,
    ctMark: 0x00510000,
    ctMask: 0x00ff0000,
    reads: m.reads,
    minMs: m.minMs,
  };
  const out = await sh(
    "nsenter",
    `--net=/run/netns/${lab.clientNetns}`,
    Deno.execPath(),
    "run",
    "-A",
    WORKER,
    m.backend,
    JSON.stringify(request),
  );
  const r = JSON.parse(out.trim().split("\n").at(-1) ?? "{}");
  if (!r.ok && r.started) throw new Error(`${m.backend}: ${r.error}`);
  if (!r.ok) {
    return {
      backend: m.backend,
      via: null,
      reads: 0,
      ms_median: null,
      ms_p95: null,
      cpu_s_per_min: null,
      target_ms: TARGET_MS,
      meets_target: null,
      note: `not measured: ${r.error}`,
    };
  }
  const ms = r.ms as number[];
  const sorted = [...ms].sort((a, b) => a - b);
  return {
    backend: m.backend,
    via: r.via,
    reads: ms.length,
    ms_median: round(quantile(sorted, 0.5), 3),
    ms_p95: round(quantile(sorted, 0.95), 3),
    cpu_s_per_min: round((r.cpuSeconds / ms.length) * READS_PER_MINUTE, 4),
    target_ms: TARGET_MS,
    meets_target: quantile(sorted, 0.95) <= TARGET_MS,
  };
}

const WORKER = new URL("./read_worker.ts", import.meta.url).pathname;

const round = (x: number, digits: number) => Number(x.toFixed(digits));

/** Two spinning processes (one per core on this 2-core VM), killed by their own pids. */
function startLoad(): Deno.ChildProcess[] {
  return Array.from({ length: navigator.hardwareConcurrency }, () =>
    new Deno.Command("sh", {
      args: ["-c", "while :; do :; done"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn());
}

async function main(): Promise<void> {
  const { out, reads, minMs, services: count, busy, variants, excludeCount } = parseArgs(
    Deno.args,
  );
  if (Deno.uid() !== 0) {
    console.error("read_cost needs root (it creates network namespaces and firewall rules)");
    Deno.exit(1);
  }
  const lab = await pairLab();
  const load: Deno.ChildProcess[] = [];
  const rows: Row[] = [];
  try {
    const slice = `/stb-netacct-read-${lab.tag}/app-stb\\x2dnext.slice`;
    await lab.lab.cgroup(slice.slice(0, slice.lastIndexOf("/")));
    await lab.lab.cgroup(slice);
    const services: Record<string, string> = {};
    for (let i = 0; i < count; i++) {
      services[`svc${i}`] = `${slice}/svc${i}.service`;
      await lab.lab.cgroup(`${slice}/svc${i}.service`);
    }
    if (busy) load.push(...startLoad());
    const exclude = generatedExclusions(excludeCount);
    for (const backend of variants) {
      rows.push(await measure(lab, { backend, services, reads, minMs, exclude }));
    }
  } finally {
    for (const p of load) {
      try {
        p.kill("SIGKILL");
      } catch { /* exited */ }
      await p.status;
    }
    await lab.lab.close();
  }

  const cell = (v: number | null, d: number) => v === null ? "-" : v.toFixed(d);
  console.log(
    `One counter read per backend (${count} services, ${busy ? "both cores busy" : "idle"}; ` +
      `target: a read <= ${TARGET_MS} ms)`,
  );
  console.log(
    "backend        via              reads   ms median   ms p95   CPU s/min at 0.5 s   target",
  );
  for (const r of rows) {
    console.log(
      [
        r.backend.padEnd(14),
        (r.via ?? "-").padEnd(16),
        String(r.reads).padStart(5),
        cell(r.ms_median, 3).padStart(11),
        cell(r.ms_p95, 3).padStart(8),
        cell(r.cpu_s_per_min, 3).padStart(20),
        (r.meets_target === null ? "-" : r.meets_target ? "ok" : "MISSED").padStart(8),
      ].join(" ") + (r.note ? `  ${r.note}` : ""),
    );
  }
  if (out) {
    const result = {
      read_cost: {
        interval_s: 0.5,
        services: count,
        exclusions: excludeCount,
        load: busy ? "busy" : "idle",
        kernel: Deno.osRelease(),
        cpus: navigator.hardwareConcurrency,
        rows,
      },
    };
    await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
    console.log(`written to ${out}`);
  }
}

if (import.meta.main) await main();
