/**
 * The one interval rule, for the config's `interval_s` and every `--interval` (run's
 * sampling, graph's redraws): a number of seconds from MIN_INTERVAL_S to MAX_INTERVAL_S.
 * A module of its own so graph takes it without the config's imports (FFI among them), and
 * free of any package so the counters reader (lib/contract.ts) runs with none: the flag
 * parser for commander is in lib/interval_flag.ts.
 */

export const DEFAULT_INTERVAL_S = 0.5;
export const MIN_INTERVAL_S = 0.1;
export const MAX_INTERVAL_S = 10;

/** What to write instead of a bad interval. */
export const INTERVAL_FIX = `use a number of seconds from ${MIN_INTERVAL_S} to ${MAX_INTERVAL_S}`;

export function isInterval(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= MIN_INTERVAL_S &&
    v <= MAX_INTERVAL_S;
}
