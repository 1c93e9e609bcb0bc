/**
 * The one interval rule, for the config's `interval_s` and every `--interval` (run's
 * sampling, graph's redraws): a number of seconds from MIN_INTERVAL_S to MAX_INTERVAL_S.
 * A module of its own so graph takes it without the config's imports (FFI among them).
 */

import { InvalidArgumentError } from "@commander-js/extra-typings";

export const DEFAULT_INTERVAL_S = 0.5;
export const MIN_INTERVAL_S = 0.1;
export const MAX_INTERVAL_S = 10;

/** What to write instead of a bad interval. */
export const INTERVAL_FIX = `use a number of seconds from ${MIN_INTERVAL_S} to ${MAX_INTERVAL_S}`;

export function isInterval(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= MIN_INTERVAL_S &&
    v <= MAX_INTERVAL_S;
}

/** The rule for an `--interval` flag, as a commander argument parser. */
export function parseIntervalFlag(value: string): number {
  const n = value.trim() === "" ? NaN : Number(value);
  if (!isInterval(n)) throw new InvalidArgumentError(`${INTERVAL_FIX}, e.g. 0.5`);
  return n;
}
