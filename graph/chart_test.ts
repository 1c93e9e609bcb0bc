import { assert, assertEquals } from "../lib/test_assert.ts";
import { isOneTwoFive } from "../lib/units.ts";
import { plot, rateAxis, timeAxis } from "./chart.ts";

const MiB = 1024 * 1024;

/** The value a label names, in bytes per second. */
function labelValue(label: string): number {
  const m = /^(\d+) (B|KiB|MiB|GiB|bit|kbit|Mbit|Gbit)\/s$/.exec(label);
  if (!m) throw new Error(`odd label ${label}`);
  const unit: Record<string, number> = {
    B: 1,
    KiB: 1024,
    MiB: MiB,
    GiB: 1024 * MiB,
    bit: 1 / 8,
    kbit: 125,
    Mbit: 125e3,
    Gbit: 125e6,
  };
  return Number(m[1]) * unit[m[2]!]!;
}

Deno.test("rateAxis: round labels (a 1-2-5 step and its multiples), top at or above the max", () => {
  for (const bits of [false, true]) {
    for (const rows of [3, 4, 5, 6, 9, 12, 15, 25]) {
      for (const max of [0, 1, 900, 5000, 3.3 * MiB, 5.72 * MiB, 48e6 / 8, 7e9]) {
        const axis = rateAxis(max, rows, bits);
        const what = `${bits ? "bits" : "bytes"} rows ${rows} max ${max}`;
        assertEquals(axis.labels.length, rows, what);
        assertEquals(axis.labels[0], "0", what);
        assert(axis.perRow * (rows - 1) >= max, `${what}: top below the max`);
        const labelled = axis.labels.map((l, r) => [l, r] as const).filter(([l, r]) => r > 0 && l);
        assert(labelled.length >= Math.min(2, rows - 1), `${what}: ${axis.labels}`);
        const step = labelValue(labelled[0]![0]) / labelled[0]![1];
        for (const [l, r] of labelled) {
          // Each label is exactly the value of its row, and a round number of its unit.
          assert(Math.abs(labelValue(l) - r * axis.perRow) < 1e-6 * labelValue(l), `${what}: ${l}`);
          assert(Math.abs(labelValue(l) / (r * step) - 1) < 1e-9, what);
        }
        const first = Number(labelled[0]![0].split(" ")[0]);
        assert(isOneTwoFive(first), `${what}: first label ${labelled[0]![0]} is not 1-2-5`);
        // Not needlessly high: the next smaller step would not hold the max.
        assert(axis.perRow * (rows - 1) <= Math.max(max, 1024) * 5.01, `${what}: top too high`);
      }
    }
  }
  assertEquals(rateAxis(5.72 * MiB, 5, false).labels, [
    "0",
    "2 MiB/s",
    "4 MiB/s",
    "6 MiB/s",
    "8 MiB/s",
  ]);
  assertEquals(rateAxis(48e6 / 8, 15, true).labels.filter((l) => l), [
    "0",
    "20 Mbit/s",
    "40 Mbit/s",
  ]);
});

Deno.test("plot: the total as a line, services as glyphs, gaps and zeros not drawn", () => {
  const axis = { perRow: 100, labels: ["0", "", "", ""] };
  const lines = plot(
    [
      { values: [0, 100, 300, 300, null, 100], glyph: null, color: "" },
      { values: [0, 0, 200, null, null, 100], glyph: "●", color: "" },
    ],
    axis,
    { rows: 4, columns: 6 },
  );
  assertEquals(lines, [
    "  ╭─  ",
    "  ●   ",
    " ╭╯  ●",
    "─╯    ",
  ]);
  // Colour runs are closed on every row.
  const colored = plot(
    [{ values: [100, 100], glyph: "▲", color: "\x1b[32m" }],
    { perRow: 100, labels: ["0", ""] },
    { rows: 2, columns: 3 },
  );
  assertEquals(colored, ["\x1b[32m▲▲\x1b[0m ", "   "]);
});

Deno.test("timeAxis: the same window whatever the width, 'now' at the right", () => {
  for (const columns of [26, 40, 68, 108, 200]) {
    const axis = timeAxis(60, columns);
    assertEquals([...axis].length, columns);
    assert(axis.endsWith("now"), axis);
    assert(axis.includes("-60 s") || columns < 40, `${columns}: ${axis}`);
    // Every label sits where its time is: -30 s in the middle, give or take its width.
    const at = axis.indexOf("-30 s");
    if (at >= 0) assert(Math.abs(at + 2.5 - columns / 2) <= 3, `${columns}: ${axis}`);
  }
  const tenMinutes = timeAxis(600, 68);
  assert(tenMinutes.startsWith("-10 min") && tenMinutes.includes("-2 min"), tenMinutes);
  assert(timeAxis(3600, 108).includes("-1 h"), timeAxis(3600, 108));
});
