import { assertEquals } from "../lib/test_assert.ts";
import { formatBytes } from "../lib/units.ts";
import { Zone } from "./calendar.ts";
import { FakeSampler } from "./testing.ts";
import { describeToday, todayTotals } from "./today.ts";

const utc = (iso: string) => Date.parse(iso) / 1000;
const berlin = new Zone("Europe/Berlin");

async function withDb(fn: (path: string) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-today-" });
  try {
    fn(`${dir}/history.sqlite`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("today: the local day's totals since local midnight", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-13T20:00:00Z"), path); // 22:00 in Berlin
    f.record();
    f.run(15 * 60, 60, [{ service: "server", rx: 1000n, tx: 10n }]); // to 13:00 local
    f.recorder.close();
    const t = todayTotals(path, utc("2025-06-14T11:00:30Z"), berlin)!;
    // From 00:00 local (22:00Z): 13 hours of a sample a minute, the one at 00:00 included.
    assertEquals([berlin.iso(t.since), t.rx, t.tx], ["2025-06-14T00:00:00+02:00", 781_000n, 7810n]);
    assertEquals(
      describeToday(t, formatBytes, berlin),
      "today since 00:00: ↓ 763 KiB ↑ 7.63 KiB (history to 13:00)",
    );
  });
});

Deno.test("today: counted from when history began, when that was after midnight", async () => {
  await withDb((path) => {
    const f = new FakeSampler(utc("2025-06-14T10:00:00Z"), path); // 12:00 in Berlin
    f.record();
    f.run(70, 60, [{ service: "server", rx: 1000n }]);
    f.recorder.close();
    const t = todayTotals(path, utc("2025-06-14T11:30:00Z"), berlin)!;
    assertEquals([berlin.iso(t.since).slice(11, 16), t.rx], ["12:01", 70_000n]);
    assertEquals(todayTotals(`${path}.none`, utc("2025-06-14T11:30:00Z"), berlin), null);
  });
});
