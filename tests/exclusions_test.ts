/**
 * The boundary beyond addresses, end to end with the real CLI on the real kernel, every
 * backend on both cgroup layouts:
 *
 * - `exclude_interfaces`: traffic from a service over an interface named `tailscale0` to a
 *   public documentation address counts not at all while the name is excluded, and counts
 *   once the interface is renamed (and not again when it gets its name back). The
 *   interface is created after `run` started, so a late interface is honoured too.
 * - `internal_onlink`: a global IPv6 peer on a connected prefix is external with the
 *   option off and internal with it on; a prefix reached through a gateway counts until
 *   its on-link route appears while `run` runs, and not after.
 * - a config naming an interface that cannot exist is a usage error (exit 2) quoting it.
 *
 *   deno test -A tests/exclusions_test.ts        (as root)
 */

import { BACKEND_NAMES } from "../backends/mod.ts";
import {
  assert,
  assertBytesWithin,
  assertEquals,
  type Bytes,
  cliArgv,
  CLIENT_IF,
  countedDelta,
  iptablesLines,
  Lab,
  LAYOUT_NAMES,
  type LayoutName,
  measureFlows,
  nftTables,
  parseLinkCounters,
  PEER_IF,
  REMOTES,
  run,
  type RunningCli,
  type Sample,
  startRun,
  TCP_PORT,
  UDP_PORT,
} from "./harness/mod.ts";
import { l3Delta } from "./harness/topology.ts";

const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
const TOLERANCE = 0.02;
const SIZES = { tcpUp: 1_000_000, tcpDown: 1_500_000, udpCount: 200, udpSize: 1000 };
/** The VPN-like link: its client end is named like tailscale's, its peer holds TEST-NET-3. */
const VPN_IF = "tailscale0";
const VPN_RENAMED = "stbvpn0";
const VPN_PEER_IF = "tsp1";
const VPN_CLIENT_ADDR = "203.0.113.1/24";
const VPN_PEER = "203.0.113.2";
/** A global IPv6 network the peer holds, reached through a gateway until its route appears. */
const ROUTED_NET = "2001:db8:5::/64";
const ROUTED_PEER = "2001:db8:5::2";

/**
 * A TCP and a UDP flow; TCP alone to ROUTED_PEER: the peer's UDP echo answers from the
 * address its route to the client prefers (2001:db8:1::2), not from the one asked.
 */
const flows = (host: string) => [
  `tcp,${host},${TCP_PORT},${SIZES.tcpUp},${SIZES.tcpDown}`,
  ...(host === ROUTED_PEER ? [] : [`udp,${host},${UDP_PORT},${SIZES.udpCount},${SIZES.udpSize}`]),
];

/** Waits until `run` has certainly sampled (and so re-read interfaces and routes) twice. */
async function settle(cli: RunningCli): Promise<Sample> {
  await cli.sampleAfter();
  return await cli.sampleAfter();
}

async function withRun(
  env: Lab,
  backend: string,
  config: Record<string, unknown>,
  body: (cli: RunningCli) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-excl-" });
  let cli: RunningCli | null = null;
  try {
    cli = await startRun(env.layout, env.clientNetns, {
      backend,
      config: await env.writeRunConfig(`${dir}/config.json`, backend, {
        interval_s: 0.5,
        ...config,
      }),
      output: `${dir}/counters.json`,
    });
    try {
      await body(cli);
    } catch (e) {
      console.error(`--- run --backend ${backend} stderr:\n${cli.stderr.trimEnd()}\n---`);
      throw e;
    }
    const stop = await cli.stop("SIGTERM");
    cli = null;
    assertEquals(stop.code, 0, `exit code after SIGTERM; stderr:\n${stop.stderr}`);
    // The on-link sets and chain go with the rest.
    const left = [...await nftTables(env.clientNetns), ...await iptablesLines(env.clientNetns)];
    assertEquals(left, [], "left installed after SIGTERM");
  } finally {
    await cli?.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
}

/** IP bytes the client end of `dev` carried while `flows` ran from the server service. */
async function overLink(env: Lab, dev: string, hosts: string): Promise<Bytes> {
  const counters = async () =>
    parseLinkCounters(
      (await run(["ip", "-n", env.topology.client, "-s", "-j", "link", "show", dev])).stdout,
    );
  const before = await counters();
  await env.traffic("server", flows(hosts));
  return l3Delta(before, await counters());
}

async function nothingCounted(cli: RunningCli, env: Lab, host: string, what: string) {
  const a = await cli.sampleAfter();
  await env.traffic("server", flows(host));
  const d = countedDelta(a, await cli.sampleAfter(), null);
  assertEquals(d, { rx: 0, tx: 0 }, `${what}: counted`);
}

async function countedAsWire(cli: RunningCli, env: Lab, host: string, what: string) {
  const a = await cli.sampleAfter();
  const wire = (await measureFlows(env, "server", flows(host))).wire;
  assertBytesWithin(countedDelta(a, await cli.sampleAfter(), "server"), wire, TOLERANCE, what);
}

async function interfaceScenario(backend: string, layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  try {
    env.cgroups.create("server");
    await withRun(env, backend, { exclude_interfaces: [VPN_IF, "wg-absent"] }, async (cli) => {
      // Created after `run` started: a late interface.
      const c = env.topology.client, p = env.topology.peer;
      await run([
        "ip",
        "link",
        "add",
        VPN_IF,
        "netns",
        c,
        "type",
        "veth",
        "peer",
        "name",
        VPN_PEER_IF,
        "netns",
        p,
      ]); // deno-fmt-ignore
      await run(["ip", "-n", c, "addr", "add", VPN_CLIENT_ADDR, "dev", VPN_IF]);
      await run(["ip", "-n", p, "addr", "add", `${VPN_PEER}/24`, "dev", VPN_PEER_IF]);
      for (const [ns, dev] of [[c, VPN_IF], [p, VPN_PEER_IF]]) {
        await run(["ip", "-n", ns!, "link", "set", dev!, "up"]);
      }
      await settle(cli);
      await nothingCounted(cli, env, VPN_PEER, `public ${VPN_PEER} over ${VPN_IF} (excluded)`);
      // The same service's other traffic still counts.
      await countedAsWire(cli, env, REMOTES.internet4, `${REMOTES.internet4} over ${CLIENT_IF}`);

      // Renamed: judged by its new name, which is not excluded.
      const rename = async (from: string, to: string) => {
        await run(["ip", "-n", c, "link", "set", from, "down"]);
        await run(["ip", "-n", c, "link", "set", from, "name", to]);
        await run(["ip", "-n", c, "link", "set", to, "up"]);
        await settle(cli);
      };
      await rename(VPN_IF, VPN_RENAMED);
      const a = await cli.sampleAfter();
      const wire = await overLink(env, VPN_RENAMED, VPN_PEER);
      const counted = countedDelta(a, await cli.sampleAfter(), "server");
      assertBytesWithin(counted, wire, TOLERANCE, `${VPN_PEER} over ${VPN_RENAMED} (not excluded)`);

      await rename(VPN_RENAMED, VPN_IF);
      await nothingCounted(cli, env, VPN_PEER, `${VPN_PEER} over ${VPN_IF} again`);
      assert(/wg-absent/.test(cli.stderr) || backend !== "ebpf", "a missing interface is logged");
    });
  } finally {
    await env.close();
  }
}

async function onlinkScenario(backend: string, layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  try {
    env.cgroups.create("server");
    const c = env.topology.client, p = env.topology.peer;
    await run(["ip", "-n", p, "-6", "addr", "add", `${ROUTED_PEER}/64`, "dev", PEER_IF, "nodad"]);
    const peerGw = REMOTES.internet6; // the peer itself, on the lab's connected 2001:db8:1::/64
    await run(["ip", "-n", c, "-6", "route", "add", ROUTED_NET, "via", peerGw, "dev", CLIENT_IF]);

    // Off (the default): a global IPv6 peer on a connected prefix is external.
    await withRun(env, backend, {}, async (cli) => {
      await countedAsWire(cli, env, REMOTES.internet6, "on-link IPv6 peer, internal_onlink off");
    });

    await withRun(env, backend, { internal_onlink: true }, async (cli) => {
      await nothingCounted(cli, env, REMOTES.internet6, "on-link IPv6 peer, internal_onlink on");
      await nothingCounted(cli, env, REMOTES.internet4, "on-link IPv4 peer, internal_onlink on");
      await countedAsWire(cli, env, ROUTED_PEER, `${ROUTED_PEER} through a gateway`);
      // Its on-link route appears while `run` runs.
      await run(["ip", "-n", c, "-6", "route", "replace", ROUTED_NET, "dev", CLIENT_IF]);
      await settle(cli);
      await nothingCounted(cli, env, ROUTED_PEER, `${ROUTED_PEER} once ${ROUTED_NET} is on-link`);
      // And goes again: external once more.
      await run([
        "ip",
        "-n",
        c,
        "-6",
        "route",
        "replace",
        ROUTED_NET,
        "via",
        peerGw,
        "dev",
        CLIENT_IF,
      ]);
      await settle(cli);
      await countedAsWire(cli, env, ROUTED_PEER, `${ROUTED_PEER} through a gateway again`);
      assert(/internal_onlink: .*2001:db8:5::\/64/.test(cli.stderr), "the change is logged");
    });
  } finally {
    await env.close();
  }
}

for (const layout of LAYOUT_NAMES) {
  for (const backend of BACKEND_NAMES) {
    Deno.test({
      name: `exclusions ${backend} / ${layout}: ${VPN_IF} excluded by name, late and renamed`,
      ...TEST_OPTIONS,
      fn: () => interfaceScenario(backend, layout),
    });
    Deno.test({
      name: `exclusions ${backend} / ${layout}: internal_onlink, off and on, a route that appears`,
      ...TEST_OPTIONS,
      fn: () => onlinkScenario(backend, layout),
    });
  }
}

Deno.test({
  name: "exclusions: an interface name that cannot exist is a usage error quoting it",
  ...TEST_OPTIONS,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "stb-excl-" });
    try {
      for (const bad of ["tailscale0/1", "a-very-long-interface"]) {
        await Deno.writeTextFile(
          `${dir}/config.json`,
          JSON.stringify({ exclude_interfaces: [bad] }),
        );
        const argv = cliArgv([
          "run",
          "--config",
          `${dir}/config.json`,
          "--output",
          `${dir}/c.json`,
        ]);
        const r = await run(argv, { allowFail: true });
        assertEquals(r.code, 2, `exit code for ${bad}; stderr: ${r.stderr}`);
        assert(
          r.stderr.includes(`"exclude_interfaces[0]" is "${bad}"`) && /ip link/.test(r.stderr),
          `stderr quotes the name and the fix: ${r.stderr}`,
        );
      }
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["config.json"], "wrote nothing");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
