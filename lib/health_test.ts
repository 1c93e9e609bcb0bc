import { assertEquals } from "./test_assert.ts";
import type { CountersV1 } from "./contract.ts";
import {
  clockProblem,
  exitStatusHelp,
  formatDuration,
  isImplausible,
  judgeFreshness,
  sampleClock,
} from "./health.ts";

const sample = (ts_unix: number, interval_s = 0.5) => ({ ts_unix, interval_s }) as CountersV1;

Deno.test("sampleClock: dated, undated, or in the future past the slack", () => {
  assertEquals(sampleClock(sample(1000), 1003), { kind: "dated", ageS: 3 });
  assertEquals(sampleClock(sample(0), 1003), { kind: "undated" });
  assertEquals(sampleClock(sample(1001.5), 1000), { kind: "dated", ageS: 0 });
  assertEquals(sampleClock(sample(4600), 1000), { kind: "future", aheadS: 3600 });
  assertEquals(sampleClock(sample(1e300), 1000).kind, "future");
  assertEquals(
    clockProblem(sampleClock(sample(1e300), 1000)),
    "its ts_unix is over 100 years in the future, so its age is unknown",
  );
});

Deno.test("judgeFreshness: by date when believable, else by change; unknown until it can say", () => {
  const dated = (ageS: number) => ({ kind: "dated" as const, ageS });
  const watch = (quietS: number, changed: boolean, done = false) => ({ quietS, changed, done });
  assertEquals(judgeFreshness(dated(1), 0.5, null), "fresh");
  assertEquals(judgeFreshness(dated(2.1), 0.5, null), "stale");
  assertEquals(judgeFreshness(dated(5), 2, watch(0, true)), "fresh");
  assertEquals(judgeFreshness(dated(1), 0.5, watch(2.5, true)), "stale");
  // No believable date: a change seen is the only evidence of life.
  assertEquals(judgeFreshness({ kind: "undated" }, 0.5, null), "unknown");
  assertEquals(judgeFreshness({ kind: "undated" }, 0.5, watch(1, false)), "unknown");
  assertEquals(judgeFreshness({ kind: "undated" }, 0.5, watch(1, false, true)), "stale");
  assertEquals(judgeFreshness({ kind: "undated" }, 0.5, watch(0.3, true)), "fresh");
  assertEquals(judgeFreshness({ kind: "future", aheadS: 9 }, 0.5, watch(2.1, true)), "stale");
  assertEquals(judgeFreshness({ kind: "future", aheadS: 9 }, 10, watch(20, false, true)), "stale");
});

Deno.test("isImplausible: beyond 1 Tbit/s is no traffic", () => {
  assertEquals(isImplausible(10n ** 15n, 0.5), true);
  assertEquals(isImplausible(60n * 10n ** 9n, 0.5), false); // 960 Gbit/s
  assertEquals(isImplausible(63n * 10n ** 9n, 0.5), true);
  assertEquals(isImplausible((1n << 64n) - 1n, 1), true);
  assertEquals(isImplausible(10n ** 15n, 3600 * 24), false); // a day: 11.6 GB/s
  assertEquals(isImplausible(1n, 0), false);
});

Deno.test("formatDuration stays readable for any number", () => {
  assertEquals(
    [0.04, 9.96, 12, 119, 300, 3599, 3600, 86400, 9e6, 1e300, NaN, -3].map(formatDuration),
    [
      "0.0 s",
      "10.0 s",
      "12 s",
      "119 s",
      "5 min",
      "1.0 h",
      "1.0 h",
      "24.0 h",
      "104 days",
      "over 100 years",
      "over 100 years",
      "0.0 s",
    ],
  );
});

Deno.test("the exit-status table lists every verdict a command can give", () => {
  const status = exitStatusHelp("status"), graph = exitStatusHelp("graph");
  for (const code of [0, 3, 4, 5, 6, 7]) {
    if (!status.includes(`  ${code}  `)) throw new Error(`status help lacks ${code}`);
  }
  if (graph.includes("  5  ")) throw new Error("graph cannot tell 'not installed'");
  for (const line of [...status.split("\n"), ...graph.split("\n")]) {
    if (line.length > 80) throw new Error(`too wide for 80 columns: ${line}`);
  }
});
