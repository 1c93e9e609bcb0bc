import { stringifyExact } from "../lib/exact_json.ts";
/**
 * End-to-end: `run` publishes Prometheus metrics beside counters.json, as a textfile for
 * node-exporter and on `--metrics-listen`, both accepted by `promtool check metrics` and
 * carrying exactly the totals counters.json carries. Run as root:
 *
 *   deno test -A tests/metrics_test.ts      (STB_NETACCT_BIN=./stb-netacct to test the build)
 *
 * promtool comes with the Debian package `prometheus`.
 */

import {
  assert,
  assertEquals,
  cliArgv,
  command,
  DENO,
  flowsTo,
  Lab,
  nftTables,
  present,
  run,
  type Sample,
  sleep,
} from "./harness/mod.ts";

const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
const PORT = 9877;
const SMALL = { tcpUp: 1_000_000, tcpDown: 2_000_000, udpCount: 100, udpSize: 1000 };

async function promtool(text: string): Promise<{ code: number; output: string }> {
  const r = await run(["promtool", "check", "metrics"], { stdin: text, allowFail: true })
    .catch((e) => {
      throw new Error("promtool is missing: apt-get install prometheus", { cause: e });
    });
  return { code: r.code, output: (r.stdout + r.stderr).trim() };
}

/** GET inside the client netns (where `run` listens on its loopback); `ms`: the request alone. */
async function httpGet(
  env: Lab,
  url: string,
): Promise<{ status: number; body: string; ms: number }> {
  const code =
    `const t0 = performance.now(); try { const r = await fetch(${JSON.stringify(url)}); ` +
    `const body = await r.text(); ` +
    `console.log(JSON.stringify({ status: r.status, body, ms: performance.now() - t0 })); } ` +
    `catch (e) { console.log(JSON.stringify({ status: 0, body: String(e), ms: 0 })); }`;
  return JSON.parse((await evalInClient(env, code)).stdout);
}

/** `deno eval CODE ARGS...` inside the client netns. */
function evalInClient(env: Lab, code: string, args: string[] = []) {
  return run([
    "nsenter",
    `--net=${env.clientNetns}`,
    "--",
    DENO,
    "eval",
    "--no-config",
    code,
    ...args,
  ]);
}

/** Series name+labels -> value, from an exposition. */
function parseExposition(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

/** `laterS`: how much newer than `s` the exposition's sample may be (totals must not move). */
function assertSameTotals(text: string, s: Sample, what: string, laterS = 2): void {
  const m = parseExposition(text);
  for (const [name, sv] of Object.entries(s.services)) {
    for (const dir of ["rx", "tx"] as const) {
      const labels = `{service="${name}",direction="${dir}"}`;
      assertEquals(
        m.get(`stb_netacct_bytes_total${labels}`),
        sv[`${dir}_bytes_total`],
        `${what} ${name} ${dir} bytes`,
      );
      assertEquals(
        m.get(`stb_netacct_packets_total${labels}`),
        sv[`${dir}_packets_total`],
        `${what} ${name} ${dir} packets`,
      );
    }
    assertEquals(
      m.get(`stb_netacct_service_present{service="${name}"}`),
      sv.present ? 1 : 0,
      `${what} ${name} present`,
    );
  }
  const sum = (prefix: string) =>
    [...m].filter(([k]) => k.startsWith(prefix)).reduce((t, [, v]) => t + v, 0);
  assertEquals(
    sum("stb_netacct_bytes_total{"),
    s.rx_bytes_total + s.tx_bytes_total,
    `${what} byte total`,
  );
  assert(
    m.has(`stb_netacct_build_info{version="0.1.0",backend="${s.backend}"}`) ||
      [...m.keys()].some((k) =>
        k.startsWith("stb_netacct_build_info{") && k.includes(`backend="${s.backend}"`)
      ),
    `${what} build_info`,
  );
  const ts = m.get("stb_netacct_last_sample_timestamp_seconds")!;
  assert(
    ts > s.ts_unix - 2 && ts < s.ts_unix + laterS,
    `${what} last sample ${ts} vs counters.json ${s.ts_unix}`,
  );
  assertEquals(m.get("stb_netacct_events_dropped_total"), 0, `${what} events dropped`);
  assertEquals(
    m.get("stb_netacct_ebpf_attach_failures_total"),
    (s as Sample & { ebpf_attach_failures_total?: number }).ebpf_attach_failures_total,
    `${what} ebpf attach failures`,
  );
  const dur = m.get("stb_netacct_sample_duration_seconds")!;
  assert(dur > 0 && dur < 0.5, `${what} sample duration ${dur}`);
}

async function readSample(path: string): Promise<Sample | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch {
    return null;
  }
}

async function sampleAfter(path: string, since = Date.now() / 1000): Promise<Sample> {
  for (let i = 0; i < 300; i++) {
    const s = await readSample(path);
    if (s && s.ts_unix > since) return s;
    await sleep(50);
  }
  throw new Error(`no sample in ${path} after ${since}`);
}

function startRunWith(env: Lab, args: string[]) {
  const argv = [...env.layout.wrap(env.clientNetns), ...cliArgv(["run", ...args])];
  return command(argv, {
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

Deno.test({
  name: "metrics: textfile and --metrics-listen pass promtool and match counters.json",
  ...TEST_OPTIONS,
  async fn() {
    const env = await Lab.open("hybrid");
    const dir = await Deno.makeTempDir({ prefix: "stb-metrics-e2e-" });
    let child: Deno.ChildProcess | null = null;
    try {
      env.cgroups.create("server");
      env.cgroups.create("host-agent");
      Deno.mkdirSync(`${dir}/node-exporter`);
      const prom = `${dir}/node-exporter/stb_netacct.prom`;
      const output = `${dir}/counters.json`;
      const config = `${dir}/config.json`;
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          services: env.cgroups.configServices(),
          // Long enough that a scrape answered only at the next sample would show.
          interval_s: 2,
          prometheus: { textfile: prom },
        }),
      );
      const started = Date.now() / 1000;
      child = startRunWith(env, [
        "--backend",
        "nft",
        "--config",
        config,
        "--output",
        output,
        "--metrics-listen",
        `127.0.0.1:${PORT}`,
      ]); // deno-fmt-ignore
      await sampleAfter(output, started);
      await env.traffic("server", flowsTo("internet4", SMALL));
      await sampleAfter(output);
      const s = await sampleAfter(output);
      assert(
        present(s.services.server, "server").rx_bytes_total > SMALL.tcpDown,
        `traffic counted: ${JSON.stringify(s.services)}`,
      );

      const http = await httpGet(env, `http://127.0.0.1:${PORT}/metrics`);
      assertEquals(http.status, 200, `/metrics status: ${http.body}`);
      // The textfile is rewritten every 10 s, not every sample: wait for one from s or later.
      let file = "";
      for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(250)) {
        file = await Deno.readTextFile(prom);
        const ts = parseExposition(file).get("stb_netacct_last_sample_timestamp_seconds") ?? 0;
        if (ts >= s.ts_unix) break;
      }
      assertEquals((Deno.statSync(prom).mode! & 0o777).toString(8), "644", ".prom mode");
      for (const [what, text] of [["textfile", file], ["/metrics", http.body]] as const) {
        const pt = await promtool(text);
        assertEquals(pt.code, 0, `promtool on ${what}: ${pt.output}`);
        assertEquals(pt.output, "", `promtool findings on ${what}`);
        assertSameTotals(text, s, what, what === "textfile" ? 12 : 2);
      }
      assertEquals((await httpGet(env, `http://127.0.0.1:${PORT}/`)).status, 404, "/ status");
      // Scrapes are answered while run sleeps between samples, not when it next wakes.
      for (let i = 0; i < 3; i++) {
        const { status, ms } = await httpGet(env, `http://127.0.0.1:${PORT}/metrics`);
        assert(status === 200 && ms < 500, `scrape ${i}: status ${status} after ${ms} ms`);
      }
      console.log(`counters.json server: ${stringifyExact(s.services.server)}\n${file}`);

      child.kill("SIGTERM");
      const st = await child.output();
      child = null;
      assertEquals(st.code, 0, `run exit code: ${new TextDecoder().decode(st.stderr)}`);
      let gone = false;
      try {
        Deno.statSync(prom);
      } catch {
        gone = true;
      }
      assert(gone, "the .prom file outlived run (node-exporter would serve stale totals)");
      assertEquals(
        [...Deno.readDirSync(`${dir}/node-exporter`)].map((e) => e.name),
        [],
        "files left beside the .prom",
      );
      assertEquals(
        (await httpGet(env, `http://127.0.0.1:${PORT}/metrics`)).status,
        0,
        "still serving",
      );
    } finally {
      if (child) {
        child.kill("SIGKILL");
        await child.output();
      }
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * Inside the client netns: opens `count` connections to `port`, sends each half a request,
 * and prints when the server closed each one (ms after it was opened).
 */
const SLOW_CLIENTS = `
const [port, count] = Deno.args.map(Number);
const half = new TextEncoder().encode("GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n");
const closed = [];
for (let i = 0; i < count; i++) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = performance.now();
  await conn.write(half);
  closed.push((async () => {
    const buf = new Uint8Array(4096);
    // Held past 10 s: given up on and reported as -1, so a server that never drops it fails.
    const giveUp = setTimeout(() => conn.close(), 10000);
    try { while ((await conn.read(buf)) !== null) {} } catch { return -1; }
    clearTimeout(giveUp);
    conn.close();
    return performance.now() - t0;
  })());
}
console.log(JSON.stringify(await Promise.all(closed)));
`;

Deno.test({
  name: "metrics: 200 slow clients are dropped after the timeout while samples go on",
  ...TEST_OPTIONS,
  async fn() {
    const env = await Lab.open("hybrid");
    const dir = await Deno.makeTempDir({ prefix: "stb-metrics-slow-" });
    let child: Deno.ChildProcess | null = null;
    try {
      env.cgroups.create("server");
      const output = `${dir}/counters.json`;
      const config = `${dir}/config.json`;
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          services: env.cgroups.configServices(),
          interval_s: 0.5,
          prometheus: { textfile: null, listen: `127.0.0.1:${PORT}` },
        }),
      );
      const started = Date.now() / 1000;
      child = startRunWith(env, ["--backend", "nft", "--config", config, "--output", output]);
      await sampleAfter(output, started);
      const t0 = Date.now() / 1000;
      const attack = evalInClient(env, SLOW_CLIENTS, [String(PORT), "200"]);
      // counters.json goes on every interval while the clients are held.
      const seen = new Set<number>();
      while (Date.now() / 1000 < t0 + 4) {
        const s = await readSample(output);
        if (s) seen.add(s.ts_unix);
        await sleep(100);
      }
      const closedMs: number[] = JSON.parse((await attack).stdout);
      assert(seen.size >= 6, `samples while held: ${seen.size}`);
      assertEquals(closedMs.length, 200);
      const held = closedMs.filter((ms) => ms >= 1000 || ms < 0);
      // At most the cap is held, and each only until the timeout.
      assert(held.length > 0 && held.length <= 16, `held: ${held.length}`);
      assert(held.every((ms) => ms > 0 && ms < 5000 + 2000), `held until: ${held}`);
      const http = await httpGet(env, `http://127.0.0.1:${PORT}/metrics`);
      assertEquals(http.status, 200, `a scrape after the attack: ${http.body}`);
      const after = await sampleAfter(output);
      assert(after.ts_unix > t0, "still sampling");
      console.log(
        `held ${held.length} of 200, closed after ${Math.round(Math.min(...held))}-` +
          `${Math.round(Math.max(...held))} ms; ${seen.size} samples meanwhile`,
      );
      child.kill("SIGTERM");
      const st = await child.output();
      child = null;
      assertEquals(st.code, 0, `run exit code: ${new TextDecoder().decode(st.stderr)}`);
    } finally {
      if (child) {
        child.kill("SIGKILL");
        await child.output();
      }
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "metrics: bad listen values exit 2, a taken port exits 1 leaving nothing installed",
  ...TEST_OPTIONS,
  async fn() {
    const badValues = [
      "0.0.0.0:9877",
      "[::]:9877",
      "[::ffff:0.0.0.0]:9877",
      "127.0.0.1:99999",
      "example.com:9877",
      "9877",
    ];
    for (const v of badValues) {
      const r = await run(cliArgv(["run", "--metrics-listen", v]), { allowFail: true });
      assertEquals(r.code, 2, `--metrics-listen ${v}: ${r.stderr}`);
      assert(r.stderr.includes(`'${v}' is invalid`), r.stderr);
    }
    const env = await Lab.open("hybrid");
    const dir = await Deno.makeTempDir({ prefix: "stb-metrics-e2e-" });
    let holder: Deno.ChildProcess | null = null;
    try {
      env.cgroups.create("server");
      const config = `${dir}/config.json`;
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          services: env.cgroups.configServices(),
          prometheus: { textfile: null, listen: "0.0.0.0:1" },
        }),
      );
      const bad = await run(cliArgv(["run", "--config", config]), { allowFail: true });
      assertEquals(bad.code, 2, `config prometheus.listen wildcard: ${bad.stderr}`);
      assert(bad.stderr.includes('"prometheus.listen" is "0.0.0.0:1"'), bad.stderr);
      // The IPv4 wildcard in IPv6 clothes, and a public address without the config's consent.
      const refusals: [string, string][] = [
        ["[::ffff:0.0.0.0]:1", "listens on every network of this host"],
        ["192.0.2.1:1", '"prometheus.allow_remote": true'],
      ];
      for (const [listen, fix] of refusals) {
        await Deno.writeTextFile(
          config,
          JSON.stringify({
            services: env.cgroups.configServices(),
            prometheus: { textfile: null, listen },
          }),
        );
        const r = await run(cliArgv(["run", "--config", config]), { allowFail: true });
        assertEquals(r.code, 2, `config prometheus.listen ${listen}: ${r.stderr}`);
        assert(r.stderr.includes(`"prometheus.listen" is "${listen}"`), r.stderr);
        assert(r.stderr.includes(fix), r.stderr);
        assert(r.stderr.includes('"127.0.0.1:') || r.stderr.includes("[::1]"), r.stderr);
      }
      await Deno.writeTextFile(
        config,
        JSON.stringify({ services: env.cgroups.configServices(), prometheus: { textfile: null } }),
      );
      const flag = await run(
        cliArgv(["run", "--config", config, "--metrics-listen", "192.0.2.1:9"]),
        {
          allowFail: true,
        },
      );
      assertEquals(flag.code, 2, flag.stderr);
      assert(flag.stderr.includes('--metrics-listen is "192.0.2.1:9"'), flag.stderr);

      await Deno.writeTextFile(
        config,
        JSON.stringify({
          services: env.cgroups.configServices(),
          prometheus: { textfile: null },
        }),
      );
      const code = `const l = Deno.listen({ hostname: "127.0.0.1", port: ${PORT} }); ` +
        `console.log("ready"); for await (const c of l) c.close();`;
      holder = new Deno.Command("nsenter", {
        args: [`--net=${env.clientNetns}`, "--", DENO, "eval", "--no-config", code],
        stdout: "piped",
        stdin: "null",
      }).spawn();
      const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
      assert((await reader.read()).value?.includes("ready"), "port holder did not start");
      reader.releaseLock();
      const child = startRunWith(env, [
        "--backend",
        "nft",
        "--config",
        config,
        "--output",
        `${dir}/counters.json`,
        "--metrics-listen",
        `127.0.0.1:${PORT}`,
      ]); // deno-fmt-ignore
      // A run that wrongly starts anyway must not hang the suite.
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      const out = await child.output();
      clearTimeout(timer);
      const stderr = new TextDecoder().decode(out.stderr);
      assertEquals(out.code, 1, `run with a taken port: ${stderr}`);
      assert(stderr.includes(`127.0.0.1:${PORT}: the address is in use`), stderr);
      assertEquals(await nftTables(env.clientNetns), [], "nft table left after the failed start");
    } finally {
      if (holder) {
        holder.kill("SIGKILL");
        await holder.status;
        holder.stdout.cancel().catch(() => {});
      }
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
