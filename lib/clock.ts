/**
 * CLOCK_MONOTONIC in seconds, as `ts_monotonic` in counters.json wants it. Deno has no
 * clock_gettime and performance.now() counts from process start, so two processes could
 * not compare it; libc's clock can be compared by every process on the boot. Only `run`
 * (which already has --allow-ffi) calls this: readers judge freshness by ts_unix.
 */

let read: (() => number) | null = null;

export function monotonicSeconds(): number {
  if (!read) {
    const libc = Deno.dlopen("libc.so.6", {
      // int clock_gettime(clockid_t clk /* i32 */, struct timespec *tp /* 16-byte buffer */)
      clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
    });
    const buf = new Uint8Array(16);
    const view = new DataView(buf.buffer);
    read = () => {
      if (libc.symbols.clock_gettime(1, /* CLOCK_MONOTONIC */ buf) !== 0) {
        throw new Error("clock_gettime(CLOCK_MONOTONIC) failed");
      }
      return Number(view.getBigInt64(0, true)) + Number(view.getBigInt64(8, true)) / 1e9;
    };
  }
  return read();
}
