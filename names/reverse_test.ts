import { MAX_REVERSE, ptrName, ReverseNames } from "./reverse.ts";
import { assertEquals } from "../lib/test_assert.ts";

Deno.test("reverse: PTR names of IPv4 and IPv6 addresses", () => {
  assertEquals(ptrName("198.51.100.2"), "2.100.51.198.in-addr.arpa");
  assertEquals(
    ptrName("2001:db8::1"),
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
  );
  assertEquals(ptrName("not an address"), null);
});

Deno.test("reverse: lookups never block, are cached (failures too) and bounded", async () => {
  const asked: string[] = [];
  let release = () => {};
  const gate = new Promise<void>((r) => release = r);
  const r = new ReverseNames(async (name) => {
    asked.push(name);
    await gate;
    if (name.startsWith("2.")) return ["Peer.Example."];
    if (name.startsWith("3.")) return ["bad name\u001b[2J."];
    throw new Error("NXDOMAIN");
  });
  let told = 0;
  r.onName = () => told++;
  for (const a of ["198.51.100.2", "198.51.100.3", "198.51.100.4"]) {
    assertEquals(r.lookup(a), undefined, "nothing yet, no wait");
  }
  r.lookup("198.51.100.2");
  assertEquals(asked.length, 3, "one lookup per address");
  await r.settle(10);
  release();
  await r.settle(1000);
  assertEquals(r.lookup("198.51.100.2"), "peer.example");
  assertEquals(r.lookup("198.51.100.3"), undefined, "not a host name: not shown");
  assertEquals(r.lookup("198.51.100.4"), undefined);
  assertEquals([asked.length, told], [3, 1], "failures are not asked again at once");
  for (let i = 0; i < MAX_REVERSE + 50; i++) {
    r.lookup(`10.0.${i >> 8}.${i & 255}`);
    await r.settle(100);
  }
  assertEquals(r.lookup("198.51.100.2"), undefined, "evicted: asked again");
});
