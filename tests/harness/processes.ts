/**
 * Processes the way a systemd service has them: a parent that joins the service cgroup and
 * forks a child, which forks the grandchild that does the work (traffic). The parent joins
 * by writing its own pid to `cgroup.procs` before anything forks, so the whole chain lives
 * in the cgroup; everything runs in the client netns through the layout's prefix.
 *
 * The "; exit $?" after each command keeps sh from exec'ing it in place (dash does that for
 * a lone last command), so the chain really is three processes deep.
 */

import { DENO, endProcess, run, type RunResult } from "./exec.ts";
import type { Layout } from "./layouts.ts";
import type { FlowResult } from "./traffic.ts";

const PARENT_SCRIPT = `if [ -n "$1" ]; then echo $$ > "$1" || exit 97; fi; shift
sh -c '"$@"; exit $?' stb-child "$@"; exit $?`;

const HARNESS_DIR = new URL(".", import.meta.url).pathname;
export const TRAFFIC_TS = `${HARNESS_DIR}traffic.ts`;
export const PEER_TS = `${HARNESS_DIR}peer.ts`;

/** `deno run` for the harness's own tools: no config lookup, only the network. */
export function denoTool(script: string, args: string[]): string[] {
  return [
    DENO,
    "run",
    "--no-config",
    "--no-prompt",
    "--allow-net",
    "--unstable-net",
    script,
    ...args,
  ];
}

/**
 * Runs `argv` as the grandchild of a parent → child chain. `cgroupDirInView` is the service
 * cgroup as the layout shows it, or null for an outsider that stays where the test runs.
 */
export function runChain(
  layout: Layout,
  netnsPath: string,
  cgroupDirInView: string | null,
  argv: string[],
): Promise<RunResult> {
  const procs = cgroupDirInView === null ? "" : `${cgroupDirInView}/cgroup.procs`;
  return run([...layout.wrap(netnsPath), "sh", "-c", PARENT_SCRIPT, "stb-parent", procs, ...argv]);
}

/** Runs traffic flows (see traffic.ts) from a chain and returns what the tool reported. */
export async function runTraffic(
  layout: Layout,
  netnsPath: string,
  cgroupDirInView: string | null,
  flows: string[],
): Promise<FlowResult[]> {
  const r = await runChain(layout, netnsPath, cgroupDirInView, denoTool(TRAFFIC_TS, flows));
  return r.stdout.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as FlowResult);
}

/** Payload totals over flows: what the test itself sent and received. */
export function payloadTotals(results: FlowResult[]): { sent: number; received: number } {
  return results.reduce(
    (t, r) => ({ sent: t.sent + r.sent, received: t.received + r.received }),
    { sent: 0, received: 0 },
  );
}

export interface Peer {
  stop(): Promise<void>;
}

export const TCP_PORT = 5201;
export const UDP_PORT = 5202;

/** Starts peer.ts in a netns (outside every test cgroup) and waits until it listens. */
export async function startPeer(netnsPath: string, scope?: string): Promise<Peer> {
  const args = ["--tcp-port", String(TCP_PORT), "--udp-port", String(UDP_PORT)];
  if (scope) args.push("--scope", scope);
  const child = new Deno.Command("nsenter", {
    args: [`--net=${netnsPath}`, "--", ...denoTool(PEER_TS, args)],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stop = async () => {
    await endProcess(child, 2000);
  };
  const first = await reader.read();
  if (!first.value?.includes('"ready"')) {
    await stop();
    throw new Error(`peer in ${netnsPath} did not start`);
  }
  // Keep draining stdout so the peer never blocks on a full pipe.
  (async () => {
    try {
      while (!(await reader.read()).done) { /* discard */ }
    } catch { /* closed */ }
  })();
  return { stop };
}
