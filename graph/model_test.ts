import type { CountersV1 } from "../lib/contract.ts";
import { GraphModel } from "./model.ts";

const UNIX0 = 1795000000;

function c(t: number, rx: number, tx: number, more: Partial<CountersV1> = {}): CountersV1 {
  return {
    schema: 1,
    backend: "ebpf",
    boot_id: "boot-a",
    started_at: UNIX0 - 10,
    rx_bytes_total: BigInt(Math.round(rx)),
    tx_bytes_total: BigInt(Math.round(tx)),
    rx_packets_total: 0n,
    tx_packets_total: 0n,
    ts_monotonic: 100 + t,
    ts_unix: UNIX0 + t,
    interval_s: 0.5,
    services: {},
    ...more,
  };
}

const ok = (counters: CountersV1, changed = true) => ({ kind: "ok" as const, counters, changed });

function expect(actual: string, expected: string): void {
  if (actual !== expected) throw new Error(`expected ${expected}, got ${actual}`);
}

Deno.test("status: waiting, then ok once a sample arrives", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  expect(m.status(UNIX0, 0).kind, "waiting");
  m.update({ kind: "missing", reason: "it does not exist yet" }, 0);
  expect(m.status(UNIX0, 0).kind, "waiting");
  m.update(ok(c(0, 0, 0)), 0.1);
  expect(m.status(UNIX0 + 0.1, 0.1).kind, "ok");
});

Deno.test("stale by ts_unix: older than three of its intervals, and at least 2 s", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 0, 0)), 0);
  expect(m.status(UNIX0 + 1.9, 0).kind, "ok");
  const s = m.status(UNIX0 + 2.1, 0);
  expect(s.kind, "stale");
  if (!s.text.includes("2.1 s old") || !s.text.includes("every 0.5 s")) throw new Error(s.text);
  const slow = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  slow.update(ok(c(0, 0, 0, { interval_s: 2 })), 0);
  expect(slow.status(UNIX0 + 5.9, 0).kind, "ok");
  expect(slow.status(UNIX0 + 6.1, 0).kind, "stale");
});

Deno.test("stale by ts_monotonic not advancing, when ts_unix says nothing", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  // An old-contract file without ts_unix (parseCounters gives 0).
  m.update(ok(c(0, 0, 0, { ts_unix: 0 })), 10);
  expect(m.status(0, 11).kind, "ok");
  // Rewritten (changed) but with the same sample: no advance.
  m.update(ok(c(0, 0, 0, { ts_unix: 0 })), 11.9);
  expect(m.status(0, 11.9).kind, "ok");
  expect(m.status(0, 12.1).kind, "stale");
  m.update(ok(c(0.5, 10, 10, { ts_unix: 0 })), 12.2);
  expect(m.status(0, 12.2).kind, "ok");
});

Deno.test("a wall clock set back does not make fresh samples stale", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 0, 0)), 0);
  expect(m.status(UNIX0 - 3600, 0.2).kind, "ok");
});

Deno.test("counter reset is announced for a few seconds, then ok", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 1000, 1000)), 0);
  m.update(ok(c(0.5, 2000, 2000)), 0.5);
  m.update(ok(c(1, 10, 10)), 1);
  expect(m.status(UNIX0 + 1, 1).kind, "reset");
  m.update(ok(c(1.5, 20, 20)), 1.5);
  expect(m.status(UNIX0 + 1.5, 1.5).kind, "reset");
  m.update(ok(c(7, 30, 30)), 7);
  expect(m.status(UNIX0 + 7, 7).kind, "ok");
});

Deno.test("a new boot_id is a reset even when the numbers look continuous", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 1000, 1000)), 0);
  m.update(ok(c(0.5, 2000, 2000)), 0.5);
  // Rebooted, and the new boot is already up longer than the old one was: only boot_id tells.
  m.update(ok(c(50, 3000, 3000, { boot_id: "boot-b" })), 1);
  expect(m.status(UNIX0 + 50, 1).kind, "reset");
  if (m.tracker.stats(60) !== null) throw new Error("an interval spans two boots");
});

Deno.test("malformed or unreadable reads keep the last good values", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 1000, 2000)), 0);
  m.update(ok(c(0.5, 1500, 2500)), 0.5);
  m.update({ kind: "malformed", reason: "the file is empty" }, 1);
  let f = m.frame(UNIX0 + 1, 1);
  expect(f.status.kind, "malformed");
  if (!f.status.text.endsWith("showing the last good values")) throw new Error(f.status.text);
  expect(`${f.totals?.rx} ${f.totals?.tx}`, "1500 2500");
  if (f.stats?.rx.current !== 1000) throw new Error(JSON.stringify(f.stats));
  m.update({ kind: "unreadable", reason: "permission denied" }, 1.5);
  f = m.frame(UNIX0 + 1.5, 1.5);
  expect(f.status.kind, "unreadable");
  expect(`${f.totals?.rx} ${f.totals?.tx}`, "1500 2500");
});

Deno.test("an unchanged file is not pushed again", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  const first = c(0, 0, 0);
  m.update(ok(first), 0);
  m.update(ok(first, false), 0.5);
  m.update(ok(first, false), 1);
  if (m.tracker.intervals.length !== 0) throw new Error("phantom intervals");
});

Deno.test("host share is StB's window average over the host's", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60, host: true });
  const dev = (rx: number, tx: number) =>
    "Inter-|\n face |\n    lo: 9 9 0 0 0 0 0 0 9 9 0 0 0 0 0 0\n" +
    `  eth0: ${rx} 1 0 0 0 0 0 0 ${tx} 1 0 0 0 0 0 0\n`;
  m.update(ok(c(0, 0, 0)), 0);
  m.updateHost(dev(0, 0), 0);
  m.update(ok(c(1, 250, 100)), 1);
  m.updateHost(dev(1000, 100), 1);
  const h = m.frame(UNIX0 + 1, 1).host!;
  expect(JSON.stringify(h.current), JSON.stringify({ rx: 1000, tx: 100 }));
  expect(JSON.stringify(h.share), JSON.stringify({ rx: 0.25, tx: 1 }));
  m.updateHost(new Error("Deno needs --allow-run=cat to read /proc/net/dev"), 1.5);
  const h2 = m.frame(UNIX0 + 1.5, 1.5).host!;
  if (h2.error === null) throw new Error("host error not kept");
});

Deno.test("destination rates come from consecutive samples; new or restarted ones have none", () => {
  const d = (bytes: number, port = 443) => ({
    service: "server",
    direction: "rx" as const,
    address: "198.51.100.7",
    port,
    protocol: "tcp",
    bytes: BigInt(bytes),
    packets: 1n,
  });
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 0, 0, { destinations: [d(1000)] })), 0);
  let rows = m.frame(UNIX0, 0).destinations!;
  expect(String(rows[0]?.rate), "null");
  expect(String(rows[0]?.endpoint), "198.51.100.7:443");
  m.update(ok(c(0.5, 0, 0, { destinations: [d(3000), d(10, 80)] })), 0.5);
  rows = m.frame(UNIX0 + 0.5, 0.5).destinations!;
  expect(`${rows[0]?.rate} ${rows[1]?.rate}`, "4000 null");
  // The kernel forgot the endpoint and counts it from zero again: no negative rate.
  m.update(ok(c(1, 0, 0, { destinations: [d(100)] })), 1);
  expect(String(m.frame(UNIX0 + 1, 1).destinations![0]?.rate), "null");
  // A sample without the field: no table at all.
  const plain = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  plain.update(ok(c(0, 0, 0)), 0);
  expect(String(plain.frame(UNIX0, 0).destinations), "null");
});
