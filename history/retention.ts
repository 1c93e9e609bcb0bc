/**
 * How long history keeps each resolution, vnstat-like: minute rows for 48 hours, hourly
 * rows for 90 days, daily rows for 5 years, monthly rows forever. Every resolution is
 * written from the same samples in the same transaction, so each one's retention is its
 * own: dropping old minute rows never takes anything from the hours.
 */

export const TIERS = ["minutes", "hours", "days", "months"] as const;
export type Tier = typeof TIERS[number];

/** Seconds each tier's rows are kept; null: forever. */
export type Retention = Record<Tier, number | null>;

const HOUR = 3600, DAY = 86_400;
/** A year and a month as retention counts them: the Gregorian averages. */
const YEAR = 365.2425 * DAY, MONTH = YEAR / 12;
const UNITS: Record<string, number> = { h: HOUR, d: DAY, w: 7 * DAY, mo: MONTH, y: YEAR };

export const DEFAULT_RETENTION_TEXT: Readonly<Record<Tier, string>> = {
  minutes: "48h",
  hours: "90d",
  days: "5y",
  months: "forever",
};

/** The least each tier may keep: one whole row of the tier above it, so no view is empty. */
const MINIMUM: Record<Tier, [number, string]> = {
  minutes: [HOUR, "1h"],
  hours: [DAY, "1d"],
  days: [7 * DAY, "1w"],
  months: [YEAR, "1y"],
};

export const RETENTION_FORMS = 'a number and a unit (h, d, w, mo, y) like "48h", "90d", ' +
  '"5y", or "forever"';

/** "48h" -> 172800, "forever" -> null; a string saying what is wrong otherwise. */
export function parseRetention(tier: Tier, v: unknown): number | null | { error: string } {
  if (v === "forever" || v === null) return null;
  const m = typeof v === "string" ? /^([1-9][0-9]{0,5})(h|d|w|mo|y)$/.exec(v) : null;
  if (!m) return { error: `use ${RETENTION_FORMS}` };
  const seconds = Number(m[1]) * UNITS[m[2]!]!;
  const [least, shown] = MINIMUM[tier];
  if (seconds < least) {
    return {
      error: `keep ${tier} rows at least ${shown} (e.g. "${DEFAULT_RETENTION_TEXT[tier]}")`,
    };
  }
  return seconds;
}

export function defaultRetention(): Retention {
  const out = {} as Retention;
  for (const t of TIERS) out[t] = parseRetention(t, DEFAULT_RETENTION_TEXT[t]) as number | null;
  return out;
}
