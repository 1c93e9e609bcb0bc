import { MIN_KEEP_S, NameCache, PendingQueries, QUERY_WAIT_S } from "./cache.ts";
import { NameTracker } from "./tracker.ts";
import { encodeDnsQuery } from "./dns.ts";
import { assert, assertEquals } from "../lib/test_assert.ts";

const data = (name: string) =>
  Deno.readFileSync(new URL(`./testdata/${name}.bin`, import.meta.url));

Deno.test("name cache: newest answer wins; kept max(TTL, MIN_KEEP_S), then gone", () => {
  let now = 1000;
  const c = new NameCache(() => now, 8);
  c.set("198.51.100.2", "a.example", 30);
  c.set("198.51.100.2", "b.example", 5000);
  assertEquals(c.get("198.51.100.2"), "b.example");
  c.set("2001:db8::1", "c.example", 30);
  now += MIN_KEEP_S - 1;
  assertEquals(c.get("2001:db8::1"), "c.example", "a short TTL still keeps MIN_KEEP_S");
  now += 2;
  assertEquals(c.get("2001:db8::1"), undefined);
  assertEquals(c.get("198.51.100.2"), "b.example", "its own TTL is longer");
  now += 5000;
  assertEquals([c.get("198.51.100.2"), c.size], [undefined, 0]);
});

Deno.test("name cache: a flood of names keeps the bound, evicting the least recently used", () => {
  const c = new NameCache(() => 0, 100);
  c.set("keep", "kept.example", 60);
  for (let i = 0; i < 10_000; i++) {
    c.set(`addr${i}`, `n${i}.example`, 60);
    if (i % 50 === 0) assert(c.get("keep") === "kept.example", `lost at ${i}`);
  }
  assertEquals(c.size, 100);
  assertEquals(c.get("addr9999"), "n9999.example");
  assertEquals(c.get("addr0"), undefined);
  assertEquals(c.evicted, 10_001 - 100);
});

Deno.test("pending queries: one answer per query, within QUERY_WAIT_S, bounded", () => {
  let now = 0;
  const q = new PendingQueries(() => now, 10);
  q.add(1, "a.example", 1);
  assert(!q.take(1, "a.example", 28), "another type");
  assert(!q.take(2, "a.example", 1), "another id");
  assert(q.take(1, "a.example", 1));
  assert(!q.take(1, "a.example", 1), "taken");
  q.add(3, "b.example", 1);
  now += QUERY_WAIT_S + 1;
  assert(!q.take(3, "b.example", 1), "too old");
  for (let i = 0; i < 100; i++) q.add(i, "c.example", 1);
  assertEquals(q.size, 10);
});

Deno.test("tracker: names addresses only from answers to queries StB sent", () => {
  const t = new NameTracker(() => 0);
  // An answer before its query: nobody asked.
  t.answer(data("a_record"), true);
  assertEquals(t.cache.get("198.51.100.2"), undefined);
  t.query(encodeDnsQuery(0x1002, "www.stb.test", 1), true); // the cname_chain capture's id
  t.answer(data("cname_chain"), true);
  assertEquals(t.cache.get("198.51.100.2"), "www.stb.test", "the asked name, not the target");
  // Well-formed answer for a name nobody asked (same id as a query for another name).
  t.query(encodeDnsQuery(0x1008, "unasked.stb.test", 1), true);
  t.answer(data("unasked"), true);
  t.answer(data("malformed_loop"), true);
  t.answer(new Uint8Array([1, 2, 3]), true);
  t.query(new Uint8Array([9]), true);
  assertEquals(t.cache.size, 1);
  assertEquals(t.stats, {
    queries_total: 3,
    answers_total: 5,
    answers_used_total: 1,
    answers_ignored_total: 2,
    malformed_total: 3,
  });
  assert(t.lastIgnored?.includes("other.stb.test"), String(t.lastIgnored));
});
