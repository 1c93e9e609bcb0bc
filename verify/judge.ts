/**
 * How `verify` decides, kept pure so the thresholds are tested on their own.
 *
 * StB may be talking while verify runs, so a counter moving is not by itself a verdict.
 * verify first measures StB's own rate, then judges each probe by the *excess* over what
 * that rate predicts for the window, relative to the bytes the probe moved: probes are
 * sized (or, for a URL, must be big enough) to dwarf that background.
 */

import { formatBytes } from "../lib/units.ts";

export interface Bytes {
  rx: number;
  tx: number;
}

export type Verdict = "PASS" | "FAIL" | "SKIP";

/** How the counters moved while a probe ran, and what StB's own traffic explains. */
export interface Observation {
  counted: Bytes;
  bg: Bytes;
  seconds: number;
  /** The probe, in words, for the detail. */
  what: string;
}

export interface Judgement {
  verdict: Verdict;
  detail: string;
}

/** Share of the probe's bytes the counters may move by for "not counted" to hold. */
export const IGNORED_TOLERANCE = 0.1;
/** A counted download must show within ±10% of its size... */
export const COUNTED_TOLERANCE = 0.1;
/** ...plus this much: HTTP and TLS headers, TCP/IP headers, a DNS lookup. */
export const COUNTED_SLACK_BYTES = 64 * 1024;
/** Above this share of the probe, StB's own traffic could hide (or fake) the probe. */
export const MAX_BACKGROUND_SHARE = 0.25;

/** A change in bytes with its sign: "+1.50 KiB", "-2.00 KiB". */
export function signedBytes(n: number): string {
  return (n >= 0 ? "+" : "-") + formatBytes(Math.abs(n));
}

/** What StB's own traffic at `rate` (bytes/s) explains over `seconds`. */
export function background(rate: Bytes, seconds: number): Bytes {
  return { rx: rate.rx * seconds, tx: rate.tx * seconds };
}

function describe(o: Observation): string {
  const { counted, bg, seconds } = o;
  return `counted ${signedBytes(counted.rx)} rx, ${signedBytes(counted.tx)} tx in ` +
    `${seconds.toFixed(1)} s ` +
    `(StB's own traffic explains ~${formatBytes(bg.rx)} rx, ~${formatBytes(bg.tx)} tx)`;
}

/**
 * Probe traffic that must not count: the counters may move by what the background explains
 * plus 10% of the probe's bytes (each direction), no more.
 */
export function judgeIgnored(o: Observation, probeBytes: number): Judgement {
  const { counted, bg, what } = o;
  const figures = `${what}; ${describe(o)}`;
  if (Math.max(bg.rx, bg.tx) > MAX_BACKGROUND_SHARE * probeBytes) {
    return {
      verdict: "FAIL",
      detail: `inconclusive: StB's own traffic is too large next to the probe's ` +
        `${formatBytes(probeBytes)}: retry while StB is quieter or with a bigger download; ` +
        figures,
    };
  }
  const allowed = IGNORED_TOLERANCE * probeBytes;
  const excess = { rx: counted.rx - bg.rx, tx: counted.tx - bg.tx };
  if (excess.rx > allowed || excess.tx > allowed) {
    const share = Math.max(excess.rx, excess.tx) / probeBytes;
    return {
      verdict: "FAIL",
      detail: `counted ${(share * 100).toFixed(0)}% of traffic that must not count; ${figures}`,
    };
  }
  return { verdict: "PASS", detail: figures };
}

/** A download that must count: received bytes within ±10% of its size, plus header slack. */
export function judgeCounted(o: Observation, size: number): Judgement {
  const { counted, bg, what } = o;
  const figures = `${what}; ${describe(o)}`;
  if (bg.rx > MAX_BACKGROUND_SHARE * size) {
    return {
      verdict: "FAIL",
      detail: `inconclusive: StB's own traffic is too large next to the ${formatBytes(size)} ` +
        `download: retry while StB is quieter or with a bigger --external-url file; ${figures}`,
    };
  }
  const excess = counted.rx - bg.rx;
  const low = (1 - COUNTED_TOLERANCE) * size;
  const high = (1 + COUNTED_TOLERANCE) * size + COUNTED_SLACK_BYTES;
  if (excess < low || excess > high) {
    const why = counted.rx === 0 && counted.tx === 0
      ? "nothing was counted: the sampler does not count this cgroup (is `run` using this config?)"
      : `rx moved ${(excess / size * 100).toFixed(0)}% of the download, expected 90-110%`;
    return { verdict: "FAIL", detail: `${why}; ${figures}` };
  }
  return {
    verdict: "PASS",
    detail: `rx moved ${(excess / size * 100).toFixed(1)}% of the download; ${figures}`,
  };
}

/**
 * TCP/IP headers on top of a TCP payload, at most: IPv6 with timestamps is 72 bytes a
 * 1428-byte segment (5%), and the ACKs of the other direction add up to half that again.
 */
export const EXCHANGE_OVERHEAD = 0.1;

/**
 * A TCP exchange that must count, `bytes` of payload each way: each direction must move by
 * at least the payload (less 2%: the background estimate is an estimate) and by no more
 * than the payload plus headers and a little slack.
 */
export function judgeExchanged(o: Observation, bytes: number): Judgement {
  const { counted, bg, what } = o;
  const figures = `${what}; ${describe(o)}`;
  if (Math.max(bg.rx, bg.tx) > MAX_BACKGROUND_SHARE * bytes) {
    return {
      verdict: "FAIL",
      detail: `inconclusive: StB's own traffic is too large next to the probe's ` +
        `${formatBytes(bytes)}: retry while StB is quieter; ${figures}`,
    };
  }
  const low = 0.98 * bytes;
  const high = (1 + EXCHANGE_OVERHEAD) * bytes + COUNTED_SLACK_BYTES;
  const share = (n: number) => `${(n / bytes * 100).toFixed(1)}%`;
  const excess = { rx: counted.rx - bg.rx, tx: counted.tx - bg.tx };
  const bad = (["rx", "tx"] as const).filter((d) => excess[d] < low || excess[d] > high);
  if (bad.length > 0) {
    const why = counted.rx === 0 && counted.tx === 0
      ? "nothing was counted: the sampler does not count this traffic"
      : bad.map((d) => `${d} moved ${share(excess[d])} of the payload`).join(", ") +
        `, expected 98-${(100 * (1 + EXCHANGE_OVERHEAD)).toFixed(0)}%`;
    return { verdict: "FAIL", detail: `${why}; ${figures}` };
  }
  return {
    verdict: "PASS",
    detail: `rx moved ${share(excess.rx)}, tx ${share(excess.tx)} of the payload; ${figures}`,
  };
}

/**
 * Bytes each way for the local probes: at least `min`, and enough that 10% of it exceeds
 * what StB's own rate could add during a window of `windowS` seconds, three times over.
 */
export function probeSize(
  rate: Bytes,
  bounds: { windowS: number; min: number; max: number },
): number {
  const { windowS, min, max } = bounds;
  const needed = 3 * Math.max(rate.rx, rate.tx) * windowS / IGNORED_TOLERANCE;
  return Math.round(Math.min(max, Math.max(min, needed)));
}
