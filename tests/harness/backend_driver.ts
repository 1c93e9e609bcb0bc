/**
 * Drives one backend from inside the lab's client network namespace for the backend tests
 * (nft tables and iptables chains are per netns, so the backend must run there). Spawned by
 * `Lab.startDriver` as `<layout prefix> deno run -A backend_driver.ts BACKEND`. BACKEND:
 * nft, iptables, or the variants nft-binary (nft binary instead of libnftables) and
 * iptables-save (reads through iptables-save instead of libnftables).
 *
 * One JSON request per stdin line, one JSON reply per stdout line:
 *   {"op":"start","services":{"name":"/cgroup/path"},"exclude":["10.0.0.0/8"],"ctMark":N,"ctMask":N}
 *   {"op":"retarget"}   re-reads every service's cgroup id and calls retarget
 *   {"op":"read"}       -> {"ok":true,"result":{"name":{"rxBytes":..}}}
 *   {"op":"probe", ...same fields as start}   Backend.probe
 *   {"op":"bench","n":N} -> {"ok":true,"result":{"msPerRead":..}}
 *   {"op":"kernel"}     -> Backend.kernelState, or null
 *   {"op":"stop","keep":true}   Backend.stop; `keep` leaves kernel state that outlives runs
 * start and probe also take "excludeInterfaces":["name"] and "internalOnlink":true.
 * Errors come back as {"ok":false,"error":"..."}; log lines go to stderr.
 */

import { stringifyExact } from "../../lib/exact_json.ts";
import type { Backend, ServiceTarget } from "../../backends/mod.ts";
import { cgroupId, findCgroup2Mount } from "../../lib/cgroup.ts";
import { parseCidr } from "../../lib/cidr.ts";

const which = Deno.args[0] ?? "";
const BACKENDS: Record<string, () => Promise<Backend>> = {
  nft: async () => new (await import("../../backends/nft.ts")).NftBackend(),
  "nft-binary": async () =>
    new (await import("../../backends/nft.ts")).NftBackend({ via: "binary" }),
  iptables: async () => new (await import("../../backends/iptables.ts")).IptablesBackend(),
  "iptables-save": async () =>
    new (await import("../../backends/iptables.ts")).IptablesBackend({ read: "save" }),
};
const make = BACKENDS[which];
if (!make) throw new Error(`unknown backend ${JSON.stringify(which)}`);
const backend = await make();
const mount = findCgroup2Mount();
let services: Record<string, string> = {};

const targets = (): ServiceTarget[] =>
  Object.entries(services).map(([name, path]) => ({ name, path, id: cgroupId(mount, path) }));

const options = (req: Record<string, unknown>) => ({
  mount,
  exclude: (req.exclude as string[]).map(parseCidr),
  ctMark: req.ctMark as number,
  ctMask: req.ctMask as number,
  excludeInterfaces: (req.excludeInterfaces as string[] | undefined) ?? [],
  internalOnlink: req.internalOnlink === true,
  log: (m: string) => console.error(`[${which}] ${m}`),
});

async function handle(req: Record<string, unknown>): Promise<unknown> {
  switch (req.op) {
    case "start":
      services = req.services as Record<string, string>;
      await backend.start(targets(), options(req));
      return null;
    case "probe":
      services = req.services as Record<string, string>;
      await backend.probe(targets(), options(req));
      return null;
    case "retarget":
      await backend.retarget(targets());
      return null;
    case "read":
      return await backend.read();
    case "bench": {
      const n = req.n as number;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await backend.read();
      return { msPerRead: (performance.now() - t0) / n };
    }
    case "kernel":
      return backend.kernelState?.() ?? null;
    case "stop":
      await backend.stop({ keep: req.keep === true });
      return null;
    default:
      throw new Error(`unknown op ${JSON.stringify(req.op)}`);
  }
}

const decoder = new TextDecoder();
let buffered = "";
for await (const chunk of Deno.stdin.readable) {
  buffered += decoder.decode(chunk, { stream: true });
  let nl;
  while ((nl = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    let reply;
    try {
      reply = { ok: true, result: await handle(JSON.parse(line)) };
    } catch (e) {
      reply = { ok: false, error: e instanceof Error ? e.message : String(e) };
    }
    console.log(stringifyExact(reply));
  }
}
