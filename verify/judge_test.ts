import { assertEquals, assertMatch } from "../lib/test_assert.ts";
import {
  background,
  judgeCounted,
  judgeExchanged,
  judgeIgnored,
  probeSize,
  signedBytes,
} from "./judge.ts";

const MiB = 1024 * 1024;
const quiet = { rx: 0, tx: 0 };

Deno.test("judgeIgnored: passes on silence and on explained background, fails on a leak", () => {
  assertEquals(
    judgeIgnored({ counted: quiet, bg: quiet, seconds: 1, what: "p" }, 16 * MiB).verdict,
    "PASS",
  );
  // StB downloading 100 KiB/s for 2 s while the probe ran: explained, not the probe's.
  const bg = background({ rx: 100 * 1024, tx: 10 * 1024 }, 2);
  assertEquals(
    judgeIgnored(
      { counted: { rx: 210 * 1024, tx: 20 * 1024 }, bg: bg, seconds: 2, what: "p" },
      16 * MiB,
    ).verdict,
    "PASS",
  );
  // The probe's 16 MiB counted (loopback counts both ways when it leaks).
  const leak = judgeIgnored({
    counted: { rx: 16 * MiB, tx: 16 * MiB },
    bg: quiet,
    seconds: 1,
    what: "p",
  }, 16 * MiB);
  assertEquals(leak.verdict, "FAIL");
  assertMatch(leak.detail, /^counted 100% of traffic that must not count/);
  // 10% is the line.
  assertEquals(
    judgeIgnored({ counted: { rx: 1.6 * MiB, tx: 0 }, bg: quiet, seconds: 1, what: "p" }, 16 * MiB)
      .verdict,
    "PASS",
  );
  assertEquals(
    judgeIgnored({ counted: { rx: 1.7 * MiB, tx: 0 }, bg: quiet, seconds: 1, what: "p" }, 16 * MiB)
      .verdict,
    "FAIL",
  );
  // Background too big to judge: never a PASS.
  const busy = judgeIgnored(
    { counted: quiet, bg: { rx: 5 * MiB, tx: 0 }, seconds: 1, what: "p" },
    16 * MiB,
  );
  assertEquals(busy.verdict, "FAIL");
  assertMatch(busy.detail, /^inconclusive/);
});

Deno.test("judgeCounted: ±10% plus header slack, and says when nothing was counted", () => {
  const size = 4_000_000;
  assertEquals(
    judgeCounted({ counted: { rx: size * 1.01, tx: 1e4 }, bg: quiet, seconds: 1, what: "d" }, size)
      .verdict,
    "PASS",
  );
  assertEquals(
    judgeCounted({ counted: { rx: size * 0.91, tx: 0 }, bg: quiet, seconds: 1, what: "d" }, size)
      .verdict,
    "PASS",
  );
  assertEquals(
    judgeCounted({ counted: { rx: size * 0.89, tx: 0 }, bg: quiet, seconds: 1, what: "d" }, size)
      .verdict,
    "FAIL",
  );
  assertEquals(
    judgeCounted({
      counted: { rx: size * 1.1 + 64 * 1024, tx: 0 },
      bg: quiet,
      seconds: 1,
      what: "d",
    }, size).verdict,
    "PASS",
  );
  assertEquals(
    judgeCounted({ counted: { rx: size * 1.2, tx: 0 }, bg: quiet, seconds: 1, what: "d" }, size)
      .verdict,
    "FAIL",
  );
  const none = judgeCounted({ counted: quiet, bg: quiet, seconds: 1, what: "d" }, size);
  assertEquals(none.verdict, "FAIL");
  assertMatch(none.detail, /^nothing was counted/);
  // Background is subtracted before judging.
  const bg = background({ rx: 50_000, tx: 0 }, 2);
  assertEquals(
    judgeCounted({ counted: { rx: size + 100_000, tx: 0 }, bg: bg, seconds: 2, what: "d" }, size)
      .verdict,
    "PASS",
  );
  assertMatch(
    judgeCounted(
      { counted: { rx: size, tx: 0 }, bg: { rx: size, tx: 0 }, seconds: 1, what: "d" },
      size,
    ).detail,
    /^inconclusive/,
  );
});

Deno.test("probeSize dwarfs StB's own traffic over the window, within bounds", () => {
  assertEquals(probeSize(quiet, { windowS: 5, min: 16 * MiB, max: 1024 * MiB }), 16 * MiB);
  assertEquals(
    probeSize({ rx: 1 * MiB, tx: 0 }, { windowS: 5, min: 16 * MiB, max: 1024 * MiB }),
    150 * MiB,
  );
  assertEquals(
    probeSize({ rx: 100 * MiB, tx: 0 }, { windowS: 5, min: 16 * MiB, max: 1024 * MiB }),
    1024 * MiB,
  );
});

Deno.test("signedBytes: lib/units.ts's formatBytes with the sign of the change", () => {
  assertEquals(signedBytes(0), "+0 B");
  assertEquals(signedBytes(1023), "+1023 B");
  assertEquals(signedBytes(4_000_000), "+3.81 MiB");
  assertEquals(signedBytes(-2048), "-2.00 KiB");
});

Deno.test("judgeExchanged: both directions within payload and headers, else names the side", () => {
  const bytes = 8 * MiB;
  const o = (rx: number, tx: number, bg = quiet) => ({
    counted: { rx, tx },
    bg,
    seconds: 2,
    what: "probe",
  });
  assertEquals(judgeExchanged(o(bytes * 1.05, bytes * 1.04), bytes).verdict, "PASS");
  // What StB itself sent meanwhile is taken off first.
  const bg = { rx: 100_000, tx: 50_000 };
  assertEquals(judgeExchanged(o(bytes + 100_000, bytes + 50_000, bg), bytes).verdict, "PASS");
  const nothing = judgeExchanged(o(0, 0), bytes);
  assertEquals(nothing.verdict, "FAIL");
  assertMatch(nothing.detail, /^nothing was counted/);
  const half = judgeExchanged(o(bytes * 1.05, bytes / 2), bytes);
  assertEquals(half.verdict, "FAIL");
  assertMatch(half.detail, /^tx moved 50\.0% of the payload, expected 98-110%/);
  // Counted twice is as wrong as not at all.
  assertMatch(judgeExchanged(o(bytes * 2.1, bytes * 2.1), bytes).detail, /^rx moved 210\.0%.*tx/);
  const loud = judgeExchanged(o(bytes, bytes, { rx: bytes, tx: 0 }), bytes);
  assertEquals(loud.verdict, "FAIL");
  assertMatch(loud.detail, /^inconclusive/);
});
