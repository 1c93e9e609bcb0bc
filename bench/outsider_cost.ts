/**
 * What stb-netacct costs traffic that is not StB's: an outsider cgroup (a sibling of the
 * service cgroup, no service) moves ~1 GB through the lab's veth (iperf3, half upload,
 * half download) and makes TCP connects and unconnected UDP sends, while `run --backend
 * NAME` counts the service cgroup in the same netns. Root only:
 *
 *   deno run -A bench/outsider_cost.ts [OUT.json] [--backends ebpf,nft,iptables]
 *     [--rounds N] [--mb N] [--connects N]
 *
 * Per backend:
 * - ebpf: the kernel's run count of every program `run` holds (counting and connect
 *   events; BPF_ENABLE_STATS, read with bpftool) before and after the outsider's traffic,
 *   and after its connects: the target is 0 runs for both. Then the same traffic from the
 *   service cgroup must move them, so a 0 cannot come from programs that never run.
 * - nft, iptables: their rules sit in the netns' output and input hooks, so every outsider
 *   packet is evaluated by them by nature; the row gives the packets that passed the hooks
 *   (the veth's packets during the transfer) and the packets the backend matched as StB's
 *   (its counters' move: 0 expected).
 * - every backend and "none" (nothing running): the machine's busy CPU per outsider packet
 *   during the transfer (/proc/stat, all cores); "ns per packet vs none" is the median over
 *   rounds of that minus the same round's "none" (configurations interleaved, order reversed
 *   every other round), with min..max: the VM's noise is tens of ns per packet here, so a
 *   figure whose min..max holds 0 is within noise.
 */

import { bpfRunCounts, movedRuns, programNames } from "./bpf_stats.ts";
import { enableRunStats } from "../bpf/libbpf.ts";
import { ensurePackages } from "./tools.ts";
import { type BenchLab, makeLab, SERVER_IP, sh, waitForPort } from "./lab.ts";
import { type RunProcess, startRun } from "./cli.ts";
import { median, systemBusySeconds } from "./stats.ts";
import { linkStats } from "./capture_cost.ts";

/** TCP port of the connect sink in the server netns (iperf3 -s holds 5201). */
const SINK_PORT = 5301;
/** How long a fresh `run` is left before measuring: its start-up CPU is not the steady state. */
const SETTLE_MS = 3000;

interface Transfer {
  /** Packets the veth carried, both ways: skbs, a GSO/GRO aggregate (up to 64 KB) as one. */
  packets: number;
  busyNsPerPacket: number;
  /** The machine's busy CPU per GB moved, ms. */
  busyMsPerGb: number;
  bytes: number;
}

/** ~`mb` MB through the veth from `cgroupDir`: iperf3 -n half up, half down (-R). */
async function transfer(lab: BenchLab, cgroupDir: string, mb: number): Promise<Transfer> {
  const l0 = await linkStats(lab.clientNetns, lab.clientDev);
  const s0 = systemBusySeconds();
  let bytes = 0;
  for (const reverse of [false, true]) {
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'echo $$ > "$1/cgroup.procs" && shift && exec nsenter --net="$1" iperf3 -J "$@"',
        "sh",
        cgroupDir,
        `/run/netns/${lab.clientNetns}`,
        "-c",
        SERVER_IP,
        "-n",
        `${Math.round(mb / 2)}M`,
        ...(reverse ? ["-R"] : []),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const json = JSON.parse(new TextDecoder().decode(out.stdout) || "{}");
    if (!json.end) {
      throw new Error(
        `iperf3 from "${cgroupDir}" failed: ${
          json.error ?? new TextDecoder().decode(out.stderr).trim()
        }`,
      );
    }
    bytes += json.end.sum_received.bytes;
  }
  const s1 = systemBusySeconds();
  const l1 = await linkStats(lab.clientNetns, lab.clientDev);
  const packets = l1.rxPackets + l1.txPackets - l0.rxPackets - l0.txPackets;
  return {
    packets,
    busyNsPerPacket: (s1 - s0) * 1e9 / packets,
    busyMsPerGb: (s1 - s0) * 1e3 / (bytes / 1e9),
    bytes,
  };
}

/** `n` TCP connects to the sink and `n` unconnected UDP sends, from `cgroupDir`. */
async function connects(lab: BenchLab, cgroupDir: string, n: number): Promise<void> {
  const py = `
import socket, sys
n, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    s = socket.create_connection((host, port), timeout=5)
    s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", (host, port + 1))
    u.close()
`;
  await sh(
    "sh",
    "-c",
    'echo $$ > "$1/cgroup.procs" && shift && exec nsenter --net="$1" python3 -c "$2" "$3" "$4" "$5"',
    "sh",
    cgroupDir,
    `/run/netns/${lab.clientNetns}`,
    py,
    String(n),
    SERVER_IP,
    String(SINK_PORT),
  );
}

/** BPF program ids held by `pid` (fds of programs and of links, from fdinfo). */
function programIdsOf(pid: number): number[] {
  const ids = new Set<number>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${e.name}`);
      const id = info.match(/^prog_id:\s+(\d+)/m)?.[1];
      if (id) ids.add(Number(id));
    } catch { /* closed meanwhile */ }
  }
  return [...ids].sort((a, b) => a - b);
}

const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** Packets the backend counted (both directions), from its counters.json. */
async function countedPackets(run: RunProcess): Promise<number> {
  const j = JSON.parse(await Deno.readTextFile(run.output));
  return (j.rx_packets_total ?? 0) + (j.tx_packets_total ?? 0);
}

interface Round {
  transfer: Transfer;
  /** ebpf: program runs during the outsider's transfer / its connects; then a service's. */
  runs?: { transfer: number; connects: number; service: number; programs: number };
  /** nft/iptables: packets the backend counted as StB's during the outsider's transfer. */
  matched?: number;
}

async function measure(
  lab: BenchLab,
  outsiderDir: string,
  backend: string,
  opts: { mb: number; connects: number },
): Promise<Round> {
  if (backend === "none") return { transfer: await transfer(lab, outsiderDir, opts.mb) };
  const run = await startRun({
    backend,
    service: lab.cgroup,
    dir: lab.tmp,
    netns: lab.clientNetns,
    // Connect events on: their programs are part of what an outsider must not run.
    extraConfig: backend === "ebpf" ? { events: { enabled: true, required: true } } : {},
  });
  try {
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    if (backend !== "ebpf") {
      const before = await countedPackets(run);
      const t = await transfer(lab, outsiderDir, opts.mb);
      await new Promise((r) => setTimeout(r, 800)); // one interval and a margin
      return { transfer: t, matched: (await countedPackets(run)) - before };
    }
    const ids = programIdsOf(run.child.pid);
    if (ids.length === 0) throw new Error("run --backend ebpf holds no BPF program");
    const stats = enableRunStats();
    try {
      const r0 = await bpfRunCounts(ids);
      const t = await transfer(lab, outsiderDir, opts.mb);
      const r1 = await bpfRunCounts(ids);
      await connects(lab, outsiderDir, opts.connects);
      const r2 = await bpfRunCounts(ids);
      // The same from the service: the programs must run, or the 0 above proves nothing.
      await connects(lab, lab.cgroupDir, 1);
      await transfer(lab, lab.cgroupDir, 2);
      const r3 = await bpfRunCounts(ids);
      // The lab is IPv4: the IPv6 connect/sendmsg programs have nothing to run for.
      const names = await programNames(ids);
      const moved = new Set(movedRuns(r2, r3).map((m) => Number(m.split(":")[0])));
      const idle = ids.filter((id) => !moved.has(id) && !names.get(id)?.endsWith("6"));
      if (idle.length > 0) {
        throw new Error(
          `programs ${idle.map((id) => `"${names.get(id)}"`).join(", ")} did not run for the ` +
            `service's traffic and connects: the outsider's 0 runs would prove nothing`,
        );
      }
      return {
        transfer: t,
        runs: {
          transfer: sum(r1) - sum(r0),
          connects: sum(r2) - sum(r1),
          service: sum(r3) - sum(r2),
          programs: ids.length,
        },
      };
    } finally {
      stats.close();
    }
  } finally {
    await run.stop();
  }
}

function parseArgs(args: string[]) {
  let out: string | null = null, rounds = 3, mb = 1000, nConnects = 100;
  let backends = ["ebpf", "nft", "iptables"];
  const usage = "usage: deno run -A bench/outsider_cost.ts [OUT.json] " +
    "[--backends ebpf,nft,iptables] [--rounds N] [--mb N] [--connects N]\n" +
    "  defaults: --rounds 3 --mb 1000 --connects 100";
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!; // i < args.length
    if (a === "--rounds") rounds = Number(args[++i]);
    else if (a === "--mb") mb = Number(args[++i]);
    else if (a === "--connects") nConnects = Number(args[++i]);
    else if (a === "--backends") backends = (args[++i] ?? "").split(",").filter((b) => b);
    else if (a === "--help" || a === "-h") {
      console.log(usage);
      Deno.exit(0);
    } else if (!a.startsWith("-") && out === null) out = a;
    else {
      console.error(`outsider_cost: unknown argument "${a}": see --help`);
      Deno.exit(2);
    }
  }
  for (const [flag, v] of [["--rounds", rounds], ["--mb", mb], ["--connects", nConnects]]) {
    if (!(Number.isInteger(v) && (v as number) > 0)) {
      console.error(`outsider_cost: ${flag} "${v}" must be a whole number above 0`);
      Deno.exit(2);
    }
  }
  const bad = backends.filter((b) => !["ebpf", "nft", "iptables"].includes(b));
  if (backends.length === 0 || bad.length) {
    console.error(
      `outsider_cost: --backends "${bad.join(",")}" is not a list of ebpf, nft, iptables`,
    );
    Deno.exit(2);
  }
  return { out, rounds, mb, connects: nConnects, backends };
}

const r1 = (x: number) => Number(x.toFixed(1));

async function main(): Promise<void> {
  const { out, rounds, mb, connects: nConnects, backends } = parseArgs(Deno.args);
  if (Deno.uid() !== 0) {
    console.error("outsider_cost: run as root (netns, cgroups and the backends need it)");
    Deno.exit(1);
  }
  await ensurePackages(["iperf3", "bpftool"]);
  const { lab, cleanup } = await makeLab();
  try {
    const outsider = lab.cgroup.replace(/\/client$/, "/outsider");
    const outsiderDir = await lab.lab.cgroup(outsider);
    // A TCP sink that accepts and closes; nothing listens on the UDP port after it.
    const sink = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("${SERVER_IP}", ${SINK_PORT})); s.listen(128)
while True:
    c, _ = s.accept(); c.close()
`;
    lab.lab.spawn(["nsenter", `--net=/run/netns/${lab.serverNetns}`, "python3", "-c", sink]);
    await waitForPort(lab.serverNetns, SINK_PORT);

    // A first transfer warms caches, the ARP entry and iperf3's pages: not measured.
    await transfer(lab, outsiderDir, Math.min(mb, 200));
    const names = ["none", ...backends];
    const byName = new Map<string, Round[]>(names.map((n) => [n, []]));
    const noneByRound: number[] = [];
    const diffs = new Map<string, number[]>(backends.map((b) => [b, []]));
    const gbDiffs = new Map<string, number[]>(backends.map((b) => [b, []]));
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 ? [...names].reverse() : names;
      const got = new Map<string, Round>();
      for (const name of order) {
        const r = await measure(lab, outsiderDir, name, { mb, connects: nConnects });
        got.set(name, r);
        byName.get(name)!.push(r);
        console.error(
          `round ${round + 1}/${rounds} ${name.padEnd(8)} ${r.transfer.packets} packets, ` +
            `machine ${r.transfer.busyNsPerPacket.toFixed(0)} ns/packet` +
            (r.runs
              ? `, program runs: transfer ${r.runs.transfer}, connects ${r.runs.connects}`
              : "") +
            (r.matched !== undefined ? `, matched ${r.matched}` : ""),
        );
      }
      const none = got.get("none")!.transfer.busyNsPerPacket;
      noneByRound.push(none);
      const noneGb = got.get("none")!.transfer.busyMsPerGb;
      for (const b of backends) {
        diffs.get(b)!.push(got.get(b)!.transfer.busyNsPerPacket - none);
        gbDiffs.get(b)!.push(got.get(b)!.transfer.busyMsPerGb - noneGb);
      }
    }

    const rows = backends.map((b) => {
      const rs = byName.get(b)!;
      const d = diffs.get(b)!;
      const packets = rs.map((r) => r.transfer.packets);
      const base = {
        backend: b,
        outsider_packets: Math.round(median(packets)),
        outsider_bytes: Math.round(median(rs.map((r) => r.transfer.bytes))),
        machine_ns_per_packet: r1(median(rs.map((r) => r.transfer.busyNsPerPacket))),
        ns_per_packet_vs_none: r1(median(d)),
        ns_per_packet_vs_none_min: r1(Math.min(...d)),
        ns_per_packet_vs_none_max: r1(Math.max(...d)),
        within_noise: Math.min(...d) <= 0 && Math.max(...d) >= 0,
        machine_ms_per_gb: r1(median(rs.map((r) => r.transfer.busyMsPerGb))),
        ms_per_gb_vs_none: r1(median(gbDiffs.get(b)!)),
        ms_per_gb_vs_none_min: r1(Math.min(...gbDiffs.get(b)!)),
        ms_per_gb_vs_none_max: r1(Math.max(...gbDiffs.get(b)!)),
      };
      if (b === "ebpf") {
        const runs = rs.map((r) => r.runs!);
        const transferRuns = Math.max(...runs.map((r) => r.transfer));
        const connectRuns = Math.max(...runs.map((r) => r.connects));
        return {
          ...base,
          programs: runs[0]!.programs,
          runs_per_outsider_transfer: transferRuns,
          runs_per_outsider_connects: connectRuns,
          runs_for_service_check: Math.min(...runs.map((r) => r.service)),
          // Nothing of ours ran, so the programs' own time per outsider packet is 0.
          program_ns_per_outsider_packet: transferRuns === 0 ? 0 : null,
          target_runs: 0,
          target_met: transferRuns === 0 && connectRuns === 0,
        };
      }
      return {
        ...base,
        // Every outsider packet passes the backend's output or input hook.
        packets_through_hooks: Math.round(median(packets)),
        packets_matched: Math.max(...rs.map((r) => r.matched ?? 0)),
      };
    });
    const result = {
      outsider_cost: {
        method: `an outsider cgroup (no service) moves ~${mb} MB through the veth (iperf3 -n, ` +
          `half each way) and makes ${nConnects} TCP connects and ${nConnects} unconnected UDP ` +
          `sends while run --backend NAME counts the service cgroup; ebpf: run_cnt of every ` +
          `program run holds (BPF_ENABLE_STATS, bpftool), then the service's traffic must move ` +
          `them; nft/iptables: packets through their hooks (the veth's) and packets their ` +
          `counters moved; machine busy CPU per packet (/proc/stat) minus the same round's ` +
          `"none", median over ${rounds} interleaved rounds (min..max)`,
        kernel: Deno.osRelease(),
        rounds,
        mb,
        connects: nConnects,
        none_machine_ns_per_packet: r1(median(noneByRound)),
        none_machine_ms_per_gb: r1(median(byName.get("none")!.map((r) => r.transfer.busyMsPerGb))),
        rows,
      },
    };
    console.log(`Cost to other traffic: an outsider cgroup moves ~${mb} MB, ${rounds} round(s)`);
    for (const r of rows as Record<string, unknown>[]) {
      console.log(
        `${String(r.backend).padEnd(9)} ` +
          (r.backend === "ebpf"
            ? `program runs: transfer ${r.runs_per_outsider_transfer}, connects ` +
              `${r.runs_per_outsider_connects} (target 0: ${r.target_met ? "PASS" : "MISS"}); `
            : `packets through hooks ${r.packets_through_hooks}, matched ${r.packets_matched}; `) +
          `machine ns/packet vs none ${r.ns_per_packet_vs_none} ` +
          `(${r.ns_per_packet_vs_none_min}..${r.ns_per_packet_vs_none_max}` +
          `${r.within_noise ? ", within noise" : ""})`,
      );
    }
    if (out) {
      await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
      console.log(`wrote ${out}`);
    }
  } finally {
    await cleanup();
  }
}

if (import.meta.main) await main();
