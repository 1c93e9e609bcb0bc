/**
 * BPF_PROG_TEST_RUN for cgroup_skb programs: crafted packets run through a loaded program
 * without any traffic. Used by ebpf_test.ts (the program's decisions, address by address),
 * bench/bpf_bench.ts (ns per packet) and, at every start, levels.ts (which cgroup
 * levels the kernel sees this process at).
 *
 * What the kernel does with it (net/bpf/test_run.c, bpf_prog_test_run_skb): the data is an
 * Ethernet frame; the skb's network header starts after it, so the program sees the IP
 * header at skb->data. The skb gets a dummy socket made by sk_alloc(), which tags it with
 * the CALLING task's cgroup2 cgroup: bpf_skb_ancestor_cgroup_id() answers for the cgroup
 * of the process running the test, so a test or benchmark that wants the counted path must
 * sit in (or below) a target cgroup. The device is loopback unless __sk_buff.ifindex names
 * another one, and netacct ignores loopback, so callers pass a real interface.
 */

import { check, lib, TEST_RUN_OPTS } from "./libbpf.ts";

/** sizeof(struct __sk_buff) on Linux >= 5.16, and where its ifindex lives. */
const SK_BUFF_SIZE = 192;
const SK_BUFF_IFINDEX = 40;
/** __sk_buff.gso_segs: the test run copies it into the skb's shared info. */
const SK_BUFF_GSO_SEGS = 164;
const ETH_HLEN = 14;

export interface PacketSpec {
  src: Uint8Array;
  dst: Uint8Array;
  /** Bytes after the IP header, transport header included (1440 by default). */
  payload?: number;
  /** Transport protocol (TCP by default); its header starts the payload. */
  proto?: "tcp" | "udp";
  sport?: number;
  dport?: number;
}

/**
 * An Ethernet + IPv4 or IPv6 (by address length) frame whose payload starts with a TCP
 * header (20 bytes, no options) or a UDP header carrying `sport` and `dport`.
 */
export function craftPacket(spec: PacketSpec): Uint8Array<ArrayBuffer> {
  const v6 = spec.src.length === 16;
  const ipLen = (v6 ? 40 : 20) + (spec.payload ?? 1440);
  const protoNumber = spec.proto === "udp" ? 17 : 6;
  const frame = new Uint8Array(ETH_HLEN + ipLen);
  const view = new DataView(frame.buffer);
  frame.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]); // locally administered MACs
  view.setUint16(12, v6 ? 0x86dd : 0x0800);
  const ip = ETH_HLEN;
  if (v6) {
    view.setUint32(ip, 0x60000000);
    view.setUint16(ip + 4, ipLen - 40);
    frame[ip + 6] = protoNumber; // next header
    frame[ip + 7] = 64;
    frame.set(spec.src, ip + 8);
    frame.set(spec.dst, ip + 24);
  } else {
    frame[ip] = 0x45;
    view.setUint16(ip + 2, ipLen);
    frame[ip + 8] = 64;
    frame[ip + 9] = protoNumber;
    frame.set(spec.src, ip + 12);
    frame.set(spec.dst, ip + 16);
  }
  const l4 = ip + (v6 ? 40 : 20);
  if (frame.length >= l4 + 8) {
    view.setUint16(l4, spec.sport ?? 40000);
    view.setUint16(l4 + 2, spec.dport ?? 443);
    if (protoNumber === 17) view.setUint16(l4 + 4, ipLen - (v6 ? 40 : 20));
    else if (frame.length >= l4 + 13) frame[l4 + 12] = 5 << 4; // data offset: 20 bytes
  }
  return frame;
}

/** The ifindex of an up, non-loopback interface of this netns (the test run's device). */
export function nonLoopbackIfindex(): number {
  for (const e of Deno.readDirSync("/sys/class/net")) {
    if (e.name === "lo") continue;
    const index = Number(Deno.readTextFileSync(`/sys/class/net/${e.name}/ifindex`).trim());
    if (index > 1) return index;
  }
  throw new Error("No network interface besides lo in this namespace");
}

export interface TestRunResult {
  retval: number;
  /** Kernel-measured average ns per repetition (whole ns: the kernel rounds down). */
  durationNs: number;
  /** Wall time of the whole call divided by `repeat`: fractional, includes the syscall. */
  wallNsPerRun: number;
}

export interface PacketRun {
  frame: Uint8Array<ArrayBuffer>;
  /** The interface the packet seems to come through (not loopback: netacct ignores it). */
  ifindex: number;
  repeat: number;
  /** The skb claims to be a GSO aggregate of this many segments (0: none). */
  gsoSegs?: number;
}

/** Runs `progFd` on a crafted packet, `repeat` times. */
export function testRun(progFd: number, run: PacketRun): TestRunResult {
  const { frame, ifindex, repeat, gsoSegs = 0 } = run;
  const ctx = new Uint8Array(SK_BUFF_SIZE);
  new DataView(ctx.buffer).setUint32(SK_BUFF_IFINDEX, ifindex, true);
  new DataView(ctx.buffer).setUint32(SK_BUFF_GSO_SEGS, gsoSegs, true);
  const opts = new Uint8Array(TEST_RUN_OPTS.size);
  const view = new DataView(opts.buffer);
  const ptr = (b: Uint8Array<ArrayBuffer>) =>
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
  view.setBigUint64(TEST_RUN_OPTS.sz, BigInt(TEST_RUN_OPTS.size), true);
  view.setBigUint64(TEST_RUN_OPTS.data_in, ptr(frame), true);
  view.setUint32(TEST_RUN_OPTS.data_size_in, frame.length, true);
  view.setBigUint64(TEST_RUN_OPTS.ctx_in, ptr(ctx), true);
  view.setUint32(TEST_RUN_OPTS.ctx_size_in, ctx.length, true);
  view.setInt32(TEST_RUN_OPTS.repeat, repeat, true);
  const t0 = performance.now();
  check("BPF_PROG_TEST_RUN", lib().bpf_prog_test_run_opts(progFd, opts));
  const wallNs = (performance.now() - t0) * 1e6;
  return {
    retval: view.getUint32(TEST_RUN_OPTS.retval, true),
    durationNs: view.getUint32(TEST_RUN_OPTS.duration, true),
    wallNsPerRun: wallNs / repeat,
  };
}

/** The cgroup2 path of this process ("0::/path" in /proc/self/cgroup). */
export function ownCgroupPath(): string {
  const line = Deno.readTextFileSync("/proc/self/cgroup").split("\n").find((l) =>
    l.startsWith("0::")
  );
  if (!line) throw new Error("This process has no cgroup2 membership in /proc/self/cgroup");
  return line.slice(3);
}

/** Moves this whole process (all threads) into the cgroup directory `dir`. */
export function joinCgroup(dir: string): void {
  Deno.writeTextFileSync(`${dir}/cgroup.procs`, `${Deno.pid}\n`);
}
