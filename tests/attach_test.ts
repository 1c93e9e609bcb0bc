/**
 * Where the ebpf backend's programs run, through the real CLI on both cgroup layouts:
 *
 * - only for StB: while an outsider cgroup moves traffic and connects (TCP connects, UDP
 *   datagrams to an address), the kernel's run count of every program `run` linked stays
 *   where it was (BPF_ENABLE_STATS), and a service's traffic moves them (so the check can
 *   fail); no program of ours sits at the cgroup2 root;
 * - from a cgroup's first packet: a service cgroup that appears late, and one that is
 *   removed and made again (a service restart), are counted from the first packet their
 *   processes send, with no wait for `run` to notice them: every backend's counted packets
 *   equal the packets the veth carried.
 *
 * Run as root: deno test -A tests/attach_test.ts
 */

import { BACKEND_NAMES } from "../backends/mod.ts";
import { enableRunStats } from "../bpf/libbpf.ts";
import { findCgroup2Mount } from "../lib/cgroup.ts";
import {
  assert,
  assertEquals,
  bpfAttachedBy,
  bpfAttachments,
  bpfRunCounts,
  CLIENT_IF,
  CLIENT_OWN,
  flowsTo,
  kernelStateLeft,
  Lab,
  LAYOUT_NAMES,
  type LayoutName,
  measureFlows,
  movedRuns,
  output,
  PEER_IF,
  present,
  REMOTES,
  run,
  type RunningCli,
  type Sample,
  SERVICE_NAMES,
  SLOW_FACTOR,
  startRun,
} from "./harness/mod.ts";

const MOUNT = findCgroup2Mount().mountPoint;
const BPF_BASELINE = await bpfAttachments(MOUNT);
const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
/** An outsider's share of the bench's 1 GB (a tenth in the slow kernel-6.1 guest). */
const MB = SLOW_FACTOR === 1 ? 1_000_000 : 100_000;
const OUTSIDER = { tcpUp: 40 * MB, tcpDown: 40 * MB, udpCount: 500, udpSize: 1200 };
const SMALL = { tcpUp: 200_000, tcpDown: 200_000, udpCount: 20, udpSize: 1000 };
/** The programs `run --backend ebpf` links: counting, connect events, DNS capture (names). */
const PROGRAMS = [
  "netacct_ingress",
  "netacct_egress",
  "dns_ingress",
  "dns_egress",
  "events_connect4",
  "events_connect6",
  "events_sendmsg4",
  "events_sendmsg6",
];

async function scratch(lab: Lab, backend: string, extra: Record<string, unknown> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "stb-attach-" });
  const config = await lab.writeRunConfig(`${dir}/config.json`, backend, {
    interval_s: 0.5,
    ...(backend === "ebpf" ? { events: { enabled: true, required: true } } : {}),
    ...extra,
  });
  return { dir, config, output: `${dir}/counters.json` };
}

for (const layout of LAYOUT_NAMES) {
  Deno.test({
    name: `attach ebpf / ${layout}: an outsider's traffic and connects run none of our programs`,
    ...TEST_OPTIONS,
    fn: () => outsiderRunsNothing(layout),
  });
}

async function outsiderRunsNothing(layout: LayoutName): Promise<void> {
  const lab = await Lab.open(layout);
  const files = await scratch(lab, "ebpf");
  let cli: RunningCli | null = null;
  let stats: { close(): void } | null = null;
  try {
    for (const s of SERVICE_NAMES) lab.cgroups.create(s);
    cli = await startRun(lab.layout, lab.clientNetns, { backend: "ebpf", ...files });
    const attached = await bpfAttachedBy(MOUNT, cli.pid);
    const where = attached.map((a) => `${a.name}@${a.cgroup.slice(MOUNT.length) || "/"}`).sort();
    const want = SERVICE_NAMES.flatMap((s) =>
      PROGRAMS.map((p) => `${p}@${lab.cgroups.servicePath(s)}`)
    ).sort();
    assertEquals(where, want, "each program linked once at each service cgroup, nowhere else");
    const ids = [...new Set(attached.map((a) => a.id))];

    stats = enableRunStats();
    const before = await bpfRunCounts(ids);
    // From a cgroup outside every service: bulk TCP both ways to both families, UDP to an
    // address (sendmsg), each a connect; and from the test's own cgroup through loopback.
    await measureFlows(lab, null, [
      ...flowsTo("internet4", OUTSIDER),
      ...flowsTo("internet6", OUTSIDER),
    ]);
    await lab.trafficIn(null, flowsTo("loopback4", SMALL));
    const afterOutsider = await bpfRunCounts(ids);
    assertEquals(movedRuns(before, afterOutsider), [], "programs run for an outsider");

    // The same from a service: every program runs, so the check above could fail.
    await lab.traffic("server", [...flowsTo("internet4", SMALL), ...flowsTo("internet6", SMALL)]);
    const afterService = await bpfRunCounts(ids);
    const idle = attached.filter((a) => afterService.get(a.id) === before.get(a.id))
      .map((a) => a.name);
    assertEquals([...new Set(idle)], [], "programs a service's traffic did not run");

    const stop = await cli.stop("SIGINT");
    cli = null;
    assertEquals(stop.code, 0, stop.stderr);
    assertEquals(
      await kernelStateLeft(MOUNT, BPF_BASELINE, [lab.clientNetns]),
      [],
      "left behind after Ctrl-C",
    );
  } finally {
    stats?.close();
    await cli?.stop("SIGKILL");
    await lab.close();
    await Deno.remove(files.dir, { recursive: true });
  }
}

/** The veth's MAC in a netns. */
async function macOf(lab: Lab, netns: "client" | "peer"): Promise<string> {
  const ns = netns === "client" ? lab.topology.client : lab.topology.peer;
  const dev = netns === "client" ? CLIENT_IF : PEER_IF;
  const [link] = JSON.parse(await output(["ip", "-n", ns, "-j", "link", "show", dev])) as {
    address: string;
  }[];
  return present(link, `${dev} in ${ns}`).address;
}

/**
 * Static neighbours both ways: the veth then carries only the flows' IP packets (no ARP),
 * and the counted packets can be compared with its packet counters one for one.
 */
async function staticNeighbours(lab: Lab): Promise<void> {
  const [client, peer] = [await macOf(lab, "client"), await macOf(lab, "peer")];
  const { client: c, peer: p } = lab.topology;
  const permanent = ["nud", "permanent"];
  await run([
    "ip",
    "-n",
    c,
    "neigh",
    "replace",
    REMOTES.internet4,
    "lladdr",
    peer,
    "dev",
    CLIENT_IF,
    ...permanent,
  ]);
  await run([
    "ip",
    "-n",
    p,
    "neigh",
    "replace",
    CLIENT_OWN.internet4,
    "lladdr",
    client,
    "dev",
    PEER_IF,
    ...permanent,
  ]);
}

/** Packets counted between two samples for one service, both directions. */
function packets(a: Sample, b: Sample, service: string): { rx: number; tx: number } {
  const x = present(a.services[service], service), y = present(b.services[service], service);
  return {
    rx: y.rx_packets_total - x.rx_packets_total,
    tx: y.tx_packets_total - x.tx_packets_total,
  };
}

/**
 * Makes the cgroup (`make`), then at once, without waiting for `run` to see it, sends from
 * it; returns the packets the veth carried meanwhile.
 */
/**
 * Waits until `run` says it follows `service`'s cgroup as it is now (its id in the log line
 * of the retarget) and has sampled since, and prints how long that took. A real service's
 * first packet comes after systemd made its cgroup and started its process; a test that
 * sends within a millisecond of mkdir would race the cgroup watch, not test the counting.
 */
async function followed(cli: RunningCli, lab: Lab, service: string): Promise<void> {
  const t0 = performance.now();
  const line = new RegExp(
    `service ${service}: cgroup (appeared|was recreated) \\(id ${lab.cgroups.id(service)}\\)`,
  );
  while (!line.test(cli.stderr)) {
    if (performance.now() - t0 > 10_000) {
      throw new Error(`run never followed ${service}:\n${cli.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  console.log(
    `run followed ${service}'s new cgroup within ${Math.round(performance.now() - t0)} ms`,
  );
  await cli.sampleAfter();
}

/**
 * Makes the cgroup and, once run follows it, sends datagrams from it; returns the packets each way as the
 * sender counted them (each datagram is one packet: 1000 bytes, under the MTU). UDP, and not
 * the veth's counters, because only then is every packet the socket's own: a TCP flow's last
 * packets may belong to a TIME_WAIT socket (in no cgroup), and the veth also carries the
 * namespaces' own IPv6 neighbour and multicast chatter now and then.
 */
async function sendAtOnce(lab: Lab, service: string, make: () => Promise<void>) {
  const datagrams = flowsTo("internet4", SMALL).filter((f) => f.startsWith("udp,"));
  const before = await lab.topology.linkCounters();
  await make();
  const results = await lab.traffic(service, datagrams);
  const after = await lab.topology.linkCounters();
  const sent = { rx: 0, tx: 0 };
  for (const r of results) {
    if (r.proto !== "udp") continue;
    sent.rx += r.received_datagrams;
    sent.tx += r.sent_datagrams;
  }
  assert(
    after.txPackets - before.txPackets >= sent.tx && after.rxPackets - before.rxPackets >= sent.rx,
    "the datagrams went over the veth",
  );
  return sent;
}

for (const layout of LAYOUT_NAMES) {
  for (const backend of BACKEND_NAMES) {
    Deno.test({
      name:
        `attach ${backend} / ${layout}: a late and a recreated service cgroup count from their first packet`,
      ...TEST_OPTIONS,
      fn: () => countedFromFirstPacket(backend, layout),
    });
  }
}

async function countedFromFirstPacket(backend: string, layout: LayoutName): Promise<void> {
  const lab = await Lab.open(layout);
  const files = await scratch(lab, backend);
  let cli: RunningCli | null = null;
  try {
    await staticNeighbours(lab);
    lab.cgroups.create("server");
    cli = await startRun(lab.layout, lab.clientNetns, { backend, ...files });
    const s0 = await cli.sampleAfter();
    const late = await sendAtOnce(lab, "shell", async () => {
      lab.cgroups.create("shell");
      await followed(cli!, lab, "shell");
    });
    const s1 = await cli.sampleAfter();
    assertEquals(packets(s0, s1, "shell"), late, "packets of a late service: counted vs veth");
    const again = await sendAtOnce(lab, "server", async () => {
      await lab.cgroups.recreate("server");
      await followed(cli!, lab, "server");
    });
    const s2 = await cli.sampleAfter();
    assertEquals(
      packets(s1, s2, "server"),
      again,
      "packets of a recreated service: counted vs veth",
    );
    assert(again.tx > 0 && late.tx > 0, "the flows went over the veth");
    const stop = await cli.stop("SIGINT");
    cli = null;
    assertEquals(stop.code, 0, stop.stderr);
  } finally {
    await cli?.stop("SIGKILL");
    await lab.close();
    await Deno.remove(files.dir, { recursive: true });
  }
}
