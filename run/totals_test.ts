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

Deno.test("totals continuing kernel state add only what the saved totals do not include", () => {
  // Saved: 1000 rx, of which 300 came from kernel state "k1" (its reading then).
  const saved = { a: c(1000, 0) };
  const included = [{ id: "k1", services: { a: c(300, 0) } }];
  // k1 adopted: it counted 500 by now, so 200 flowed while no run lived.
  const adopted = Totals.continuing(["a"], {
    saved,
    included,
    current: { id: "k1", adopted: true },
  });
  adopted.add({ a: c(500, 0) }, "k1");
  assertEquals(adopted.service("a"), c(1200, 0));
  assertEquals(adopted.kernelRecords(), [{ id: "k1", services: { a: c(500, 0) } }]);
  // k1 replaced: its last reading 450 is added beyond 300, once; new state k2 from zero.
  const replaced = Totals.continuing(["a"], {
    saved,
    included,
    current: { id: "k2", adopted: false },
    replaced: [{ id: "k1", services: { a: c(450, 0) } }],
  });
  replaced.add({ a: c(10, 0) }, "k2");
  assertEquals(replaced.service("a"), c(1160, 0));
  assertEquals(replaced.kernelRecords().map((k) => k.id), ["k2", "k1"]);
  replaced.forgetReplaced();
  assertEquals(replaced.kernelRecords().map((k) => k.id), ["k2"]);
  // State made after the save (not adopted) counts whole.
  const fresh = Totals.continuing(["a"], {
    saved,
    included,
    current: { id: "k3", adopted: false },
  });
  fresh.add({ a: c(70, 0) }, "k3");
  assertEquals(fresh.service("a"), c(1070, 0));
  // Adopted state the saved totals have no record of may be in them already (another
  // backend ran meanwhile): counted from its first reading on, never twice.
  const unseen = Totals.continuing(["a"], {
    saved,
    included,
    current: { id: "k4", adopted: true },
  });
  unseen.add({ a: c(70, 0) }, "k4");
  assertEquals(unseen.service("a"), c(1000, 0));
  unseen.add({ a: c(90, 0) }, "k4");
  assertEquals(unseen.service("a"), c(1020, 0));
});
