/**
 * What `report` shows, built from the database and independent of how it is printed:
 * the rows of one resolution in a range, each with its total and per-service counts,
 * and the totals over them. Pure apart from the reader handed in.
 */

import type { RowCounts } from "./db.ts";
import type { HistoryReader, Unit } from "./reader.ts";

export type ReportUnit = Exclude<Unit, "minute">;

export interface ReportRow {
  /** "2025-03-30" for days, "2025-03" for months, null for hours. */
  key: string | null;
  start: number;
  end: number;
  total: RowCounts;
  services: Map<string, RowCounts>;
}

export interface Report {
  unit: ReportUnit;
  zone: string;
  since: number;
  until: number;
  /** The last sample the newest batch holds; null for an empty history. */
  recordedUntil: number | null;
  /** The services shown: all of history's, or the one --service named. */
  services: string[];
  rows: ReportRow[];
  totals: { total: RowCounts; services: Map<string, RowCounts> };
}

export const zeroCounts = (): RowCounts => ({
  rx_bytes: 0n,
  tx_bytes: 0n,
  rx_packets: 0n,
  tx_packets: 0n,
});

export function addCounts(into: RowCounts, c: RowCounts): void {
  into.rx_bytes += c.rx_bytes;
  into.tx_bytes += c.tx_bytes;
  into.rx_packets += c.rx_packets;
  into.tx_packets += c.tx_packets;
}

export interface ReportQuery {
  unit: ReportUnit;
  since: number;
  until: number;
  /** Only this service (it must be in `known`). */
  service: string | null;
  zone: string;
}

/** The report over what `reader` holds. */
export function buildReport(reader: HistoryReader, q: ReportQuery): Report {
  const services = q.service === null ? reader.services() : [q.service];
  const totals = { total: zeroCounts(), services: new Map<string, RowCounts>() };
  for (const s of services) totals.services.set(s, zeroCounts());
  const rows: ReportRow[] = [];
  for (const r of reader.rows(q.unit, q.since, q.until)) {
    const row: ReportRow = { ...r, total: zeroCounts(), services: new Map() };
    for (const s of services) {
      const c = r.services.get(s);
      if (!c) continue;
      row.services.set(s, c);
      addCounts(row.total, c);
      addCounts(totals.services.get(s)!, c);
    }
    if (row.services.size === 0) continue; // another service's row
    addCounts(totals.total, row.total);
    rows.push(row);
  }
  return {
    unit: q.unit,
    zone: q.zone,
    since: q.since,
    until: q.until,
    recordedUntil: reader.recordedUntil(),
    services,
    rows,
    totals,
  };
}
