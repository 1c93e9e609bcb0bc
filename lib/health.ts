/**
 * What readers conclude from counters.json, shared so `graph --once` and `status` never
 * disagree: how a sample's time is judged, what increase is physically possible, and the
 * exit status of each verdict. Pure: no I/O, so graph takes it without FFI.
 */

import { type CountersV1, staleAfterS } from "./contract.ts";

/** Fresh, stale, or not known yet (no believable date and no change seen so far). */
export type Freshness = "fresh" | "stale" | "unknown";

/**
 * Exit status per verdict, the same for `status` and `graph --once`; 1 and 2 stay "error"
 * and "usage error" as for every command.
 */
export const EXIT = {
  healthy: 0,
  stale: 3,
  not_running: 4,
  not_installed: 5,
  malformed: 6,
  unreadable: 7,
} as const;

/** What a counters file and its lock say; `status` refines it with the service manager. */
export type FileVerdict = "healthy" | "stale" | "not running" | "malformed" | "unreadable";

/**
 * The verdict on a counters file by itself: read as `kind`, judged `freshness`, and who
 * holds the sampler's lock (`sampler`: a pid, null for nobody, undefined when it cannot be
 * known). A file that is not fresh is "stale" while a sampler holds its lock (stuck), and
 * "not running" when none does; unknown, it is only "stale".
 */
export function fileVerdict(
  kind: "ok" | "missing" | "malformed" | "unreadable",
  freshness: Freshness | null,
  sampler: number | null | undefined,
): FileVerdict {
  if (kind === "malformed" || kind === "unreadable") return kind;
  if (kind === "ok" && freshness === "fresh") return "healthy";
  if (sampler === undefined) return kind === "missing" ? "not running" : "stale";
  return sampler !== null ? "stale" : "not running";
}

/** The exit status of a verdict (status's own "not installed" is EXIT.not_installed). */
export function exitOf(v: FileVerdict): number {
  return v === "not running" ? EXIT.not_running : EXIT[v];
}

/** The exit-status table for --help and the README; `graph` omits what it cannot know. */
export function exitStatusHelp(command: "status" | "graph"): string {
  const rows: [number, string][] = [
    [EXIT.healthy, "healthy: counters.json is fresh"],
    [EXIT.stale, "stale: a sampler runs (holds the file's lock) but does not write it"],
    [EXIT.not_running, "not running: no sampler writes counters.json (old or missing)"],
    ...(command === "status"
      ? [[EXIT.not_installed, "not installed: no service, no sampler, no counters"] as [
        number,
        string,
      ]]
      : []),
    [EXIT.malformed, "malformed: the file is not a counters file stb-netacct wrote"],
    [EXIT.unreadable, "unreadable: this user may not read the file"],
    [1, "error, 2 usage error"],
  ];
  const note = command === "graph"
    ? "  (status judges the same file alike, and can also say 5: not installed)\n"
    : "";
  return "\nExit status (the same numbers for status and graph --once):\n" +
    rows.map(([code, text]) => `  ${code}  ${text}`).join("\n") + "\n" + note;
}

/**
 * Wall-clock slack before a ts_unix counts as in the future: writer and reader share one
 * clock, so only a clock step (or a file not written by the sampler) puts it ahead.
 */
export const FUTURE_SLACK_S = 2;

/** The sample's time against this reader's wall clock. */
export type SampleClock =
  | { kind: "dated"; ageS: number }
  /** No ts_unix (the original contract): its age can only be judged by it changing. */
  | { kind: "undated" }
  /** ts_unix ahead of the clock by more than the slack: its age is unknown. */
  | { kind: "future"; aheadS: number };

export function sampleClock(c: CountersV1, nowUnix: number): SampleClock {
  if (!(c.ts_unix > 0)) return { kind: "undated" };
  const age = nowUnix - c.ts_unix;
  if (age < -FUTURE_SLACK_S) return { kind: "future", aheadS: -age };
  return { kind: "dated", ageS: Math.max(0, age) };
}

/** What a reader saw of the file over time. */
export interface Watch {
  /** Seconds since it last saw the file change; before any change, how long it watched. */
  quietS: number;
  /** Whether it saw the file change at all. */
  changed: boolean;
  /** A one-shot reader that has finished watching: no change by now is the answer. */
  done: boolean;
}

/** A one-shot reader (status, graph --once) waits at most this long to see a change. */
export const MAX_WATCH_S = 20;

/**
 * A sample's freshness: by its date when it has a believable one, else by whether the file
 * was seen to change (and not stopped changing for longer than the freshness limit).
 * "unknown" until a reader still watching can say; null `watch`: not watched at all.
 */
export function judgeFreshness(
  clock: SampleClock,
  intervalS: number,
  watch: Watch | null,
): Freshness {
  const limit = staleAfterS(intervalS);
  if (watch !== null && watch.quietS > limit) return "stale";
  if (clock.kind === "dated") return clock.ageS <= limit ? "fresh" : "stale";
  if (watch?.changed) return "fresh";
  return watch?.done ? "stale" : "unknown";
}

/**
 * Bytes per second no link carries (1 Tbit/s: past the fastest NICs in service): an
 * increase faster than this is a discontinuity (a file rewritten, a counter corrupted),
 * never traffic, and is not drawn or averaged.
 */
export const MAX_PLAUSIBLE_BYTES_PER_S = 1e12 / 8;

/** Whether `bytes` moved in `seconds` is beyond any link. */
export function isImplausible(bytes: bigint, seconds: number): boolean {
  return seconds > 0 && Number(bytes) / seconds > MAX_PLAUSIBLE_BYTES_PER_S;
}

/** A duration for people: "0.4 s", "12 s", "5 min", "3.0 h", "12 days", "over 100 years". */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s >= 100 * 365.25 * 86400) return "over 100 years";
  if (s < 10) return `${Math.max(0, s).toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 3570) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} days`;
}

/** Why a sample's time could not be used, for status lines; null for a believable date. */
export function clockProblem(clock: SampleClock): string | null {
  if (clock.kind === "undated") return "it has no ts_unix, so its age is unknown";
  if (clock.kind === "future") {
    return `its ts_unix is ${formatDuration(clock.aheadS)} in the future, so its age is unknown`;
  }
  return null;
}
