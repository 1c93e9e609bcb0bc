/**
 * The ebpf backend against the real kernel (run as root: `deno test -A backends/ebpf_test.ts`).
 *
 *   client netns  ==veth==  server netns
 *     192.0.2.1/24  2001:db8::1/64      192.0.2.2   2001:db8::2   external (TEST-NET)
 *     192.168.77.1/24  fd00:77::1/64    192.168.77.2  fd00:77::2  internal
 *
 * Cgroups under <cgroup2>/stb-netacct-test-<random>/: `svc` is the target, `svc/child`
 * holds the traffic-making processes (below the target, like StB's subprocesses),
 * `other` holds a process of the same UID that must not count. Everything made is undone
 * in `finally`, also when an assertion fails halfway.
 */

import { EbpfBackend, objectBytes } from "./ebpf.ts";
import { BUCKET_SLOTS, bucketOf, chooseBucketMul, MAX_SERVICES } from "../bpf/netacct_abi.ts";
import type { BackendOptions, ServiceTarget } from "./backend.ts";
import { BackendError } from "./backend.ts";
import { type Cgroup2Mount, cgroupDir, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { DEFAULT_EXCLUDE, parseCidr, parseIpv4, parseIpv6 } from "../lib/cidr.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import {
  craftPacket,
  joinCgroup,
  nonLoopbackIfindex,
  ownCgroupPath,
  testRun,
} from "../bpf/packet_run.ts";
import { MSS, parseRetransSegs } from "./testing/lab.ts";

const DENO = Deno.execPath();
const PORT = 5000;
const isRoot = Deno.uid() === 0;

/** Sink-then-reply server: reads a connection to EOF, answers REPLY bytes, closes. */
const SERVER = `
const reply = new Uint8Array(Number(Deno.env.get("REPLY")));
const l = Deno.listen({ hostname: "::", port: ${PORT} });
console.log("ready");
for await (const c of l) {
  (async () => {
    const buf = new Uint8Array(1 << 16);
    while ((await c.read(buf)) !== null);
    for (let off = 0; off < reply.length;) off += await c.write(reply.subarray(off));
    c.close();
  })().catch(() => {});
}`;

/** Sends SEND bytes to HOST, half-closes, reads the reply to EOF, prints what it got. */
const CLIENT = `
const c = await Deno.connect({ hostname: Deno.env.get("HOST"), port: ${PORT} });
const chunk = new Uint8Array(1 << 16);
for (let left = Number(Deno.env.get("SEND")); left > 0;) {
  left -= await c.write(chunk.subarray(0, Math.min(left, chunk.length)));
}
await c.closeWrite();
let got = 0;
for (let n; (n = await c.read(chunk)) !== null;) got += n;
c.close();
console.log(JSON.stringify({ got }));`;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

interface LinkCounts {
  bytes: number;
  packets: number;
}

class Lab {
  readonly tag = crypto.randomUUID().slice(0, 8);
  readonly mount: Cgroup2Mount = findCgroup2Mount();
  /** The test's own cgroup; `base`, where the test's cgroups go, is it or below it. */
  readonly top = `/stb-netacct-test-${this.tag}`;
  readonly base: string;
  readonly client = `nac-${this.tag}`;
  readonly server = `nas-${this.tag}`;
  #cgroups: string[] = [];
  #netns: string[] = [];
  #servers: Deno.ChildProcess[] = [];
  /** A server's pid per netns: its /proc/<pid>/net is that netns's, read without a spawn. */
  #serverPid = new Map<string, number>();
  /**
   * TCP segments retransmitted during `transfer`s so far, by the client (tx) and by the
   * server (rx). A retransmitted segment is on the wire again and counted again: drops on
   * a busy veth backlog make a count exceed the payload by up to this many segments.
   */
  readonly retransmitted = { tx: 0, rx: 0 };

  /** `nest`: a path to put `base` below `top` at, e.g. "/ns". */
  constructor(nest = "") {
    this.base = this.top + nest;
  }

  async setup(): Promise<void> {
    if (this.base !== this.top) this.mkcg(this.top);
    for (const p of ["", "/svc", "/svc/child", "/other"]) this.mkcg(this.base + p);
    for (const ns of [this.client, this.server]) {
      await sh("ip", "netns", "add", ns);
      this.#netns.push(ns);
      await sh("ip", "-n", ns, "link", "set", "lo", "up");
    }
    const [vc, vs] = [`vc${this.tag}`, `vs${this.tag}`];
    await sh(
      "ip",
      ..."link add".split(" "),
      vc,
      "netns",
      this.client,
      "type",
      "veth",
      "peer",
      "name",
      vs,
      "netns",
      this.server,
    );
    for (const [ns, dev, host] of [[this.client, vc, 1], [this.server, vs, 2]] as const) {
      await sh("ip", "-n", ns, "addr", "add", `192.0.2.${host}/24`, "dev", dev);
      await sh("ip", "-n", ns, "addr", "add", `192.168.77.${host}/24`, "dev", dev);
      await sh("ip", "-n", ns, "addr", "add", `2001:db8::${host}/64`, "dev", dev, "nodad");
      await sh("ip", "-n", ns, "addr", "add", `fd00:77::${host}/64`, "dev", dev, "nodad");
      await sh("ip", "-n", ns, "link", "set", dev, "up");
    }
    await this.startServer(this.server, 4 << 20);
    // A server beside the client: traffic to the client's own 192.0.2.1 goes over lo.
    await this.startServer(this.client, 1 << 20);
  }

  /** The veth ends: `vc<tag>` in the client netns, `vs<tag>` in the server netns. */
  get veths(): { client: string; server: string } {
    return { client: `vc${this.tag}`, server: `vs${this.tag}` };
  }

  async ethtool(netns: string, dev: string, ...features: string[]): Promise<void> {
    await sh("nsenter", `--net=/run/netns/${netns}`, "ethtool", "-K", dev, ...features);
  }

  /** The client veth's own counters (bytes include the 14-byte Ethernet header). */
  async clientLinkStats(): Promise<{ rx: LinkCounts; tx: LinkCounts }> {
    const out = await sh(
      "ip",
      "-n",
      this.client,
      "-j",
      "-s",
      "link",
      "show",
      "dev",
      this.veths.client,
    );
    const stats = JSON.parse(out)[0].stats64;
    return {
      rx: { bytes: stats.rx.bytes, packets: stats.rx.packets },
      tx: { bytes: stats.tx.bytes, packets: stats.tx.packets },
    };
  }

  mkcg(path: string): void {
    Deno.mkdirSync(cgroupDir(this.mount, path));
    if (!this.#cgroups.includes(path)) this.#cgroups.push(path);
  }

  /** rmdir, retried: a just-reaped process can keep a cgroup busy for a moment. */
  async rmcg(path: string): Promise<void> {
    for (let i = 0;; i++) {
      try {
        Deno.removeSync(cgroupDir(this.mount, path));
        return;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        if (i >= 50) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  async startServer(netns: string, reply: number): Promise<void> {
    const child = new Deno.Command("nsenter", {
      args: [`--net=/run/netns/${netns}`, DENO, "eval", SERVER],
      env: { REPLY: String(reply), DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#servers.push(child);
    this.#serverPid.set(netns, child.pid);
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    await reader.cancel();
    assertStringIncludes(new TextDecoder().decode(value), "ready", `server in ${netns}`);
  }

  /**
   * A client process that first joins cgroup `path`, then enters the client netns and
   * talks to `host`: sends `send` bytes, receives the server's reply.
   */
  async transfer(path: string, host: string, send: number): Promise<number> {
    const before = this.#retransSegs();
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" "$3" eval "$4"',
        "sh",
        cgroupDir(this.mount, path),
        `/run/netns/${this.client}`,
        DENO,
        CLIENT,
      ],
      env: { HOST: host, SEND: String(send), DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      throw new Error(`Client to ${host} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    const after = this.#retransSegs();
    this.retransmitted.tx += after.client - before.client;
    this.retransmitted.rx += after.server - before.server;
    return JSON.parse(text).got;
  }

  #retransSegs(): { client: number; server: number } {
    const read = (ns: string) =>
      parseRetransSegs(Deno.readTextFileSync(`/proc/${this.#serverPid.get(ns)}/net/snmp`));
    return { client: read(this.client), server: read(this.server) };
  }

  async cleanup(): Promise<void> {
    for (const child of this.#servers.splice(0).reverse()) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
    }
    for (const ns of this.#netns.splice(0).reverse()) {
      await sh("ip", "netns", "del", ns).catch((e) => console.error(e.message));
    }
    // Deepest first; includes cgroups a test step recreated.
    const all = this.#cgroups.splice(0).sort((a, b) => b.length - a.length);
    for (const path of all) await this.rmcg(path).catch((e) => console.error(e.message));
  }
}

/**
 * Runs `fn` with a fresh target cgroup, then puts this process back in its own cgroup (test
 * runs tag a packet with the caller's cgroup, so tests join the target) and removes the
 * target. `fn` stops what it started in its own `finally`, before this one runs.
 */
async function inTargetCgroup(
  fn: (mount: Cgroup2Mount, target: string, home: string) => Promise<void>,
): Promise<void> {
  const mount = findCgroup2Mount();
  const target = `/stb-netacct-test-${crypto.randomUUID().slice(0, 8)}`;
  const home = ownCgroupPath();
  Deno.mkdirSync(cgroupDir(mount, target));
  try {
    await fn(mount, target, home);
  } finally {
    joinCgroup(cgroupDir(mount, home));
    Deno.removeSync(cgroupDir(mount, target));
  }
}

function options(mount: Cgroup2Mount, logs: string[] = []): BackendOptions {
  return {
    mount,
    exclude: DEFAULT_EXCLUDE.map(parseCidr),
    ctMark: 0,
    ctMask: 0,
    log: (m) => logs.push(m),
  };
}

/** BPF objects (progs, maps, links) this process holds fds to, from /proc/self/fdinfo. */
function heldBpfObjects(): string[] {
  const held: string[] = [];
  for (const e of Deno.readDirSync("/proc/self/fdinfo")) {
    let info: string;
    try {
      info = Deno.readTextFileSync(`/proc/self/fdinfo/${e.name}`);
    } catch {
      continue; // the fd of the directory listing itself, closed meanwhile
    }
    const m = info.match(/^(prog_id|map_id|link_id):\s*(\d+)/m);
    if (m) held.push(`${m[1]}=${m[2]}`);
  }
  return held;
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
  return JSON.parse(await sh("bpftool", "-j", "link", "show")) as LinkInfo[];
}

/**
 * Counted L3 bytes against payload: at least the payload, at most 2% over it plus one header
 * per counted packet when `packets` is given (whether the stack sent MTU-sized segments or GSO
 * aggregates varies from run to run, and each carries its own IP+TCP header), plus the
 * segments retransmitted meanwhile in that direction (`Lab.retransmitted`).
 */
function within(
  actual: number,
  sent: number,
  what: string,
  packets = 0,
  retransSegs = 0,
): void {
  const high = sent * 1.02 + packets * MAX_L3L4_HEADER + retransSegs * MSS;
  assert(
    actual >= sent && actual <= high,
    `${what}: counted ${actual} bytes for ${sent} sent (want within +2%` +
      (packets ? ` + ${packets} headers` : "") +
      (retransSegs ? ` + ${retransSegs} retransmitted segments` : "") + ")",
  );
}

/** IPv6 (40) + TCP with timestamps (32): the largest header these tests' packets carry. */
const MAX_L3L4_HEADER = 72;

Deno.test({
  name: "ebpf backend counts a cgroup subtree's external traffic on the real kernel",
  ignore: !isRoot,
  sanitizeResources: false, // FFI callback and libbpf state live for the whole process
  async fn() {
    const lab = new Lab();
    const backend = new EbpfBackend();
    const logs: string[] = [];
    const svc = `${lab.base}/svc`;
    const late = `${lab.base}/late`;
    try {
      await lab.setup();
      const targets = (): ServiceTarget[] => [
        { name: "svc", path: svc, id: cgroupId(lab.mount, svc) },
        { name: "late", path: late, id: cgroupId(lab.mount, late) },
      ];
      assertEquals(targets()[1].id, null, "the late service does not exist yet");
      await backend.start(targets(), options(lab.mount, logs));

      const ourProgs = [progId(backend.programFd("ingress")), progId(backend.programFd("egress"))];
      const links = (await bpftoolLinks()).filter((l) => ourProgs.includes(l.prog_id));
      assertEquals(links.length, 2, "one link per program");
      const rootId = Number(cgroupId(lab.mount, "/") ?? -1);
      for (const l of links) assertEquals(l.cgroup_id, rootId, "linked at the cgroup2 root");

      const zero = await backend.read();
      assertEquals(zero.svc, { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 });

      // External IPv4 and IPv6 from a process below the target.
      const child = `${svc}/child`;
      const send4 = 3 << 20, send6 = 2 << 20;
      const got4 = await lab.transfer(child, "192.0.2.2", send4);
      const got6 = await lab.transfer(child, "2001:db8::2", send6);
      assertEquals([got4, got6], [4 << 20, 4 << 20], "the server's replies arrived whole");
      const ext = (await backend.read()).svc;
      const r = { ...lab.retransmitted }; // the first transfers: nothing before them
      within(ext.txBytes, send4 + send6, "tx, external IPv4+IPv6", ext.txPackets, r.tx);
      within(ext.rxBytes, got4 + got6, "rx, external IPv4+IPv6", ext.rxPackets, r.rx);
      assert(ext.txPackets > 0 && ext.rxPackets > 0, "packets counted too");

      // Internal addresses, the host's own address (over lo), a process outside: nothing.
      await lab.transfer(child, "192.168.77.2", 1 << 20);
      await lab.transfer(child, "fd00:77::2", 1 << 20);
      await lab.transfer(child, "::ffff:192.168.77.2", 1 << 20);
      await lab.transfer(child, "192.0.2.1", 1 << 20);
      await lab.transfer(`${lab.base}/other`, "192.0.2.2", 1 << 20);
      await lab.transfer(`${lab.base}/other`, "2001:db8::2", 1 << 20);
      assertEquals((await backend.read()).svc, ext, "internal, loopback and outside traffic");

      // Top destinations: exactly the two external endpoints, per direction, the bytes the
      // service counters hold; nothing for the internal, loopback or outside transfers.
      const dests = await backend.readDestinations(20);
      const shown = dests.map((d) =>
        `${d.service} ${d.direction} ${d.protocol} ${d.address}:${d.port}`
      )
        .sort();
      assertEquals(shown, [
        "svc rx tcp 192.0.2.2:5000",
        "svc rx tcp 2001:db8::2:5000",
        "svc tx tcp 192.0.2.2:5000",
        "svc tx tcp 2001:db8::2:5000",
      ]);
      const sum = (dir: string) =>
        dests.filter((d) => d.direction === dir).reduce((a, d) => a + d.bytes, 0);
      assertEquals([sum("rx"), sum("tx")], [ext.rxBytes, ext.txBytes], "dests add up");
      const tx4 = dests.find((d) => d.direction === "tx" && d.address === "192.0.2.2")!;
      within(tx4.bytes, send4, "destination 192.0.2.2 tx", tx4.packets, r.tx);
      assertEquals(dests[0].bytes >= dests[dests.length - 1].bytes, true, "most bytes first");
      assertEquals((await backend.readDestinations(1)).length, 1, "limit");

      // Service restart: the cgroup is removed and recreated with a new id.
      const oldId = cgroupId(lab.mount, svc);
      await lab.rmcg(child);
      await lab.rmcg(svc);
      lab.mkcg(svc);
      lab.mkcg(child);
      assert(cgroupId(lab.mount, svc) !== oldId, "a recreated cgroup gets a new id");
      await lab.transfer(child, "192.0.2.2", 1 << 20);
      assertEquals((await backend.read()).svc, ext, "a stale id counts nothing");
      lab.mkcg(late);
      await backend.retarget(targets());
      const r0 = { ...lab.retransmitted };
      await lab.transfer(child, "192.0.2.2", 1 << 20);
      const r1 = { ...lab.retransmitted };
      await lab.transfer(late, "2001:db8::2", 1 << 20);
      const r2 = { ...lab.retransmitted };
      const after = await backend.read();
      within(
        after.svc.txBytes - ext.txBytes,
        1 << 20,
        "tx after retarget",
        after.svc.txPackets - ext.txPackets,
        r1.tx - r0.tx,
      );
      within(
        after.svc.rxBytes - ext.rxBytes,
        4 << 20,
        "rx after retarget",
        after.svc.rxPackets - ext.rxPackets,
        r1.rx - r0.rx,
      );
      within(
        after.late.txBytes,
        1 << 20,
        "tx of a late service",
        after.late.txPackets,
        r2.tx - r1.tx,
      );
      within(
        after.late.rxBytes,
        4 << 20,
        "rx of a late service",
        after.late.rxPackets,
        r2.rx - r1.rx,
      );

      // Stop twice: links gone from the kernel, no BPF fd left in this process.
      await backend.stop();
      await backend.stop();
      const left = (await bpftoolLinks()).filter((l) => ourProgs.includes(l.prog_id));
      assertEquals(left, [], "no link of ours left attached");
      assertEquals(heldBpfObjects(), [], "no BPF object held after stop");
    } finally {
      await backend.stop();
      await lab.cleanup();
    }
  },
});

/**
 * Runs inside the cgroup namespace: starts the ebpf backend and the connect events
 * collector for "/svc" (as the namespace names it), prints their logs, waits for a line on
 * stdin (the test's traffic is done), prints the counters and events, stops both.
 */
const NAMESPACED_SAMPLER = `
import { EbpfBackend } from ${JSON.stringify(new URL("./ebpf.ts", import.meta.url).href)};
import { EventCollector } from ${
  JSON.stringify(new URL("../events/collector.ts", import.meta.url).href)
};
import { cgroupId, findCgroup2Mount } from ${
  JSON.stringify(new URL("../lib/cgroup.ts", import.meta.url).href)
};
import { DEFAULT_EXCLUDE, parseCidr } from ${
  JSON.stringify(new URL("../lib/cidr.ts", import.meta.url).href)
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
  console.log(JSON.stringify({ counters, events: seen }));
} finally {
  events.stop();
  await backend.stop();
}`;

Deno.test({
  name: "ebpf backend and connect events count inside a cgroup namespace (levels offset)",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    // The namespace's root is <top>/ns, two levels below the real root: the sampler sees
    // "/svc" at level 1, the kernel puts it at level 3.
    const lab = new Lab("/ns");
    let sampler: Deno.ChildProcess | null = null;
    try {
      await lab.setup();
      lab.mkcg(`${lab.base}/sampler`);
      const nsRoot = cgroupDir(lab.mount, lab.base);
      // Join the namespace's future root, unshare there, remount cgroup2 so the mount shows
      // the namespaced view (as a container's does), then sit in a leaf below the root.
      const inner = 'umount "$1" && mount -t cgroup2 none "$1" && ' +
        'echo $$ > "$1/sampler/cgroup.procs" && exec "$2" eval "$3"';
      sampler = new Deno.Command("sh", {
        args: [
          "-c",
          'echo $$ > "$1/cgroup.procs" && shift && ' +
          'exec unshare --cgroup --mount --propagation private sh -c "$@"',
          "sh",
          nsRoot,
          inner,
          "sampler",
          lab.mount.mountPoint,
          DENO,
          NAMESPACED_SAMPLER,
        ],
        env: { DENO_NO_UPDATE_CHECK: "1" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines = sampler.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let pendingText = "";
      const nextLine = async (): Promise<string> => {
        for (;;) {
          const nl = pendingText.indexOf("\n");
          if (nl >= 0) {
            const line = pendingText.slice(0, nl);
            pendingText = pendingText.slice(nl + 1);
            return line;
          }
          const { value, done } = await lines.read();
          if (done) {
            const err = await new Response(sampler!.stderr).text();
            throw new Error(`The namespaced sampler ended early: ${pendingText}${err}`);
          }
          pendingText += value;
        }
      };
      const started = JSON.parse(await nextLine());
      assertEquals(started.own, "0::/sampler", "the sampler sits in its namespace's /sampler");
      assertEquals(started.mount, lab.mount.mountPoint);
      assertEquals(started.target, String(cgroupId(lab.mount, `${lab.base}/svc`)), "same cgroup");
      assert(
        started.logs.some((l: string) =>
          l.includes("cgroup namespace detected: levels offset by 2")
        ),
        `offset logged: ${started.logs.join(" | ")}`,
      );

      const send = 3 << 20;
      const got = await lab.transfer(`${lab.base}/svc/child`, "192.0.2.2", send);
      const r = { ...lab.retransmitted }; // only this transfer is counted: the first one
      await lab.transfer(`${lab.base}/svc/child`, "192.168.77.2", 1 << 20); // internal
      await lab.transfer(`${lab.base}/other`, "2001:db8::2", 1 << 20); // outside the target

      const writer = sampler.stdin.getWriter();
      await writer.write(new Uint8Array([10]));
      await writer.close();
      const done = JSON.parse(await nextLine());
      within(
        done.counters.txBytes,
        send,
        "tx counted from inside the cgroup namespace",
        done.counters.txPackets,
        r.tx,
      );
      within(
        done.counters.rxBytes,
        got,
        "rx counted from inside the cgroup namespace",
        done.counters.rxPackets,
        r.rx,
      );
      assertEquals(
        [...new Set(done.events)],
        ["svc 192.0.2.2:5000", "svc 192.168.77.2:5000"],
        "connect events of the target only",
      );
      assertEquals((await sampler.status).code, 0, "the sampler stopped cleanly");
      await sampler.stderr.cancel();
      sampler = null;
    } finally {
      if (sampler) {
        try {
          sampler.kill("SIGKILL");
        } catch { /* gone */ }
        await sampler.status;
      }
      await lab.cleanup();
    }
  },
});

Deno.test({
  name: "ebpf programs judge addresses as configured (BPF_PROG_TEST_RUN from a target cgroup)",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    await inTargetCgroup(async (mount, target) => {
      const backend = new EbpfBackend();
      try {
        await backend.start(
          [{ name: "me", path: target, id: cgroupId(mount, target) }],
          options(mount),
        );
        const ifindex = nonLoopbackIfindex();
        const local4 = parseIpv4("192.0.2.1")!, local6 = parseIpv6("2001:db8::1")!;
        const cases: [string, Uint8Array, boolean][] = [
          ["192.0.2.9", parseIpv4("192.0.2.9")!, true],
          ["10.1.2.3", parseIpv4("10.1.2.3")!, false],
          ["100.64.0.1", parseIpv4("100.64.0.1")!, false],
          ["100.127.255.255", parseIpv4("100.127.255.255")!, false],
          ["100.128.0.1", parseIpv4("100.128.0.1")!, true],
          ["172.15.0.1", parseIpv4("172.15.0.1")!, true],
          ["172.31.0.1", parseIpv4("172.31.0.1")!, false],
          ["172.32.0.1", parseIpv4("172.32.0.1")!, true],
          ["169.254.9.9", parseIpv4("169.254.9.9")!, false],
          ["255.255.255.255", parseIpv4("255.255.255.255")!, false],
          ["2001:db8::9", parseIpv6("2001:db8::9")!, true],
          // 0000::/16 is the one default range the 16-bit table leaves to the trie.
          ["::1", parseIpv6("::1")!, false],
          ["::2", parseIpv6("::2")!, true],
          ["fe80::1", parseIpv6("fe80::1")!, false],
          ["febf::1", parseIpv6("febf::1")!, false],
          ["fec0::1", parseIpv6("fec0::1")!, true],
          ["fd12::1", parseIpv6("fd12::1")!, false],
          ["ff02::1", parseIpv6("ff02::1")!, false],
          ["::ffff:192.168.1.1", parseIpv6("::ffff:192.168.1.1")!, false],
          ["::ffff:192.0.2.9", parseIpv6("::ffff:192.0.2.9")!, true],
        ];
        joinCgroup(cgroupDir(mount, target));
        for (const dir of ["ingress", "egress"] as const) {
          const fd = backend.programFd(dir);
          for (const [text, remote, counts] of cases) {
            const local = remote.length === 4 ? local4 : local6;
            const frame = craftPacket(
              dir === "egress" ? { src: local, dst: remote } : { src: remote, dst: local },
            );
            const before = (await backend.read()).me;
            const r = testRun(fd, { frame, ifindex, repeat: 3 });
            assertEquals(r.retval, 1, `${dir} ${text}: never drops`);
            const now = (await backend.read()).me;
            const [bytes, packets] = dir === "egress"
              ? [now.txBytes - before.txBytes, now.txPackets - before.txPackets]
              : [now.rxBytes - before.rxBytes, now.rxPackets - before.rxPackets];
            const want = counts ? [3 * (frame.length - 14), 3] : [0, 0];
            assertEquals([bytes, packets], want, `${dir} remote ${text}`);
          }
          // Loopback never counts, whatever the address.
          const before = await backend.read();
          const frame = craftPacket({ src: local4, dst: parseIpv4("192.0.2.9")! });
          testRun(fd, { frame, ifindex: 1, repeat: 3 });
          assertEquals(await backend.read(), before, `${dir} on lo`);
        }
      } finally {
        await backend.stop();
      }
    });
  },
});

Deno.test({
  name: "ebpf backend without privilege fails with the fix and holds nothing",
  ignore: !isRoot,
  async fn() {
    // Root stripped of every capability: the bpf() syscall says EPERM.
    const code = `
      import { EbpfBackend } from ${JSON.stringify(new URL("./ebpf.ts", import.meta.url).href)};
      import { findCgroup2Mount } from ${
      JSON.stringify(new URL("../lib/cgroup.ts", import.meta.url).href)
    };
      try {
        await new EbpfBackend().start([], { mount: findCgroup2Mount(), exclude: [], ctMark: 0,
          ctMask: 0, log: () => {} });
        console.log("started");
      } catch (e) { console.log(e.message); }`;
    const out = await new Deno.Command("setpriv", {
      args: [
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        DENO,
        "eval",
        code,
      ],
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assertStringIncludes(text, "EPERM", new TextDecoder().decode(out.stderr));
    assertStringIncludes(text, "run as root or with CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON");
  },
});

Deno.test({
  name: "ebpf backend start that fails halfway leaves nothing loaded",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    const backend = new EbpfBackend();
    const mount = { mountPoint: "/nonexistent-stb-netacct-cgroup2", layout: "unified" as const };
    let error: unknown;
    try {
      await backend.start([], options(mount));
    } catch (e) {
      error = e;
    }
    assert(error instanceof BackendError, `start failed with a BackendError: ${error}`);
    assertStringIncludes(error.message, "/nonexistent-stb-netacct-cgroup2");
    assertEquals(heldBpfObjects(), [], "programs and maps closed after the failed start");
    await backend.stop(); // and stop after a failed start is fine
  },
});

Deno.test({
  name: `ebpf program finds a target among ${MAX_SERVICES} services, some sharing its bucket`,
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    const mount = findCgroup2Mount();
    const tag = crypto.randomUUID().slice(0, 8);
    const base = `/stb-netacct-test-${tag}`;
    const home = ownCgroupPath();
    const backend = new EbpfBackend();
    const made: string[] = [];
    try {
      for (const p of [base, `${base}/me`, `${base}/other`]) {
        Deno.mkdirSync(cgroupDir(mount, p));
        made.push(p);
      }
      const me = cgroupId(mount, `${base}/me`)!;
      const other = cgroupId(mount, `${base}/other`)!;
      const frame = craftPacket({ src: parseIpv4("192.0.2.1")!, dst: parseIpv4("192.0.2.9")! });
      const ifindex = nonLoopbackIfindex();
      // `sharing` made-up ids in the real id's bucket under the first multiplier, listed
      // before it, so the program must scan past them; the rest spread, all at its depth.
      const targetsWith = (sharing: number): ServiceTarget[] => {
        const first = chooseBucketMul([me]);
        const colliders: bigint[] = [];
        for (let id = me + 1n; colliders.length < sharing; id++) {
          if (id !== other && bucketOf(id, first) === bucketOf(me, first)) colliders.push(id);
        }
        const spread = (i: number) => me + 1_000_000_000n + BigInt(i) * 7919n;
        const targets = Array.from({ length: MAX_SERVICES - 1 }, (_, i) => ({
          name: `fake-${i}`,
          path: `${base}/fake-${i}`,
          id: colliders[i] ?? spread(i),
        }));
        targets.push({ name: "me", path: `${base}/me`, id: me });
        return targets;
      };
      const sendFrom = async (where: string) => {
        joinCgroup(cgroupDir(mount, `${base}/${where}`));
        const before = await backend.read();
        testRun(backend.programFd("egress"), { frame, ifindex, repeat: 5 });
        joinCgroup(cgroupDir(mount, home));
        const after = await backend.read();
        const fakes = Object.entries(after).filter(([n, c]) =>
          n !== "me" && c.txPackets > (before[n]?.txPackets ?? 0)
        );
        assertEquals(fakes, [], `no made-up service counted from ${where}`);
        return after.me!.txPackets - before.me!.txPackets;
      };
      // The bucket full (BUCKET_SLOTS ids): the first multiplier stays and "me" is last.
      const full = targetsWith(BUCKET_SLOTS - 1);
      assertEquals(chooseBucketMul(full.map((t) => t.id!)), chooseBucketMul([me]));
      await backend.start(full, options(mount));
      assertEquals(await sendFrom("me"), 5, "counted past the ids sharing its bucket");
      assertEquals(await sendFrom("other"), 0, "a cgroup that is no target");
      // Retarget: "me" gone, then back; each list replaces the whole previous one.
      await backend.retarget(full.map((t) => t.name === "me" ? { ...t, id: null } : t));
      assertEquals(await sendFrom("me"), 0, "untargeted: nothing counted");
      await backend.retarget(full);
      assertEquals(await sendFrom("me"), 5, "targeted again");
      // One id too many for the bucket: another multiplier spreads them, still found.
      const over = targetsWith(BUCKET_SLOTS);
      assert(chooseBucketMul(over.map((t) => t.id!)) !== chooseBucketMul([me]));
      await backend.retarget(over);
      assertEquals(await sendFrom("me"), 5, "found under the new multiplier");
      assertEquals(await sendFrom("other"), 0, "still no target");
    } finally {
      joinCgroup(cgroupDir(mount, home));
      await backend.stop();
      for (const p of made.reverse()) Deno.removeSync(cgroupDir(mount, p));
    }
  },
});

Deno.test({
  name: "ebpf holds 100,000 excluded prefixes and still judges addresses by them",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    await inTargetCgroup(async (mount, target) => {
      // 50,000 IPv4 /24s from 20.0.0.0 and 50,000 IPv6 /48s from 2001:db8::: none overlap.
      const exclude = [
        ...Array.from({ length: 50_000 }, (_, i) => `20.${i >> 8}.${i & 255}.0/24`),
        ...Array.from({ length: 50_000 }, (_, i) => `2001:db8:${i.toString(16)}::/48`),
      ].map(parseCidr);
      const backend = new EbpfBackend();
      try {
        const t0 = performance.now();
        await backend.start([{ name: "me", path: target, id: cgroupId(mount, target) }], {
          ...options(mount),
          exclude,
        });
        console.log(
          `start with ${exclude.length} prefixes: ${(performance.now() - t0).toFixed(0)} ms`,
        );
        joinCgroup(cgroupDir(mount, target));
        const fd = backend.programFd("egress");
        const ifindex = nonLoopbackIfindex();
        const cases: [string, boolean][] = [
          ["20.0.5.7", false],
          ["20.195.79.1", false],
          ["20.195.80.1", true],
          ["21.0.0.1", true],
          ["2001:db8:5::1", false],
          ["2001:db8:c34f::1", false],
          ["2001:db8:c350::1", true],
        ];
        for (const [text, counts] of cases) {
          const dst = parseIpv4(text) ?? parseIpv6(text)!;
          const src = dst.length === 4 ? parseIpv4("192.0.2.1")! : parseIpv6("2001:db8::1")!;
          const before = (await backend.read()).me.txPackets;
          testRun(fd, { frame: craftPacket({ src, dst }), ifindex, repeat: 1 });
          const after = (await backend.read()).me.txPackets;
          assertEquals(after - before, counts ? 1 : 0, `remote ${text}`);
        }
      } finally {
        await backend.stop();
      }
    });
  },
});

Deno.test("ebpf backend embeds exactly the committed bpf/netacct.bpf.o", async () => {
  const file = await Deno.readFile(new URL("../bpf/netacct.bpf.o", import.meta.url));
  assertEquals(objectBytes(), file, "run `make bpf` (bpf/build.sh regenerates the module)");
});

Deno.test({
  name: "ebpf probe loads the programs and leaves nothing in the kernel or this process",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    const mount = findCgroup2Mount();
    const backend = new EbpfBackend();
    await backend.probe([
      { name: "a", path: "/stb-netacct-probe/a", id: null },
      { name: "b", path: "/stb-netacct-probe/b", id: 123456789n },
    ], options(mount));
    // Unpinned: with no fd left, the kernel has freed the programs and maps, and no link
    // (which would be an fd too) can be attached.
    assertEquals(heldBpfObjects(), [], "no BPF fd held after probe");
    // Probing again works (nothing was left half made), and so does a real start after it.
    await backend.probe([], options(mount));
    await backend.start([], options(mount));
    await backend.stop();
  },
});

Deno.test({
  name: "ebpf probe without privilege fails with the fix (setpriv, all capabilities dropped)",
  ignore: !isRoot,
  async fn() {
    const code = `
      import { EbpfBackend } from ${JSON.stringify(new URL("./ebpf.ts", import.meta.url).href)};
      import { findCgroup2Mount } from ${
      JSON.stringify(new URL("../lib/cgroup.ts", import.meta.url).href)
    };
      try {
        await new EbpfBackend().probe([], { mount: findCgroup2Mount(), exclude: [], ctMark: 0,
          ctMask: 0, log: () => {} });
        console.log("probed");
      } catch (e) { console.log(e.name + ": " + e.message); }`;
    const out = await new Deno.Command("setpriv", {
      args: ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", DENO, "eval", code],
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assertStringIncludes(text, "LibbpfError", new TextDecoder().decode(out.stderr));
    assertStringIncludes(text, "EPERM");
    assertStringIncludes(text, "run as root or with CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON");
  },
});

Deno.test({
  name: "ebpf destinations: endpoint, port and protocol per packet; GSO correction adds headers",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    await inTargetCgroup(async (mount, target, home) => {
      const plain = new EbpfBackend(), corrected = new EbpfBackend();
      try {
        const targets = [{ name: "me", path: target, id: cgroupId(mount, target) }];
        await plain.start(targets, options(mount));
        await corrected.start(targets, { ...options(mount), gsoCorrection: true });
        const ifindex = nonLoopbackIfindex();
        const local = parseIpv4("192.0.2.1")!;
        const a = parseIpv4("198.51.100.7")!, b = parseIpv6("2001:db8:1::7")!;
        const mapped = parseIpv6("::ffff:203.0.113.5")!;
        const tcpA = craftPacket({ src: local, dst: a, sport: 40001, dport: 443 });
        const udpA = craftPacket({ src: local, dst: a, proto: "udp", sport: 40002, dport: 53 });
        const tcpB = craftPacket({ src: parseIpv6("2001:db8::1")!, dst: b, dport: 8443 });
        const inMapped = craftPacket({
          src: mapped,
          dst: parseIpv6("::ffff:192.0.2.1")!,
          sport: 80,
        });
        joinCgroup(cgroupDir(mount, target));
        const egress = [plain.programFd("egress"), corrected.programFd("egress")];
        const ingress = [plain.programFd("ingress"), corrected.programFd("ingress")];
        for (const fd of egress) {
          testRun(fd, { frame: tcpA, ifindex, repeat: 3 });
          testRun(fd, { frame: udpA, ifindex, repeat: 2 });
          // Back to an endpoint already in the LRU map, then a 5-segment GSO aggregate 4 times.
          testRun(fd, { frame: tcpA, ifindex, repeat: 1 });
          testRun(fd, { frame: tcpB, ifindex, repeat: 4, gsoSegs: 5 });
        }
        for (const fd of ingress) testRun(fd, { frame: inMapped, ifindex, repeat: 2, gsoSegs: 3 });
        joinCgroup(cgroupDir(mount, home));
        const row = (d: { direction: string; protocol: string; address: string; port: number }) =>
          `${d.direction} ${d.protocol} ${d.address}:${d.port}`;
        const l3 = (f: Uint8Array) => f.length - 14;
        for (const [backend, gso] of [[plain, false], [corrected, true]] as const) {
          const got = Object.fromEntries(
            (await backend.readDestinations(20)).map((d) => [row(d), [d.bytes, d.packets]]),
          );
          // IPv6: 40-byte IP + 20-byte TCP header per extra segment; IPv4: 20 + 20.
          const extra = (segs: number, hdr: number) => gso ? (segs - 1) * hdr : 0;
          assertEquals(got, {
            "tx tcp 198.51.100.7:443": [4 * l3(tcpA), 4],
            "tx udp 198.51.100.7:53": [2 * l3(udpA), 2],
            "tx tcp 2001:db8:1::7:8443": [4 * (l3(tcpB) + extra(5, 60)), 4],
            "rx tcp 203.0.113.5:80": [2 * (l3(inMapped) + extra(3, 60)), 2],
          }, `destinations, gso_correction ${gso}`);
          const me = (await backend.read()).me;
          assertEquals(
            [me.txBytes, me.rxBytes],
            [
              4 * l3(tcpA) + 2 * l3(udpA) + 4 * (l3(tcpB) + extra(5, 60)),
              2 * (l3(inMapped) + extra(3, 60)),
            ],
            `service counters, gso_correction ${gso}`,
          );
        }
      } finally {
        await plain.stop();
        await corrected.stop();
      }
    });
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
  async fn() {
    const lab = new Lab();
    const plain = new EbpfBackend(), corrected = new EbpfBackend();
    const svc = `${lab.base}/svc`;
    try {
      await lab.setup();
      // TSO off, GSO on, both ends: TCP still hands the cgroup hooks aggregates, cut into
      // wire segments in software just before the veth, which counts each one. GRO on at
      // the client only: its receive path merges the server's segments into aggregates
      // again (veth NAPI), so both directions see aggregates.
      await lab.ethtool(lab.client, lab.veths.client, "tso", "off", "gso", "on", "gro", "on");
      await lab.ethtool(lab.server, lab.veths.server, "tso", "off", "gso", "on", "gro", "off");
      const targets = [{ name: "svc", path: svc, id: cgroupId(lab.mount, svc) }];
      await plain.start(targets, options(lab.mount));
      await corrected.start(targets, { ...options(lab.mount), gsoCorrection: true });
      const wire0 = await lab.clientLinkStats();
      const c0 = (await corrected.read()).svc, p0 = (await plain.read()).svc;
      await lab.transfer(`${svc}/child`, "192.0.2.2", 16 << 20);
      await lab.transfer(`${svc}/child`, "2001:db8::2", 16 << 20);
      const wire1 = await lab.clientLinkStats();
      const c1 = (await corrected.read()).svc, p1 = (await plain.read()).svc;
      // L3 bytes on the wire. A frame the server takes without NAPI (GRO off) is counted
      // by the client's veth with its 14-byte Ethernet header; one the client takes
      // through NAPI (GRO on) after eth_type_trans, without it (drivers/net/veth.c:
      // veth_xdp_rcv counts skb->len into the peer's tx and its own rx).
      const wire = (dir: "rx" | "tx") =>
        (wire1[dir].bytes - wire0[dir].bytes) -
        (dir === "tx" ? 14 * (wire1[dir].packets - wire0[dir].packets) : 0);
      const err = (counted: number, dir: "rx" | "tx") => (counted - wire(dir)) / wire(dir) * 100;
      const figures = {
        tx: {
          wire: wire("tx"),
          plain_pct: err(p1.txBytes - p0.txBytes, "tx"),
          corrected_pct: err(c1.txBytes - c0.txBytes, "tx"),
        },
        rx: {
          wire: wire("rx"),
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
      }
      // Both directions were aggregates: without the correction their headers are missing.
      for (const dir of ["tx", "rx"] as const) {
        assert(figures[dir].plain_pct < -1, `${dir} uncorrected only ${figures[dir].plain_pct}%`);
      }
    } finally {
      await plain.stop();
      await corrected.stop();
      await lab.cleanup();
    }
  },
});
