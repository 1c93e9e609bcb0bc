import { assert, assertEquals } from "../lib/test_assert.ts";
import { bootstrapMedianInterval, median } from "./stats.ts";
import { confidence } from "./paired_throughput.ts";

Deno.test("bootstrapMedianInterval holds the median, is repeatable and narrows with more values", () => {
  // Ratios around 1 with a spread like this VM's (a few percent), made by a fixed formula.
  const ratios = (n: number) => [...Array(n).keys()].map((i) => 1 + 0.05 * Math.sin(i * 2.3));
  const few = ratios(8), many = ratios(64);
  const a = bootstrapMedianInterval(few);
  assert(a.low <= median(few) && median(few) <= a.high, `${a.low}..${a.high}`);
  assertEquals(bootstrapMedianInterval(few), a, "same values, same interval");
  const b = bootstrapMedianInterval(many);
  assert(b.high - b.low < a.high - a.low, `64 values: ${b.low}..${b.high}, 8: ${a.low}..${a.high}`);
  assertEquals(bootstrapMedianInterval([1.5, 1.5, 1.5]), { low: 1.5, high: 1.5 });
  assert(Number.isNaN(bootstrapMedianInterval([]).low));
});

Deno.test("confidence: PASS or MISS only when the whole interval is on one side of the target", () => {
  assertEquals(confidence({ low: 0.995, high: 1.02 }, 0.99), "PASS");
  assertEquals(confidence({ low: 0.95, high: 0.985 }, 0.99), "MISS");
  assertEquals(confidence({ low: 0.97, high: 1.01 }, 0.99), "within noise");
  assertEquals(confidence({ low: 0.99, high: 0.99 }, 0.99), "PASS");
});
