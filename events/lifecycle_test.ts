import { attachedEvent, attachFailures, MAX_REASON_CHARS, unavailableEvent } from "./lifecycle.ts";
import { assertEquals } from "../lib/test_assert.ts";

Deno.test("attach failures: what was tried and refused counts, a choice does not", () => {
  const start = { ebpfSkipped: null, backend: "ebpf", eventsEnabled: true, eventsStarted: true };
  assertEquals(attachFailures(start), 0, "all attached");
  assertEquals(attachFailures({ ...start, eventsStarted: false }), 1, "event programs refused");
  assertEquals(attachFailures({ ...start, eventsEnabled: false, eventsStarted: false }), 0, "off");
  const fellBack = { ...start, ebpfSkipped: "needs CAP_BPF", backend: "nft", eventsStarted: false };
  assertEquals(attachFailures(fellBack), 1, "auto fell back: one failure, events follow it");
  assertEquals(attachFailures({ ...fellBack, ebpfSkipped: null }), 0, "--backend nft by name");
});

Deno.test("lifecycle lines: times rounded as connect events, a long reason cut", () => {
  const t = { unixS: 1795000000.123456, monotonicS: 5.1234567 };
  assertEquals(attachedEvent(t, "counting", ["server"]), {
    ts_unix: 1795000000.123,
    ts_monotonic: 5.123457,
    kind: "ebpf_attached",
    programs: "counting",
    services: ["server"],
  });
  const long = unavailableEvent(t, {
    programs: "events",
    backend: "ebpf",
    reason: "x".repeat(9000),
  });
  assertEquals(long.reason.length, MAX_REASON_CHARS);
  assertEquals(long.reason.endsWith("…"), true);
});
