/**
 * JSON whose integers stay exact beyond 2^53. Byte and packet counts are unsigned 64-bit
 * in the kernel; JSON.parse and JSON.stringify would round them through a double, so a
 * total above 2^53 came back changed and small increments to it vanished. Counts are
 * bigint in memory and plain JSON integers on disk (no quotes, no exponent), so any
 * JSON reader still sees numbers; readers that need every digit parse with parseExact.
 */

/** The largest count a kernel counter can hold (__u64). */
export const MAX_COUNT = (1n << 64n) - 1n;

/** Integers from 2^53 on have at least 16 digits: only a text with such a run needs care. */
const LONG_DIGITS = /\d{16}/;

/**
 * JSON.parse, except that an integer literal too big for a double to hold exactly becomes
 * a bigint (with all its digits); every other number stays a number. A text without 16
 * digits in a row is parsed plainly (no reviver: faster, and no recursion on deep input).
 */
export function parseExact(text: string): unknown {
  return LONG_DIGITS.test(text) ? JSON.parse(text, exactReviver) : JSON.parse(text);
}

function exactReviver(
  this: unknown,
  _key: string,
  value: unknown,
  context?: { source?: string },
): unknown {
  if (typeof value !== "number" || Number.isSafeInteger(value)) return value;
  const source = context?.source;
  return source !== undefined && /^-?\d+$/.test(source) ? BigInt(source) : value;
}

/** JSON.rawJSON (V8 11.4+, in Deno), which TypeScript's lib does not declare yet. */
const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;

/** JSON.stringify that writes a bigint as a JSON integer with all its digits. */
export function stringifyExact(value: unknown, indent?: number): string {
  return JSON.stringify(
    value,
    (_key, v) => typeof v === "bigint" ? rawJSON(v.toString()) : v,
    indent,
  );
}

/**
 * A count as parsed JSON holds it (a safe integer number, or a bigint from parseExact):
 * the bigint, or null when `v` is not an integer in 0..MAX_COUNT.
 */
export function asCount(v: unknown): bigint | null {
  if (typeof v === "bigint") return v >= 0n && v <= MAX_COUNT ? v : null;
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  return null;
}
