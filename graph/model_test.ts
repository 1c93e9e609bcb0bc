import type { CountersV1 } from "../lib/contract.ts";
import { GraphModel } from "./model.ts";
import { hasControl } from "../lib/text.ts";

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

Deno.test("no ts_unix: age unknown until the file is seen to change, stale when it does not", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  // An old-contract file without ts_unix (parseCounters gives 0): one read proves nothing.
  m.update(ok(c(0, 0, 0, { ts_unix: 0 })), 10);
  let s = m.status(0, 11);
  expect(s.kind, "unknown");
  if (!s.text.includes("no ts_unix")) throw new Error(s.text);
  // Watched past the limit without a change: stale, and it says why.
  s = m.status(0, 12.1);
  expect(s.kind, "stale");
  if (!s.text.includes("no ts_unix") || !s.text.includes("did not change in the 2.1 s watched")) {
    throw new Error(s.text);
  }
  // It changes: live, but the status still says its age is unknown (not "ok").
  m.update(ok(c(0.5, 10, 10, { ts_unix: 0 })), 12.2);
  s = m.status(0, 12.3);
  expect(s.kind, "clock");
  if (!s.text.includes("no ts_unix")) throw new Error(s.text);
  // Rewritten with the same sample: no advance; stale once that lasts past the limit.
  m.update(ok(c(0.5, 10, 10, { ts_unix: 0 })), 13);
  expect(m.status(0, 14.1).kind, "clock");
  expect(m.status(0, 14.3).kind, "stale");
});

Deno.test("a ts_unix in the future is reported as such, never 'ok'", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 0, 0)), 0);
  // The clock is an hour behind the file's ts_unix.
  let s = m.status(UNIX0 - 3600, 0.2);
  expect(s.kind, "unknown");
  if (!s.text.includes("1.0 h in the future")) throw new Error(s.text);
  m.update(ok(c(0.5, 10, 10)), 0.5);
  s = m.status(UNIX0 - 3600, 0.6);
  expect(s.kind, "clock");
  if (!s.text.includes("1.0 h in the future")) throw new Error(s.text);
  // An absurd ts_unix is one more future date, never a crash.
  const absurd = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  absurd.update(ok(c(0, 0, 0, { ts_unix: 1e300 })), 0);
  s = absurd.status(UNIX0, 3);
  expect(s.kind, "stale");
  if (!s.text.includes("over 100 years in the future")) throw new Error(s.text);
  // A second or two ahead is the same clock read twice, not a fault.
  const near = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  near.update(ok(c(0, 0, 0)), 0);
  expect(near.status(UNIX0 - 1.5, 0.1).kind, "ok");
});

Deno.test("an increase no link could carry is a discontinuity: announced, not drawn", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 1000, 1000)), 0);
  m.update(ok(c(0.5, 2000, 2000)), 0.5);
  // 10^15 bytes in half a second.
  m.update(ok(c(1, 2000 + 1e15, 3000)), 1);
  const f = m.frame(UNIX0 + 1, 1);
  expect(f.status.kind, "discontinuity");
  if (!f.status.text.includes("↓ all rose by 909 TiB in 0.5 s")) throw new Error(f.status.text);
  // The step is no interval: the peak is the plausible one, and the next rates start anew.
  expect(String(f.stats?.rx.peak), "2000");
  expect(String(f.stats?.rx.current), "null");
  m.update(ok(c(1.5, 2500 + 1e15, 3500)), 1.5);
  expect(String(m.frame(UNIX0 + 1.5, 1.5).stats?.rx.current), "1000");
  const cols = m.frame(UNIX0 + 1.5, 1.5).series(120).all.rx.filter((v) => v !== null);
  if (cols.some((v) => v! > 1e6)) throw new Error(`the jump was drawn: ${cols}`);
  // A service's jump alone is one too.
  const svc = (rx: number) => ({
    services: {
      shell: {
        rx_bytes_total: BigInt(rx),
        tx_bytes_total: 0n,
        rx_packets_total: 0n,
        tx_packets_total: 0n,
        cgroup: "/s",
        present: true,
      },
    },
  });
  const m2 = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m2.update(ok(c(0, 1e15 + 5, 0, svc(5))), 0);
  m2.update(ok(c(0.5, 1e15 + 10, 0, svc(1e15))), 0.5);
  const s2 = m2.status(UNIX0 + 0.5, 0.5);
  expect(s2.kind, "discontinuity");
  if (!s2.text.includes("↓ shell rose by")) throw new Error(s2.text);
});

Deno.test("per service: rates, peak, average and presence, in the file's order", () => {
  const svc = (a: number, b: number, bPresent = true) => ({
    services: {
      "host-agent": {
        rx_bytes_total: BigInt(a),
        tx_bytes_total: 0n,
        rx_packets_total: 0n,
        tx_packets_total: 0n,
        cgroup: "/a",
        present: true,
      },
      "server": {
        rx_bytes_total: BigInt(b),
        tx_bytes_total: BigInt(b),
        rx_packets_total: 0n,
        tx_packets_total: 0n,
        cgroup: "/b",
        present: bPresent,
      },
    },
  });
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(ok(c(0, 0, 0, svc(0, 0))), 0);
  m.update(ok(c(0.5, 1500, 500, svc(1000, 500))), 0.5);
  m.update(ok(c(1, 2000, 500, svc(1500, 500, false))), 1);
  const f = m.frame(UNIX0 + 1, 1);
  expect(f.services.map((s) => `${s.name}:${s.present}`).join(" "), "host-agent:true server:false");
  const [a, b] = f.services;
  expect(`${a?.stats?.rx.current} ${a?.stats?.rx.peak} ${a?.stats?.rx.average}`, "1000 2000 1500");
  expect(`${b?.stats?.rx.current} ${b?.stats?.tx.peak}`, "0 1000");
  expect(`${b?.totals.rx}`, "500");
  const series = m.frame(UNIX0 + 1, 1).series(120);
  expect(String(series.services.length), "2");
  expect(String(series.services[0]!.rx.at(-1)), "1000");
});

Deno.test("file text is made printable on its way into a frame", () => {
  const m = new GraphModel({ path: "/x", interval: 0.5, window: 60 });
  m.update(
    ok(c(0, 0, 0, {
      backend: "ebpf\x1b[2J",
      backend_fallback_reason: "\u009b31m",
      services: {
        "\x1b]0;pwned\x07": {
          rx_bytes_total: 0n,
          tx_bytes_total: 0n,
          rx_packets_total: 0n,
          tx_packets_total: 0n,
          cgroup: "/a",
          present: true,
        },
      },
    })),
    0,
  );
  m.update({ kind: "malformed", reason: "it is not valid JSON (\x1b[31mred)" }, 0.1);
  const f = m.frame(UNIX0, 0.1);
  const text = [f.backend, f.fallbackReason, f.services[0]?.name, f.status.text].join(" ");
  if (hasControl(text)) throw new Error(JSON.stringify(text));
  expect(f.services[0]?.name ?? "", "\\x1b]0;pwned\\x07");
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
