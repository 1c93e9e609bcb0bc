/**
 * `stb-netacct report` through the real CLI, on histories written by the real recorder
 * with a fake clock (history/testing.ts): DST nights in both directions read back with
 * TZ set in the subprocess, JSON checked against schema/report.schema.json, CSV against
 * the JSON, the accepted --since forms, and who may read the database.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../lib/test_assert.ts";
import { parseExact } from "../lib/exact_json.ts";
import { FakeSampler } from "../history/testing.ts";
import { cliArgv, run } from "./harness/mod.ts";
import { validate } from "./harness/json_schema.ts";

const REPORT_SCHEMA = parseExact(
  Deno.readTextFileSync(new URL("../schema/report.schema.json", import.meta.url)),
);
const utc = (iso: string) => Date.parse(iso) / 1000;
const NOBODY = 65534;
const isRoot = Deno.uid() === 0;

async function report(args: string[], env: Record<string, string> = {}, asUid?: number) {
  const argv = cliArgv(["report", ...args]);
  const full = asUid === undefined
    ? argv
    : ["setpriv", `--reuid=${asUid}`, `--regid=${asUid}`, "--clear-groups", ...argv];
  const r = await run(full, { allowFail: true, env: { NO_COLOR: "1", ...env } });
  return { ...r, all: r.stdout + r.stderr };
}

// deno-lint-ignore no-explicit-any
type Json = any;

async function reportJson(args: string[], env: Record<string, string>): Promise<Json> {
  const r = await report([...args, "--json"], env);
  assertEquals(r.code, 0, r.all);
  const doc = parseExact(r.stdout);
  assertEquals(validate(doc, REPORT_SCHEMA), [], `schema: ${r.stdout.slice(0, 400)}`);
  return doc;
}

/**
 * A Berlin host's history over both DST nights of 2025: three days around each, a sample
 * every two minutes, 1 MB down and 100 kB up per sample for server, a tenth for shell.
 * In /dev/shm: thousands of batches, each fsynced, would take minutes on a disk.
 */
function dstHistory(dir: string): { path: string; f: FakeSampler } {
  const path = `${dir}/history.sqlite`;
  const f = new FakeSampler(utc("2025-03-28T00:00:00Z"), path, { zone: "Europe/Berlin" });
  f.record();
  const traffic = [
    { service: "server", rx: 1_000_000n, tx: 100_000n },
    { service: "shell", rx: 100_000n, tx: 10_000n },
  ];
  f.run(3 * 720, 120, traffic); // to 2025-03-31T00:00Z
  f.unix = utc("2025-10-25T00:00:00Z"); // a jump with the host off: nothing counted
  f.mono += 20_000_000;
  f.record();
  f.run(3 * 720, 120, traffic); // to 2025-10-28T00:00Z
  f.recorder.close();
  return { path, f };
}

async function withShm(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "stb-report-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("report across DST both ways (TZ=Europe/Berlin): 23 h and 25 h days, schema-valid JSON, CSV agrees", async () => {
  await withShm(async (dir) => {
    const { path } = dstHistory(dir);
    const berlin = { TZ: "Europe/Berlin" };
    const march = await reportJson(
      ["--days", "--since", "2025-03-28", "--until", "2025-04-01", "--history-db", path],
      berlin,
    );
    assertEquals(march.time_zone, "Europe/Berlin");
    assertEquals(march.rows.map((r: Json) => [r.start, r.end]), [
      ["2025-03-28T00:00:00+01:00", "2025-03-29T00:00:00+01:00"],
      ["2025-03-29T00:00:00+01:00", "2025-03-30T00:00:00+01:00"],
      ["2025-03-30T00:00:00+01:00", "2025-03-31T00:00:00+02:00"],
      ["2025-03-31T00:00:00+02:00", "2025-04-01T00:00:00+02:00"],
    ]);
    // 2025-03-30 has 23 hours: 690 samples of 1.1 MB; its neighbours 720.
    assertEquals(BigInt(march.rows[2].rx_bytes), 690n * 1_100_000n);
    assertEquals(BigInt(march.rows[1].rx_bytes), 720n * 1_100_000n);
    assertEquals(BigInt(march.rows[2].services.server.tx_bytes), 690n * 100_000n);
    // The history began at 01:00 local on the 28th and ended at 02:00 local on the 31st.
    assertEquals(BigInt(march.totals.rx_bytes), 2160n * 1_100_000n);

    const october = await reportJson(
      ["--hours", "--since", "2025-10-26", "--until", "2025-10-27", "--history-db", path],
      berlin,
    );
    assertEquals(october.rows.length, 25, "the autumn day has 25 hours");
    assertEquals(october.rows.slice(2, 4).map((r: Json) => r.start), [
      "2025-10-26T02:00:00+02:00",
      "2025-10-26T02:00:00+01:00",
    ]);
    for (const r of october.rows) assertEquals(BigInt(r.rx_bytes), 30n * 1_100_000n, r.start);
    const table = await report(
      ["--hours", "--since", "2025-10-26", "--until", "2025-10-27", "--history-db", path],
      berlin,
    );
    assertMatch(table.stdout, /2025-10-26 02:00 \+02:00 .*\n2025-10-26 02:00 \+01:00 /);
    assertStringIncludes(table.stdout, "total (25 hours)");

    // CSV: the same rows, and each row's services add up to its total.
    const csv = await report(
      ["--days", "--since", "2025-03-28", "--until", "2025-04-01", "--csv", "--history-db", path],
      berlin,
    );
    assertEquals(csv.code, 0, csv.all);
    const [head, ...lines] = csv.stdout.trimEnd().split("\n");
    assertEquals(
      head,
      "start,end,rx_bytes,tx_bytes,server_rx_bytes,server_tx_bytes,shell_rx_bytes,shell_tx_bytes",
    );
    assertEquals(lines.length, march.rows.length);
    lines.forEach((line, i) => {
      const c = line!.split(",");
      assertEquals(c.length, 8, line);
      for (const t of c.slice(0, 2)) {
        assertMatch(t, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$/);
      }
      assertEquals([c[0], c[1]], [march.rows[i].start, march.rows[i].end]);
      const n = c.slice(2).map(BigInt);
      assertEquals([n[0], n[1]], [BigInt(march.rows[i].rx_bytes), BigInt(march.rows[i].tx_bytes)]);
      assertEquals(n[2]! + n[4]!, n[0]!, `${line}: services add up (rx)`);
      assertEquals(n[3]! + n[5]!, n[1]!, `${line}: services add up (tx)`);
    });
  });
});

Deno.test("report in another zone (TZ=America/New_York): the same instants, New York's offsets", async () => {
  await withShm(async (dir) => {
    const { path } = dstHistory(dir);
    const ny = await reportJson(
      ["--hours", "--since", "2025-10-26", "--until", "2025-10-26T02:00", "--history-db", path],
      { TZ: "America/New_York" },
    );
    assertEquals(ny.time_zone, "America/New_York");
    assertEquals(ny.rows[0].start, "2025-10-26T00:00:00-04:00");
    assertEquals(ny.rows.length, 2);
    // Days stay the calendar they were recorded in (Berlin's midnight is 19:00 or 18:00 here).
    const days = await reportJson(
      ["--days", "--since", "2025-03-29", "--until", "2025-03-31", "--history-db", path],
      { TZ: "America/New_York" },
    );
    assertEquals(days.rows.map((r: Json) => r.start), [
      "2025-03-29T19:00:00-04:00",
      "2025-03-30T18:00:00-04:00",
    ]);
  });
});

Deno.test("report refuses bad flags with exit 2, naming the accepted forms", async () => {
  const cases: [string[], string][] = [
    [["--since", "garbage"], "a date (2025-03-01), a month (2025-03), a local time"],
    [["--since", "garbage"], "30m, 12h, 7d, 2w, 3mo, 1y"],
    [["--until", "2025-13-01"], '"2025-13-01" is not a time'],
    [["--since", "2025-02-30"], '"2025-02-30" is not a time'],
    [["--hours", "--days"], "--hours and --days were both given"],
    [["--json", "--csv"], "--json and --csv were both given"],
    [["--since", "2025-05-01", "--until", "2025-04-01"], "is not before --until"],
    [["--bogus"], "unknown option"],
  ];
  for (const [args, want] of cases) {
    const r = await report([...args, "--history-db", "/nonexistent/h.sqlite"]);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.all}`);
    assertStringIncludes(r.all, want, args.join(" "));
  }
});

Deno.test({
  name:
    "report: the owner's group reads the database, other users are refused with the fix, nobody writes",
  ignore: !isRoot,
  async fn() {
    await withShm(async (dir) => {
      await Deno.chmod(dir, 0o755);
      const path = `${dir}/history.sqlite`;
      const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path, { ownerGid: NOBODY });
      f.record();
      f.run(70, 1, [{ service: "server", rx: 1000n }]);
      f.recorder.close();
      const st = Deno.statSync(path);
      assertEquals([(st.mode! & 0o777).toString(8), st.uid, st.gid], ["640", 0, NOBODY]);
      const args = ["--days", "--since", "2025-06-14", "--until", "2025-06-15", "--json"];
      const asOwner = await report([...args, "--history-db", path], {}, NOBODY);
      assertEquals(asOwner.code, 0, asOwner.all);
      assertEquals(
        parseExact(asOwner.stdout) as Json,
        parseExact((await report([...args, "--history-db", path])).stdout),
      );
      const other = await report([...args, "--history-db", path], {}, 1000);
      assertEquals(other.code, 1, other.all);
      assertStringIncludes(other.stderr, "permission denied");
      assertStringIncludes(other.stderr, "with sudo");
      // Read-only for the owner: it cannot change a byte, nor put a file beside it.
      const write = await run(
        [
          "setpriv",
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          "--clear-groups",
          "truncate",
          "-s",
          "0",
          path,
        ],
        { allowFail: true },
      );
      assert(write.code !== 0, "the owner could truncate the database");
      assertEquals(Deno.statSync(path).size, st.size);
      const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assertEquals(names, ["history.sqlite"], "no journal, lock or -shm file left beside it");
    });
  },
});

Deno.test("report: no history yet, and a corrupt one, are failures (exit 1) that say what to do", async () => {
  await withShm(async (dir) => {
    const missing = await report(["--history-db", `${dir}/none.sqlite`]);
    assertEquals(missing.code, 1, missing.all);
    assertStringIncludes(missing.stderr, "No history at");
    assertStringIncludes(missing.stderr, "stb-netacct run");
    Deno.writeTextFileSync(`${dir}/bad.sqlite`, "garbage ".repeat(1000));
    const bad = await report(["--history-db", `${dir}/bad.sqlite`]);
    assertEquals(bad.code, 1, bad.all);
    assertStringIncludes(bad.stderr, "is not a readable database");
    assertStringIncludes(bad.stderr, "moves it aside");
    const path = `${dir}/h.sqlite`;
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    f.record();
    f.run(70, 1, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    const unknown = await report(["--service", "nosuch", "--history-db", path]);
    assertEquals(unknown.code, 2, unknown.all);
    // Only services with traffic are in the history.
    assertStringIncludes(unknown.stderr, "no such service in the history; it has server");
  });
});
