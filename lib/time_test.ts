import { assertEquals, assertMatch } from "./test_assert.ts";
import { isoTime, isUnixTime, MAX_UNIX_S } from "./time.ts";

Deno.test("isoTime: UTC with Z, local with the zone's offset, milliseconds on request", () => {
  assertEquals(isoTime(1795000000.1234, { utc: true }), "2026-11-18T11:06:40Z");
  assertEquals(isoTime(1795000000.1234, { utc: true, ms: true }), "2026-11-18T11:06:40.123Z");
  const local = isoTime(1795000000, { ms: true });
  assertMatch(local, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$/);
  // The offset is this zone's at that instant, and the local time is UTC moved by it.
  const east = -new Date(1795000000 * 1000).getTimezoneOffset() || 0;
  const [h, m] = local.slice(-5).split(":").map(Number);
  assertEquals((local.at(-6) === "-" ? -1 : 1) * (h! * 60 + m!), east);
  assertEquals(Date.parse(local), 1795000000 * 1000);
});

Deno.test("isoTime in a zone east and west of UTC, half hours included (TZ)", async () => {
  for (
    const [tz, want] of [
      ["Asia/Kolkata", "2026-11-18T16:36:40+05:30"],
      ["America/New_York", "2026-11-18T06:06:40-05:00"],
      ["UTC", "2026-11-18T11:06:40+00:00"],
    ]
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { isoTime } from "${new URL(
          "./time.ts",
          import.meta.url,
        )}"; console.log(isoTime(1795000000));`,
      ],
      env: { TZ: tz! },
      stdout: "piped",
    }).output();
    assertEquals(new TextDecoder().decode(out.stdout).trim(), want, tz);
  }
});

Deno.test("isUnixTime: finite, not negative, not past year 9999", () => {
  assertEquals([0, 1795000000, MAX_UNIX_S].map(isUnixTime), [true, true, true]);
  assertEquals([-1, MAX_UNIX_S + 1, 1e300, NaN, Infinity, "1", null].map(isUnixTime), [
    false,
    false,
    false,
    false,
    false,
    false,
    false,
  ]);
});
