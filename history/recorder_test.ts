/**
 * The recorder with a fake clock on a real database: midnight, DST both ways, a time zone
 * change, wall-clock steps, restarts with and without a final batch, reset, faults.
 * Every test checks the one invariant: what history holds equals what the totals moved.
 */

import { assert, assertEquals } from "../lib/test_assert.ts";
import { HistoryReader, type HistoryRow, type Unit } from "./reader.ts";
import { FakeSampler, wrapWriter } from "./testing.ts";
import { HistoryWriter } from "./writer.ts";
import { Zone } from "./calendar.ts";
import { MAX_ROW_COUNT } from "./db.ts";

const utc = (iso: string) => Date.parse(iso) / 1000;
const MB = 1_000_000n;

async function withDb(fn: (path: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-history-" });
  try {
    await fn(`${dir}/history.sqlite`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function read(path: string, unit: Unit, since = 0, until = 4e9): HistoryRow[] {
  const r = HistoryReader.open(path);
  try {
    return r.rows(unit, since, until);
  } finally {
    r.close();
  }
}

/** rx and tx over every row and service. */
function sum(rows: HistoryRow[], service?: string): { rx: bigint; tx: bigint } {
  let rx = 0n, tx = 0n;
  for (const row of rows) {
    for (const [name, c] of row.services) {
      if (service !== undefined && name !== service) continue;
      rx += c.rx_bytes;
      tx += c.tx_bytes;
    }
  }
  return { rx, tx };
}

/** Every resolution holds the same total. */
function assertAllUnits(path: string, want: { rx: bigint; tx: bigint }, what: string): void {
  for (const unit of ["minute", "hour", "day", "month"] as const) {
    assertEquals(sum(read(path, unit)), want, `${what}: ${unit} rows`);
  }
}

/** Rows never overlap or repeat: each starts at or after the previous one's end. */
function assertNoOverlap(rows: HistoryRow[], what: string): void {
  for (let i = 1; i < rows.length; i++) {
    assert(rows[i]!.start >= rows[i - 1]!.end, `${what}: row ${i} overlaps the one before`);
    assert(rows[i]!.end > rows[i]!.start, `${what}: row ${i} is empty or negative`);
  }
}

Deno.test("across local midnight: each byte on the local date of its minute, all of them once", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T21:55:00Z"), path); // 23:55 in Berlin
    f.record();
    f.run(20 * 60, 0.5, [{ service: "server", rx: 1000n, tx: 10n }]); // to 00:15
    f.recorder.close();
    const days = read(path, "day");
    assertEquals(days.map((d) => d.key), ["2025-06-14", "2025-06-15"]);
    // The samples of 23:55:00.5 .. 23:59:59.5 are the old day's: 599 of them.
    assertEquals(sum([days[0]!]), { rx: 599n * 1000n, tx: 5990n });
    assertEquals(days[1]!.start, utc("2025-06-14T22:00:00Z"));
    assertAllUnits(path, f.sum(), "midnight");
    assertNoOverlap(read(path, "minute"), "minutes");
  });
});

Deno.test("DST both ways (Europe/Berlin): 23 h and 25 h days, hours contiguous, nothing lost", async () => {
  for (const [night, hours] of [["2025-03-30", 23], ["2025-10-26", 25]] as const) {
    await withDb((path) => {
      const f = new FakeSampler(utc(`${night}T00:00:00Z`) - 3600 * 3, path);
      f.record();
      // A sample every 10 s for 30 h, 1 MB each: the whole local day and its neighbours.
      f.run(30 * 360, 10, [{ service: "shell", rx: MB }]);
      f.recorder.close();
      const day = read(path, "day").find((d) => d.key === night)!;
      assertEquals((day.end - day.start) / 3600, hours, `${night} length`);
      const z = new Zone("Europe/Berlin");
      assertEquals(
        z.iso(day.start).slice(10),
        "T00:00:00" + (night < "2025-06" ? "+01:00" : "+02:00"),
      );
      assertEquals(sum([day]).rx, BigInt(hours * 360) * MB, `${night}: every sample of the day`);
      const hourRows = read(path, "hour");
      assertNoOverlap(hourRows, `${night} hours`);
      assertEquals(hourRows.length, 31, `${night}: one row per UTC hour`);
      assertAllUnits(path, f.sum(), night);
    });
  }
});

Deno.test("a time zone change: days follow the new zone from the next batch, nothing counted twice", async () => {
  await withDb((path) => {
    // 10:00 in Berlin on 2025-06-14; at 16:00 Berlin (10:00 New York) the host moves west.
    const f = new FakeSampler(utc("2025-06-14T08:00:00Z"), path);
    f.record();
    f.run(6 * 360, 10, [{ service: "server", rx: MB }]);
    f.zoneName = "America/New_York";
    f.run(14 * 360 - 1, 10, [{ service: "server", rx: MB }]); // to 23:59:50 in New York
    f.recorder.close();
    const days = read(path, "day");
    assertEquals(days.map((d) => d.key), ["2025-06-14"]);
    // Started at Berlin's midnight, ended at New York's: the day the host moved west.
    assertEquals([days[0]!.start, days[0]!.end], [
      utc("2025-06-13T22:00:00Z"),
      utc("2025-06-15T04:00:00Z"),
    ]);
    assert(f.logs.some((l) => l.includes("time zone is now America/New_York")), f.logs.join("\n"));
    assertAllUnits(path, f.sum(), "zone change");
  });
});

Deno.test("the wall clock steps back and forward: no negative, doubled or lost bytes", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    const writes: number[] = [];
    f.recorder.close();
    f.start({
      writer: wrapWriter(new HistoryWriter(path, null), (b, real) => {
        writes.push(f.mono);
        real.write(b);
      }),
    });
    f.record();
    f.run(1200, 1, [{ service: "server", rx: 1000n }]); // 10:00..10:20
    f.unix -= 600; // NTP steps the clock back ten minutes: 10:10 again
    f.run(600, 1, [{ service: "server", rx: 1000n }]);
    f.unix += 7200; // and forward two hours
    f.run(600, 1, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    assertAllUnits(path, f.sum(), "steps");
    const minutes = read(path, "minute");
    assertNoOverlap(minutes, "minutes");
    for (const m of minutes) assert(sum([m]).rx > 0n, "no empty or negative minute");
    // Each minute is one row; 10:10..10:19 hold what was sampled in both passes over them.
    const at = (hhmm: string) =>
      sum(read(path, "minute", utc(`2025-06-14T${hhmm}:00Z`), utc(`2025-06-14T${hhmm}:01Z`))).rx;
    assertEquals([at("10:05"), at("10:15"), at("12:25")], [60_000n, 120_000n, 60_000n]);
    // Batches follow the monotonic clock: one a minute, whatever the wall clock did.
    for (let i = 1; i < writes.length - 1; i++) {
      assert(writes[i]! - writes[i - 1]! >= 60, `batch ${i}`);
    }
    assertEquals(writes.length, 41, "40 a-minute batches and the one at stop");
    assert(f.logs.some((l) => /wall clock moved 72\d\d s in 60 s/.test(l)), f.logs.join("\n"));
  });
});

Deno.test("restart: continues from the checkpoint; SIGKILL: the missed batch is caught up once", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    f.record();
    f.run(300, 1, [{ service: "server", rx: 1000n, tx: 7n }]);
    f.recorder.close(); // a clean stop writes its batch
    const killed = new HistoryWriter(path, null);
    f.start({ writer: killed });
    f.unix += 5; // the restart takes 5 s; the totals continue
    f.mono += 5;
    f.record();
    f.run(90, 1, [{ service: "server", rx: 1000n, tx: 7n }]); // one batch at 60 s, 30 s pending
    // SIGKILL: the pending 30 s never reach the database (its file and lock are let go).
    killed.close();
    f.start();
    assertEquals(sum(read(path, "day")), { rx: 360_000n, tx: 2520n }, "before the catch-up");
    f.unix += 2;
    f.mono += 2;
    f.record();
    f.run(30, 1, [{ service: "server", rx: 1000n, tx: 7n }]);
    f.recorder.close();
    assertAllUnits(path, f.sum(), "after SIGKILL and restart");
    assertEquals(f.sum(), { rx: 420_000n, tx: 2940n });
  });
});

Deno.test("a checkpoint older than ten minutes is not caught up with; the gap is logged", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    f.record();
    f.run(120, 1, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    f.unix += 3600; // an hour without a sampler recording history, but totals moved on
    f.add("server", 5_000_000n);
    f.start();
    f.record();
    f.run(60, 1, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    assertEquals(sum(read(path, "day")).rx, 180_000n);
    assert(f.logs.some((l) => l.includes("5000000 bytes were counted while nothing recorded")));
  });
});

Deno.test("reset: lower totals count from zero; with the clear request history is emptied", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    f.record();
    f.run(120, 1, [{ service: "server", rx: 1000n }]);
    // As `run` resets: the totals are zeroed, then that sample is recorded.
    f.totals.server = { rx: 0n, tx: 0n };
    f.recorder.totalsReset(); // no request file: history stays
    f.run(1, 1, []);
    f.run(120, 1, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    assertEquals(sum(read(path, "day")).rx, 240_000n, "both halves, no negative step");
    f.start();
    f.record();
    Deno.writeTextFileSync(`${path}.clear-request`, "1\n");
    f.totals.server = { rx: 0n, tx: 0n };
    f.recorder.totalsReset();
    f.run(1, 1, []);
    assert(!existsSync(`${path}.clear-request`), "request consumed");
    f.run(70, 1, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    assertEquals(sum(read(path, "day")).rx, 70_000n, "only what came after the reset");
  });
});

function existsSync(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

Deno.test("a corrupt database is moved aside, a new one started, logged and counted", async () => {
  await withDb((path) => {
    Deno.writeTextFileSync(path, "not a database; ".repeat(500));
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    assertEquals(f.recorder.status().databases_replaced_total, 1);
    assert(
      f.logs.some((l) => /is not a usable database .* moved it to .*broken-/.test(l)),
      f.logs.join("\n"),
    );
    const aside = [...Deno.readDirSync(path.slice(0, path.lastIndexOf("/")))].map((e) => e.name)
      .filter((n) => n.includes(".broken-"));
    assertEquals(aside.length, 1);
    f.record();
    f.run(70, 1, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    assertEquals(sum(read(path, "day")).rx, 70_000n);
  });
});

Deno.test("writes that fail (a full disk) pause history and keep what is pending; it resumes whole", async () => {
  await withDb((path) => {
    let full = false;
    const writer = wrapWriter(new HistoryWriter(path, null), (b, real) => {
      if (full) throw Object.assign(new Error("database or disk is full"), { errcode: 13 });
      real.write(b);
    });
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path, { writer });
    f.record();
    f.run(70, 1, [{ service: "server", rx: 1000n }]);
    full = true;
    f.run(300, 1, [{ service: "server", rx: 1000n }]);
    assertEquals(f.recorder.status().state, "paused");
    assertEquals(f.recorder.status().write_failures_total, 5);
    assert(f.logs.filter((l) => l.includes("the disk is full")).length === 1, "logged once");
    full = false;
    f.run(60, 1, [{ service: "server", rx: 1000n }]);
    assertEquals(f.recorder.status().state, "recording");
    assert(f.logs.includes("history: writing again"));
    f.recorder.close();
    assertAllUnits(path, f.sum(), "after the pause");
  });
});

Deno.test("counts beyond SQLite's 2^63 - 1 saturate a row; the checkpoint keeps totals to 2^64 - 1", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    f.totals.server = { rx: (1n << 64n) - 10n ** 19n, tx: 0n };
    f.record();
    f.run(1, 1, [{ service: "server", rx: 1n << 62n }]);
    f.run(1, 1, [{ service: "server", rx: 1n << 62n }]);
    f.run(1, 1, [{ service: "server", rx: 1n << 62n }]);
    f.recorder.close();
    assertEquals(sum(read(path, "minute")).rx, MAX_ROW_COUNT, "saturated, not wrapped or rounded");
    f.start();
    f.unix += 1;
    f.record(); // continues from the exact checkpoint: nothing to catch up
    f.recorder.close();
    assertEquals(sum(read(path, "minute")).rx, MAX_ROW_COUNT);
  });
});

Deno.test("a service history has not seen before is counted from its first sample", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path);
    f.record();
    f.run(30, 1, [{ service: "server", rx: 1000n }]);
    f.totals.late = { rx: 123_456n, tx: 0n }; // appears with totals from an older state
    f.run(40, 1, [{ service: "late", rx: 1000n }]);
    f.recorder.close();
    assertEquals(sum(read(path, "day"), "late").rx, 39_000n);
    assertEquals(sum(read(path, "day"), "server").rx, 30_000n);
  });
});
