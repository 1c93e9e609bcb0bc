/**
 * Bytes lost per fault, per backend: a service sends UDP at a fixed rate through the lab's
 * veth while `run --backend NAME` counts it, and the sampler meets a fault mid-stream:
 *
 *   control  nothing happens (what the comparison itself misses: ARP, link-local chatter);
 *   sigkill  SIGKILL, then a new `run` against the same config, output and saved state;
 *   restart  SIGTERM and a new `run`, as `systemctl restart stb-netacct` does;
 *   upgrade  SIGTERM and a new `run` started from another copy of the program, as an
 *            upgrade through `install` does (the new version starts against the old state).
 *
 * Each fault is one window: the counters and the veth are read while no traffic flows, the
 * sender starts, the fault strikes after a steady stretch, the stream goes on until the new
 * `run` has published and a while after, stops, and both are read again once the run has
 * published the end. Bytes lost = wire bytes (the veth's, both ways, less 14 bytes of
 * Ethernet header per packet: the counters' layer is L3) - counted bytes (counters.json,
 * both ways), minus the control window's difference. UDP, so that no GSO aggregate makes
 * the veth's and the counters' bytes differ. Root only; a few minutes for all backends:
 *
 *   deno run -A bench/fault_loss.ts [OUT.json] [--backends ebpf,nft,iptables] [--quick]
 *     [--rate-mbit N] [--steady-s S]
 */

import { type BenchLab, command, endProcess, makeLab, SERVER_IP, sh } from "./lab.ts";
import { cliCommand, type RunProcess, startRun } from "./cli.ts";
import { linkStats } from "./capture_cost.ts";
import { ensurePackages } from "./tools.ts";

const FAULTS = ["control", "sigkill", "restart", "upgrade"] as const;
type Fault = typeof FAULTS[number];
/** UDP port of the sink in the server netns (iperf3 -s holds 5201). */
const SINK_PORT = 5302;
const PAYLOAD = 1400;
/** The counters' layer is L3: the veth's byte counts include a 14-byte Ethernet header. */
const ETH_HEADER = 14;
const INTERVAL_S = 0.5;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Totals {
  bytes: number;
  startedAt: number;
}

async function readCounted(run: RunProcess): Promise<Totals> {
  const j = JSON.parse(await Deno.readTextFile(run.output));
  return { bytes: Number(j.rx_bytes_total) + Number(j.tx_bytes_total), startedAt: j.started_at };
}

/** L3 bytes the client veth carried, both ways. */
async function wireBytes(lab: BenchLab): Promise<number> {
  const s = await linkStats(lab.clientNetns, lab.clientDev);
  return s.rxBytes + s.txBytes - ETH_HEADER * (s.rxPackets + s.txPackets);
}

/** A paced UDP sender in the service cgroup (client netns), until SIGTERM. */
function startSender(lab: BenchLab, rateMbit: number): Deno.ChildProcess {
  const py = `
import socket, sys, time
rate, host, port, size = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
per_s = rate * 1e6 / 8 / size
batch = 50
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
buf = b"x" * size
t = time.monotonic()
while True:
    for _ in range(batch):
        s.send(buf)
    t += batch / per_s
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)
`;
  return command([
    "sh",
    "-c",
    'echo $$ > "$1/cgroup.procs" && shift && exec nsenter --net="$1" python3 -c "$2" "$3" "$4" "$5" "$6"',
    "sh",
    lab.cgroupDir,
    `/run/netns/${lab.clientNetns}`,
    py,
    String(rateMbit),
    SERVER_IP,
    String(SINK_PORT),
    String(PAYLOAD),
  ], { stdin: "null", stdout: "null", stderr: "piped" }).spawn();
}

/** Waits until `run` has published a sample taken after now (one interval and a margin). */
async function published(run: RunProcess): Promise<void> {
  const before = JSON.parse(await Deno.readTextFile(run.output)).ts_unix as number;
  for (let waited = 0; waited < 10_000; waited += 50) {
    await sleep(50);
    const now = JSON.parse(await Deno.readTextFile(run.output)).ts_unix as number;
    if (now > before + 0.05) return;
  }
  throw new Error(`run published nothing new in "${run.output}" within 10 s`);
}

/** Another copy of the program, as `install` puts a new version in place (null: none). */
async function upgradeCopy(dir: string): Promise<string[]> {
  const argv = cliCommand();
  const bin = argv[0]!;
  if (argv.length > 1 || !bin.endsWith("stb-netacct")) return argv; // main.ts through deno
  const to = `${dir}/upgrade`;
  await Deno.mkdir(to, { recursive: true });
  await Deno.copyFile(bin, `${to}/stb-netacct`);
  await Deno.chmod(`${to}/stb-netacct`, 0o755);
  // The fallback launcher runs the bundle beside it.
  const dist = `${bin.slice(0, bin.lastIndexOf("/"))}/dist`;
  if (await Deno.stat(dist).then(() => true, () => false)) {
    await Deno.symlink(dist, `${to}/dist`).catch(() => {});
  }
  return [`${to}/stb-netacct`];
}

interface Window {
  fault: Fault;
  wire_bytes: number;
  counted_bytes: number;
  /** wire - counted in this window. */
  missing_bytes: number;
  /** missing - the control window's: what the fault itself cost. */
  lost_bytes: number;
  /** lost_bytes at the sender's rate, in seconds and in run intervals. */
  lost_s: number;
  lost_intervals: number;
  /** From the fault to the new run's first publication. */
  downtime_s: number;
}

async function backendWindows(
  lab: BenchLab,
  backend: string,
  opts: { rateMbit: number; steadyS: number },
): Promise<Window[]> {
  const req = {
    backend,
    service: lab.cgroup,
    dir: lab.tmp,
    netns: lab.clientNetns,
    intervalS: INTERVAL_S,
    // As the installed service: a SIGTERM (systemctl restart, an upgrade) keeps the kernel
    // state, which the next run adopts.
    asService: true,
  };
  let run: RunProcess | null = await startRun(req);
  const upgrade = await upgradeCopy(lab.tmp);
  const raw: Omit<Window, "lost_bytes" | "lost_s" | "lost_intervals">[] = [];
  try {
    await sleep(1000);
    for (const fault of FAULTS) {
      await published(run);
      const c0 = await readCounted(run);
      const w0 = await wireBytes(lab);
      const sender = startSender(lab, opts.rateMbit);
      let downtime = 0;
      try {
        await sleep(opts.steadyS * 1000);
        if (fault !== "control") {
          const t0 = performance.now();
          const old: RunProcess = run;
          run = null;
          if (fault === "sigkill") {
            old.child.kill("SIGKILL");
            await old.child.status;
          } else await old.stop(); // SIGTERM; throws unless it exits 0
          run = await startRun({
            ...req,
            keepState: true,
            ...(fault === "upgrade" ? { cli: upgrade } : {}),
          });
          downtime = (performance.now() - t0) / 1000;
          await sleep(opts.steadyS * 1000);
        }
      } finally {
        await endProcess(sender, 2000);
      }
      await sleep(200); // the last datagrams off the veth
      const w1 = await wireBytes(lab);
      await published(run!);
      const c1 = await readCounted(run!);
      const wire = w1 - w0, counted = c1.bytes - c0.bytes;
      raw.push({
        fault,
        wire_bytes: wire,
        counted_bytes: counted,
        missing_bytes: wire - counted,
        downtime_s: Number(downtime.toFixed(2)),
      });
      console.error(
        `${backend} ${fault.padEnd(8)} wire ${wire} B, counted ${counted} B, missing ` +
          `${wire - counted} B` +
          (fault === "control" ? "" : `, downtime ${downtime.toFixed(2)} s`) +
          ` (started_at ${c0.startedAt} -> ${c1.startedAt})`,
      );
    }
  } finally {
    // Ctrl-C: a service's run would leave its kernel state behind on SIGTERM.
    await run?.stop("SIGINT").catch((e) => console.error(`fault_loss: ${e.message}`));
  }
  const control = raw.find((w) => w.fault === "control")!.missing_bytes;
  const bytesPerS = opts.rateMbit * 1e6 / 8;
  return raw.map((w) => {
    const lost = w.fault === "control" ? 0 : w.missing_bytes - control;
    return {
      ...w,
      lost_bytes: lost,
      lost_s: Number((lost / bytesPerS).toFixed(2)),
      lost_intervals: Number((lost / bytesPerS / INTERVAL_S).toFixed(1)),
    };
  });
}

function parseArgs(args: string[]) {
  let out: string | null = null, rateMbit = 100, steadyS = 3;
  let backends = ["ebpf", "nft", "iptables"];
  const usage = "usage: deno run -A bench/fault_loss.ts [OUT.json] " +
    "[--backends ebpf,nft,iptables] [--quick] [--rate-mbit N] [--steady-s S]\n" +
    "  defaults: --rate-mbit 100 --steady-s 3; --quick: --steady-s 2";
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!; // i < args.length
    if (a === "--rate-mbit") rateMbit = Number(args[++i]);
    else if (a === "--steady-s") steadyS = Number(args[++i]);
    else if (a === "--quick") steadyS = 2;
    else if (a === "--backends") backends = (args[++i] ?? "").split(",").filter((b) => b);
    else if (a === "--help" || a === "-h") {
      console.log(usage);
      Deno.exit(0);
    } else if (!a.startsWith("-") && out === null) out = a;
    else {
      console.error(`fault_loss: unknown argument "${a}": see --help`);
      Deno.exit(2);
    }
  }
  if (!(rateMbit > 0 && rateMbit <= 1000)) {
    console.error(`fault_loss: --rate-mbit "${rateMbit}" must be a number from 1 to 1000`);
    Deno.exit(2);
  }
  if (!(steadyS >= 1 && steadyS <= 60)) {
    console.error(`fault_loss: --steady-s "${steadyS}" must be a number of seconds from 1 to 60`);
    Deno.exit(2);
  }
  const bad = backends.filter((b) => !["ebpf", "nft", "iptables"].includes(b));
  if (backends.length === 0 || bad.length) {
    console.error(`fault_loss: --backends "${bad.join(",")}" is not a list of ebpf, nft, iptables`);
    Deno.exit(2);
  }
  return { out, rateMbit, steadyS, backends };
}

async function main(): Promise<void> {
  const { out, rateMbit, steadyS, backends } = parseArgs(Deno.args);
  if (Deno.uid() !== 0) {
    console.error("fault_loss: run as root (netns, cgroups and the backends need it)");
    Deno.exit(1);
  }
  await ensurePackages(["iperf3"]);
  const { lab, cleanup } = await makeLab();
  try {
    const sink = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("${SERVER_IP}", ${SINK_PORT}))
while True:
    s.recv(65536)
`;
    lab.lab.spawn(["nsenter", `--net=/run/netns/${lab.serverNetns}`, "python3", "-c", sink]);
    // A bound UDP socket: ss -ltn does not list it, so check with -lun.
    for (let i = 0;; i++) {
      const ss = await sh("nsenter", `--net=/run/netns/${lab.serverNetns}`, "ss", "-Hlun");
      if (ss.includes(`:${SINK_PORT}`)) break;
      if (i > 200) throw new Error(`the UDP sink is not bound to port ${SINK_PORT} after 5 s`);
      await sleep(25);
    }
    const rows: { backend: string; windows: Window[] }[] = [];
    for (const backend of backends) {
      rows.push({ backend, windows: await backendWindows(lab, backend, { rateMbit, steadyS }) });
    }
    const result = {
      fault_loss: {
        method: `UDP ${PAYLOAD}-byte datagrams at ${rateMbit} Mbit/s from the service cgroup; ` +
          `per fault one window read while idle at both ends: ${steadyS} s steady, the fault, ` +
          `the new run's first publication, ${steadyS} s more; lost = (veth L3 bytes both ` +
          `ways - counted bytes both ways) - the same for a window with no fault; ` +
          `interval ${INTERVAL_S} s`,
        kernel: Deno.osRelease(),
        rate_mbit: rateMbit,
        steady_s: steadyS,
        interval_s: INTERVAL_S,
        rows,
      },
    };
    console.log(`Bytes lost per fault, UDP at ${rateMbit} Mbit/s, run interval ${INTERVAL_S} s`);
    console.log("backend   fault     lost bytes  lost s  intervals  downtime s");
    for (const r of rows) {
      for (const w of r.windows.filter((w) => w.fault !== "control")) {
        console.log(
          `${r.backend.padEnd(9)} ${w.fault.padEnd(8)} ${String(w.lost_bytes).padStart(11)} ` +
            `${w.lost_s.toFixed(2).padStart(7)} ${w.lost_intervals.toFixed(1).padStart(10)} ` +
            `${w.downtime_s.toFixed(2).padStart(11)}`,
        );
      }
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
