/**
 * "Today" for a reader that shows running totals (graph's header): what history holds
 * for the local day so far, and the time it counts from: local midnight, or when history
 * began if that was later today. History is written once a minute, so it lags the live
 * totals by up to a minute; `recordedUntil` says how far it goes.
 */

import { hostZone, type Zone } from "./calendar.ts";
import { HistoryReader } from "./reader.ts";

export interface TodayTotals {
  /** Unix seconds the totals count from. */
  since: number;
  rx: bigint;
  tx: bigint;
  /** The last sample the newest batch holds. */
  recordedUntil: number | null;
}

/** Today's totals from the history at `path`; null when there is none this user can read. */
export function todayTotals(
  path: string,
  nowUnix: number,
  zone: Zone = hostZone(),
): TodayTotals | null {
  let reader: HistoryReader;
  try {
    reader = HistoryReader.open(path);
  } catch {
    return null;
  }
  try {
    const day = zone.dayOf(nowUnix);
    const row = reader.dayRow(day.key);
    let rx = 0n, tx = 0n;
    for (const c of row?.services.values() ?? []) {
      rx += c.rx_bytes;
      tx += c.tx_bytes;
    }
    const start = row?.start ?? day.start;
    const first = reader.firstMinuteFrom(start);
    return {
      since: first !== null && first > start ? first : start,
      rx,
      tx,
      recordedUntil: reader.recordedUntil(),
    };
  } catch {
    return null;
  } finally {
    reader.close();
  }
}

/** "today since 00:00: ↓ 1.21 GiB ↑ 120 MiB (history to 14:31)". */
export function describeToday(
  t: TodayTotals,
  format: (bytes: bigint) => string,
  zone: Zone = hostZone(),
): string {
  const hhmm = (u: number) => zone.iso(u).slice(11, 16);
  return `today since ${hhmm(t.since)}: ↓ ${format(t.rx)} ↑ ${format(t.tx)}` +
    (t.recordedUntil === null ? "" : ` (history to ${hhmm(t.recordedUntil)})`);
}
