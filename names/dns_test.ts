/**
 * parseDnsAnswer / parseDnsQuery against messages captured from the lab's DNS server
 * (tests/harness/dns_server.ts) and from Deno's resolver (names/testdata/*.bin), then
 * hand-made bad ones, then a seeded fuzz: mutated captures must parse or throw
 * DnsParseError, never anything else, never hang.
 */

import {
  DnsParseError,
  encodeDnsQuery,
  isHostName,
  parseDnsAnswer,
  parseDnsQuery,
  TYPE_A,
  TYPE_AAAA,
} from "./dns.ts";
import { assert, assertEquals, assertThrows } from "../lib/test_assert.ts";
import { fuzzSeed, gen } from "../lib/fuzz.ts";

const data = (name: string) =>
  Deno.readFileSync(new URL(`./testdata/${name}.bin`, import.meta.url));

function answerOf(name: string) {
  const a = parseDnsAnswer(data(name));
  if (a.kind !== "answer") throw new Error(`${name}: ignored (${a.reason})`);
  return a;
}

Deno.test("dns: A and AAAA answers give the asked name, its addresses and TTLs", () => {
  const a = answerOf("a_record");
  assertEquals([a.name, a.type, a.chain], ["a.stb.test", TYPE_A, ["a.stb.test"]]);
  assertEquals(a.addresses, [{ address: "198.51.100.2", ttl: 300 }]);
  const aaaa = answerOf("aaaa_record");
  assertEquals(aaaa.type, TYPE_AAAA);
  assertEquals(aaaa.addresses, [{ address: "2001:db8:1::2", ttl: 300 }]);
});

Deno.test("dns: a CNAME chain (compressed names) leads back to the asked name", () => {
  const a = answerOf("cname_chain");
  assertEquals(a.name, "www.stb.test");
  assertEquals(a.chain, ["www.stb.test", "edge.cdn.stb.test", "a.stb.test"]);
  assertEquals(a.addresses.map((x) => x.address), ["198.51.100.2"]);
  assertEquals(answerOf("cname_chain_aaaa").addresses.map((x) => x.address), ["2001:db8:1::2"]);
});

Deno.test("dns: the smallest TTL on the way from the asked name is the address's", () => {
  const bytes = data("cname_chain").slice();
  // The first CNAME's TTL: its record starts at byte 30 (name pointer, type, class, TTL).
  new DataView(bytes.buffer).setUint32(30 + 6, 7);
  const a = parseDnsAnswer(bytes);
  assert(a.kind === "answer");
  assertEquals(a.addresses, [{ address: "198.51.100.2", ttl: 7 }]);
});

Deno.test("dns: answers with nothing to learn are ignored with a reason", () => {
  const ignored = (name: string) => {
    const a = parseDnsAnswer(data(name));
    assert(a.kind === "ignored", `${name}: ${JSON.stringify(a)}`);
    return a.reason;
  };
  assertEquals(ignored("nxdomain"), "rcode 3");
  assertEquals(ignored("offchain"), "its addresses are not the asked name's (CNAME chain)");
  assertEquals(ignored("query_a"), "a query, not an answer");
  // Well-formed for another name: parses; the tracker drops it (no query for it).
  assertEquals(answerOf("unasked").name, "other.stb.test");
  assertEquals(answerOf("ptr").addresses, [], "PTR: a name, no address");
});

Deno.test("dns: malformed answers throw DnsParseError", () => {
  assertThrows(() => parseDnsAnswer(data("malformed_loop")), DnsParseError, "backwards");
  const good = data("cname_chain");
  for (let cut = 0; cut < good.length; cut++) {
    assertThrows(() => parseDnsAnswer(good.subarray(0, cut)), DnsParseError);
  }
  // A forward pointer, a reserved label type, an A record of 5 bytes.
  const bad = good.slice();
  bad[31] = 0xc0, bad[32] = 0x50;
  assertThrows(() => parseDnsAnswer(bad), DnsParseError, "backwards");
  const label = good.slice();
  label[12] = 0x43;
  assertThrows(() => parseDnsAnswer(label), DnsParseError, "label type");
  const a = data("a_record").slice();
  a[a.length - 5] = 5;
  assertThrows(() => parseDnsAnswer(a), DnsParseError);
});

Deno.test("dns: a capture cut short keeps the records that arrived whole", () => {
  const good = data("cname_chain");
  const cut = parseDnsAnswer(good.subarray(0, good.length - 2), false);
  assert(cut.kind === "answer");
  assertEquals([cut.chain.length, cut.addresses], [3, []]);
});

Deno.test("dns: CNAME loops and names that are not host names are ignored", () => {
  const w: number[] = [0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
  w.push(1, 0x61, 0, 0, 1, 0, 1); // question "a" at 12, A IN
  // a CNAME b ("b" written at 31), b CNAME a
  w.push(0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 3, 1, 0x62, 0);
  w.push(0xc0, 31, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12);
  const loop = parseDnsAnswer(new Uint8Array(w));
  assertEquals(loop, { kind: "ignored", reason: "a CNAME loop" });
  const odd = data("a_record").slice();
  odd[13] = 0x0a; // a newline in the asked name
  assertEquals(parseDnsAnswer(odd), {
    kind: "ignored",
    reason: "the asked name is not a host name",
  });
  assert(isHostName("edge-1.cdn.example.com") && !isHostName("a..b") && !isHostName("a\\010b"));
});

Deno.test("dns: queries (ours and Deno's resolver's, with EDNS) give id, name and type", () => {
  assertEquals(parseDnsQuery(data("query_a")), { id: 0x1000, name: "a.stb.test", type: TYPE_A });
  const h = parseDnsQuery(data("query_hickory_aaaa"));
  assertEquals([h?.name, h?.type], ["www.stb.test", TYPE_AAAA]);
  assertEquals(parseDnsQuery(data("a_record")), null, "an answer is no query");
  assertEquals(parseDnsQuery(encodeDnsQuery(7, "X.Example.", 1)), {
    id: 7,
    name: "x.example",
    type: 1,
  });
});

export const FUZZ_N = Number(Deno.env.get("FUZZ_N") ?? 20_000);

Deno.test(`dns fuzz: ${FUZZ_N} mutated answers parse or throw DnsParseError`, () => {
  const seed = fuzzSeed();
  console.log(`dns fuzz: seed ${seed} (replay with FUZZ_SEED=${seed})`);
  const g = gen(seed);
  const seeds = ["a_record", "aaaa_record", "cname_chain", "cname_chain_aaaa", "ptr", "unasked"]
    .map(data);
  const start = performance.now();
  for (let i = 0; i < FUZZ_N; i++) {
    const bytes = g.pick(seeds).slice();
    const flips = 1 + g.int(4);
    for (let f = 0; f < flips; f++) {
      const at = g.int(bytes.length);
      bytes[at] = g.chance(0.5) ? g.int(256) : bytes[at]! ^ (1 << g.int(8));
    }
    const cut = g.chance(0.2) ? bytes.subarray(0, g.int(bytes.length + 1)) : bytes;
    for (const complete of [true, false]) {
      try {
        const a = parseDnsAnswer(cut, complete);
        if (a.kind === "answer") {
          assert(isHostName(a.name), `case ${i}: name ${a.name}`);
          for (const x of a.addresses) assert(x.ttl >= 0 && x.ttl <= 0x7fffffff);
        }
        parseDnsQuery(cut);
      } catch (e) {
        if (!(e instanceof DnsParseError)) {
          throw new Error(`case ${i} (seed ${seed}): ${e}`, { cause: e });
        }
      }
    }
  }
  const perCase = (performance.now() - start) / FUZZ_N;
  assert(perCase < 1, `${perCase.toFixed(3)} ms a case: something is slow`);
});
