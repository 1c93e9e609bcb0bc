import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "../lib/test_assert.ts";
import type { CountersV1 } from "../lib/contract.ts";
import { validateConfig } from "../lib/config.ts";
import {
  createSinks,
  escapeLabelValue,
  formatValue,
  listenSink,
  METRICS_CONTENT_TYPE,
  renderMetrics,
  TEXTFILE_EVERY_MS,
  textfileSink,
} from "./metrics.ts";

function sample(overrides: Partial<CountersV1> = {}): CountersV1 {
  return {
    schema: 1,
    backend: "nft",
    boot_id: "b",
    started_at: 1_700_000_000.5,
    rx_bytes_total: 3_000_000_123n,
    tx_bytes_total: 456n,
    rx_packets_total: 2_000n,
    tx_packets_total: 7n,
    ts_monotonic: 123.456,
    ts_unix: 1_700_000_100.25,
    interval_s: 0.5,
    services: {
      server: {
        rx_bytes_total: 3_000_000_000n,
        tx_bytes_total: 400n,
        rx_packets_total: 1_999n,
        tx_packets_total: 5n,
        cgroup: "/a/server",
        present: true,
      },
      "host-agent": {
        rx_bytes_total: 123n,
        tx_bytes_total: 56n,
        rx_packets_total: 1n,
        tx_packets_total: 2n,
        cgroup: "/a/agent",
        present: false,
      },
    },
    ...overrides,
  };
}

/** `promtool check metrics` on the text; promtool comes with Debian's `prometheus` package. */
async function promtool(text: string): Promise<{ code: number; output: string }> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    throw new Error(
      "promtool is missing: install the Debian package prometheus (`apt-get install prometheus`)",
      { cause: e },
    );
  }
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

function valueOf(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  assert(line, `no series ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
}

Deno.test("renderMetrics: every series with its value, counters per service and direction", () => {
  const text = renderMetrics(sample(), { version: "0.1.0", sampleDurationS: 0.000812 });
  assertEquals(valueOf(text, 'stb_netacct_bytes_total{service="server",direction="rx"}'), 3e9);
  assertEquals(valueOf(text, 'stb_netacct_bytes_total{service="server",direction="tx"}'), 400);
  assertEquals(valueOf(text, 'stb_netacct_bytes_total{service="host-agent",direction="tx"}'), 56);
  assertEquals(
    valueOf(text, 'stb_netacct_packets_total{service="server",direction="rx"}'),
    1_999,
  );
  assertEquals(valueOf(text, 'stb_netacct_service_present{service="server"}'), 1);
  assertEquals(valueOf(text, 'stb_netacct_service_present{service="host-agent"}'), 0);
  assertEquals(valueOf(text, "stb_netacct_sample_duration_seconds"), 0.000812);
  assertEquals(valueOf(text, "stb_netacct_last_sample_timestamp_seconds"), 1_700_000_100.25);
  assertEquals(valueOf(text, "stb_netacct_start_time_seconds"), 1_700_000_000.5);
  assertEquals(valueOf(text, "stb_netacct_events_dropped_total"), 0);
  assertEquals(valueOf(text, 'stb_netacct_build_info{version="0.1.0",backend="nft"}'), 1);
  assertStringIncludes(text, "# TYPE stb_netacct_bytes_total counter\n");
  assertStringIncludes(text, "# TYPE stb_netacct_service_present gauge\n");
  assert(text.endsWith("\n") && !text.endsWith("\n\n"), "ends with exactly one newline");
  // Counts beyond 2^53 keep every digit in the exposition.
  const s = sample();
  s.services.server!.rx_bytes_total = (1n << 64n) - 1n;
  const huge = renderMetrics(s, { version: "0.1.0", sampleDurationS: 0 });
  assertStringIncludes(
    huge,
    'stb_netacct_bytes_total{service="server",direction="rx"} 18446744073709551615\n',
  );
  // Pure: the same sample renders the same text.
  assertEquals(text, renderMetrics(sample(), { version: "0.1.0", sampleDurationS: 0.000812 }));
});

Deno.test("renderMetrics: events_dropped_total comes from the sample once events exist", () => {
  const withEvents = { ...sample(), events_dropped_total: 17 } as CountersV1;
  const text = renderMetrics(withEvents, { version: "1", sampleDurationS: 0 });
  assertEquals(valueOf(text, "stb_netacct_events_dropped_total"), 17);
  const bad = { ...sample(), events_dropped_total: "x" } as unknown as CountersV1;
  assertEquals(
    valueOf(
      renderMetrics(bad, { version: "1", sampleDurationS: 0 }),
      "stb_netacct_events_dropped_total",
    ),
    0,
  );
});

Deno.test("renderMetrics: ebpf_attach_failures_total is a counter from the sample, 0 when absent", () => {
  const render = (c: CountersV1) => renderMetrics(c, { version: "1", sampleDurationS: 0 });
  const name = "stb_netacct_ebpf_attach_failures_total";
  assertEquals(valueOf(render(sample()), name), 0);
  const failed = render({ ...sample(), ebpf_attach_failures_total: 2 });
  assertEquals(valueOf(failed, name), 2);
  assertStringIncludes(failed, `# TYPE ${name} counter\n`);
  const bad = { ...sample(), ebpf_attach_failures_total: -1 } as CountersV1;
  assertEquals(valueOf(render(bad), name), 0);
});

Deno.test("label values escape backslash, quote and newline; values print as Go parses them", () => {
  assertEquals(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  assertEquals(formatValue(NaN), "NaN");
  assertEquals(formatValue(Infinity), "+Inf");
  assertEquals(formatValue(1e-7), "1e-7");
  const text = renderMetrics(sample({ backend: 'we"ird\\\nname' }), {
    version: '0.1.0-rc.1+g"x"',
    sampleDurationS: 0,
  });
  assertStringIncludes(
    text,
    'stb_netacct_build_info{version="0.1.0-rc.1+g\\"x\\"",backend="we\\"ird\\\\\\nname"} 1\n',
  );
});

Deno.test("promtool check metrics accepts the exposition, awkward labels and no services", async () => {
  const cases = [
    renderMetrics(sample(), { version: "0.1.0", sampleDurationS: 0.0012 }),
    renderMetrics(sample({ backend: 'a"b\\c\nd', services: {} }), {
      version: "x\ny",
      sampleDurationS: 1e-7,
    }),
  ];
  for (const text of cases) {
    const r = await promtool(text);
    assertEquals(r.code, 0, `promtool exit code; it said:\n${r.output}\nfor:\n${text}`);
    assertEquals(r.output.trim(), "", "promtool lint findings");
  }
  // The check can fail: a broken exposition is refused.
  const broken = await promtool('stb_netacct_bytes_total{service="x} 1\n');
  assert(broken.code !== 0, "promtool accepted a broken label");
});

Deno.test("textfile sink: 0644 file rewritten at most every 10 s, removed on close, idle without dir", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-metrics-unit-" });
  const logs: string[] = [];
  try {
    const path = `${dir}/node-exporter/stb_netacct.prom`;
    let clockMs = 0;
    const sink = textfileSink({
      path,
      version: "0.1.0",
      log: (m) => logs.push(m),
      now: () => clockMs,
    });
    assertEquals(TEXTFILE_EVERY_MS, 10_000);
    // No node-exporter directory: nothing is written and nothing fails.
    await sink.publish({ counters: sample(), sampleDurationS: 0.001 });
    assertThrows(() => Deno.statSync(path), Deno.errors.NotFound);
    Deno.mkdirSync(`${dir}/node-exporter`);
    clockMs = 9_999; // the directory is looked for every 10 s, not every sample
    await sink.publish({ counters: sample(), sampleDurationS: 0.001 });
    assertThrows(() => Deno.statSync(path), Deno.errors.NotFound);
    clockMs = 10_000;
    await sink.publish({ counters: sample(), sampleDurationS: 0.001 });
    assertEquals(Deno.statSync(path).mode! & 0o777, 0o644);
    const text = Deno.readTextFileSync(path);
    assertEquals(text, renderMetrics(sample(), { version: "0.1.0", sampleDurationS: 0.001 }));
    const written = (n: number) => {
      const ts = valueOf(Deno.readTextFileSync(path), "stb_netacct_last_sample_timestamp_seconds");
      assertEquals(ts, n, `written at ${clockMs} ms`);
    };
    const at = (ms: number, tsUnix: number) => {
      clockMs = ms;
      return sink.publish({ counters: sample({ ts_unix: tsUnix }), sampleDurationS: 0.002 });
    };
    const first = valueOf(text, "stb_netacct_last_sample_timestamp_seconds");
    await at(19_999, 1_800_000_000);
    written(first); // not yet: node-exporter reads it every 15 s or so
    await at(20_000, 1_800_000_001);
    written(1_800_000_001);
    await at(25_000, 1_800_000_002);
    written(1_800_000_001);
    assertEquals(
      [...Deno.readDirSync(`${dir}/node-exporter`)].map((e) => e.name),
      ["stb_netacct.prom"],
      "only the .prom file, no temp files",
    );
    await sink.close();
    assertThrows(() => Deno.statSync(path), Deno.errors.NotFound);
    await sink.close(); // safe twice
    assertMatch(logs.join("\n"), /writing .*stb_netacct\.prom/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("textfile sink: close leaves a file it never wrote alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-metrics-unit-" });
  try {
    const path = `${dir}/stb_netacct.prom`;
    Deno.writeTextFileSync(path, "someone else's\n");
    const sink = textfileSink({ path, version: "0.1.0", log: () => {} });
    await sink.close();
    assertEquals(Deno.readTextFileSync(path), "someone else's\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("listen sink: /metrics after the first sample, 404 elsewhere, closed on close", async () => {
  const logs: string[] = [];
  const sink = listenSink({ hostname: "127.0.0.1", port: 0 }, {
    version: "0.1.0",
    log: (m) => logs.push(m),
  });
  const base = `http://127.0.0.1:${sink.port}`;
  try {
    let r = await fetch(`${base}/metrics`);
    assertEquals(r.status, 503, "before the first sample");
    await r.body?.cancel();
    await sink.publish({ counters: sample(), sampleDurationS: 0.003 });
    r = await fetch(`${base}/metrics`);
    assertEquals(r.status, 200);
    assertEquals(r.headers.get("content-type"), METRICS_CONTENT_TYPE);
    const text = await r.text();
    assertEquals(text, renderMetrics(sample(), { version: "0.1.0", sampleDurationS: 0.003 }));
    const pt = await promtool(text);
    assertEquals(pt.code, 0, pt.output);
    r = await fetch(`${base}/`);
    assertEquals(r.status, 404);
    await r.body?.cancel();
    r = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    assertEquals(r.status, 405);
    await r.body?.cancel();
    assertMatch(logs.join("\n"), /serving http:\/\/127\.0\.0\.1:\d+\/metrics/);
  } finally {
    await sink.close();
  }
  let refused = false;
  try {
    await fetch(`${base}/metrics`);
  } catch {
    refused = true;
  }
  assert(refused, "still serving after close");
});

/** Opens a connection and sends `text`; resolves when the server closes it (ms after open). */
async function heldFor(
  port: number,
  text: string,
): Promise<{ conn: Deno.Conn; closed: Promise<number> }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = performance.now();
  await conn.write(new TextEncoder().encode(text));
  const closed = (async () => {
    const buf = new Uint8Array(4096);
    // Given up on (and counted as held forever) after 5 s, so a server that never drops
    // it fails the test instead of hanging it.
    const giveUp = setTimeout(() => conn.close(), 5000);
    try {
      while ((await conn.read(buf)) !== null) { /* an answer, then the close */ }
    } catch {
      return Infinity;
    } finally {
      clearTimeout(giveUp);
    }
    return performance.now() - t0;
  })();
  return { conn, closed };
}

Deno.test("listen sink: slow clients are dropped after the timeout, beyond the cap at once; big heads 431", async () => {
  const limits = { timeoutMs: 600, maxConnections: 16, maxRequestBytes: 1024 };
  const sink = listenSink({ hostname: "127.0.0.1", port: 0 }, {
    version: "0",
    log: () => {},
    limits,
  });
  const conns: Deno.Conn[] = [];
  try {
    await sink.publish({ counters: sample(), sampleDurationS: 0.001 });
    // 200 clients that send half a request and wait.
    const slow = [];
    for (let i = 0; i < 200; i++) {
      const c = await heldFor(sink.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
      conns.push(c.conn);
      slow.push(c.closed);
    }
    const times = await Promise.all(slow);
    const held = times.filter((ms) => ms >= limits.timeoutMs - 50);
    assertEquals(held.length, limits.maxConnections, `held: ${held.map(Math.round)}`);
    assert(
      held.every((ms) => ms < limits.timeoutMs + 1000),
      `dropped late: ${held.map(Math.round)}`,
    );
    // Once they are gone, a scrape is answered.
    const r = await fetch(`http://127.0.0.1:${sink.port}/metrics`);
    assertEquals(r.status, 200);
    assertStringIncludes(await r.text(), "stb_netacct_bytes_total");
    // A head over the cap is refused, not buffered.
    const big = await fetch(`http://127.0.0.1:${sink.port}/metrics`, {
      headers: { "x-pad": "a".repeat(2000) },
    });
    assertEquals(big.status, 431);
    await big.body?.cancel();
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await sink.close();
  }
});

Deno.test("listen sink: a taken port is an error naming the address and the fix", () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (holder.addr as Deno.NetAddr).port;
    const e = assertThrows(() =>
      listenSink({ hostname: "127.0.0.1", port }, { version: "0", log: () => {} })
    );
    assertStringIncludes(e.message, `127.0.0.1:${port}: the address is in use`);
    assertStringIncludes(e.message, "--metrics-listen");
  } finally {
    holder.close();
  }
});

Deno.test("createSinks follows the prometheus config key, and fails whole", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-metrics-unit-" });
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const taken = (holder.addr as Deno.NetAddr).port;
  try {
    const sinksFor = (prometheus: unknown) =>
      createSinks({ config: validateConfig({ prometheus }, "t"), log: () => {} });
    assertEquals((await sinksFor({ textfile: null })).length, 0);
    const dflt = await sinksFor(undefined);
    assertEquals(dflt.map((s) => s.name), [
      "prometheus textfile /var/lib/prometheus/node-exporter/stb_netacct.prom",
    ]);
    const both = await sinksFor({ textfile: `${dir}/x.prom`, listen: `127.0.0.1:${taken}` })
      .then(() => null, (e: Error) => e);
    assert(both !== null, "a taken port must fail createSinks");
    assertStringIncludes(both.message, `127.0.0.1:${taken}: the address is in use`);
    holder.close();
    const ok = await sinksFor({ textfile: `${dir}/x.prom`, listen: `127.0.0.1:${taken}` });
    try {
      assertEquals(ok.map((s) => s.name), [
        `prometheus textfile ${dir}/x.prom`,
        `prometheus listener 127.0.0.1:${taken}`,
      ]);
    } finally {
      for (const s of ok) await s.close();
    }
  } finally {
    try {
      holder.close();
    } catch { /* closed above */ }
    await Deno.remove(dir, { recursive: true });
  }
});
