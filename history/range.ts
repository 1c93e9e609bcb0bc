/**
 * `report --since` and `--until`: a time given as a person types it, read in the local
 * calendar. Parsing (syntax) and resolving (against now, in a zone) are separate, so a
 * bad value is refused while the flags are read, and tests resolve at any "now".
 */

import type { Zone } from "./calendar.ts";

export type TimeSpec =
  | { kind: "now" }
  | { kind: "day"; offsetDays: number } // today, yesterday
  | { kind: "local"; y: number; m: number; d: number; hh: number; mm: number; ss: number }
  | { kind: "month"; y: number; m: number }
  | { kind: "instant"; unix: number }
  | { kind: "ago"; n: number; unit: "m" | "h" | "d" | "w" | "mo" | "y" };

export const TIME_FORMS = "a date (2025-03-01), a month (2025-03), a local time " +
  "(2025-03-01T14:00), an ISO 8601 time with its offset (2025-03-01T14:00:00+01:00), a " +
  "time that long ago (30m, 12h, 7d, 2w, 3mo, 1y), today, yesterday or now";

const LOCAL = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2}))?)?$/;
const MONTH = /^(\d{4})-(\d{2})$/;
const WITH_OFFSET = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;
const AGO = /^([1-9][0-9]{0,5})(m|min|h|d|w|mo|y)$/;

function validDate(y: number, m: number, d: number): boolean {
  const t = new Date(Date.UTC(y, m - 1, d));
  return t.getUTCFullYear() === y && t.getUTCMonth() === m - 1 && t.getUTCDate() === d;
}

/** The spec, or null when `text` is none of the accepted forms. */
export function parseTime(text: string): TimeSpec | null {
  const t = text.trim().toLowerCase();
  if (t === "now") return { kind: "now" };
  if (t === "today") return { kind: "day", offsetDays: 0 };
  if (t === "yesterday") return { kind: "day", offsetDays: -1 };
  const ago = AGO.exec(t);
  if (ago) {
    const unit = ago[2] === "min" ? "m" : ago[2] as "m" | "h" | "d" | "w" | "mo" | "y";
    return { kind: "ago", n: Number(ago[1]), unit };
  }
  const month = MONTH.exec(t);
  if (month) {
    const [y, m] = [Number(month[1]), Number(month[2])];
    return m >= 1 && m <= 12 ? { kind: "month", y, m } : null;
  }
  const local = LOCAL.exec(t);
  if (local) {
    const [y, m, d, hh, mm, ss] = local.slice(1).map((v) => Number(v ?? 0)) as number[];
    if (!validDate(y!, m!, d!) || hh! > 23 || mm! > 59 || ss! > 59) return null;
    return { kind: "local", y: y!, m: m!, d: d!, hh: hh!, mm: mm!, ss: ss! };
  }
  if (WITH_OFFSET.test(text.trim())) {
    const ms = Date.parse(text.trim());
    return Number.isFinite(ms) ? { kind: "instant", unix: ms / 1000 } : null;
  }
  return null;
}

/** The local date `by` months and days after that of `unix` in `zone`, at the same time. */
function shiftLocal(zone: Zone, unix: number, by: { days?: number; months?: number }): number {
  const { days = 0, months = 0 } = by;
  const l = zone.local(unix);
  const total = l.year * 12 + (l.month - 1) + months;
  const y = Math.floor(total / 12), m = total % 12 + 1;
  // The 31st a month ago in a 30-day month: the month's last day.
  const last = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const t = new Date(Date.UTC(y, m - 1, Math.min(l.day, last) + days));
  return zone.instantOf({
    year: t.getUTCFullYear(),
    month: t.getUTCMonth() + 1,
    day: t.getUTCDate(),
    hour: l.hour,
    minute: l.minute,
    second: l.second,
  });
}

/** The instant `spec` means at `nowUnix` in `zone`. */
export function resolveTime(spec: TimeSpec, nowUnix: number, zone: Zone): number {
  switch (spec.kind) {
    case "now":
      return nowUnix;
    case "instant":
      return spec.unix;
    case "month":
      return zone.instantOf({ year: spec.y, month: spec.m, day: 1 });
    case "local":
      return zone.instantOf({
        year: spec.y,
        month: spec.m,
        day: spec.d,
        hour: spec.hh,
        minute: spec.mm,
        second: spec.ss,
      });
    case "day": {
      const l = zone.local(shiftLocal(zone, nowUnix, { days: spec.offsetDays }));
      return zone.instantOf({ year: l.year, month: l.month, day: l.day });
    }
    case "ago":
      switch (spec.unit) {
        case "m":
          return nowUnix - spec.n * 60;
        case "h":
          return nowUnix - spec.n * 3600;
        case "d":
          return shiftLocal(zone, nowUnix, { days: -spec.n });
        case "w":
          return shiftLocal(zone, nowUnix, { days: -7 * spec.n });
        case "mo":
          return shiftLocal(zone, nowUnix, { months: -spec.n });
        case "y":
          return shiftLocal(zone, nowUnix, { months: -12 * spec.n });
      }
  }
}
