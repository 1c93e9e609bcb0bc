/**
 * Names end to end, on the real kernel in both cgroup layouts: a service process resolves
 * names against the lab's DNS server in the peer netns (A over IPv4, AAAA over IPv6, a
 * CNAME chain, and through a stub resolver on loopback that forwards to it) and then
 * connects to the addresses; `run --backend ebpf` captures the answers on the service's
 * sockets, and the destinations in counters.json and the connect events carry the asked
 * names. Bad answers (malformed, for a name nobody asked, addresses off the CNAME chain)
 * change nothing and are counted. An address no answer named gets its name from reverse
 * DNS in `graph` and `events` (asked of the lab's server through a private resolv.conf),
 * and not with -n. A flood of answers keeps the cache at its bound. Run as root:
 *
 *   deno test -A tests/names_test.ts
 */

import {
  assert,
  assertEquals,
  cliArgv,
  Lab,
  LAYOUT_NAMES,
  type LayoutName,
  nativeLayout,
  run,
  runChain,
  type RunningCli,
  type Sample,
  SERVICE_NAMES,
  SLOW_FACTOR,
  startRun,
  TCP_PORT,
} from "./harness/mod.ts";
import {
  DNS_CLIENT_TS,
  DNS_SERVER4,
  DNS_SERVER6,
  DNS_STUB,
  startDnsServer,
  withResolvConf,
} from "./harness/dns.ts";
import { denoTool } from "./harness/processes.ts";
import type { ConnectEvent } from "../events/collector.ts";
import { MAX_NAMES } from "../names/cache.ts";
import { ptrName } from "../names/reverse.ts";

const isRoot = Deno.uid() === 0;
const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };

/** Peer addresses besides the lab's own, so each name has its own address. */
const V6_ADDR = "2001:db8:1::3";
const STUB_ADDR = "198.51.100.4";
const CHAIN_ADDR = "198.51.100.2";
/** Named by nobody: the reverse-DNS fallback's address. */
const UNNAMED = "2001:db8:1::2";

const ZONE = {
  "www.stb.test": [["CNAME", "edge.cdn.stb.test"]],
  "edge.cdn.stb.test": [["CNAME", "a.stb.test"]],
  "a.stb.test": [["A", CHAIN_ADDR]],
  "v6.stb.test": [["AAAA", V6_ADDR]],
  "stub.stb.test": [["A", STUB_ADDR]],
  [ptrName(UNNAMED)!]: [["PTR", "peer6.stb.test"]],
};

interface Destination {
  service: string;
  direction: "rx" | "tx";
  address: string;
  port: number;
  protocol: string;
  name?: string;
}

interface NamesStatus {
  answers_used_total: number;
  answers_ignored_total: number;
  malformed_total: number;
  entries: number;
  max_entries: number;
  dropped_total: number;
}

type WithNames = Sample & { destinations?: Destination[]; names?: NamesStatus };

/** A tcp flow (traffic.ts) of a few KB each way. */
const tcp = (host: string, bytes = 20_000) => `tcp,${host},${TCP_PORT},${bytes},${bytes}`;

interface NamesLab {
  lab: Lab;
  dir: string;
  cli: RunningCli;
  close(): Promise<void>;
}

async function openNamesLab(layout: LayoutName, extra: Record<string, unknown> = {}) {
  const lab = await Lab.open(layout);
  const dir = await Deno.makeTempDir({ prefix: "stb-names-" });
  const stops: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await lab.close();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    const peer = lab.topology.peerNetnsPath;
    for (const a of [`${STUB_ADDR}/24`, `${V6_ADDR}/64`]) {
      const v6 = a.includes(":");
      await run([
        "ip",
        "-n",
        lab.topology.peer,
        ...(v6 ? ["-6"] : []),
        "addr",
        "add",
        a,
        "dev",
        "ext1",
        ...(v6 ? ["nodad"] : []),
      ]);
    }
    // Bound to its addresses: a reply then comes from the address that was asked.
    const server = await startDnsServer(peer, [
      "--listen",
      DNS_SERVER4,
      "--listen",
      DNS_SERVER6,
      "--zone",
      JSON.stringify(ZONE),
    ]);
    stops.push(server.stop);
    // The stub sits outside every service cgroup, as systemd-resolved does.
    const stub = await startDnsServer(lab.clientNetns, [
      "--listen",
      DNS_STUB,
      "--forward",
      DNS_SERVER4,
    ]);
    stops.push(stub.stop);
    for (const name of SERVICE_NAMES) lab.cgroups.create(name);
    const config = await lab.writeRunConfig(`${dir}/config.json`, "ebpf", {
      interval_s: 0.2,
      events: { enabled: true, required: true },
      ...extra,
    });
    const cli = await startRun(lab.layout, lab.clientNetns, {
      backend: "ebpf",
      config,
      output: `${dir}/counters.json`,
    });
    stops.push(async () => void await cli.stop("SIGKILL"));
    return { lab, dir, cli, close } satisfies NamesLab;
  } catch (e) {
    await close();
    throw e;
  }
}

/** The DNS client steps (dns_client.ts) from a service's process chain. */
async function resolveIn(lab: Lab, service: string, steps: string[]): Promise<string> {
  const r = await runChain(
    lab.layout,
    lab.clientNetns,
    lab.cgroupInView(service),
    denoTool(DNS_CLIENT_TS, steps),
  );
  assertEquals(r.code, 0, `dns client: ${r.stderr}`);
  return r.stdout;
}

async function readEvents(path: string): Promise<ConnectEvent[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

/** A reader command in the client netns whose resolv.conf names only the lab's server. */
async function reader(t: NamesLab, args: string[]) {
  const conf = `${t.dir}/resolv.conf`;
  await Deno.writeTextFile(conf, `nameserver ${DNS_SERVER4.split(":")[0]}\n`);
  return await run(withResolvConf(t.lab.clientNetns, conf, cliArgv(args)), {
    allowFail: true,
    env: { NO_COLOR: "1", COLUMNS: "120", LINES: "40" },
  });
}

for (const layout of LAYOUT_NAMES) {
  Deno.test({
    name: `names / ${layout}: destinations and connect events carry the names StB resolved`,
    ignore: !isRoot,
    ...TEST_OPTIONS,
    fn: () => namesScenario(layout),
  });
}

async function namesScenario(layout: LayoutName): Promise<void> {
  const t = await openNamesLab(layout);
  try {
    const { lab, cli, dir } = t;
    const out = await resolveIn(lab, "server", [
      `resolve,${DNS_SERVER4},www.stb.test,A`, // a CNAME chain, over IPv4
      `resolve,${DNS_SERVER6},v6.stb.test,AAAA`, // over IPv6
      `resolve,${DNS_STUB},stub.stb.test,A`, // through the stub on loopback
      // Then bad answers: none of them may rename or name anything.
      `raw,${DNS_SERVER4},unasked.stb.test,A`, // answers for other.stb.test
      `raw,${DNS_SERVER4},offchain.stb.test,A`, // gives another name's address
      `raw,${DNS_SERVER4},malformed.stb.test,A`, // a name pointer that loops
    ]);
    assert(out.includes(CHAIN_ADDR) && out.includes(V6_ADDR) && out.includes(STUB_ADDR), out);
    // The chain's and the unnamed address's flows biggest: graph lists the top 5 rows.
    await lab.traffic("server", [
      tcp(CHAIN_ADDR, 90_000),
      tcp(V6_ADDR),
      tcp(STUB_ADDR),
      tcp(UNNAMED, 60_000),
    ]);
    const s = await cli.sampleAfter() as WithNames;
    const named = (s.destinations ?? [])
      .filter((d) => d.direction === "tx" && d.protocol === "tcp")
      .map((d) => `${d.address} ${d.name ?? "-"}`).sort();
    assertEquals(named, [
      `${CHAIN_ADDR} www.stb.test`,
      `${STUB_ADDR} stub.stb.test`,
      `${UNNAMED} -`,
      `${V6_ADDR} v6.stb.test`,
    ], "each destination by the name asked; the one nobody resolved without");
    const names = s.names!;
    assert(names.answers_used_total >= 3, JSON.stringify(names));
    assert(names.answers_ignored_total >= 2, `unasked and offchain: ${JSON.stringify(names)}`);
    assert(names.malformed_total >= 1, JSON.stringify(names));

    const events = (await readEvents(`${dir}/events.jsonl`))
      .filter((e) => e.kind === "connect" && e.port === TCP_PORT);
    assertEquals(
      events.map((e) => `${e.address} ${e.name ?? "-"}`),
      [
        `${CHAIN_ADDR} www.stb.test`,
        `${V6_ADDR} v6.stb.test`,
        `${STUB_ADDR} stub.stb.test`,
        `${UNNAMED} -`,
      ],
      "connect events in order, named",
    );

    // Readers: the name run saw; for the unnamed address reverse DNS, unless -n.
    const input = `${dir}/counters.json`;
    const graph = await reader(t, ["graph", "--input", input, "--once"]);
    assert(graph.stdout.includes(`www.stb.test ${CHAIN_ADDR}:${TCP_PORT}`), graph.stdout);
    assert(graph.stdout.includes(`peer6.stb.test [${UNNAMED}]:${TCP_PORT}`), graph.stdout);
    const graphN = await reader(t, ["graph", "--input", input, "--once", "-n"]);
    assert(graphN.stdout.includes(`www.stb.test ${CHAIN_ADDR}:${TCP_PORT}`), graphN.stdout);
    assert(!graphN.stdout.includes("peer6.stb.test"), graphN.stdout);
    const shown = await reader(t, ["events", "--input", `${dir}/events.jsonl`]);
    assertEquals(shown.code, 0, shown.stderr);
    assert(shown.stdout.includes(`tcp connect v6.stb.test [${V6_ADDR}]:${TCP_PORT}`), shown.stdout);
    assert(shown.stdout.includes(`peer6.stb.test [${UNNAMED}]:${TCP_PORT}`), shown.stdout);
    const shownN = await reader(t, ["events", "--input", `${dir}/events.jsonl`, "-n"]);
    assert(!shownN.stdout.includes("peer6.stb.test"), shownN.stdout);
    assert(shownN.stdout.includes(`tcp connect [${UNNAMED}]:${TCP_PORT}`), shownN.stdout);

    const stop = await cli.stop();
    assertEquals(stop.code, 0, stop.stderr);
  } finally {
    await t.close();
  }
}

Deno.test({
  name: "names: a flood of DNS answers keeps the name cache at its bound, memory bounded",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const t = await openNamesLab(nativeLayout());
    try {
      const rss = async () => {
        const status = await Deno.readTextFile(`/proc/${t.cli.pid}/status`);
        return Number(status.match(/VmRSS:\s+(\d+)/)?.[1]) * 1024;
      };
      const count = Math.round(1.5 * MAX_NAMES);
      // A warm-up the size of the cache, so what follows is growth past the bound.
      await resolveIn(t.lab, "server", [`flood,${DNS_SERVER4},${MAX_NAMES}`]);
      await t.cli.sampleAfter();
      const before = await rss();
      const out = await resolveIn(t.lab, "server", [`flood,${DNS_SERVER4},${count}`]);
      assert(JSON.parse(out).answered > count * 0.9, out);
      await t.cli.sampleAfter();
      const s = await t.cli.sampleAfter() as WithNames;
      const names = s.names!;
      assertEquals(
        [names.entries, names.max_entries],
        [MAX_NAMES, MAX_NAMES],
        JSON.stringify(names),
      );
      assert(
        names.answers_used_total + names.dropped_total >= MAX_NAMES + count * 0.9,
        JSON.stringify(names),
      );
      const grew = (await rss()) - before;
      console.log(`names flood: ${count} answers, RSS grew ${(grew / 2 ** 20).toFixed(1)} MiB`);
      assert(grew < 32 * 2 ** 20 * SLOW_FACTOR, `RSS grew ${grew} bytes`);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "names: off by config, or with nft, counting goes on without them (one logged reason)",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const lab = await Lab.open(nativeLayout());
    const dir = await Deno.makeTempDir({ prefix: "stb-names-off-" });
    let cli: RunningCli | null = null;
    try {
      for (const name of SERVICE_NAMES) lab.cgroups.create(name);
      for (const [backend, names] of [["ebpf", { enabled: false }], ["nft", undefined]] as const) {
        const config = await lab.writeRunConfig(`${dir}/${backend}.json`, backend, {
          interval_s: 0.2,
          ...(names ? { names } : {}),
        });
        cli = await startRun(lab.layout, lab.clientNetns, {
          backend,
          config,
          output: `${dir}/${backend}/counters.json`,
        });
        await lab.traffic("server", [tcp("198.51.100.2")]);
        const s = await cli.sampleAfter() as WithNames;
        assert(s.tx_bytes_total > 0, `${backend}: counting goes on`);
        assertEquals(s.names, undefined, `${backend}: no names status`);
        assert((s.destinations ?? []).every((d) => d.name === undefined), backend);
        const stop = await cli.stop();
        cli = null;
        assertEquals(stop.code, 0, stop.stderr);
        const said = stop.stderr.split("\n").filter((l) => l.includes("DNS capture"));
        if (backend === "nft") {
          assertEquals(said.length, 1, stop.stderr);
          assert(said[0]!.includes("needs the ebpf backend"), said[0]);
        } else {
          assertEquals(said, [], "off by config: nothing to say");
        }
      }
    } finally {
      await cli?.stop("SIGKILL");
      await lab.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
