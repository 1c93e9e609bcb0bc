/**
 * The ebpf backend's programs on the real kernel without traffic (run as root: `deno test
 * -A backends/ebpf_test.ts`): crafted packets through BPF_PROG_TEST_RUN from a target
 * cgroup, capacity, probes, failures and privileges. Counting real traffic in the test lab
 * is tests/backends/ebpf_test.ts. Every cgroup made is removed in `finally`, also when an
 * assertion fails halfway.
 */

import { EbpfBackend, objectBytes } from "./ebpf.ts";
import { BUCKET_SLOTS, bucketOf, chooseBucketMul, MAX_SERVICES } from "../bpf/netacct_abi.ts";
import type { BackendOptions, ServiceTarget } from "./backend.ts";
import { BackendError } from "./backend.ts";
import { type Cgroup2Mount, cgroupDir, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { DEFAULT_EXCLUDE, parseCidr, parseIpv4, parseIpv6 } from "../lib/cidr.ts";
import {
  assert,
  assertEquals,
  assertNoBpfHeld,
  assertStringIncludes,
  present,
} from "../lib/test_assert.ts";
import {
  craftPacket,
  joinCgroup,
  nonLoopbackIfindex,
  ownCgroupPath,
  testRun,
} from "../bpf/packet_run.ts";

const DENO = Deno.execPath();
const isRoot = Deno.uid() === 0;

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

Deno.test({
  name: "ebpf programs skip an excluded interface by its ifindex (BPF_PROG_TEST_RUN)",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    await inTargetCgroup(async (mount, target) => {
      const ifindex = nonLoopbackIfindex();
      const name = [...Deno.readDirSync("/sys/class/net")].map((e) => e.name).find((n) =>
        Number(Deno.readTextFileSync(`/sys/class/net/${n}/ifindex`).trim()) === ifindex
      )!;
      const frame = craftPacket({ src: parseIpv4("192.0.2.1")!, dst: parseIpv4("198.51.100.9")! });
      for (const [names, counted] of [[[name], 0], [["stb-absent0"], 3]] as const) {
        const backend = new EbpfBackend();
        const logs: string[] = [];
        try {
          await backend.start(
            [{ name: "me", path: target, id: cgroupId(mount, target) }],
            { ...options(mount, logs), excludeInterfaces: [...names] },
          );
          joinCgroup(cgroupDir(mount, target));
          const before = present((await backend.read()).me, "me");
          testRun(backend.programFd("egress"), { frame, ifindex, repeat: 3 });
          const now = present((await backend.read()).me, "me");
          assertEquals(Number(now.txPackets - before.txPackets), counted, `excluding ${names}`);
          if (counted) assert(logs.some((l) => l.includes('"stb-absent0"')), logs.join("\n"));
        } finally {
          await backend.stop();
        }
      }
    });
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
            const before = present((await backend.read()).me, "me");
            const r = testRun(fd, { frame, ifindex, repeat: 3 });
            assertEquals(r.retval, 1, `${dir} ${text}: never drops`);
            const now = present((await backend.read()).me, "me");
            const [bytes, packets] = dir === "egress"
              ? [now.txBytes - before.txBytes, now.txPackets - before.txPackets].map(Number)
              : [now.rxBytes - before.rxBytes, now.rxPackets - before.rxPackets].map(Number);
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
    assertNoBpfHeld("programs and maps closed after the failed start");
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
        return Number(after.me!.txPackets - before.me!.txPackets);
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
          const before = present((await backend.read()).me, "me").txPackets;
          testRun(fd, { frame: craftPacket({ src, dst }), ifindex, repeat: 1 });
          const after = present((await backend.read()).me, "me").txPackets;
          assertEquals(Number(after - before), counts ? 1 : 0, `remote ${text}`);
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
    assertNoBpfHeld("no BPF fd held after probe");
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
        await plain.start(targets, { ...options(mount), gsoCorrection: false });
        await corrected.start(targets, options(mount)); // the default corrects
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
            (await backend.readDestinations(20)).map((
              d,
            ) => [row(d), [Number(d.bytes), Number(d.packets)]]),
          );
          // IPv6: 40-byte IP + 20-byte TCP header per extra segment; IPv4: 20 + 20. With the
          // correction an aggregate is the segments it stands for, bytes and packets.
          const extra = (segs: number, hdr: number) => gso ? (segs - 1) * hdr : 0;
          const segs = (n: number) => gso ? n : 1;
          assertEquals(got, {
            "tx tcp 198.51.100.7:443": [4 * l3(tcpA), 4],
            "tx udp 198.51.100.7:53": [2 * l3(udpA), 2],
            "tx tcp 2001:db8:1::7:8443": [4 * (l3(tcpB) + extra(5, 60)), 4 * segs(5)],
            "rx tcp 203.0.113.5:80": [2 * (l3(inMapped) + extra(3, 60)), 2 * segs(3)],
          }, `destinations, gso_correction ${gso}`);
          const me = present((await backend.read()).me, "me");
          assertEquals(
            [me.txBytes, me.rxBytes, me.txPackets, me.rxPackets].map(Number),
            [
              4 * l3(tcpA) + 2 * l3(udpA) + 4 * (l3(tcpB) + extra(5, 60)),
              2 * (l3(inMapped) + extra(3, 60)),
              4 + 2 + 4 * segs(5),
              2 * segs(3),
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
