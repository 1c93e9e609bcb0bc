/**
 * A restarted service is counted from its first packets, not from the next sample: `run`
 * watches the service cgroups' directories and retargets the moment one is recreated.
 *
 * The interval here is 5 s and the traffic starts right after the restart and ends well
 * before the next sample, so a sampler that only looked at the cgroups once per interval
 * would count none of it.
 */

import { BACKEND_NAMES } from "../backends/mod.ts";
import {
  assert,
  assertBytesWithin,
  countedDelta,
  EXTERNAL_REMOTES,
  flowsTo,
  Lab,
  type LayoutName,
  measureFlows,
  type RunningCli,
  startRun,
} from "./harness/mod.ts";

const INTERVAL_S = 5;
const TOLERANCE = 0.02;
const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };

async function restartCountsAtOnce(backend: string, layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  const dir = await Deno.makeTempDir({ prefix: "stb-retarget-" });
  let cli: RunningCli | null = null;
  try {
    env.cgroups.create("server");
    const config = await env.writeRunConfig(`${dir}/config.json`, backend, {
      interval_s: INTERVAL_S,
    });
    cli = await startRun(env.layout, env.clientNetns, {
      backend,
      config,
      output: `${dir}/counters.json`,
      interval: INTERVAL_S,
    });
    const before = await cli.read();
    assert(before !== null, "no first sample");

    const restartedAt = performance.now();
    await env.cgroups.recreate("server");
    // Time for the watch's event to reach the loop (milliseconds), far from the next sample.
    await new Promise((r) => setTimeout(r, 300));
    const flows = EXTERNAL_REMOTES.flatMap((r) => flowsTo(r));
    const wire = (await measureFlows(env, "server", flows)).wire;
    const trafficS = (performance.now() - restartedAt) / 1000;
    assert(
      trafficS < INTERVAL_S - 0.5,
      `the traffic took ${trafficS.toFixed(1)} s, too close to the ${INTERVAL_S} s interval ` +
        "for this test to tell a prompt retarget from a sampled one",
    );
    const after = await cli.sampleAfter(before.ts_unix, INTERVAL_S * 3);
    assertBytesWithin(
      countedDelta(before, after, "server"),
      wire,
      TOLERANCE,
      "traffic right after the server's restart",
    );
    // One watch event sees rmdir and mkdir together ("recreated"), or two see them apart.
    assert(
      /service server: cgroup was recreated/.test(cli.stderr) ||
        /service server: cgroup is gone[^]*service server: cgroup appeared/.test(cli.stderr),
      `run did not log the restart; stderr:\n${cli.stderr}`,
    );
  } catch (e) {
    if (cli) console.error(`--- run --backend ${backend} stderr:\n${cli.stderr}\n---`);
    throw e;
  } finally {
    await cli?.stop("SIGTERM");
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const CASES: [string, LayoutName][] = [
  ...BACKEND_NAMES.map((b): [string, LayoutName] => [b, "hybrid"]),
  ["ebpf", "v2"],
];
for (const [backend, layout] of CASES) {
  Deno.test({
    name: `retarget ${backend} / ${layout}: a restarted service counts from its first packets`,
    ...TEST_OPTIONS,
    fn: () => restartCountsAtOnce(backend, layout),
  });
}
