/**
 * The kernel's share of an AF_PACKET monitor's cost (nethogs, iftop: libpcap with TPACKET_V3
 * rings), which the monitor's own CPU never shows: every packet of the device it watches is
 * handed to its packet socket in the receive softirq (tpacket_rcv from
 * __netif_receive_skb_core) or, for outgoing packets, in the sender's own context
 * (dev_queue_xmit_nit clones the skb, then tpacket_rcv copies it into the ring), so that time
 * is charged to iperf3, ksoftirqd or whoever else runs.
 *
 * Measured by sampling, not by fentry/fexit timing: on this testbed's kernel (6.18, lockdown
 * "integrity") loading any fentry program fails with EPERM, even an empty one on
 * tcp_v4_rcv, while `perf record` works. `perf record -e cpu-clock -c 100000 -a -g` takes a
 * sample with its kernel call chain every 100 µs of CPU time on every core; a sample whose
 * chain holds one of CAPTURE_FRAMES is 100 µs spent capturing. Sampling counts the whole
 * path (the clone in dev_queue_xmit_nit and the copy into the ring), but it is a statistical
 * figure: its relative error is about 1/sqrt(samples), so the sample count goes with it.
 * Not counted: the taps' list walk in the receive and transmit paths outside those
 * functions (a few ns per packet) and the sampling itself (the timer interrupt and the
 * unwinding happen outside the sampled context; perf's own process CPU is reported beside).
 * Other packet captures running on the machine at the same time would be counted too.
 *
 *   deno run -A bench/capture_cost.ts SECONDS   (root: samples the whole machine for SECONDS
 *   and prints the capture cost, e.g. to check the figures by hand beside a running nethogs)
 */

import { endProcess } from "./lab.ts";
import { ensurePackages } from "./tools.ts";

/** Sampling period: cpu-clock ns between samples on each core (10 kHz). */
export const PERIOD_NS = 100_000;

/**
 * Frames that mean "capturing": the packet socket receive functions (tpacket_rcv for mmap
 * rings, packet_rcv for recvmsg sockets, packet_rcv_spkt for SOCK_PACKET) and
 * dev_queue_xmit_nit, which holds the clone of outgoing packets and calls tpacket_rcv.
 */
export const CAPTURE_FRAMES = [
  "tpacket_rcv",
  "packet_rcv",
  "packet_rcv_spkt",
  "dev_queue_xmit_nit",
] as const;

export interface PerfSamples {
  /** Every sample taken, all cores, all processes (idle included). */
  samples: number;
  /** Samples with a CAPTURE_FRAMES frame in their chain. */
  capture: number;
  /** Of `capture`: outgoing packets (dev_queue_xmit_nit in the chain). */
  captureTx: number;
  /** Samples per comm (the process or thread name). */
  byComm: Record<string, number>;
}

/**
 * `perf script -F comm,ip,sym` of a `perf record -g` file: one block per sample, the comm on
 * its first line, then one `\t<address> <symbol>` line per frame, a blank line after.
 */
export function parsePerfScript(text: string): PerfSamples {
  const capture = new Set<string>(CAPTURE_FRAMES);
  const out: PerfSamples = { samples: 0, capture: 0, captureTx: 0, byComm: {} };
  let inSample = false, isCapture = false, isTx = false;
  const end = () => {
    if (!inSample) return;
    if (isCapture) out.capture++;
    if (isTx) out.captureTx++;
    inSample = isCapture = isTx = false;
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      end();
    } else if (line.startsWith("\t") || line.startsWith(" ")) {
      // "\tffffffff82150338 tpacket_rcv": the symbol follows the address.
      const sym = line.trim().split(/\s+/)[1] ?? "";
      if (capture.has(sym)) {
        isCapture = true;
        if (sym === "dev_queue_xmit_nit") isTx = true;
      }
    } else {
      end();
      inSample = true;
      out.samples++;
      const comm = line.trim();
      out.byComm[comm] = (out.byComm[comm] ?? 0) + 1;
    }
  }
  end();
  return out;
}

export interface LinkStats {
  ifindex: number;
  rxPackets: number;
  txPackets: number;
  /** Bytes as the device counts them (L2: with the Ethernet header). */
  rxBytes: number;
  txBytes: number;
}

/** `ip -j -s link show DEV` to the device's ifindex and packet and byte counters. */
export function parseLinkStats(text: string): LinkStats {
  const links = JSON.parse(text);
  const l = Array.isArray(links) ? links[0] : undefined;
  const s = l?.stats64 ?? l?.stats;
  if (typeof l?.ifindex !== "number" || typeof s?.rx?.packets !== "number") {
    throw new Error(
      `ip -j -s link printed no device with packet counters: "${text.slice(0, 200)}"`,
    );
  }
  return {
    ifindex: l.ifindex,
    rxPackets: s.rx.packets,
    txPackets: s.tx.packets,
    rxBytes: s.rx.bytes,
    txBytes: s.tx.bytes,
  };
}

export async function linkStats(netns: string, dev: string): Promise<LinkStats> {
  const out = await new Deno.Command("ip", {
    args: ["-n", netns, "-j", "-s", "link", "show", "dev", dev],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `ip -n ${netns} -s link show dev ${dev} failed: ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
  return parseLinkStats(new TextDecoder().decode(out.stdout));
}

/** What one run cost in capture. */
export interface CaptureFigures {
  /** Kernel time in capture frames, % of one core over the run. */
  kernel_pct: number;
  /** Of kernel_pct: outgoing packets (dev_queue_xmit_nit: clone + copy). */
  kernel_tx_pct: number;
  /** Samples behind kernel_pct (relative error about 1/sqrt). */
  samples: number;
  /** The monitor's own samples as % of one core: a check against its schedstat CPU. */
  monitor_sampled_pct: number | null;
  /** Packets (rx + tx) that crossed the watched device per second. */
  packets_per_s: number;
  /** Capture time per packet crossing the device, ns. */
  ns_per_packet: number | null;
}

const round = (x: number, d: number) => Number(x.toFixed(d));

export function captureFigures(
  s: PerfSamples,
  packets: number,
  seconds: number,
  monitorComm: string | null,
): CaptureFigures {
  const ns = s.capture * PERIOD_NS;
  const pct = (n: number) => round(n * PERIOD_NS / (seconds * 1e9) * 100, 3);
  return {
    kernel_pct: pct(s.capture),
    kernel_tx_pct: pct(s.captureTx),
    samples: s.capture,
    monitor_sampled_pct: monitorComm === null ? null : pct(s.byComm[monitorComm] ?? 0),
    packets_per_s: Math.round(packets / seconds),
    ns_per_packet: packets ? Math.round(ns / packets) : null,
  };
}

export interface Sampler {
  pid: number;
  /** Stops perf (SIGINT) and reads its samples; removes its data file. */
  stop(): Promise<PerfSamples>;
}

/**
 * Starts `perf record` on every core, writing into `dir` (a tmpfs: 10 kHz with call chains
 * on two busy cores is ~5 MB/s). Resolves once perf has opened its events.
 */
export async function startSampler(dir: string): Promise<Sampler> {
  const data = `${dir}/perf-${crypto.randomUUID().slice(0, 8)}.data`;
  const child = new Deno.Command("perf", {
    args: [
      "record",
      "-q",
      "-e",
      "cpu-clock",
      "-c",
      String(PERIOD_NS),
      "-a",
      "-g",
      "--kernel-callchains",
      // No build-id pass over the data at the end: the symbols come from this kernel.
      "-B",
      "-N",
      "-o",
      data,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const errText = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  const pump = (async () => {
    for (;;) {
      const { value, done } = await errText.read();
      if (done) return;
      err += value;
    }
  })();
  let exited = false;
  child.status.then(() => exited = true);
  const kill = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await pump.catch(() => {});
    await Deno.remove(data).catch(() => {});
  };
  // perf writes the file's header once its events are open on every core.
  for (let waited = 0;; waited += 20) {
    const size = await Deno.stat(data).then((s) => s.size, () => 0);
    if (size > 0) break;
    if (exited || waited > 10_000) {
      await kill();
      throw new Error(
        `perf record did not start within 10 s: ${err.trim() || "no message"}; check that ` +
          `\`perf record -a -g -- sleep 1\` works as root (Debian package linux-perf)`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 100));
  return {
    pid: child.pid,
    async stop() {
      const status = await endProcess(child, 15_000, "SIGINT");
      await pump.catch(() => {});
      try {
        if (!status.success && status.signal !== "SIGINT") {
          throw new Error(`perf record exited with ${status.code}: ${err.trim()}`);
        }
        const out = await new Deno.Command("perf", {
          args: ["script", "-i", data, "-F", "comm,ip,sym"],
          stdout: "piped",
          stderr: "piped",
        }).output();
        if (!out.success) {
          throw new Error(
            `perf script -i ${data} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
          );
        }
        return parsePerfScript(new TextDecoder().decode(out.stdout));
      } finally {
        await Deno.remove(data).catch(() => {});
      }
    },
  };
}

async function main(): Promise<void> {
  const seconds = Number(Deno.args[0] ?? "");
  if (!(seconds > 0) || Deno.args.length !== 1) {
    console.error("usage: deno run -A bench/capture_cost.ts SECONDS");
    Deno.exit(2);
  }
  await ensurePackages(["perf"]);
  const dir = await Deno.makeTempDir({ prefix: "stb-netacct-capture-" });
  try {
    const sampler = await startSampler(dir);
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const s = await sampler.stop();
    const f = captureFigures(s, 0, seconds, null);
    console.log(
      `capture frames: ${s.capture} samples = ${f.kernel_pct}% of one core ` +
        `(outgoing ${f.kernel_tx_pct}%), of ${s.samples} samples in ${seconds} s`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
