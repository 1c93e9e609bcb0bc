/**
 * Connect events end to end: the real CLI (`run --backend ebpf`, config owner "nobody")
 * records the connects and first datagrams of a service's child processes, nothing of an
 * outsider's, into events.jsonl (0640, nobody:root); `stb-netacct events` shows them to
 * nobody without root and refuses another user. Run as root:
 *
 *   deno test -A tests/events_test.ts
 */

import {
  assert,
  assertEquals,
  bpfAttachments,
  cliArgv,
  flowsTo,
  Lab,
  nativeLayout,
  newBpfAttachments,
  output,
  REMOTES,
  run,
  type RunningCli,
  SERVICE_NAMES,
  SLOW_FACTOR,
  startRun,
  TCP_PORT,
  UDP_PORT,
} from "./harness/mod.ts";
import { findCgroup2Mount } from "../lib/cgroup.ts";
import type { ConnectEvent } from "../events/collector.ts";

const isRoot = Deno.uid() === 0;
const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
const SMALL = { tcpUp: 100_000, tcpDown: 100_000, udpCount: 20, udpSize: 300 };
const NOBODY_UID = isRoot ? Number((await output(["id", "-u", "nobody"])).trim()) : 65534;
const MOUNT = findCgroup2Mount().mountPoint;

function asUser(uid: number, args: string[]) {
  return run(
    [
      "setpriv",
      `--reuid=${uid}`,
      `--regid=${uid}`,
      "--clear-groups",
      "--inh-caps=-all",
      ...cliArgv(args),
    ],
    { allowFail: true, env: { NO_COLOR: "1" } },
  );
}

async function readEvents(path: string): Promise<ConnectEvent[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

Deno.test({
  name: "events: connects and first datagrams of a service's children, none of outsiders",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const baseline = await bpfAttachments(MOUNT);
    const env = await Lab.open(nativeLayout());
    const dir = await Deno.makeTempDir({ prefix: "stb-events-" });
    await Deno.chmod(dir, 0o755); // nobody must reach the file inside
    let cli: RunningCli | null = null;
    try {
      for (const name of SERVICE_NAMES) env.cgroups.create(name);
      const config = `${dir}/config.json`;
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          services: env.cgroups.configServices(),
          owner: "nobody",
          interval_s: 0.5,
          events: { enabled: true, required: true },
        }),
      );
      cli = await startRun(env.layout, env.clientNetns, {
        backend: "ebpf",
        config,
        output: `${dir}/counters.json`,
      });
      const path = `${dir}/events.jsonl`;
      const t0 = Date.now() / 1000;
      // From the server's process chain: TCP+UDP to the IPv4 and IPv6 internet peer, TCP
      // through a v4-mapped address, TCP and UDP to the LAN. Then an outsider.
      await env.traffic("server", [
        ...flowsTo("internet4", SMALL),
        ...flowsTo("internet6", SMALL),
        `tcp,${REMOTES.mapped4},${TCP_PORT},1000,1000`,
        ...flowsTo("lan", SMALL),
      ]);
      await env.traffic(null, flowsTo("internet4", SMALL));
      const s = await cli.sampleAfter() as { events_dropped_total?: number };
      const t1 = Date.now() / 1000;
      assertEquals(s.events_dropped_total, 0, "events_dropped_total in counters.json");
      // glibc's getaddrinfo connects a UDP socket to the resolver to sort addresses (no
      // packet leaves): a real connect of the service, but not one of this test's flows.
      const ours = new Set<string>(Object.values(REMOTES).map((a) => a.replace("::ffff:", "")));
      const events = (await readEvents(path)).filter((e) => ours.has(e.address));
      const rows = events.map((e) =>
        `${e.service} ${e.kind} ${e.protocol} ${e.family} ${e.address}:${e.port} ` +
        (e.external ? "external" : "internal")
      );
      const v4 = REMOTES.internet4, v6 = REMOTES.internet6, lan = REMOTES.lan;
      assertEquals(rows, [
        `server connect tcp 4 ${v4}:${TCP_PORT} external`,
        `server sendmsg udp 4 ${v4}:${UDP_PORT} external`,
        `server connect tcp 6 ${v6}:${TCP_PORT} external`,
        `server sendmsg udp 6 ${v6}:${UDP_PORT} external`,
        `server connect tcp 4 ${v4}:${TCP_PORT} external`, // the v4-mapped one, as IPv4
        `server connect tcp 4 ${lan}:${TCP_PORT} internal`,
        `server sendmsg udp 4 ${lan}:${UDP_PORT} internal`,
      ], "one event per connect and per UDP socket, in order; the outsider's none");
      const pids = new Set(events.map((e) => e.tgid));
      assertEquals(pids.size, 1, "all from the one traffic process (a grandchild)");
      for (const e of events) {
        assert(e.ts_unix >= t0 - 1 && e.ts_unix <= t1 + 1, `time ${e.ts_unix} in [${t0}, ${t1}]`);
        assert(e.tgid > 1 && e.pid >= e.tgid && e.comm.length > 0, JSON.stringify(e));
        assert(e.tgid !== cli.pid && e.tgid !== Deno.pid, "not run's nor the test's");
      }

      // The file: mode 0640, owner nobody, group root.
      const st = await Deno.stat(path);
      assertEquals([(st.mode! & 0o777).toString(8), st.uid, st.gid], ["640", NOBODY_UID, 0]);

      // The owner reads it without root; --external-only and --json do what they say.
      const shown = await asUser(NOBODY_UID, ["events", "--input", path, "-n"]);
      assertEquals(shown.code, 0, shown.stderr);
      const lines = shown.stdout.trim().split("\n");
      const ourLines = lines.filter((l) => [...ours].some((a) => l.includes(a)));
      assertEquals(ourLines.length, 7, shown.stdout);
      // Seven lines, asserted just above.
      assert(
        ourLines[0]!.includes(`server tcp connect ${v4}:${TCP_PORT} external pid`),
        ourLines[0],
      );
      assert(ourLines[2]!.includes(`[${v6}]:${TCP_PORT}`), ourLines[2]);
      const external = await asUser(NOBODY_UID, [
        "events",
        "--input",
        path,
        "--external-only",
        "-n",
      ]);
      const externalLines = external.stdout.trim().split("\n");
      assertEquals(externalLines.length, 5, external.stdout);
      assert(externalLines.every((l) => l.includes(" external pid ")), external.stdout);
      const json = await asUser(NOBODY_UID, ["events", "--input", path, "--json"]);
      assertEquals(
        json.stdout.trim().split("\n").map((l) => JSON.parse(l).address)
          .filter((a) => ours.has(a)),
        events.map((e) => e.address),
      );
      // Anyone else is refused, with the reason and the fix.
      const other = await asUser(NOBODY_UID - 1, ["events", "--input", path, "-n"]);
      assertEquals(other.code, 1, other.stdout);
      assert(other.stderr.includes("permission denied"), other.stderr);
      assert(other.stderr.includes('"owner"'), other.stderr);

      const stop = await cli.stop();
      cli = null;
      assertEquals(stop.code, 0, stop.stderr);
      assertEquals(await newBpfAttachments(MOUNT, baseline), [], "links left after stop");
    } finally {
      await cli?.stop("SIGKILL");
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** A tight UDP connect() loop (each runs the connect4 programs, nothing is sent) for `s`. */
const FLOOD = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, n = time.monotonic() + float(sys.argv[1]), 0
while time.monotonic() < end:
    for _ in range(1000):
        s.connect(("127.0.0.1", 9))
    n += 1000
print(n)
`;

/** One flooder per CPU in cgroup `dir`; resolves to the connects each made. */
function floodFrom(dir: string, seconds: number): Promise<number>[] {
  return Array.from({ length: navigator.hardwareConcurrency }, async () => {
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'echo $$ > "$1/cgroup.procs" && exec /usr/bin/python3 -c "$2" "$3"',
        "sh",
        dir,
        FLOOD,
        String(seconds),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder();
    if (!out.success) throw new Error(`flood failed: ${text.decode(out.stderr)}`);
    return Number(text.decode(out.stdout).trim());
  });
}

/** The q-quantile (0..1) of `xs`, nearest rank. */
function quantile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
}

Deno.test({
  name: "events: a connect flood on every CPU keeps the sample cadence and counts its drops",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const env = await Lab.open(nativeLayout());
    const dir = await Deno.makeTempDir({ prefix: "stb-events-flood-" });
    let cli: RunningCli | null = null;
    const flooding: Promise<number>[] = [];
    try {
      for (const name of SERVICE_NAMES) env.cgroups.create(name);
      const config = `${dir}/config.json`;
      // Under the kernel-6.1 lane's emulation everything is slower: the interval too.
      const intervalS = 0.5 * SLOW_FACTOR;
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          services: env.cgroups.configServices(),
          interval_s: intervalS,
          events: { enabled: true, required: true },
        }),
      );
      cli = await startRun(env.layout, env.clientNetns, {
        backend: "ebpf",
        config,
        output: `${dir}/counters.json`,
        interval: intervalS,
      });
      const floodS = 8 * SLOW_FACTOR;
      flooding.push(...floodFrom(env.cgroups.dir("server"), floodS));
      // Every sample published during the flood, by its monotonic time.
      const seen = new Set<number>();
      let lastDropped = 0;
      const until = Date.now() + (floodS - 1) * 1000;
      while (Date.now() < until) {
        const s = await cli.read();
        if (s) {
          seen.add(s.ts_monotonic);
          lastDropped = (s as { events_dropped_total?: number }).events_dropped_total ?? 0;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      // Stopped while the flood goes on: the signal is handled, the final sample written.
      const stop = await cli.stop();
      cli = null;
      const connects = (await Promise.all(flooding.splice(0))).reduce((a, b) => a + b, 0);
      assertEquals(stop.code, 0, stop.stderr);
      const ts = [...seen].sort((a, b) => a - b);
      const gaps = ts.slice(1).map((t, i) => t - ts[i]!); // i is in range: one shorter
      const p99 = quantile(gaps, 0.99);
      const shown = `${ts.length} samples, gaps ${gaps.map((g) => g.toFixed(2)).join(" ")}`;
      assert(ts.length >= (floodS - 2) / intervalS / 2, `samples kept coming: ${shown}`);
      assert(p99 <= 2 * intervalS, `p99 gap ${p99.toFixed(3)} s <= ${2 * intervalS} s: ${shown}`);
      const dropped = (stop.final as { events_dropped_total?: number } | null)
        ?.events_dropped_total ?? lastDropped;
      // events.jsonl rotates at 1 MiB, so it cannot tell how many were recorded: the drops can.
      assert(dropped > 0 && dropped < connects, `drops counted: ${dropped} of ${connects}`);
      console.log(`flood: ${connects} connects, ${dropped} dropped; ${shown}`);
    } finally {
      await cli?.stop("SIGKILL");
      await Promise.allSettled(flooding);
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "events: with another backend they are off with one logged reason, or fail when required",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const env = await Lab.open("hybrid");
    const dir = await Deno.makeTempDir({ prefix: "stb-events-" });
    let cli: RunningCli | null = null;
    try {
      for (const name of SERVICE_NAMES) env.cgroups.create(name);
      const write = async (required: boolean) => {
        const path = `${dir}/config-${required}.json`;
        await Deno.writeTextFile(
          path,
          JSON.stringify({
            services: env.cgroups.configServices(),
            events: { enabled: true, required },
          }),
        );
        return path;
      };
      cli = await startRun(env.layout, env.clientNetns, {
        backend: "nft",
        config: await write(false),
        output: `${dir}/a/counters.json`,
      });
      await cli.sampleAfter();
      const stop = await cli.stop();
      cli = null;
      assertEquals(stop.code, 0, stop.stderr);
      const reasons = stop.stderr.split("\n").filter((l) => l.includes("Connect events"));
      assertEquals(reasons.length, 1, stop.stderr);
      assert(reasons[0]!.includes("need the ebpf backend"), reasons[0]); // one, asserted above

      const failed = await run(
        [
          ...env.layout.wrap(env.clientNetns),
          ...cliArgv([
            "run",
            "--backend",
            "nft",
            "--config",
            await write(true),
            "--output",
            `${dir}/b/counters.json`,
          ]),
        ],
        { allowFail: true },
      );
      assertEquals(failed.code, 1, failed.stderr);
      assert(failed.stderr.includes("need the ebpf backend"), failed.stderr);
      assert(failed.stderr.includes('"required": true'), failed.stderr);
    } finally {
      await cli?.stop("SIGKILL");
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
