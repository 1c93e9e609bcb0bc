/**
 * The host's local calendar, as history needs it: which local day and month an instant
 * belongs to, where that day or month begins and ends (a DST day is 23 or 25 hours), and
 * instants written as ISO 8601 with the local offset. A Zone is an IANA name handed in,
 * never the process's own TZ: `run` follows the host's zone as it changes (timedatectl)
 * while it runs, and tests walk across DST transitions in any zone.
 */

/** One bucket of the local calendar: its key ("2025-03-30", "2025-03") and its instants. */
export interface CalendarBucket {
  key: string;
  /** Unix seconds of the first instant of the bucket. */
  start: number;
  /** Unix seconds of the first instant after it. */
  end: number;
}

/** A date of the proleptic Gregorian calendar, with no zone: month and day from 1. */
export interface CivilDate {
  year: number;
  month: number;
  day: number;
}

/** A local wall-clock time on a civil date; a field left out is 0 (midnight). */
export interface WallTime extends CivilDate {
  hour?: number;
  minute?: number;
  second?: number;
}

/** Wall-clock fields of an instant in a zone, and the zone's offset then. */
export interface LocalTime extends CivilDate {
  hour: number;
  minute: number;
  second: number;
  /** Seconds east of UTC. */
  offsetS: number;
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** The date `days` after `date`. */
function addDays(date: CivilDate, days: number): CivilDate {
  const t = new Date(Date.UTC(date.year, date.month - 1, date.day + days));
  return { year: t.getUTCFullYear(), month: t.getUTCMonth() + 1, day: t.getUTCDate() };
}

/** Whether `name` is an IANA time zone this runtime's ICU knows. */
export function isZoneName(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

export class Zone {
  readonly name: string;
  readonly #format: Intl.DateTimeFormat;

  /** `name`: an IANA zone ("Europe/Berlin", "UTC"); throws RangeError for an unknown one. */
  constructor(name: string) {
    this.#format = new Intl.DateTimeFormat("en-US", {
      timeZone: name,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    this.name = this.#format.resolvedOptions().timeZone;
  }

  /** The wall clock at `unixS` (whole seconds) in this zone. */
  local(unixS: number): LocalTime {
    const t = Math.floor(unixS);
    const f: Record<string, number> = {};
    for (const p of this.#format.formatToParts(new Date(t * 1000))) {
      if (p.type !== "literal") f[p.type] = Number(p.value);
    }
    const year = f.year ?? 1970, month = f.month ?? 1, day = f.day ?? 1;
    const hour = f.hour ?? 0, minute = f.minute ?? 0, second = f.second ?? 0;
    const asUtc = Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
    return { year, month, day, hour, minute, second, offsetS: asUtc - t };
  }

  /**
   * The first instant of the local `date`, or null when this zone skipped
   * that date (Pacific/Apia skipped 2011-12-30). Local midnight is tried with each
   * offset in effect around it; a candidate counts when the second before it is another
   * date, so the day starts at the first of two midnights (clocks back at 01:00) and at
   * the jump where midnight itself was skipped (clocks forward at 00:00).
   */
  dayStart(date: CivilDate): number | null {
    const base = Date.UTC(date.year, date.month - 1, date.day) / 1000;
    // Offsets lie within -12 h..+14 h, so local midnight falls within base -14 h..+12 h.
    const offsets = new Set([base - 50_400, base, base + 43_200].map((t) => this.local(t).offsetS));
    let best: number | null = null;
    for (const off of offsets) {
      const t = base - off;
      if (!this.#isDate(t, date) || this.#isDate(t - 1, date)) continue;
      if (best === null || t < best) best = t;
    }
    return best;
  }

  #isDate(t: number, date: CivilDate): boolean {
    const l = this.local(t);
    return l.year === date.year && l.month === date.month && l.day === date.day;
  }

  /** The first instant of the first date this zone has on or after `date`. */
  #startOnOrAfter(date: CivilDate): number {
    let d = date;
    for (let i = 0; i < 3; i++) {
      const s = this.dayStart(d);
      if (s !== null) return s;
      d = addDays(d, 1);
    }
    // No zone skips three dates; midnight by the offset at noon is the honest guess.
    const base = Date.UTC(date.year, date.month - 1, date.day) / 1000;
    return base - this.local(base + 43_200).offsetS;
  }

  /** The local day holding `unixS`. */
  dayOf(unixS: number): CalendarBucket {
    const l = this.local(unixS);
    const start = this.#startOnOrAfter(l);
    const end = this.#startOnOrAfter(addDays(l, 1));
    return { key: `${l.year}-${pad(l.month)}-${pad(l.day)}`, start, end };
  }

  /** The local month holding `unixS`. */
  monthOf(unixS: number): CalendarBucket {
    const l = this.local(unixS);
    const next = l.month === 12
      ? { year: l.year + 1, month: 1 }
      : { year: l.year, month: l.month + 1 };
    return {
      key: `${l.year}-${pad(l.month)}`,
      start: this.#startOnOrAfter({ year: l.year, month: l.month, day: 1 }),
      end: this.#startOnOrAfter({ ...next, day: 1 }),
    };
  }

  /** `unixS` as "2025-03-30T03:00:00+02:00": the local wall clock and its offset. */
  iso(unixS: number): string {
    const l = this.local(unixS);
    const sign = l.offsetS < 0 ? "-" : "+";
    const off = Math.round(Math.abs(l.offsetS) / 60);
    return `${pad(l.year, 4)}-${pad(l.month)}-${pad(l.day)}T${pad(l.hour)}:${pad(l.minute)}:` +
      `${pad(l.second)}${sign}${pad(Math.floor(off / 60))}:${pad(off % 60)}`;
  }

  /** The instant the local wall clock reads `at`, or the first instant after a gap. */
  instantOf(at: WallTime): number {
    const { year, month, day, hour = 0, minute = 0, second = 0 } = at;
    const start = this.#startOnOrAfter({ year, month, day });
    if (hour === 0 && minute === 0 && second === 0) return start;
    const base = Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
    const candidates = [...new Set([start, base - 50_400, base + 43_200])]
      .map((t) => base - this.local(t).offsetS)
      .filter((t) => {
        const l = this.local(t);
        return l.hour === hour && l.minute === minute && l.second === second;
      });
    // Twice in a fall-back hour: the first. In a spring-forward gap: the offset before
    // the gap carries it past the jump, as far after it as it was meant after the hour.
    if (candidates.length) return Math.min(...candidates);
    return base - this.local(base - 86_400).offsetS;
  }
}

/**
 * The zone name behind the host's local time: $TZ when set (":Area/City", a zoneinfo path,
 * or a name; empty means UTC, as POSIX says), else the target of /etc/localtime, else
 * /etc/timezone, else what the runtime itself resolved. A zone ICU does not know (a POSIX
 * rule string like "CET-1CEST,M3.5.0") falls back to the runtime's, which is UTC then.
 */
export function localZoneName(
  tz: string | undefined,
  readLink: (path: string) => string | null = safeReadLink,
  readText: (path: string) => string | null = safeReadText,
): string {
  const fromPath = (p: string) => {
    const i = p.indexOf("zoneinfo/");
    return i >= 0 ? p.slice(i + "zoneinfo/".length) : p;
  };
  const candidates: (string | null)[] = tz !== undefined
    ? [tz === "" ? "UTC" : fromPath(tz.replace(/^:/, ""))]
    : [
      (() => {
        const link = readLink("/etc/localtime");
        return link === null ? null : fromPath(link);
      })(),
      readText("/etc/timezone")?.trim() ?? null,
    ];
  for (const c of candidates) {
    if (c && !c.startsWith("/") && isZoneName(c)) return c;
  }
  const runtime = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return runtime && runtime !== "Etc/Unknown" && isZoneName(runtime) ? runtime : "UTC";
}

function safeReadLink(path: string): string | null {
  try {
    return Deno.readLinkSync(path);
  } catch {
    return null;
  }
}

function safeReadText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/** The host's zone now, as a Zone; a reader asks once, `run` again before every batch. */
export function hostZone(): Zone {
  let tz: string | undefined;
  try {
    tz = Deno.env.get("TZ");
  } catch {
    tz = undefined; // no --allow-env: the host's files decide
  }
  return new Zone(localZoneName(tz));
}
