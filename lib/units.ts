/**
 * Human units for graph, status and verify. Binary prefixes (1 KiB = 1024 B), bytes not
 * bits: the totals are compared with what file managers and `ip -s link` show, and those
 * count bytes.
 */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/**
 * Three significant digits: "0 B", "999 B", "1.00 KiB", "12.3 MiB", "512 GiB". A bigint
 * count is shown the same way (three digits need no more than a double holds).
 */
export function formatBytes(bytes: number | bigint): string {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return "?";
  let unit = 0;
  let v = n;
  // Round first so 1023.9 B shows as "1.00 KiB", not "1024 B".
  while (unit < UNITS.length - 1 && roundSig(v) >= 1024) {
    v /= 1024;
    unit++;
  }
  if (unit === 0) return `${Math.round(v)} B`;
  return `${fixed3(v)} ${UNITS[unit]}`;
}

/** A rate in bytes per second, e.g. "1.21 MiB/s". */
export function formatRate(bytesPerSecond: number): string {
  return formatBytes(bytesPerSecond) + "/s";
}

function roundSig(v: number): number {
  return Number(fixed3(v));
}

function fixed3(v: number): string {
  if (v < 9.995) return v.toFixed(2);
  if (v < 99.95) return v.toFixed(1);
  return v.toFixed(0);
}

/**
 * A round upper bound for the chart's y axis, so its labels are readable (1, 2, 5 × 10^k
 * within a binary unit). Never below `floor`, so an idle line does not fill the chart.
 */
export function niceCeiling(v: number, floor = 1024): number {
  const target = Math.max(v, floor);
  let unit = 1;
  while (target / unit >= 1024) unit *= 1024;
  const m = target / unit;
  for (const step of [1, 2, 5, 10, 20, 50, 100, 200, 500]) {
    if (m <= step) return step * unit;
  }
  return 1024 * unit;
}
