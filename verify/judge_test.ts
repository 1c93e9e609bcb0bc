import { assertEquals, assertMatch } from "../lib/test_assert.ts";
import { background, judgeCounted, judgeIgnored, probeSize, signedBytes } from "./judge.ts";
import { privateLocalAddress } from "./mod.ts";
import { DEFAULT_EXCLUDE, parseCidr } from "../lib/cidr.ts";

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

Deno.test("privateLocalAddress picks an excluded address that is neither loopback nor link-local", () => {
  const ex = DEFAULT_EXCLUDE.map(parseCidr);
  assertEquals(privateLocalAddress(["127.0.0.1", "::1", "fe80::1%eth0", "198.51.100.1"], ex), null);
  assertEquals(
    privateLocalAddress(["198.51.100.1", "fd00::1", "192.168.50.1"], ex),
    "192.168.50.1",
  );
  assertEquals(privateLocalAddress(["2001:db8::1", "fd00::1"], ex), "fd00::1");
  assertEquals(privateLocalAddress(["192.168.1.2"], [parseCidr("10.0.0.0/8")]), null);
});
