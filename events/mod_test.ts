import { formatEvent, parseEventLine, runEvents } from "./mod.ts";
import { stringifyExact } from "../lib/exact_json.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/test_assert.ts";

/** Lines a real `run` wrote (tests/events_test.ts's scenario, addresses of the test lab). */
const CAPTURED = Deno.readTextFileSync(new URL("./testdata/events.jsonl", import.meta.url))
  .split("\n").filter((l) => l !== "");

function parsed(line: string) {
  const p = parseEventLine(line);
  assert(p !== null && "event" in p, `not an event: ${line}: ${stringifyExact(p)}`);
  return p.event;
}

Deno.test("events lines: the captured file parses whole, lifecycle lines first", () => {
  const events = CAPTURED.map(parsed);
  const kinds = events.map((e) => e.kind);
  assertEquals(kinds.slice(0, 2), ["ebpf_attached", "ebpf_attached"]);
  assert(kinds.slice(2).every((k) => k === "connect" || k === "sendmsg"), kinds.join());
  for (const e of events.slice(2)) {
    assert("cookie" in e && typeof e.cookie === "bigint" && e.cookie > 0n, stringifyExact(e));
  }
});

Deno.test("events lines: a cookie is exact past 2^53, optional, and must be a u64", () => {
  const connect = CAPTURED.find((l) => l.includes('"kind":"connect"'))!;
  const o = JSON.parse(connect);
  const big = connect.replace(/"cookie":\d+/, `"cookie":${(1n << 64n) - 1n}`);
  assertEquals((parsed(big) as { cookie?: bigint }).cookie, (1n << 64n) - 1n);
  const { cookie: _, ...old } = o;
  assertEquals("cookie" in parsed(JSON.stringify(old)), false, "a line from before cookies");
  for (const bad of ['"x"', "-1", "1.5", `${1n << 64n}`]) {
    const p = parseEventLine(connect.replace(/"cookie":\d+/, `"cookie":${bad}`));
    assert(p !== null && "invalid" in p && p.invalid.startsWith('"cookie" is'), `${bad}: ${p}`);
  }
});

Deno.test("events lines: lifecycle lines are validated field by field", () => {
  const unavailable = {
    ts_unix: 1795000000.25,
    ts_monotonic: 5,
    kind: "ebpf_unavailable",
    programs: "events",
    backend: "ebpf",
    reason: "Loading the connect events programs failed: Operation not permitted",
  };
  assertEquals(parsed(JSON.stringify(unavailable)), unavailable);
  const cases: [Record<string, unknown>, string][] = [
    [{ ...unavailable, programs: "all" }, '"programs" is "all"'],
    [{ ...unavailable, reason: "" }, '"reason" is ""'],
    [{ ...unavailable, backend: undefined }, '"backend" is missing'],
    [{ ...unavailable, kind: "ebpf_attached" }, '"services" is missing'],
    [{ ...unavailable, kind: "ebpf_attached", services: [1] }, '"services" is [1]'],
  ];
  for (const [line, why] of cases) {
    const p = parseEventLine(JSON.stringify(line));
    assert(p !== null && "invalid" in p && p.invalid.startsWith(why), stringifyExact(p));
  }
  // Only the known fields are kept.
  assertEquals(parsed(JSON.stringify({ ...unavailable, extra: 1 })), unavailable);
});

Deno.test("events lines: formatted for people, with the cookie and the reason", () => {
  const [counting, events, connect] = CAPTURED.map(parsed);
  assertStringIncludes(formatEvent(counting!, true), "Z ebpf counting programs attached (");
  assertStringIncludes(formatEvent(events!, true), "Z ebpf connect-event programs attached (");
  assert(/ pid \d+(\/\d+)? \(.*\) cookie \d+$/.test(formatEvent(connect!, true)));
  const line = formatEvent({
    ts_unix: 1795000000.25,
    ts_monotonic: 5,
    kind: "ebpf_unavailable",
    programs: "counting",
    backend: "nft",
    reason: "needs CAP_BPF\x1b[2J",
  }, true);
  assertEquals(
    line,
    "2026-11-18T11:06:40.250Z ebpf counting programs unavailable, counting with nft: " +
      "needs CAP_BPF\\x1b[2J",
  );
});

Deno.test("events: --external-only shows external connects only; --json keeps cookies exact", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-events-mod-" });
  try {
    const path = `${dir}/events.jsonl`;
    const big = CAPTURED.map((l) => l.replace(/"cookie":\d+/, `"cookie":${(1n << 63n) + 1n}`));
    await Deno.writeTextFile(path, big.join("\n") + "\n");
    const read = async (externalOnly: boolean, json: boolean) => {
      const out: string[] = [];
      await runEvents({ input: path, follow: false, json, externalOnly }, {
        write: (l) => out.push(l),
      });
      return out;
    };
    const all = await read(false, true);
    assertEquals(all.length, CAPTURED.length);
    assertStringIncludes(all.at(-1)!, `"cookie":${(1n << 63n) + 1n}`);
    const external = (await read(true, true)).map((l) => JSON.parse(l));
    const expected = CAPTURED.map((l) => JSON.parse(l)).filter((e) => e.external === true);
    assertEquals(external.map((e) => e.address), expected.map((e) => e.address));
    assert(expected.length > 0 && expected.length < CAPTURED.length - 2);
    const text = await read(false, false);
    assertEquals(text.filter((l) => l.includes(" ebpf ")).length, 2, text.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
