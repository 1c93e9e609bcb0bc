/**
 * A Report as text: a table with a bar per row for people, CSV and JSON for programs
 * (schema/report.schema.json). Times are ISO 8601 with the local offset in the machine
 * formats; counts are exact integers.
 */

import { formatBytes } from "../lib/units.ts";
import { stringifyExact } from "../lib/exact_json.ts";
import { Zone } from "./calendar.ts";
import type { RowCounts } from "./db.ts";
import type { Report, ReportRow } from "./report_data.ts";

export const REPORT_SCHEMA_VERSION = 1;

function countsJson(c: RowCounts) {
  return {
    rx_bytes: c.rx_bytes,
    tx_bytes: c.tx_bytes,
    rx_packets: c.rx_packets,
    tx_packets: c.tx_packets,
  };
}

function servicesJson(m: Map<string, RowCounts>) {
  const out: Record<string, ReturnType<typeof countsJson>> = {};
  for (const [name, c] of m) out[name] = countsJson(c);
  return out;
}

/** One JSON document (schema/report.schema.json). */
export function renderJson(r: Report): string {
  const z = new Zone(r.zone);
  return stringifyExact({
    schema: REPORT_SCHEMA_VERSION,
    unit: r.unit,
    time_zone: r.zone,
    since: z.iso(r.since),
    until: z.iso(r.until),
    recorded_until: r.recordedUntil === null ? null : z.iso(r.recordedUntil),
    services: r.services,
    rows: r.rows.map((row) => ({
      start: z.iso(row.start),
      end: z.iso(row.end),
      ...countsJson(row.total),
      services: servicesJson(row.services),
    })),
    totals: { ...countsJson(r.totals.total), services: servicesJson(r.totals.services) },
  }, 2) + "\n";
}

/** start,end,rx_bytes,tx_bytes, then SERVICE_rx_bytes,SERVICE_tx_bytes per service. */
export function renderCsv(r: Report): string {
  const z = new Zone(r.zone);
  // Service names are letters, digits, "-", "_" and "." (lib/config.ts): nothing to quote.
  const head = ["start", "end", "rx_bytes", "tx_bytes"];
  for (const s of r.services) head.push(`${s}_rx_bytes`, `${s}_tx_bytes`);
  const lines = [head.join(",")];
  for (const row of r.rows) {
    const cells = [z.iso(row.start), z.iso(row.end), row.total.rx_bytes, row.total.tx_bytes];
    for (const s of r.services) {
      const c = row.services.get(s);
      cells.push(c?.rx_bytes ?? 0n, c?.tx_bytes ?? 0n);
    }
    lines.push(cells.join(","));
  }
  return lines.join("\n") + "\n";
}

const EIGHTHS = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/** A bar of `value / max` of `width` cells, in eighths of a cell. */
export function bar(value: bigint, max: bigint, width: number): string {
  if (max <= 0n || value <= 0n) return "";
  const eighths = Number((value * BigInt(width * 8)) / max);
  const shown = Math.max(1, eighths); // a row with traffic never looks empty
  return "█".repeat(Math.floor(shown / 8)) + EIGHTHS[shown % 8];
}

const DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/** The row's name in the table: "Sun 2025-03-30", "2025-03", "2025-03-30 14:00". */
function rowLabel(r: Report, row: ReportRow, z: Zone): string {
  if (r.unit === "month") return row.key ?? z.iso(row.start).slice(0, 7);
  if (r.unit === "day") {
    const key = row.key ?? z.iso(row.start).slice(0, 10);
    const [y, m, d] = key.split("-").map(Number);
    const weekday = DAY_NAMES[new Date(Date.UTC(y!, m! - 1, d!)).getUTCDay()];
    const hours = Math.round((row.end - row.start) / 3600);
    return `${weekday} ${key}${hours !== 24 ? ` (${hours} h)` : ""}`;
  }
  const iso = z.iso(row.start);
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
}

const UNIT_WORDS = { hour: "hour", day: "day", month: "month" } as const;

function cell(text: string, width: number): string {
  return text.padStart(width);
}

/** The people's view: title, one line per row with a bar, totals, then per service. */
export function renderTable(r: Report, columns = 80): string {
  const z = new Zone(r.zone);
  const what = r.services.length === 1 ? `service ${r.services[0]}` : "all services";
  const out = [
    `StB external traffic per ${UNIT_WORDS[r.unit]} · ${what} · ${r.zone}`,
    `from ${z.iso(r.since).slice(0, 16).replace("T", " ")} to ` +
    `${z.iso(r.until).slice(0, 16).replace("T", " ")}`,
    "",
  ];
  if (r.rows.length === 0) {
    out.push("No traffic recorded in this range.");
    return out.concat(footer(r, z)).join("\n") + "\n";
  }
  const labels = repeatedWithOffset(r, z);
  const lw = Math.max(5, ...labels.map((l) => l.length));
  const W = 11;
  const barWidth = Math.max(8, Math.min(40, columns - lw - 3 * W - 3));
  out.push(`${"".padEnd(lw)}${cell("download", W)}${cell("upload", W)}${cell("total", W)}`);
  const max = r.rows.reduce((m, row) => {
    const t = row.total.rx_bytes + row.total.tx_bytes;
    return t > m ? t : m;
  }, 0n);
  r.rows.forEach((row, i) => {
    const t = row.total.rx_bytes + row.total.tx_bytes;
    out.push(
      labels[i]!.padEnd(lw) + cell(formatBytes(row.total.rx_bytes), W) +
        cell(formatBytes(row.total.tx_bytes), W) + cell(formatBytes(t), W) + "  " +
        bar(t, max, barWidth),
    );
  });
  const tt = r.totals.total;
  out.push(
    "─".repeat(lw + 3 * W),
    `total (${r.rows.length} ${UNIT_WORDS[r.unit]}${r.rows.length === 1 ? "" : "s"})`.padEnd(lw) +
      cell(formatBytes(tt.rx_bytes), W) + cell(formatBytes(tt.tx_bytes), W) +
      cell(formatBytes(tt.rx_bytes + tt.tx_bytes), W),
  );
  if (r.services.length > 1) out.push("", ...perService(r, W));
  return out.concat(footer(r, z)).join("\n") + "\n";
}

/** Labels; where two rows would read the same (a fall-back hour), each gets its offset. */
function repeatedWithOffset(r: Report, z: Zone): string[] {
  const labels = r.rows.map((row) => rowLabel(r, row, z));
  const seen = new Map<string, number>();
  for (const l of labels) seen.set(l, (seen.get(l) ?? 0) + 1);
  return labels.map((l, i) =>
    (seen.get(l) ?? 0) > 1 ? `${l} ${z.iso(r.rows[i]!.start).slice(19)}` : l
  );
}

function perService(r: Report, W: number): string[] {
  const nw = Math.max(11, ...r.services.map((s) => s.length + 2));
  const lines = [
    `${"per service".padEnd(nw)}${cell("download", W)}${cell("upload", W)}${cell("total", W)}`,
  ];
  for (const s of r.services) {
    const c = r.totals.services.get(s)!;
    lines.push(
      `  ${s}`.padEnd(nw) + cell(formatBytes(c.rx_bytes), W) + cell(formatBytes(c.tx_bytes), W) +
        cell(formatBytes(c.rx_bytes + c.tx_bytes), W),
    );
  }
  return lines;
}

function footer(r: Report, z: Zone): string[] {
  if (r.recordedUntil === null) return ["", "History is empty so far."];
  return [
    "",
    `Recorded until ${z.iso(r.recordedUntil).slice(0, 19).replace("T", " ")} ` +
    "(run writes history once a minute).",
  ];
}
