/**
 * Top destinations end to end: the real CLI (`run --backend ebpf`) counts traffic the test
 * makes from a service's process chain, and counters.json's `destinations` names exactly
 * those endpoints with their bytes; `graph --once` shows them under the chart. Run as root:
 *
 *   deno test -A tests/destinations_test.ts
 *
 * The contract's tolerant parsing of `destinations` is checked without root.
 */

import { MAX_DESTINATIONS, parseCounters } from "../lib/contract.ts";
import {
  assert,
  assertEquals,
  flowsTo,
  graphOnce,
  Lab,
  REMOTES,
  type RunningCli,
  type Sample,
  SERVICE_NAMES,
  startRun,
  TCP_PORT,
  UDP_PORT,
} from "./harness/mod.ts";
import { present } from "../lib/test_assert.ts";

const isRoot = Deno.uid() === 0;
const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
const SMALL_FLOWS = { tcpUp: 200_000, tcpDown: 200_000, udpCount: 50, udpSize: 500 };

interface Destination {
  service: string;
  direction: "rx" | "tx";
  address: string;
  port: number;
  protocol: string;
  bytes: number;
  packets: number;
}

type WithDestinations = Sample & { destinations?: Destination[] };

const row = (d: Destination) => `${d.service} ${d.direction} ${d.protocol} ${d.address}:${d.port}`;

Deno.test({
  name: "destinations: counters.json names the endpoints a service talked to, with their bytes",
  ignore: !isRoot,
  ...TEST_OPTIONS,
  async fn() {
    const env = await Lab.open("hybrid");
    const dir = await Deno.makeTempDir({ prefix: "stb-dest-" });
    let cli: RunningCli | null = null;
    try {
      for (const name of SERVICE_NAMES) env.cgroups.create(name);
      const config = `${dir}/config.json`;
      await Deno.writeTextFile(
        config,
        JSON.stringify({ services: env.cgroups.configServices(), interval_s: 0.5 }),
      );
      cli = await startRun(env.layout, env.clientNetns, {
        backend: "ebpf",
        config,
        output: `${dir}/counters.json`,
      });
      const first = await cli.sampleAfter() as WithDestinations;
      assertEquals(first.destinations, [], "no traffic yet: an empty list");

      // External TCP and UDP from "server" (IPv4, and IPv6), UDP from "shell"; internal
      // traffic and an outsider's must not appear.
      await env.traffic("server", [...flowsTo("internet4"), ...flowsTo("internet6")]);
      await env.traffic("shell", [`udp,${REMOTES.internet4},${UDP_PORT},50,700`]);
      await env.traffic("server", [...flowsTo("lan", SMALL_FLOWS), ...flowsTo("ula", SMALL_FLOWS)]);
      await env.traffic(null, flowsTo("internet4", SMALL_FLOWS));
      const s = await cli.sampleAfter() as WithDestinations;
      const dests = s.destinations ?? [];
      const v4 = REMOTES.internet4, v6 = REMOTES.internet6;
      assertEquals(
        dests.map(row).sort(),
        [
          `server rx tcp ${v4}:${TCP_PORT}`,
          `server rx tcp ${v6}:${TCP_PORT}`,
          `server rx udp ${v4}:${UDP_PORT}`,
          `server rx udp ${v6}:${UDP_PORT}`,
          `server tx tcp ${v4}:${TCP_PORT}`,
          `server tx tcp ${v6}:${TCP_PORT}`,
          `server tx udp ${v4}:${UDP_PORT}`,
          `server tx udp ${v6}:${UDP_PORT}`,
          `shell rx udp ${v4}:${UDP_PORT}`,
          `shell tx udp ${v4}:${UDP_PORT}`,
        ].sort(),
        "endpoints of the generated traffic, nothing internal or an outsider's",
      );
      // Every counted byte is some endpoint's: per service and direction they add up.
      for (const name of ["server", "shell"]) {
        for (const dir of ["rx", "tx"] as const) {
          const sum = dests.filter((d) => d.service === name && d.direction === dir)
            .reduce((a, d) => a + d.bytes, 0);
          const counted = present(s.services[name], name)[`${dir}_bytes_total`];
          assertEquals(sum, counted, `${name} ${dir} bytes`);
        }
      }
      // 50 datagrams of 700 bytes each way: UDP 8 + IPv4 20 header bytes on each.
      const shellTx = dests.find((d) => row(d) === `shell tx udp ${v4}:${UDP_PORT}`)!;
      assertEquals([shellTx.bytes, shellTx.packets], [50 * 728, 50], "shell's datagrams");
      const sorted = dests.map((d) => d.bytes);
      assertEquals(sorted, [...sorted].sort((a, b) => b - a), "most bytes first");

      // graph shows the top 5 under the chart; --no-destinations hides them.
      const shown = await graphOnce(cli.output);
      assertEquals(shown.code, 0, shown.stderr);
      const lines = shown.stdout.split("\n");
      const at = lines.findIndex((l) => l.startsWith("top destinations"));
      assert(at >= 0, `no destinations table in graph output:\n${shown.stdout}`);
      const rows = lines.slice(at + 1).filter((l) => /^[↓↑] /.test(l));
      assertEquals(rows.length, 5, `five rows:\n${shown.stdout}`);
      assert(rows.every((r) => r.includes(v4) || r.includes(v6)), rows.join("\n"));
      const hidden = await graphOnce(cli.output, ["--no-destinations"]);
      assert(!hidden.stdout.includes("top destinations"), hidden.stdout);

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

Deno.test("destinations: the contract keeps valid entries, skips malformed ones, caps the list", () => {
  const base = { rx_bytes_total: 1, tx_bytes_total: 2, ts_monotonic: 3 };
  const good = {
    service: "server",
    direction: "tx",
    address: "2001:db8::7",
    port: 443,
    protocol: "tcp",
    bytes: 10,
    packets: 1,
  };
  const parsed = parseCounters(JSON.stringify({
    ...base,
    destinations: [
      good,
      { ...good, direction: "up" },
      { ...good, bytes: -1 },
      "nonsense",
      { ...good, port: 70000, packets: "x" },
    ],
  }));
  const exact = { ...good, bytes: 10n, packets: 1n }; // counts are read exact
  assertEquals(parsed.destinations, [exact, { ...exact, port: 0, packets: 0n }]);
  assertEquals(parseCounters(JSON.stringify(base)).destinations, undefined, "absent: absent");
  assertEquals(
    parseCounters(JSON.stringify({ ...base, destinations: "x" })).destinations,
    undefined,
    "not a list: none",
  );
  const many = Array.from({ length: 50 }, () => good);
  assertEquals(
    parseCounters(JSON.stringify({ ...base, destinations: many })).destinations?.length,
    MAX_DESTINATIONS,
  );
});
