import { assertEquals } from "../lib/test_assert.ts";
import { Zone } from "./calendar.ts";
import { parseTime, resolveTime } from "./range.ts";

const berlin = new Zone("Europe/Berlin");
const utc = (iso: string) => Date.parse(iso) / 1000;
const at = (text: string, now: string, zone = berlin) =>
  zone.iso(resolveTime(parseTime(text)!, utc(now), zone));

Deno.test("--since forms: dates, months, local times, offsets, relative, words", () => {
  const now = "2025-03-31T10:30:00Z"; // 12:30 in Berlin (CEST)
  assertEquals(at("2025-03-30", now), "2025-03-30T00:00:00+01:00");
  assertEquals(at("2025-03", now), "2025-03-01T00:00:00+01:00");
  assertEquals(at("2025-03-30T14:05", now), "2025-03-30T14:05:00+02:00");
  assertEquals(at("2025-03-30 14:05:09", now), "2025-03-30T14:05:09+02:00");
  assertEquals(at("2025-03-30T14:05:00Z", now), "2025-03-30T16:05:00+02:00");
  assertEquals(at("2025-03-30T14:05:00-05:00", now), "2025-03-30T21:05:00+02:00");
  assertEquals(at("today", now), "2025-03-31T00:00:00+02:00");
  assertEquals(at("yesterday", now), "2025-03-30T00:00:00+01:00");
  assertEquals(at("now", now), "2025-03-31T12:30:00+02:00");
  assertEquals(at("90m", now), "2025-03-31T11:00:00+02:00");
  assertEquals(at("12h", now), "2025-03-31T00:30:00+02:00");
  // Calendar days keep the local time across the DST night (a 23 h day in between).
  assertEquals(at("2d", now), "2025-03-29T12:30:00+01:00");
  assertEquals(at("1w", now), "2025-03-24T12:30:00+01:00");
  // A month before the 31st of March is the last of February.
  assertEquals(at("1mo", now), "2025-02-28T12:30:00+01:00");
  assertEquals(at("1y", now), "2024-03-31T12:30:00+02:00");
});

Deno.test("--since refuses what is not a time", () => {
  for (
    const bad of [
      "garbage",
      "",
      "7",
      "7 days",
      "0d",
      "-3d",
      "2025-02-29",
      "2025-13",
      "2025-03-30T25:00",
      "2025-03-30T14:05:00+0x",
      "yesterdays",
    ]
  ) assertEquals(parseTime(bad), null, bad);
});
