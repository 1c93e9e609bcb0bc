/**
 * Human units for graph, status and verify. Bytes use binary prefixes (1 KiB = 1024 B):
 * totals are compared with what file managers and `ip -s link` show. Rates can also be
 * shown in bits with decimal prefixes (1 Mbit/s = 10^6 bit/s), the way links are sold.
 */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/**
 * Three significant digits: "0 B", "999 B", "1.00 KiB", "12.3 MiB", "512 GiB". A bigint
 * count is shown the same way (three digits need no more than a double holds).
 */
export function formatBytes(bytes: number | bigint): string {
  return scaled(Number(bytes), 1024, UNITS);
}

/** `n` in the largest of `units` (each `base` times the one before) that keeps it >= 1. */
function scaled(n: number, base: number, units: string[]): string {
  if (!Number.isFinite(n) || n < 0) return "?";
  let unit = 0;
  let v = n;
  // Round first so 1023.9 B shows as "1.00 KiB", not "1024 B".
  while (unit < units.length - 1 && roundSig(v) >= base) {
    v /= base;
    unit++;
  }
  if (unit === 0) return `${Math.round(v)} ${units[0]}`;
  return `${fixed3(v)} ${units[unit]}`;
}

/** A rate in bytes per second, e.g. "1.21 MiB/s". */
export function formatRate(bytesPerSecond: number): string {
  return formatBytes(bytesPerSecond) + "/s";
}

const BIT_UNITS = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s", "Pbit/s", "Ebit/s"];

/** A rate given in bytes per second, shown in bits: "0 bit/s", "8.39 Mbit/s". */
export function formatBitRate(bytesPerSecond: number): string {
  return scaled(bytesPerSecond * 8, 1000, BIT_UNITS);
}

/** A rate in bytes per second, in bits or bytes as the reader chose. */
export function formatRateIn(bytesPerSecond: number, bits: boolean): string {
  return bits ? formatBitRate(bytesPerSecond) : formatRate(bytesPerSecond);
}

/** One step of a round scale: `m` (1, 2 or 5 times a power of ten) of a unit. */
export interface RoundStep {
  /** The step in bytes per second. */
  bytesPerSecond: number;
  m: number;
  /** The unit the step is a round number of: "KiB/s", "Mbit/s". */
  unit: string;
}

const MANTISSAS = [1, 2, 5, 10, 20, 50, 100, 200, 500];

/**
 * The round steps (1-2-5 of a unit) from small to large: binary byte units (1 KiB/s, 2
 * KiB/s, … 500 KiB/s, 1 MiB/s …) or decimal bit units (1 kbit/s … 500 kbit/s, 1 Mbit/s …).
 */
export function* roundSteps(bits: boolean): Generator<RoundStep> {
  const base = bits ? 1000 : 1024;
  const units = bits ? BIT_UNITS : UNITS.map((u) => `${u}/s`);
  for (let i = 0; i < units.length; i++) {
    for (const m of MANTISSAS) {
      const raw = m * base ** i;
      yield { bytesPerSecond: bits ? raw / 8 : raw, m, unit: units[i]! }; // i < units.length
    }
  }
}

/** Whether n is 1, 2 or 5 times a power of ten. */
export function isOneTwoFive(n: number): boolean {
  if (!(n >= 1) || !Number.isInteger(n)) return false;
  let v = n;
  while (v % 10 === 0) v /= 10;
  return v === 1 || v === 2 || v === 5;
}

function roundSig(v: number): number {
  return Number(fixed3(v));
}

function fixed3(v: number): string {
  if (v < 9.995) return v.toFixed(2);
  if (v < 99.95) return v.toFixed(1);
  return v.toFixed(0);
}
