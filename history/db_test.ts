/**
 * Schema versions: a new database gets the newest; every shipped version (a fixture in
 * testdata/ per version) opens with this program and keeps its rows; a newer one is
 * refused, never touched; the steps of a migration land together or not at all.
 */

import { assert, assertEquals, assertThrows } from "../lib/test_assert.ts";
import {
  migrate,
  type Migration,
  MIGRATIONS,
  NewerSchemaError,
  SCHEMA_VERSION,
  schemaVersion,
} from "./db.ts";
import { openDatabase } from "./sqlite.ts";
import { HistoryReader } from "./reader.ts";
import { FakeSampler } from "./testing.ts";

/** Every schema version ever shipped, oldest first: the fixture each was written as. */
const FIXTURES = [{ version: 1, file: "history-v1.sqlite" }];

async function withDir(fn: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-history-db-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const daysTotal = (path: string) => {
  const r = HistoryReader.open(path);
  try {
    return r.rows("day", 0, 4e9).reduce(
      (n, row) => n + [...row.services.values()].reduce((m, c) => m + c.rx_bytes, 0n),
      0n,
    );
  } finally {
    r.close();
  }
};

Deno.test("a new database is created at the newest schema version", async () => {
  await withDir((dir) => {
    const db = openDatabase(`${dir}/h.sqlite`);
    assertEquals(migrate(db), 0, "found empty");
    assertEquals(schemaVersion(db), SCHEMA_VERSION);
    assertEquals(migrate(db), SCHEMA_VERSION, "a second open changes nothing");
    db.close();
  });
});

Deno.test("every shipped schema version opens, migrates and keeps its rows (upgrades keep history)", async () => {
  assertEquals(FIXTURES.at(-1)?.version, SCHEMA_VERSION, "add a fixture for the new version");
  assertEquals(MIGRATIONS.map((m) => m.to), FIXTURES.map((f) => f.version));
  for (const { version, file } of FIXTURES) {
    await withDir((dir) => {
      const path = `${dir}/history.sqlite`;
      Deno.copyFileSync(new URL(`./testdata/${file}`, import.meta.url), path);
      const before = daysTotal(path);
      assertEquals(before, 3_168_000_000n, `fixture v${version} as written`);
      // `run` of this version opens it, records on, and stops.
      const f = new FakeSampler(Date.parse("2025-06-01T12:00:00Z") / 1000, path);
      assertEquals(f.logs, [`history: recording to ${path}`], `v${version}`);
      f.record();
      f.run(70, 1, [{ service: "server", rx: 1000n }]);
      f.recorder.close();
      const db = openDatabase(path);
      assertEquals(schemaVersion(db), SCHEMA_VERSION);
      db.close();
      assertEquals(daysTotal(path), before + 70_000n, `v${version}: old rows kept, new ones added`);
    });
  }
});

Deno.test("a database from a newer release is refused and left as it is", async () => {
  await withDir((dir) => {
    const path = `${dir}/h.sqlite`;
    const db = openDatabase(path);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    const size = Deno.statSync(path).size;
    const again = openDatabase(path);
    assertThrows(() => migrate(again), NewerSchemaError, "newer than this stb-netacct knows");
    again.close();
    const f = new FakeSampler(1_750_000_000, path);
    assertEquals(f.recorder.status().state, "paused");
    assert(f.logs.some((l) => l.includes("upgrade stb-netacct again")), f.logs.join("\n"));
    f.recorder.close();
    assertEquals(Deno.statSync(path).size, size, "not moved aside, not changed");
    assertThrows(() => HistoryReader.open(path), Error, "newer than this stb-netacct");
  });
});

Deno.test("migration steps land in order and together: a failing step leaves the old version whole", async () => {
  await withDir((dir) => {
    const db = openDatabase(`${dir}/h.sqlite`);
    const steps: Migration[] = [
      ...MIGRATIONS,
      { to: SCHEMA_VERSION + 1, sql: "ALTER TABLE days ADD COLUMN note TEXT" },
      { to: SCHEMA_VERSION + 2, sql: "CREATE TABLE broken (" },
    ];
    migrate(db);
    assertThrows(() => migrate(db, steps));
    assertEquals(schemaVersion(db), SCHEMA_VERSION);
    const cols = db.prepare("PRAGMA table_info(days)").all().map((c) => c.name);
    assert(!cols.includes("note"), "the first new step was rolled back with the failing one");
    assertEquals(migrate(db, steps.slice(0, -1)), SCHEMA_VERSION);
    assertEquals(schemaVersion(db), SCHEMA_VERSION + 1);
    db.close();
  });
});
