/**
 * Times for people: ISO 8601 with the zone offset, in the reader's local time by default
 * (the desktop's), or in UTC when asked. TZ is honoured as the C library does.
 */

/** The latest time a reader formats: 9999-12-31T23:59:59Z. Later is not a real sample. */
export const MAX_UNIX_S = 253402300799;

/**
 * "2026-05-04T14:03:12+02:00" (local) or "2026-05-04T12:03:12Z" (utc); with `ms`, the
 * milliseconds too. `unixS` must be within 0..MAX_UNIX_S (callers validate file content).
 */
export function isoTime(unixS: number, o: { utc?: boolean; ms?: boolean } = {}): string {
  const d = new Date(unixS * 1000);
  const cut = o.ms ? 23 : 19;
  if (o.utc) return d.toISOString().slice(0, cut) + "Z";
  // Whole minutes: zones before 1900 had offsets in seconds (local mean time).
  const east = -Math.round(d.getTimezoneOffset());
  const local = new Date(d.getTime() + east * 60_000).toISOString().slice(0, cut);
  const a = Math.abs(east);
  const hh = String(Math.floor(a / 60)).padStart(2, "0");
  const mm = String(a % 60).padStart(2, "0");
  return `${local}${east >= 0 ? "+" : "-"}${hh}:${mm}`;
}

/** Whether `v` is a Unix time a reader can format (a number within 0..MAX_UNIX_S). */
export function isUnixTime(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= MAX_UNIX_S;
}
