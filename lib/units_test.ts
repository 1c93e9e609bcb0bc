import { formatBytes, formatRate, niceCeiling } from "./units.ts";

function eq<T>(actual: T, expected: T): void {
  if (actual !== expected) throw new Error(`expected ${expected}, got ${actual}`);
}

Deno.test("formatBytes uses binary units with three significant digits", () => {
  eq(formatBytes(0), "0 B");
  eq(formatBytes(999), "999 B");
  eq(formatBytes(1023), "1023 B");
  eq(formatBytes(1024), "1.00 KiB");
  eq(formatBytes(1536), "1.50 KiB");
  eq(formatBytes(12.34 * 1024), "12.3 KiB");
  eq(formatBytes(1023.99 * 1024), "1.00 MiB");
  eq(formatBytes(5 * 1024 ** 3), "5.00 GiB");
  eq(formatBytes(300 * 1024 ** 4), "300 TiB");
});

Deno.test("formatBytes refuses nonsense instead of printing NaN", () => {
  eq(formatBytes(Number.NaN), "?");
  eq(formatBytes(-1), "?");
  eq(formatBytes(Infinity), "?");
});

Deno.test("formatRate appends per second", () => {
  eq(formatRate(2.5 * 1024 * 1024), "2.50 MiB/s");
  eq(formatRate(0.4), "0 B/s");
});

Deno.test("niceCeiling rounds up to 1-2-5 steps within a unit", () => {
  eq(niceCeiling(0), 1024);
  eq(niceCeiling(1500), 2 * 1024);
  eq(niceCeiling(3 * 1024 * 1024), 5 * 1024 * 1024);
  eq(niceCeiling(600 * 1024), 1024 * 1024);
  eq(niceCeiling(10, 1), 10);
});
