/**
 * One backend's read cost, measured from inside a network namespace for bench/read_cost.ts
 * (nft tables and iptables chains are per netns, so the backend must run there):
 *
 *   nsenter --net=/run/netns/NS deno run -A read_worker.ts BACKEND REQUEST_JSON
 *   REQUEST_JSON = {"services":{"name":"/cgroup/path"},"exclude":[..],"ctMark":N,"ctMask":N,
 *                   "reads":N,"minMs":T}
 *
 * nsenter keeps the mount namespace, so the cgroup2 mount stays visible. BACKEND: nft,
 * iptables, the variants nft-binary (the nft binary instead of libnftables) and
 * iptables-save (reads through iptables-save instead of libnftables), or ebpf (attached at
 * the cgroup2 root while it runs). Starts the backend, reads 20 times to warm up, then at
 * least `reads` times and for at least `minMs`, stops it, and prints one JSON line:
 * {"ok":true,"via":..,"ms":[per-read wall ms],"cpuSeconds":..} (this process's CPU, its
 * own plus its exited children's, i.e. spawned tools), or {"ok":false,"started":..,"error":..}.
 */

import type { Backend } from "../backends/mod.ts";
import { cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { parseCidr } from "../lib/cidr.ts";

const BACKENDS: Record<string, () => Promise<Backend>> = {
  nft: async () => new (await import("../backends/nft.ts")).NftBackend(),
  "nft-binary": async () => new (await import("../backends/nft.ts")).NftBackend({ via: "binary" }),
  iptables: async () => new (await import("../backends/iptables.ts")).IptablesBackend(),
  "iptables-save": async () =>
    new (await import("../backends/iptables.ts")).IptablesBackend({ read: "save" }),
  ebpf: async () => new (await import("../backends/ebpf.ts")).EbpfBackend(),
};

interface Request {
  services: Record<string, string>;
  exclude: string[];
  ctMark: number;
  ctMask: number;
  reads: number;
  minMs: number;
}

/** utime+stime+cutime+cstime of this process from /proc/self/stat, in seconds. */
function cpuSeconds(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  // Fields after the parenthesised command name; utime is field 14 overall.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i]), 0);
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** At least `n` reads and `minMs` of them: per-read wall times and the CPU they took. */
async function cost(backend: Backend, n: number, minMs: number) {
  const ms: number[] = [];
  const cpu0 = cpuSeconds(), t0 = performance.now();
  while (ms.length < n || performance.now() - t0 < minMs) {
    const t = performance.now();
    await backend.read();
    ms.push(performance.now() - t);
  }
  return { ms, cpuSeconds: cpuSeconds() - cpu0 };
}

async function main(): Promise<void> {
  const which = Deno.args[0] ?? "";
  const req = JSON.parse(Deno.args[1] ?? "{}") as Request;
  const make = BACKENDS[which];
  if (!make) throw new Error(`unknown backend ${JSON.stringify(which)}`);
  const backend = await make();
  const mount = findCgroup2Mount();
  const targets = Object.entries(req.services).map(([name, path]) => ({
    name,
    path,
    id: cgroupId(mount, path),
  }));
  try {
    await backend.start(targets, {
      mount,
      exclude: req.exclude.map(parseCidr),
      ctMark: req.ctMark,
      ctMask: req.ctMask,
      log: (m: string) => console.error(`[${which}] ${m}`),
    });
  } catch (e) {
    await backend.stop().catch(() => {});
    console.log(JSON.stringify({ ok: false, started: false, error: (e as Error).message }));
    return;
  }
  try {
    const b = backend as { via?: string | null; readVia?: string | null };
    const via = b.via ?? b.readVia ?? (which === "ebpf" ? "libbpf" : null);
    await cost(backend, 20, 0);
    const { ms, cpuSeconds } = await cost(backend, req.reads, req.minMs);
    console.log(JSON.stringify({ ok: true, via, ms, cpuSeconds }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, started: true, error: (e as Error).message }));
  } finally {
    await backend.stop();
  }
}

await main();
