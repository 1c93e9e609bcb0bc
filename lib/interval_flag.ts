/** The interval rule (lib/interval.ts) as a commander argument parser, for `--interval`. */

import { InvalidArgumentError } from "@commander-js/extra-typings";
import { INTERVAL_FIX, isInterval } from "./interval.ts";

/** Parses an `--interval` value; a bad one is a usage error naming the range. */
export function parseIntervalFlag(value: string): number {
  const n = value.trim() === "" ? NaN : Number(value);
  if (!isInterval(n)) throw new InvalidArgumentError(`${INTERVAL_FIX}, e.g. 0.5`);
  return n;
}
