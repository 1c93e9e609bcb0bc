import { assertEquals } from "../lib/test_assert.ts";
import { applyKey, decodeKeys, type View } from "./keys.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("decodeKeys: q, Esc and Ctrl-C quit; p/space, b, s change the view", () => {
  assertEquals(decodeKeys(bytes("q")), ["quit"]);
  assertEquals(decodeKeys(bytes("\x1b")), ["quit"]);
  assertEquals(decodeKeys(bytes("\x03")), ["quit"]);
  assertEquals(decodeKeys(bytes("p bsQ")), ["pause", "pause", "bits", "services", "quit"]);
  assertEquals(decodeKeys(bytes("xyz1")), []);
});

Deno.test("decodeKeys: arrow, function and Alt keys are sequences, never Esc", () => {
  assertEquals(decodeKeys(bytes("\x1b[A")), []);
  assertEquals(decodeKeys(bytes("\x1b[1;5C")), []);
  assertEquals(decodeKeys(bytes("\x1bOP")), []);
  assertEquals(decodeKeys(bytes("\x1bq")), []); // Alt+q
  assertEquals(decodeKeys(bytes("\x1b[Bb\x1b[15~s")), ["bits", "services"]);
  assertEquals(decodeKeys(bytes("\x1b[")), []); // cut short
});

Deno.test("applyKey toggles one thing at a time", () => {
  let v: View = { paused: false, bits: false, services: true };
  v = applyKey(v, "pause");
  assertEquals(v, { paused: true, bits: false, services: true });
  v = applyKey(applyKey(v, "bits"), "services");
  assertEquals(v, { paused: true, bits: true, services: false });
  assertEquals(applyKey(v, "quit"), v);
});
