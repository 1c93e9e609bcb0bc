/**
 * The `name` of connect events as `events` reads and prints them: run's name, checked
 * like every field; else reverse DNS (an injected PTR lookup here), off with resolve false,
 * never in --json.
 */

import { formatEvent, parseEventLine, runEvents } from "./mod.ts";
import type { ConnectEvent } from "./collector.ts";
import { isLifecycle } from "./lifecycle.ts";
import { assert, assertEquals } from "../lib/test_assert.ts";

const EVENT: ConnectEvent = {
  ts_unix: 1795000000.25,
  ts_monotonic: 5,
  kind: "connect",
  service: "server",
  pid: 8,
  tgid: 7,
  comm: "stb",
  family: 6,
  protocol: "tcp",
  address: "2001:db8::7",
  port: 443,
  external: true,
};

Deno.test("events: a name from run is kept when it is a DNS name, the line refused when not", () => {
  const named = parseEventLine(JSON.stringify({ ...EVENT, name: "api.example.com" }));
  assert(named !== null && "event" in named && !isLifecycle(named.event));
  assertEquals(named.event.name, "api.example.com");
  const bad = parseEventLine(JSON.stringify({ ...EVENT, name: "x\u001b[2Jy" }));
  assertEquals(bad, { invalid: '"name" is "x\\u001b[2Jy", not a DNS name' });
  const none = parseEventLine(JSON.stringify(EVENT));
  assert(none !== null && "event" in none && !isLifecycle(none.event));
  assertEquals(none.event.name, undefined);
  assert(
    formatEvent({ ...EVENT, name: "api.example.com" }, true)
      .includes("tcp connect api.example.com [2001:db8::7]:443 external"),
  );
});

Deno.test("events: reverse DNS names what run did not, unless off; --json unchanged", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-events-names-" });
  try {
    const input = `${dir}/events.jsonl`;
    await Deno.writeTextFile(
      input,
      [
        JSON.stringify(EVENT),
        JSON.stringify({ ...EVENT, address: "198.51.100.2", name: "run.example.com" }),
      ].join("\n") + "\n",
    );
    const asked: string[] = [];
    const ptr = (name: string) => {
      asked.push(name);
      return Promise.resolve(["Reverse.Example.NET."]);
    };
    const print = async (resolve: boolean, json = false) => {
      const lines: string[] = [];
      await runEvents(
        { input, follow: false, json, externalOnly: false, utc: true, resolve },
        { write: (l) => lines.push(l), ptr },
      );
      return lines;
    };
    const on = await print(true);
    assert(on[0]!.includes("reverse.example.net [2001:db8::7]:443"), on[0]);
    assert(on[1]!.includes("run.example.com 198.51.100.2:443"), on[1]);
    assertEquals(asked.length, 1, "only the address run gave no name");
    const off = await print(false);
    assert(off[0]!.includes("tcp connect [2001:db8::7]:443"), off[0]);
    const json = await print(true, true);
    assertEquals(JSON.parse(json[0]!).name, undefined);
    assertEquals(asked.length, 1, "no lookups with -n or --json");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
