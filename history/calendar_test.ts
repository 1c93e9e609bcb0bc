import { assert, assertEquals, assertThrows } from "../lib/test_assert.ts";
import { localZoneName, Zone } from "./calendar.ts";

const utc = (iso: string) => Date.parse(iso) / 1000;
const hours = (b: { start: number; end: number }) => (b.end - b.start) / 3600;

Deno.test("a normal day is 24 h from local midnight to local midnight", () => {
  const z = new Zone("Europe/Berlin");
  const d = z.dayOf(utc("2025-06-15T12:00:00Z"));
  assertEquals(d.key, "2025-06-15");
  assertEquals([z.iso(d.start), z.iso(d.end), hours(d)], [
    "2025-06-15T00:00:00+02:00",
    "2025-06-16T00:00:00+02:00",
    24,
  ]);
});

Deno.test("DST both ways: Berlin's spring day is 23 h, its autumn day 25 h", () => {
  const z = new Zone("Europe/Berlin");
  const spring = z.dayOf(utc("2025-03-30T10:00:00Z"));
  assertEquals([spring.key, hours(spring)], ["2025-03-30", 23]);
  assertEquals([z.iso(spring.start), z.iso(spring.end)], [
    "2025-03-30T00:00:00+01:00",
    "2025-03-31T00:00:00+02:00",
  ]);
  const autumn = z.dayOf(utc("2025-10-26T10:00:00Z"));
  assertEquals([autumn.key, hours(autumn)], ["2025-10-26", 25]);
  // Either side of the jumps, the same day.
  assertEquals(z.dayOf(utc("2025-03-30T00:59:59Z")).key, "2025-03-30");
  assertEquals(z.dayOf(utc("2025-03-30T01:00:00Z")).key, "2025-03-30");
  assertEquals(z.dayOf(utc("2025-10-26T00:30:00Z")).key, "2025-10-26");
  assertEquals(z.dayOf(utc("2025-10-26T01:30:00Z")).key, "2025-10-26");
  // The month holding the spring day is an hour short of 31 days.
  const march = z.monthOf(utc("2025-03-15T00:00:00Z"));
  assertEquals([march.key, hours(march)], ["2025-03", 31 * 24 - 1]);
});

Deno.test("New York, Kolkata (+05:30) and Kathmandu (+05:45) days", () => {
  const ny = new Zone("America/New_York");
  assertEquals(hours(ny.dayOf(utc("2025-03-09T12:00:00Z"))), 23);
  assertEquals(hours(ny.dayOf(utc("2025-11-02T12:00:00Z"))), 25);
  assertEquals(ny.iso(ny.dayOf(utc("2025-11-02T12:00:00Z")).end), "2025-11-03T00:00:00-05:00");
  const kol = new Zone("Asia/Kolkata");
  const d = kol.dayOf(utc("2025-01-01T20:00:00Z"));
  assertEquals([d.key, kol.iso(d.start)], ["2025-01-02", "2025-01-02T00:00:00+05:30"]);
  assertEquals(d.start, utc("2025-01-01T18:30:00Z"));
  assertEquals(new Zone("Asia/Kathmandu").iso(0), "1970-01-01T05:30:00+05:30");
  assertEquals(
    new Zone("Asia/Kathmandu").iso(utc("2025-01-01T00:00:00Z")),
    "2025-01-01T05:45:00+05:45",
  );
});

Deno.test("a day whose midnight was skipped starts at the jump; a skipped date has no start", () => {
  // Chile moved its clocks from 00:00 to 01:00 on 2024-09-08.
  const cl = new Zone("America/Santiago");
  const d = cl.dayOf(utc("2024-09-08T15:00:00Z"));
  assertEquals([cl.iso(d.start), hours(d)], ["2024-09-08T01:00:00-03:00", 23]);
  assertEquals(cl.iso(d.start - 1), "2024-09-07T23:59:59-04:00");
  // Samoa skipped 2011-12-30 entirely.
  const ws = new Zone("Pacific/Apia");
  assertEquals(ws.dayStart({ year: 2011, month: 12, day: 30 }), null);
  const before = ws.dayOf(utc("2011-12-29T12:00:00Z"));
  assertEquals([before.key, hours(before), ws.iso(before.end)], [
    "2011-12-29",
    24,
    "2011-12-31T00:00:00+14:00",
  ]);
});

Deno.test("local times in a fall-back hour are the first; in a spring gap, after the jump", () => {
  const z = new Zone("Europe/Berlin");
  assertEquals(
    z.iso(z.instantOf({ year: 2025, month: 10, day: 26, hour: 2, minute: 30 })),
    "2025-10-26T02:30:00+02:00",
  );
  assertEquals(
    z.iso(z.instantOf({ year: 2025, month: 3, day: 30, hour: 2, minute: 30 })),
    "2025-03-30T03:30:00+02:00",
  );
  assertEquals(
    z.iso(z.instantOf({ year: 2025, month: 3, day: 30, hour: 14, minute: 5 })),
    "2025-03-30T14:05:00+02:00",
  );
  assertEquals(z.instantOf({ year: 2025, month: 3, day: 30 }), utc("2025-03-29T23:00:00Z"));
});

Deno.test("the host zone: $TZ, then /etc/localtime, then /etc/timezone, else UTC", () => {
  const none = () => null;
  assertEquals(localZoneName("Europe/Berlin", none, none), "Europe/Berlin");
  assertEquals(localZoneName(":America/New_York", none, none), "America/New_York");
  assertEquals(localZoneName("/usr/share/zoneinfo/Asia/Tokyo", none, none), "Asia/Tokyo");
  assertEquals(localZoneName("", none, none), "UTC");
  const link = (p: string) => p === "/etc/localtime" ? "../usr/share/zoneinfo/Europe/Paris" : null;
  assertEquals(localZoneName(undefined, link, none), "Europe/Paris");
  const text = (p: string) => p === "/etc/timezone" ? "Europe/Rome\n" : null;
  assertEquals(localZoneName(undefined, none, text), "Europe/Rome");
  assert(localZoneName("CET-1CEST,M3.5.0,M10.5.0/3", none, none).length > 0);
  assertThrows(() => new Zone("Nowhere/Atlantis"), RangeError);
});
