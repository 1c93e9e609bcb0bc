import { assertEquals } from "../lib/test_assert.ts";
import { Totals } from "./totals.ts";

const c = (rx: number, tx: number) => ({
  rxBytes: BigInt(rx),
  txBytes: BigInt(tx),
  rxPackets: BigInt(Math.floor(rx / 100)),
  txPackets: BigInt(Math.floor(tx / 100)),
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
  assertEquals(t.sum(), { rxBytes: 1900n, txBytes: 3100n, rxPackets: 19n, txPackets: 31n });
  // A new backend instance: its first reading counts whole.
  t.rebase();
  t.add({ a: c(100, 100) });
  assertEquals(t.service("a"), c(1500, 2600));
});

Deno.test("totals are exact: a thousand one-byte adds to a total near 2^64 all count", () => {
  const start = (1n << 64n) - 5000n;
  const t = new Totals(["a"], {
    a: { rxBytes: start, txBytes: 2n ** 53n, rxPackets: 0n, txPackets: 0n },
  });
  for (let i = 1; i <= 1000; i++) {
    t.add({ a: { rxBytes: BigInt(i), txBytes: BigInt(i), rxPackets: 0n, txPackets: 0n } });
  }
  assertEquals(t.service("a").rxBytes, start + 1000n);
  assertEquals(t.service("a").txBytes, 2n ** 53n + 1000n);
});
