import { parseExact } from "../../lib/exact_json.ts";
/**
 * The ebpf backend against real traffic in the test lab (tests/harness): a client netns
 * and a peer netns joined by a veth, the lab's cgroups, traffic from process chains in
 * them. Run as root. The backend runs in this process: its programs attach at the cgroup2
 * root and see every netns. Tests that need BPF but no lab (crafted packets through
 * BPF_PROG_TEST_RUN, probes, capacity) are beside the code, backends/ebpf_test.ts.
 *
 * Cgroups below the lab's tree: `/svc` is the target, `/svc/child` holds the
 * traffic-making processes (below the target, like StB's subprocesses), `/other` holds a
 * process of the same UID that must not count.
 */

import { EbpfBackend } from "../../backends/ebpf.ts";
import type { BackendOptions, ServiceCounters, ServiceTarget } from "../../backends/mod.ts";
import { type Cgroup2Mount, cgroupId, findCgroup2Mount } from "../../lib/cgroup.ts";
import { DEFAULT_EXCLUDE, parseCidr } from "../../lib/cidr.ts";
import { assert, assertEquals, assertNoBpfHeld } from "../../lib/test_assert.ts";
import {
  CLIENT_IF,
  CLIENT_OWN,
  DENO,
  Lab,
  MSS,
  output,
  PEER_IF,
  REMOTES,
  TCP_PORT,
} from "../harness/mod.ts";

const isRoot = Deno.uid() === 0;
const MiB = 1 << 20;
/** What the peer sends back per transfer; a transfer to the client's own address, less. */
const REPLY = 4 * MiB, LOCAL_REPLY = 1 * MiB;

function options(mount: Cgroup2Mount, logs: string[] = []): BackendOptions {
  return {
    mount,
    exclude: DEFAULT_EXCLUDE.map(parseCidr),
    ctMark: 0,
    ctMask: 0,
    log: (m) => logs.push(m),
  };
}

/**
 * Transfers from a lab cgroup, keeping count of the TCP segments retransmitted meanwhile:
 * by the client (tx) and by the peer (rx). A retransmitted segment is on the wire again
 * and counted again: drops on a busy veth backlog make a count exceed the payload by up to
 * this many segments.
 */
class Transfers {
  readonly retransmitted = { tx: 0, rx: 0 };

  constructor(readonly lab: Lab) {}

  /** Sends `send` bytes to `host` from cgroup `rel` and returns what came back. */
  async send(rel: string, host: string, send: number): Promise<number> {
    const reply = host === CLIENT_OWN.internet4 ? LOCAL_REPLY : REPLY;
    const before = await this.lab.topology.retransmits();
    const [result] = await this.lab.trafficIn(rel, [`tcp,${host},${TCP_PORT},${send},${reply}`]);
    const after = await this.lab.topology.retransmits();
    this.retransmitted.tx += after.client - before.client;
    this.retransmitted.rx += after.peer - before.peer;
    if (!result) throw new Error(`no result from the transfer to ${host}`);
    return result.received;
  }
}

function progId(fd: number): number {
  const m = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`).match(/^prog_id:\s*(\d+)/m);
  assert(m, `fd ${fd} is not a BPF program`);
  return Number(m[1]);
}

interface LinkInfo {
  id: number;
  prog_id: number;
  cgroup_id?: number;
  attach_type?: string;
}

async function bpftoolLinks(): Promise<LinkInfo[]> {
  return JSON.parse(await output(["bpftool", "-j", "link", "show"])) as LinkInfo[];
}

/** IPv6 (40) + TCP with timestamps (32): the largest header these tests' packets carry. */
const MAX_L3L4_HEADER = 72;

/** A count to check: what was sent, with the packets and retransmits that add headers. */
interface Sent {
  sent: number;
  packets?: bigint | number;
  retransSegs?: number;
}

/**
 * Counted L3 bytes against payload: at least the payload, at most 2% over it plus one header
 * per counted packet when `packets` is given (whether the stack sent MTU-sized segments or GSO
 * aggregates varies from run to run, and each carries its own IP+TCP header), plus the
 * segments retransmitted meanwhile in that direction.
 */
function within(counted: bigint | number, what: string, s: Sent): void {
  const actual = Number(counted);
  const { sent, retransSegs = 0 } = s;
  const packets = Number(s.packets ?? 0n);
  const high = sent * 1.02 + packets * MAX_L3L4_HEADER + retransSegs * MSS;
  assert(
    actual >= sent && actual <= high,
    `${what}: counted ${actual} bytes for ${sent} sent (want within +2%` +
      (packets ? ` + ${packets} headers` : "") +
      (retransSegs ? ` + ${retransSegs} retransmitted segments` : "") + ")",
  );
}

Deno.test({
  name: "ebpf backend counts a cgroup subtree's external traffic on the real kernel",
  ignore: !isRoot,
  sanitizeResources: false, // FFI callback and libbpf state live for the whole process
  sanitizeOps: false,
  async fn() {
    const lab = await Lab.open("hybrid");
    const backend = new EbpfBackend();
    const mount = findCgroup2Mount();
    const logs: string[] = [];
    const [svc, late] = [lab.cgroups.path("/svc"), lab.cgroups.path("/late")];
    try {
      lab.cgroups.make("/svc/child");
      lab.cgroups.make("/other");
      const t = new Transfers(lab);
      const targets = (): ServiceTarget[] => [
        { name: "svc", path: svc, id: cgroupId(mount, svc) },
        { name: "late", path: late, id: cgroupId(mount, late) },
      ];
      assertEquals(targets()[1]?.id, null, "the late service does not exist yet");
      await backend.start(targets(), options(mount, logs));

      const ourProgs = [progId(backend.programFd("ingress")), progId(backend.programFd("egress"))];
      const linkedAt = async () =>
        (await bpftoolLinks()).filter((l) => ourProgs.includes(l.prog_id))
          .map((l) => `${l.cgroup_id} ${l.attach_type}`).sort();
      const svcId = Number(cgroupId(mount, svc));
      assertEquals(
        await linkedAt(),
        [`${svcId} cgroup_inet_egress`, `${svcId} cgroup_inet_ingress`],
        "one link per program, at the one target cgroup that exists",
      );
      const zero = await backend.read();
      assertEquals(zero.svc, { rxBytes: 0n, txBytes: 0n, rxPackets: 0n, txPackets: 0n });

      const { ext, sent4 } = await countsExternal(backend, t);
      await countsDestinations(backend, { ...ext, sent4 }, t);
      await followsRestartAndLate({ backend, t, targets, ext });
      const [newSvc, lateId] = targets().map((x) => Number(x.id));
      assertEquals(
        await linkedAt(),
        [
          `${newSvc} cgroup_inet_egress`,
          `${newSvc} cgroup_inet_ingress`,
          `${lateId} cgroup_inet_egress`,
          `${lateId} cgroup_inet_ingress`,
        ].sort(),
        "linked at the recreated and the late cgroup; the removed cgroup's links released",
      );

      // Stop twice: links gone from the kernel, no BPF fd left in this process.
      await backend.stop();
      await backend.stop();
      const left = (await bpftoolLinks()).filter((l) => ourProgs.includes(l.prog_id));
      assertEquals(left, [], "no link of ours left attached");
      assertNoBpfHeld("no BPF object held after stop");
    } finally {
      await backend.stop();
      await lab.close();
    }
  },
});

/** External IPv4 and IPv6 from a process below the target count; nothing else does. */
async function countsExternal(backend: EbpfBackend, t: Transfers) {
  const send4 = 3 * MiB, send6 = 2 * MiB;
  const got4 = await t.send("/svc/child", REMOTES.internet4, send4);
  const got6 = await t.send("/svc/child", REMOTES.internet6, send6);
  assertEquals([got4, got6], [REPLY, REPLY], "the peer's replies arrived whole");
  const ext = (await backend.read()).svc!;
  const r = { ...t.retransmitted }; // the first transfers: nothing before them
  within(ext.txBytes, "tx, external IPv4+IPv6", {
    sent: send4 + send6,
    packets: ext.txPackets,
    retransSegs: r.tx,
  });
  within(ext.rxBytes, "rx, external IPv4+IPv6", {
    sent: got4 + got6,
    packets: ext.rxPackets,
    retransSegs: r.rx,
  });
  assert(ext.txPackets > 0 && ext.rxPackets > 0, "packets counted too");

  // Internal addresses, the host's own address (over lo), a process outside: nothing.
  await t.send("/svc/child", REMOTES.lan, MiB);
  await t.send("/svc/child", REMOTES.ula, MiB);
  await t.send("/svc/child", REMOTES.mappedLan, MiB);
  await t.send("/svc/child", CLIENT_OWN.internet4, MiB);
  await t.send("/other", REMOTES.internet4, MiB);
  await t.send("/other", REMOTES.internet6, MiB);
  assertEquals((await backend.read()).svc, ext, "internal, loopback and outside traffic");
  return { ext, sent4: send4 };
}

/**
 * Top destinations: exactly the two external endpoints, per direction, the bytes the
 * service counters hold; nothing for the internal, loopback or outside transfers.
 */
async function countsDestinations(
  backend: EbpfBackend,
  ext: { rxBytes: bigint; txBytes: bigint; sent4: number },
  t: Transfers,
): Promise<void> {
  const dests = await backend.readDestinations(20);
  const shown = dests.map((d) => `${d.service} ${d.direction} ${d.protocol} ${d.address}:${d.port}`)
    .sort();
  const [v4, v6] = [REMOTES.internet4, REMOTES.internet6];
  assertEquals(
    shown,
    [
      `svc rx tcp ${v6}:${TCP_PORT}`,
      `svc rx tcp ${v4}:${TCP_PORT}`,
      `svc tx tcp ${v6}:${TCP_PORT}`,
      `svc tx tcp ${v4}:${TCP_PORT}`,
    ].sort(),
  );
  const sum = (dir: string) =>
    dests.filter((d) => d.direction === dir).reduce((a, d) => a + d.bytes, 0n);
  assertEquals([sum("rx"), sum("tx")], [ext.rxBytes, ext.txBytes], "dests add up");
  const tx4 = dests.find((d) => d.direction === "tx" && d.address === v4)!;
  within(tx4.bytes, `destination ${v4} tx`, {
    sent: ext.sent4,
    packets: tx4.packets,
    retransSegs: t.retransmitted.tx,
  });
  assert(dests[0]!.bytes >= dests[dests.length - 1]!.bytes, "most bytes first");
  assertEquals((await backend.readDestinations(1)).length, 1, "limit");
}

/** A service restart (cgroup removed and recreated, a new id), and a late service. */
async function followsRestartAndLate(o: {
  backend: EbpfBackend;
  t: Transfers;
  targets: () => ServiceTarget[];
  ext: ServiceCounters;
}): Promise<void> {
  const { backend, t, targets, ext } = o;
  const lab = t.lab, mount = findCgroup2Mount();
  const oldId = cgroupId(mount, lab.cgroups.path("/svc"));
  await lab.cgroups.removeAt("/svc");
  lab.cgroups.make("/svc/child");
  assert(cgroupId(mount, lab.cgroups.path("/svc")) !== oldId, "a recreated cgroup: a new id");
  await t.send("/svc/child", REMOTES.internet4, MiB);
  assertEquals((await backend.read()).svc, ext, "a stale id counts nothing");
  lab.cgroups.make("/late");
  await backend.retarget(targets());
  const r0 = { ...t.retransmitted };
  await t.send("/svc/child", REMOTES.internet4, MiB);
  const r1 = { ...t.retransmitted };
  await t.send("/late", REMOTES.internet6, MiB);
  const r2 = { ...t.retransmitted };
  const after = await backend.read();
  const svc = after.svc!, late = after.late!;
  within(svc.txBytes - ext.txBytes, "tx after retarget", {
    sent: MiB,
    packets: svc.txPackets - ext.txPackets,
    retransSegs: r1.tx - r0.tx,
  });
  within(svc.rxBytes - ext.rxBytes, "rx after retarget", {
    sent: REPLY,
    packets: svc.rxPackets - ext.rxPackets,
    retransSegs: r1.rx - r0.rx,
  });
  within(late.txBytes, "tx of a late service", {
    sent: MiB,
    packets: late.txPackets,
    retransSegs: r2.tx - r1.tx,
  });
  within(late.rxBytes, "rx of a late service", {
    sent: REPLY,
    packets: late.rxPackets,
    retransSegs: r2.rx - r1.rx,
  });
}

/**
 * Runs inside the cgroup namespace: starts the ebpf backend and the connect events
 * collector for "/svc" (as the namespace names it), prints their logs, waits for a line on
 * stdin (the test's traffic is done), prints the counters and events, stops both.
 */
const NAMESPACED_SAMPLER = `
import { EbpfBackend } from ${
  JSON.stringify(new URL("../../backends/ebpf.ts", import.meta.url).href)
};
import { EventCollector } from ${
  JSON.stringify(new URL("../../events/collector.ts", import.meta.url).href)
};
import { cgroupId, findCgroup2Mount } from ${
  JSON.stringify(new URL("../../lib/cgroup.ts", import.meta.url).href)
};
import { DEFAULT_EXCLUDE, parseCidr } from ${
  JSON.stringify(new URL("../../lib/cidr.ts", import.meta.url).href)
};
import { stringifyExact } from ${
  JSON.stringify(new URL("../../lib/exact_json.ts", import.meta.url).href)
};
const mount = findCgroup2Mount();
const exclude = DEFAULT_EXCLUDE.map(parseCidr);
const targets = [{ name: "svc", path: "/svc", id: cgroupId(mount, "/svc") }];
const logs = [];
const backend = new EbpfBackend();
const events = new EventCollector();
try {
  await backend.start(targets, { mount, exclude, ctMark: 0, ctMask: 0, log: (m) => logs.push(m) });
  events.start(targets, { mount, exclude, monotonicNow: () => performance.now() / 1000 });
  const own = Deno.readTextFileSync("/proc/self/cgroup").split("\\n").find((l) => l.startsWith("0::"));
  console.log(JSON.stringify({ logs, own, mount: mount.mountPoint, target: targets[0].id?.toString() }));
  await Deno.stdin.read(new Uint8Array(1));
  const counters = (await backend.read()).svc;
  const seen = events.poll().map((e) => e.service + " " + e.address + ":" + e.port);
  console.log(stringifyExact({ counters, events: seen }));
} finally {
  events.stop();
  await backend.stop();
}`;

/** A process in a new cgroup namespace rooted at the lab's "/ns", with its own lines. */
class NamespacedSampler {
  readonly child: Deno.ChildProcess;
  #lines: ReadableStreamDefaultReader<string>;
  #pending = "";

  constructor(nsRoot: string, mountPoint: string) {
    // Join the namespace's future root, unshare there, remount cgroup2 so the mount shows
    // the namespaced view (as a container's does), then sit in a leaf below the root.
    const inner = 'umount "$1" && mount -t cgroup2 none "$1" && ' +
      'echo $$ > "$1/sampler/cgroup.procs" && exec "$2" eval "$3"';
    this.child = new Deno.Command("sh", {
      args: [
        "-c",
        'echo $$ > "$1/cgroup.procs" && shift && ' +
        'exec unshare --cgroup --mount --propagation private sh -c "$@"',
        "sh",
        nsRoot,
        inner,
        "sampler",
        mountPoint,
        DENO,
        NAMESPACED_SAMPLER,
      ],
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#lines = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  async nextLine(): Promise<string> {
    for (;;) {
      const nl = this.#pending.indexOf("\n");
      if (nl >= 0) {
        const line = this.#pending.slice(0, nl);
        this.#pending = this.#pending.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#lines.read();
      if (done) {
        const err = await new Response(this.child.stderr).text();
        throw new Error(`The namespaced sampler ended early: ${this.#pending}${err}`);
      }
      this.#pending += value;
    }
  }

  /** Tells it the traffic is done. */
  async go(): Promise<void> {
    const writer = this.child.stdin.getWriter();
    await writer.write(new Uint8Array([10]));
    await writer.close();
  }

  async kill(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.child.status;
  }
}

Deno.test({
  name: "ebpf backend and connect events count inside a cgroup namespace (levels offset)",
  ignore: !isRoot,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // The namespace's root is <lab top>/ns, two levels below the real root: the sampler
    // sees "/svc" at level 1, the kernel puts it at level 3.
    const lab = await Lab.open("hybrid");
    const mount = findCgroup2Mount();
    let sampler: NamespacedSampler | null = null;
    try {
      for (const rel of ["/ns/sampler", "/ns/svc/child", "/ns/other"]) lab.cgroups.make(rel);
      sampler = new NamespacedSampler(lab.cgroups.dirOf("/ns"), mount.mountPoint);
      const started = JSON.parse(await sampler.nextLine());
      assertEquals(started.own, "0::/sampler", "the sampler sits in its namespace's /sampler");
      assertEquals(started.mount, mount.mountPoint);
      assertEquals(started.target, String(cgroupId(mount, lab.cgroups.path("/ns/svc"))));
      assert(
        started.logs.some((l: string) =>
          l.includes("cgroup namespace detected: levels offset by 2")
        ),
        `offset logged: ${started.logs.join(" | ")}`,
      );
      const t = new Transfers(lab);
      const send = 3 * MiB;
      const got = await t.send("/ns/svc/child", REMOTES.internet4, send);
      const r = { ...t.retransmitted }; // only this transfer is counted: the first one
      await t.send("/ns/svc/child", REMOTES.lan, MiB); // internal
      await t.send("/ns/other", REMOTES.internet6, MiB); // outside the target
      await sampler.go();
      // Counts as parseExact gives them: numbers, bigint beyond 2^53.
      const done = parseExact(await sampler.nextLine()) as {
        counters: Record<keyof ServiceCounters, number | bigint>;
        events: string[];
      };
      within(done.counters.txBytes, "tx counted from inside the cgroup namespace", {
        sent: send,
        packets: done.counters.txPackets,
        retransSegs: r.tx,
      });
      within(done.counters.rxBytes, "rx counted from inside the cgroup namespace", {
        sent: got,
        packets: done.counters.rxPackets,
        retransSegs: r.rx,
      });
      assertEquals(
        [...new Set(done.events)],
        [`svc ${REMOTES.internet4}:${TCP_PORT}`, `svc ${REMOTES.lan}:${TCP_PORT}`],
        "connect events of the target only",
      );
      assertEquals((await sampler.child.status).code, 0, "the sampler stopped cleanly");
      await sampler.child.stderr.cancel();
      sampler = null;
    } finally {
      await sampler?.kill();
      await lab.close();
    }
  },
});

const hasEthtool = (() => {
  try {
    return Deno.statSync("/usr/sbin/ethtool").isFile || Deno.statSync("/sbin/ethtool").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "ebpf gso_correction: counted bytes match the veth's wire counters within 0.5%",
  // ethtool (Debian package ethtool, in `make deps`) turns TSO off so the veth carries
  // real segments while TCP still hands the cgroup hooks GSO aggregates.
  ignore: !isRoot || !hasEthtool,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const lab = await Lab.open("hybrid");
    const plain = new EbpfBackend(), corrected = new EbpfBackend();
    const mount = findCgroup2Mount();
    try {
      lab.cgroups.make("/svc/child");
      // TSO off, GSO on, both ends: TCP still hands the cgroup hooks aggregates, cut into
      // wire segments in software just before the veth, which counts each one. GRO on at
      // the client only: its receive path merges the peer's segments into aggregates
      // again (veth NAPI), so both directions see aggregates.
      await lab.inClient(["ethtool", "-K", CLIENT_IF, "tso", "off", "gso", "on", "gro", "on"]);
      await lab.inPeer(["ethtool", "-K", PEER_IF, "tso", "off", "gso", "on", "gro", "off"]);
      const svc = lab.cgroups.path("/svc");
      const targets = [{ name: "svc", path: svc, id: cgroupId(mount, svc) }];
      await plain.start(targets, { ...options(mount), gsoCorrection: false });
      await corrected.start(targets, options(mount)); // the default corrects
      const t = new Transfers(lab);
      const wire0 = await lab.topology.linkCounters();
      const c0 = (await corrected.read()).svc!, p0 = (await plain.read()).svc!;
      await t.send("/svc/child", REMOTES.internet4, 16 * MiB);
      await t.send("/svc/child", REMOTES.internet6, 16 * MiB);
      const wire1 = await lab.topology.linkCounters();
      const c1 = (await corrected.read()).svc!, p1 = (await plain.read()).svc!;
      // L3 bytes on the wire. A frame the peer takes without NAPI (GRO off) is counted by
      // the client's veth with its 14-byte Ethernet header; one the client takes through
      // NAPI (GRO on) after eth_type_trans, without it (drivers/net/veth.c: veth_xdp_rcv
      // counts skb->len into the peer's tx and its own rx).
      const wire = {
        tx: (wire1.txBytes - wire0.txBytes) - 14 * (wire1.txPackets - wire0.txPackets),
        rx: wire1.rxBytes - wire0.rxBytes,
      };
      const err = (counted: bigint, dir: "rx" | "tx") =>
        (Number(counted) - wire[dir]) / wire[dir] * 100;
      const figures = {
        tx: {
          wire: wire.tx,
          plain_pct: err(p1.txBytes - p0.txBytes, "tx"),
          corrected_pct: err(c1.txBytes - c0.txBytes, "tx"),
        },
        rx: {
          wire: wire.rx,
          plain_pct: err(p1.rxBytes - p0.rxBytes, "rx"),
          corrected_pct: err(c1.rxBytes - c0.rxBytes, "rx"),
        },
      };
      console.log(`gso_correction vs wire: ${JSON.stringify(figures)}`);
      for (const dir of ["tx", "rx"] as const) {
        assert(
          Math.abs(figures[dir].corrected_pct) <= 0.5,
          `${dir}: corrected count is ${figures[dir].corrected_pct.toFixed(3)}% off the wire`,
        );
        // Both directions were aggregates: without the correction their headers are missing.
        assert(figures[dir].plain_pct < -1, `${dir} uncorrected only ${figures[dir].plain_pct}%`);
      }
    } finally {
      await plain.stop();
      await corrected.stop();
      await lab.close();
    }
  },
});
