/** Assertions for the suite: the shared ones plus a tolerance check whose message carries the numbers. */

import { assert } from "../../lib/test_assert.ts";

export { assert, assertEquals, AssertionError, present } from "../../lib/test_assert.ts";

/** |actual - expected| <= tolerance * expected, with `expected` > 0 so the check can fail. */
export function assertWithin(
  actual: number,
  expected: number,
  tolerance: number,
  what: string,
): void {
  assert(expected > 0, `${what}: reference is ${expected}, the test pushed no traffic`);
  const off = (actual - expected) / expected;
  assert(
    Math.abs(off) <= tolerance,
    `${what}: counted ${actual}, expected ${expected} ±${(tolerance * 100).toFixed(1)}% ` +
      `(off by ${(off * 100).toFixed(2)}%)`,
  );
}
