import { formatBitRate, formatBytes, formatRate, isOneTwoFive, roundSteps } from "./units.ts";

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

Deno.test("formatBitRate: bits with decimal prefixes, three significant digits", () => {
  eq(formatBitRate(0), "0 bit/s");
  eq(formatBitRate(124), "992 bit/s");
  eq(formatBitRate(125), "1.00 kbit/s");
  eq(formatBitRate(1024 * 1024), "8.39 Mbit/s");
  eq(formatBitRate(1.25e9), "10.0 Gbit/s");
  eq(formatBitRate(-1), "?");
  eq(formatBitRate(NaN), "?");
});

Deno.test("roundSteps: 1-2-5 of each unit, in order, bytes binary and bits decimal", () => {
  const bytes = [...roundSteps(false)].slice(8, 12).map((s) => `${s.m} ${s.unit}`);
  eq(bytes.join(", "), "500 B/s, 1 KiB/s, 2 KiB/s, 5 KiB/s");
  const kib = [...roundSteps(false)].find((s) => s.unit === "KiB/s" && s.m === 1)!;
  eq(kib.bytesPerSecond, 1024);
  const mbit = [...roundSteps(true)].find((s) => s.unit === "Mbit/s" && s.m === 2)!;
  eq(mbit.bytesPerSecond, 250_000);
  let prev = 0;
  for (const s of roundSteps(true)) {
    if (s.bytesPerSecond <= prev || !isOneTwoFive(s.m)) throw new Error(JSON.stringify(s));
    prev = s.bytesPerSecond;
  }
});

Deno.test("isOneTwoFive", () => {
  eq([1, 2, 5, 10, 20, 50, 1000, 5000].every(isOneTwoFive), true);
  eq([0, 3, 4, 15, 25, 2.5, -1, 1200].some(isOneTwoFive), false);
});
