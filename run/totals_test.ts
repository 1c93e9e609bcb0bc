import { assertEquals } from "../lib/test_assert.ts";
import { Totals } from "./totals.ts";

const c = (rx: number, tx: number) => ({
  rxBytes: rx,
  txBytes: tx,
  rxPackets: rx / 100,
  txPackets: tx / 100,
});

Deno.test("totals follow cumulative readings and survive a backend counter restart", () => {
  const t = new Totals(["a", "b"], { a: c(1000, 2000) });
  t.add({ a: c(100, 200), b: c(0, 0) });
  assertEquals(t.service("a"), c(1100, 2200));
  t.add({ a: c(300, 500) });
  assertEquals(t.service("a"), c(1300, 2500));
  // Rule re-inserted: reading starts again from a small number; nothing is lost or negative.
  t.add({ a: c(100, 0) });
  assertEquals(t.service("a"), c(1400, 2500));
  t.add({ b: c(500, 600), unknown: c(9, 9) });
  assertEquals(t.sum(), { rxBytes: 1900, txBytes: 3100, rxPackets: 19, txPackets: 31 });
  // A new backend instance: its first reading counts whole.
  t.rebase();
  t.add({ a: c(100, 100) });
  assertEquals(t.service("a"), c(1500, 2600));
});
