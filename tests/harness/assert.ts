/** Assertions for the suite (no @std here: JSR is unreachable). Messages carry the numbers. */

export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new AssertionError(message);
}

export function assertEquals<T>(actual: T, expected: T, message = ""): void {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new AssertionError(`${message}${message ? ": " : ""}expected ${e}, got ${a}`);
}

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

export async function assertRejects(f: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await f();
  } catch (e) {
    const m = e instanceof Error ? e.message : String(e);
    assert(pattern.test(m), `error "${m}" does not match ${pattern}`);
    return;
  }
  throw new AssertionError(`expected a rejection matching ${pattern}`);
}
