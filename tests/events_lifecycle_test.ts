/**
 * Connect events' socket cookie and the eBPF lifecycle lines, end to end through the real
 * CLI:
 *
 * - a socket's events carry its cookie, the one the kernel hands its process through
 *   getsockopt(SO_COOKIE) and sock_diag shows (`ss -e`, sk:HEX); two events of one socket
 *   share it, other sockets' differ; the
 *   file starts with one `ebpf_attached` line each for the counting and the event programs;
 * - `"events": {"enabled": false}`: no event program is loaded (the kernel's list of what
 *   `run` holds), counting goes on, events.jsonl is never written;
 * - the service's capabilities without CAP_BPF (run as an unprivileged uid, like the
 *   installed unit): `auto` counts with nft, and the log, an `ebpf_unavailable` line and
 *   `ebpf_attach_failures_total` say why.
 *
 * Run as root: deno test -A tests/events_lifecycle_test.ts
 */

import {
  assert,
  assertEquals,
  bpfAttachedBy,
  cliArgv,
  flowsTo,
  Lab,
  LAYOUT_NAMES,
  type LayoutName,
  nativeLayout,
  output,
  REMOTES,
  run,
  type RunningCli,
  type Sample,
  SERVICE_NAMES,
  startRun,
  UDP_PORT,
} from "./harness/mod.ts";
import { findCgroup2Mount } from "../lib/cgroup.ts";
import { parseExact } from "../lib/exact_json.ts";

const isRoot = Deno.uid() === 0;
const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
const MOUNT = findCgroup2Mount().mountPoint;
const SMALL = { tcpUp: 100_000, tcpDown: 100_000, udpCount: 10, udpSize: 300 };
const NOBODY = 65534;
const METRICS_PORT = 9878;

type Line = Record<string, unknown>;

async function readLines(path: string): Promise<Line[]> {
  const text = await Deno.readTextFile(path);
  return text.split("\n").filter((l) => l !== "").map((l) => parseExact(l) as Line);
}

/** Names of the BPF programs process `pid` holds (prog and link fds), from its fdinfo. */
async function programsHeldBy(pid: number): Promise<string[]> {
  const ids = new Set<number>();
  for (const fd of Deno.readDirSync(`/proc/${pid}/fdinfo`)) {
    let info = "";
    try {
      info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd.name}`);
    } catch {
      continue;
    }
    const id = info.match(/^prog_id:\s+(\d+)$/m)?.[1];
    if (id) ids.add(Number(id));
  }
  const all = JSON.parse(await output(["bpftool", "-j", "prog", "show"])) as {
    id: number;
    name?: string;
  }[];
  return all.filter((p) => ids.has(p.id)).map((p) => p.name ?? `#${p.id}`).sort();
}

/**
 * A service process: three UDP sockets and a TCP one, each reporting its SO_COOKIE. `a`
 * connects twice (two connect events), `b` sends two datagrams unconnected (one sendmsg
 * event: only a socket's first is reported), `c` is IPv6, `t` a TCP connect the peer
 * refuses (nothing listens on port 9; the connect hook ran all the same), `d` a UDP
 * connect to the LAN (internal).
 */
const SOCKETS = `
import json, os, socket, struct, subprocess, sys
v4, v6, lan, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def cookie(s):
    return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, 57, 8))[0]  # SO_COOKIE
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.connect((v4, port))
a.connect((v4, port + 1))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.sendto(b"x", (v4, port))
b.sendto(b"y", (v4, port))
c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
c.connect((v6, port))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    t.connect((v4, 9))
except OSError:
    pass
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d.connect((lan, port))
# sock_diag's view of the same sockets while they are open: ss -e prints the cookie as sk:HEX.
ss = subprocess.run(["ss", "-e", "-uan"], capture_output=True, text=True).stdout
print(json.dumps({"pid": os.getpid(), "a": cookie(a), "b": cookie(b), "c": cookie(c), "t": cookie(t), "d": cookie(d), "ss": ss}))
`;

Deno.test({
  name: "events lifecycle: a socket's events share its kernel cookie, other sockets' differ",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const env = await Lab.open(nativeLayout());
    const dir = await Deno.makeTempDir({ prefix: "stb-cookie-" });
    let cli: RunningCli | null = null;
    try {
      for (const name of SERVICE_NAMES) env.cgroups.create(name);
      const config = `${dir}/config.json`;
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          services: env.cgroups.configServices(),
          events: { enabled: true, required: true },
        }),
      );
      cli = await startRun(env.layout, env.clientNetns, {
        backend: "ebpf",
        config,
        output: `${dir}/counters.json`,
      });
      const held = await programsHeldBy(cli.pid);
      for (const p of ["events_connect4", "events_connect6", "events_sendmsg4"]) {
        assert(held.includes(p), `run holds ${p}: ${held}`);
      }
      const out = await env.inClient([
        "sh",
        "-c",
        'echo $$ > "$1/cgroup.procs" && exec /usr/bin/python3 -c "$2" "$3" "$4" "$5" "$6"',
        "sh",
        env.cgroupInView("server"),
        SOCKETS,
        REMOTES.internet4,
        REMOTES.internet6,
        REMOTES.lan,
        String(UDP_PORT),
      ]);
      const kernel = JSON.parse(out) as Record<"pid" | "a" | "b" | "c" | "t" | "d", number> & {
        ss: string;
      };
      for (const k of ["a", "b", "c", "d"] as const) {
        assert(kernel.ss.includes(` sk:${kernel[k].toString(16)} `), `${k}: ${kernel.ss}`);
      }
      const s = await cli.sampleAfter() as Sample & { ebpf_attach_failures_total?: number };
      assertEquals(s.ebpf_attach_failures_total, 0);
      const lines = await readLines(`${dir}/events.jsonl`);
      assertEquals(
        lines.slice(0, 2).map((l) => `${l.kind} ${l.programs} ${l.services}`),
        [
          `ebpf_attached counting ${SERVICE_NAMES}`,
          `ebpf_attached events ${SERVICE_NAMES}`,
        ],
        "the lifecycle lines come first",
      );
      const mine = lines.filter((l) => l.tgid === kernel.pid);
      const rows = mine.map((l) =>
        `${l.kind} ${l.protocol} ${l.address}:${l.port} ${l.external ? "external" : "internal"}`
      );
      const v4 = REMOTES.internet4, v6 = REMOTES.internet6;
      assertEquals(rows, [
        `connect udp ${v4}:${UDP_PORT} external`,
        `connect udp ${v4}:${UDP_PORT + 1} external`,
        `sendmsg udp ${v4}:${UDP_PORT} external`,
        `connect udp ${v6}:${UDP_PORT} external`,
        `connect tcp ${v4}:9 external`,
        `connect udp ${REMOTES.lan}:${UDP_PORT} internal`,
      ]);
      const cookies = mine.map((l) => l.cookie);
      assert(cookies.every((c) => typeof c === "number" || typeof c === "bigint"), `${cookies}`);
      // The same socket, the same cookie; each the kernel's own for that socket.
      assertEquals(
        cookies.map(String),
        [kernel.a, kernel.a, kernel.b, kernel.c, kernel.t, kernel.d].map(String),
      );
      assertEquals(new Set(cookies.slice(1).map(String)).size, 5, "five sockets, five cookies");

      // `events` shows them readably, the cookie included.
      const shown = await output(cliArgv(["events", "--input", `${dir}/events.jsonl`, "--utc"]));
      assert(shown.includes(`(python3) cookie ${kernel.b}`), shown);
      assert(
        shown.includes(`ebpf connect-event programs attached (${SERVICE_NAMES.join(", ")})`),
        shown,
      );
      const stop = await cli.stop();
      cli = null;
      assertEquals(stop.code, 0, stop.stderr);
    } finally {
      await cli?.stop("SIGKILL");
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

for (const layout of LAYOUT_NAMES) {
  Deno.test({
    name: `events lifecycle / ${layout}: events off loads no event program, counting goes on`,
    ignore: !isRoot,
    ...TEST_OPTIONS,
    fn: () => eventsOff(layout),
  });
}

async function eventsOff(layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  const dir = await Deno.makeTempDir({ prefix: "stb-events-off-" });
  let cli: RunningCli | null = null;
  try {
    for (const name of SERVICE_NAMES) env.cgroups.create(name);
    const config = await env.writeRunConfig(`${dir}/config.json`, "ebpf", {
      events: { enabled: false },
    });
    cli = await startRun(env.layout, env.clientNetns, {
      backend: "ebpf",
      config,
      output: `${dir}/counters.json`,
    });
    const held = await programsHeldBy(cli.pid);
    assertEquals(
      held.filter((p) => p.startsWith("netacct_")),
      ["netacct_egress", "netacct_ingress"],
      `counting programs held: ${held}`,
    );
    assertEquals(held.filter((p) => p.startsWith("events_")), [], "no event program loaded");
    const linked = (await bpfAttachedBy(MOUNT, cli.pid)).map((a) => a.attach_type);
    assert(linked.length > 0, "counting programs linked");
    assertEquals(linked.filter((t) => !/ingress|egress/.test(t)), [], `linked: ${linked}`);

    await env.traffic("server", flowsTo("internet4", SMALL));
    // The client's own connect (no event program runs for it) and a sample after it.
    const s = await cli.sampleAfter() as Sample & Record<string, unknown>;
    const server = s.services.server!;
    assert(server.tx_bytes_total >= SMALL.tcpUp, `counted: ${JSON.stringify(server)}`);
    assertEquals(s.backend, "ebpf");
    assertEquals(s.ebpf_attach_failures_total, 0, "events off is no failure");
    assertEquals("events_dropped_total" in s, false);
    const stop = await cli.stop();
    cli = null;
    assertEquals(stop.code, 0, stop.stderr);
    const files = [...Deno.readDirSync(dir)].map((e) => e.name);
    assertEquals(files.filter((n) => n.startsWith("events.jsonl")), [], `${files}`);
    assert(!stop.stderr.includes("Connect events"), stop.stderr);
  } finally {
    await cli?.stop("SIGKILL");
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

for (const layout of LAYOUT_NAMES) {
  Deno.test({
    name: `events lifecycle / ${layout}: without CAP_BPF auto counts with nft and says why`,
    ignore: !isRoot,
    ...TEST_OPTIONS,
    fn: () => withoutCapBpf(layout),
  });
}

/**
 * `run` as the installed unit runs it (an unprivileged uid with ambient capabilities), with
 * the unit's set minus CAP_BPF: ebpf cannot load, nft can count.
 */
async function withoutCapBpf(layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  const dir = await Deno.makeTempDir({ prefix: "stb-nocap-" });
  let cli: RunningCli | null = null;
  try {
    for (const name of SERVICE_NAMES) env.cgroups.create(name);
    await Deno.chown(dir, NOBODY, NOBODY);
    await Deno.mkdir(`${dir}/deno`);
    await Deno.chown(`${dir}/deno`, NOBODY, NOBODY);
    // The config stays root's (run refuses one others may change).
    const config = await env.writeRunConfig(`/tmp/${dir.split("/").pop()}.json`, "nft", {
      owner: "nobody",
      events: { enabled: true },
      prometheus: { textfile: null },
    });
    const caps = "+chown,+net_admin,+perfmon";
    const setpriv = [
      "setpriv",
      `--reuid=${NOBODY}`,
      `--regid=${NOBODY}`,
      "--clear-groups",
      `--inh-caps=${caps}`,
      `--ambient-caps=${caps}`,
      "env",
      `DENO_DIR=${dir}/deno`,
      `HOME=${dir}`,
    ];
    try {
      cli = await startRun(
        { ...env.layout, wrap: (netns) => [...env.layout.wrap(netns), ...setpriv] },
        env.clientNetns,
        {
          backend: "auto",
          config,
          output: `${dir}/counters.json`,
          extraArgs: ["--no-history", "--metrics-listen", `127.0.0.1:${METRICS_PORT}`],
        },
      );
    } finally {
      await Deno.remove(config);
    }
    await env.traffic("server", flowsTo("internet4", SMALL));
    const s = await cli.sampleAfter() as Sample & Record<string, unknown>;
    assertEquals(s.backend, "nft", "counting goes on with nft");
    assert(s.services.server!.tx_bytes_total >= SMALL.tcpUp, JSON.stringify(s.services));
    assertEquals(s.ebpf_attach_failures_total, 1);
    assert(
      String(s.backend_fallback_reason).includes("ebpf: needs CAP_BPF"),
      String(s.backend_fallback_reason),
    );
    const lines = await readLines(`${dir}/events.jsonl`);
    assertEquals(lines.map((l) => `${l.kind} ${l.programs} ${l.backend}`), [
      "ebpf_unavailable counting nft",
      "ebpf_unavailable events nft",
    ]);
    assertEquals(lines[0]!.reason, "needs CAP_BPF");
    assert(String(lines[1]!.reason).includes("need the ebpf backend"), String(lines[1]!.reason));
    // Prometheus counts it (the textfile renders the same exposition: run/metrics_test.ts).
    const metrics = await env.inClient(["curl", "-sf", `http://127.0.0.1:${METRICS_PORT}/metrics`]);
    assert(/^stb_netacct_ebpf_attach_failures_total 1$/m.test(metrics), metrics);
    const promtool = await run(["promtool", "check", "metrics"], {
      stdin: metrics,
      allowFail: true,
    });
    assertEquals(promtool.code, 0, promtool.stdout + promtool.stderr);
    // Readable as the owner, with the reason.
    const shown = await output(cliArgv(["events", "--input", `${dir}/events.jsonl`]));
    assert(
      shown.includes("ebpf counting programs unavailable, counting with nft: needs CAP_BPF"),
      shown,
    );
    const stop = await cli.stop();
    cli = null;
    assertEquals(stop.code, 0, stop.stderr);
    assert(stop.stderr.includes("counting with nft (fell back: ebpf: needs CAP_BPF"), stop.stderr);
  } finally {
    await cli?.stop("SIGKILL");
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * `run`'s start of events (events/run.ts) as an unprivileged uid holding the unit's
 * capabilities minus CAP_NET_ADMIN, which the cgroup_sock_addr event programs need.
 * (Counting cannot be shown beside it here: without CAP_NET_ADMIN the kernel refuses the
 * counting programs' cgroup links too, so `run` needs it for ebpf and auto falls back.)
 */
const REFUSED_DRIVER = `
const at = (p) => new URL(p, ${JSON.stringify(new URL("../", import.meta.url).href)}).href;
const { cgroupId, findCgroup2Mount } = await import(at("lib/cgroup.ts"));
const { configFromText } = await import(at("lib/config.ts"));
const { HeldDir } = await import(at("lib/held_dir.ts"));
const { startEvents } = await import(at("events/run.ts"));
const [service, dir] = Deno.args;
const mount = findCgroup2Mount();
const targets = [{ name: "svc", path: service, id: cgroupId(mount, service) }];
const config = configFromText(
  JSON.stringify({ services: { svc: service }, events: { enabled: true } }),
  dir + "/config.json",
);
const logs = [];
const held = HeldDir.hold(dir, { what: "test" });
const events = startEvents({
  config, backend: "ebpf", targets, mount, outDir: () => held, log: (m) => logs.push(m),
  owner: { uid: Deno.uid(), gid: Deno.gid() }, ebpfSkipped: null,
});
console.log(JSON.stringify({ events: events !== null, logs }));
events?.stop();
held.close();
`;

Deno.test({
  name:
    "events lifecycle: event programs without CAP_NET_ADMIN give the reason, logged and as a line",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "stb-refused-" });
    const service = `/stb-refused-${Deno.pid}`;
    Deno.mkdirSync(MOUNT + service);
    try {
      await Deno.chown(dir, NOBODY, NOBODY);
      await Deno.writeTextFile(`${dir}/driver.js`, REFUSED_DRIVER, { mode: 0o644 });
      await Deno.mkdir(`${dir}/deno`);
      await Deno.chown(`${dir}/deno`, NOBODY, NOBODY);
      const drive = (caps: string) =>
        run([
          "setpriv",
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          "--clear-groups",
          `--inh-caps=${caps}`,
          `--ambient-caps=${caps}`,
          "env",
          `DENO_DIR=${dir}/deno`,
          `HOME=${dir}`,
          Deno.execPath(),
          "run",
          "-A",
          "--no-lock",
          "--no-config",
          `${dir}/driver.js`,
          service,
          dir,
        ], { allowFail: true });
      const refused = await drive("+chown,+bpf,+perfmon");
      assertEquals(refused.code, 0, refused.stdout + refused.stderr);
      const out = JSON.parse(refused.stdout) as { events: boolean; logs: string[] };
      assertEquals(out.events, false, "no events without CAP_NET_ADMIN");
      const logged = out.logs.find((l) => l.startsWith("Connect events are unavailable: "));
      assert(logged?.includes("counting goes on without them"), out.logs.join("\n"));
      const lines = await readLines(`${dir}/events.jsonl`);
      // The driver says ebpf counts (it is not started here): the line about it is attached.
      assertEquals(lines.map((l) => `${l.kind} ${l.programs} ${l.backend ?? ""}`), [
        "ebpf_attached counting ",
        "ebpf_unavailable events ebpf",
      ]);
      assert(logged?.includes(String(lines[1]!.reason)), `${logged} / ${lines[1]!.reason}`);
      assertEquals(lines[1]!.reason, "they need CAP_NET_ADMIN, which this process lacks");
      // The control: with CAP_NET_ADMIN the same start attaches them.
      await Deno.remove(`${dir}/events.jsonl`);
      const full = await drive("+chown,+bpf,+perfmon,+net_admin");
      assertEquals(JSON.parse(full.stdout).events, true, full.stdout + full.stderr);
      assertEquals((await readLines(`${dir}/events.jsonl`)).map((l) => l.kind), [
        "ebpf_attached",
        "ebpf_attached",
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
      Deno.removeSync(MOUNT + service);
    }
  },
});
