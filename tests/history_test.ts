/**
 * History end to end: real traffic from a service through a real `run` (ebpf), read back
 * with the real `report`. What history holds must equal what counters.json counted, across
 * a clean restart and a SIGKILL (never doubled), and faults of the database must never
 * stop counting. Run as root: deno test -A tests/history_test.ts
 */

import { assert, assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import { parseExact } from "../lib/exact_json.ts";
import {
  cliArgv,
  EXTERNAL_REMOTES,
  flowsTo,
  Lab,
  nativeLayout,
  run,
  type RunningCli,
  type Sample,
  SERVICE_NAMES,
  sleep,
  startRun,
} from "./harness/mod.ts";
import { validate } from "./harness/json_schema.ts";

const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
const NOBODY = 65534;
const FLOWS = flowsTo(EXTERNAL_REMOTES[0]!, {
  tcpUp: 400_000,
  tcpDown: 800_000,
  udpCount: 100,
  udpSize: 1000,
});
const REPORT_SCHEMA = parseExact(
  Deno.readTextFileSync(new URL("../schema/report.schema.json", import.meta.url)),
);

// deno-lint-ignore no-explicit-any
type Json = any;

/**
 * `report --days --json` over everything recorded, as the config's owner (nobody) reads
 * it; `prefix` enters the layout's mount namespace where the history is on a test mount.
 */
async function reportAll(historyDb: string, prefix: string[] = []): Promise<Json> {
  const argv = cliArgv(["report", "--days", "--since", "2d", "--json", "--history-db", historyDb]);
  const r = await run(
    [...prefix, "setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", ...argv],
    { allowFail: true },
  );
  assertEquals(r.code, 0, `report as the owner: ${r.stderr}`);
  const doc = parseExact(r.stdout) as Json;
  assertEquals(validate(doc, REPORT_SCHEMA), [], "report --json against its schema");
  return doc;
}

/** History's totals equal counters.json's, in all and per service, exactly. */
function assertHistoryIs(doc: Json, s: Sample, what: string): void {
  const n = (v: unknown) => BigInt(v as number);
  assertEquals([n(doc.totals.rx_bytes), n(doc.totals.tx_bytes)], [
    n(s.rx_bytes_total),
    n(s.tx_bytes_total),
  ], `${what}: history against counters.json`);
  for (const name of SERVICE_NAMES) {
    const h = doc.totals.services[name];
    const c = s.services[name]!;
    assertEquals(
      [n(h?.rx_bytes ?? 0), n(h?.tx_bytes ?? 0), n(h?.rx_packets ?? 0)],
      [n(c.rx_bytes_total), n(c.tx_bytes_total), n(c.rx_packets_total)],
      `${what}: ${name}`,
    );
  }
}

async function scratch(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "stb-history-e2e-" });
  await Deno.chmod(dir, 0o755); // the owner (nobody) reads the history in it
  return dir;
}

async function withLab(body: (env: Lab, dir: string, config: string) => Promise<void>) {
  const env = await Lab.open(nativeLayout());
  const dir = await scratch();
  try {
    for (const s of SERVICE_NAMES) env.cgroups.create(s);
    const config = await env.writeRunConfig(`${dir}/config.json`, "ebpf", {
      owner: "nobody",
      prometheus: { textfile: `${dir}/prom/stb_netacct.prom` },
    });
    await Deno.mkdir(`${dir}/prom`);
    await body(env, dir, config);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await env.close();
  }
}

function start(env: Lab, config: string, dir: string, historyDb?: string): Promise<RunningCli> {
  return startRun(env.layout, env.clientNetns, {
    backend: "ebpf",
    config,
    output: `${dir}/counters.json`,
    ...(historyDb ? { extraArgs: ["--history-db", historyDb] } : {}),
  });
}

Deno.test({
  name: "history: report equals counters.json; a restart and a SIGKILL neither lose nor double",
  ...TEST_OPTIONS,
  async fn() {
    await withLab(async (env, dir, config) => {
      const db = `${dir}/counters.json.history.sqlite`;
      // A corrupt database is moved aside and a new one started, with a line and a metric.
      await Deno.writeTextFile(db, "this is no database; ".repeat(500));
      let cli = await start(env, config, dir);
      const s0 = await cli.sampleAfter() as Json;
      assertEquals(s0.rx_bytes_total + s0.tx_bytes_total, 0, "a fresh start");
      assertEquals(s0.history, {
        state: "recording",
        databases_replaced_total: 1,
        write_failures_total: 0,
      });
      assertStringIncludes(cli.stderr, "is not a usable database");
      assertEquals([...Deno.readDirSync(dir)].filter((e) => e.name.includes(".broken-")).length, 1);
      const prom = await Deno.readTextFile(`${dir}/prom/stb_netacct.prom`);
      assertStringIncludes(prom, "stb_netacct_history_databases_replaced_total 1\n");
      assertStringIncludes(prom, "stb_netacct_history_recording 1\n");
      await env.traffic("server", FLOWS);
      await env.traffic("shell", FLOWS);
      await cli.sampleAfter();
      let stop = await cli.stop("SIGTERM");
      assertEquals(stop.code, 0, stop.stderr);
      assert(stop.final!.rx_bytes_total > 1_000_000, "the traffic was counted");
      assertHistoryIs(await reportAll(db), stop.final!, "after a clean stop");
      const st = Deno.statSync(db);
      assertEquals([(st.mode! & 0o777).toString(8), st.uid, st.gid], ["640", 0, NOBODY]);

      // A restart continues the totals and the history; then a SIGKILL between batches.
      cli = await start(env, config, dir);
      await env.traffic("server", FLOWS);
      await cli.sampleAfter();
      stop = await cli.stop("SIGKILL");
      const killed = stop.final!;
      // History lags the totals by what the last batch did not hold yet.
      const before = await reportAll(db);
      assert(
        BigInt(before.totals.rx_bytes) < BigInt(killed.rx_bytes_total),
        "the killed run's last traffic was not in a batch yet",
      );
      cli = await start(env, config, dir);
      await env.traffic("host-agent", FLOWS);
      await cli.sampleAfter();
      stop = await cli.stop("SIGTERM");
      assertEquals(stop.code, 0, stop.stderr);
      assertHistoryIs(await reportAll(db), stop.final!, "after a SIGKILL and a restart");
      assertStringIncludes(stop.stderr, "history: recording to");
    });
  },
});

/**
 * A tmpfs at `path` with `options` ("ro,size=64k"), mounted where `run` sees it (the
 * layout's mount namespace); file work on it goes through `env.inClient` too.
 */
async function tmpfs(env: Lab, path: string, options: string): Promise<() => Promise<void>> {
  await Deno.mkdir(path, { recursive: true });
  await env.inClient(["mount", "-t", "tmpfs", "-o", `${options},mode=0755`, "stbhist", path]);
  return async () => {
    await env.inClient(["umount", "-l", path]).catch(() => "");
  };
}

Deno.test({
  name:
    "history faults: the disk fills under a running sampler: history pauses, counting goes on, nothing is lost",
  ...TEST_OPTIONS,
  async fn() {
    await withLab(async (env, dir, config) => {
      const disk = `${dir}/small`;
      const unmount = await tmpfs(env, disk, "size=256k");
      try {
        const db = `${disk}/history.sqlite`;
        const cli = await start(env, config, dir, db);
        // The disk fills before the first batch (a minute after the start).
        const filler = `${disk}/filler`;
        await env.inClient(["dd", "if=/dev/zero", `of=${filler}`, "bs=4k", "status=none"])
          .catch(() => "no space left: as meant");
        await env.traffic("server", FLOWS);
        const paused = await cli.waitFor(
          (s) => (s as Json).history?.state === "paused",
          "counters.json to say history is paused",
          75,
        ) as Json;
        assertStringIncludes(paused.history.reason, "the disk is full");
        assert(paused.history.write_failures_total >= 1);
        assert(paused.rx_bytes_total > 800_000, "counted while history could not be written");
        assertStringIncludes(cli.stderr, "counting goes on, retrying every minute");
        // Room again; the batch at stop writes everything kept meanwhile.
        await env.inClient(["rm", filler]);
        const stop = await cli.stop("SIGTERM");
        assertEquals(stop.code, 0, stop.stderr);
        assertStringIncludes(stop.stderr, "history: writing again");
        assertHistoryIs(
          await reportAll(db, env.layout.wrap(env.clientNetns)),
          stop.final!,
          "after the disk was full",
        );
      } finally {
        await unmount();
      }
    });
  },
});

Deno.test({
  name: "history fault: a read-only directory pauses history with the reason; counting goes on",
  ...TEST_OPTIONS,
  async fn() {
    await withLab(async (env, dir, config) => {
      const ro = `${dir}/ro`;
      const unmount = await tmpfs(env, ro, "ro,size=64k");
      try {
        const cli = await start(env, config, dir, `${ro}/history.sqlite`);
        const s = await cli.waitFor(
          (x) => (x as Json).history?.state === "paused",
          "history paused",
        ) as Json;
        assertStringIncludes(s.history.reason, "Read-only file system");
        await env.traffic("server", FLOWS);
        const after = await cli.sampleAfter();
        assert(after.rx_bytes_total > 800_000, "counted with history paused");
        await sleep(600);
        const stop = await cli.stop("SIGTERM");
        assertEquals(stop.code, 0, stop.stderr);
        assertStringIncludes(stop.stderr, "counting goes on, retrying every minute");
      } finally {
        await unmount();
      }
    });
  },
});
