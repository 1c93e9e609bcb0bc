/**
 * CLOCK_MONOTONIC in seconds, as `ts_monotonic` in counters.json wants it. Deno has no
 * clock_gettime and performance.now() counts from process start, so two processes could
 * not compare it; libc's clock can be compared by every process on the boot. Only `run`
 * (which already has --allow-ffi) calls this: readers judge freshness by ts_unix.
 */

import { CLOCK_MONOTONIC, errno, libc, osError } from "./libc.ts";

const timespec = new Uint8Array(16);
const view = new DataView(timespec.buffer);

export function monotonicSeconds(): number {
  if (libc().clock_gettime(CLOCK_MONOTONIC, timespec) !== 0) {
    throw osError(errno(), "clock_gettime(CLOCK_MONOTONIC)");
  }
  return Number(view.getBigInt64(0, true)) + Number(view.getBigInt64(8, true)) / 1e9;
}
