/**
 * `status` reading counters.json as untrusted input: 10,000 generated bad files through
 * its reader, verdict and report (never a throw, the reason always said), then the real
 * CLI on the nasty file kinds (directory, FIFO, huge, truncated, garbage, deeply nested):
 * it answers at once with a verdict exit code and a line saying what is wrong.
 * Seeded: FUZZ_SEED / FUZZ_N replay a run.
 */

import { assert, assertEquals, assertMatch } from "../lib/test_assert.ts";
import { fuzzSeed, gen } from "../lib/fuzz.ts";
import {
  type CounterFacts,
  formatStatus,
  judge,
  NO_SERVICE,
  type ServiceFacts,
} from "../install/status.ts";
import { hasControl, printable } from "../lib/text.ts";
import { CountersFileReader } from "../lib/contract.ts";
import { cliArgv, run } from "./harness/mod.ts";

const N = Number(Deno.env.get("FUZZ_N") ?? 10_000);
const GOOD = {
  schema: 1,
  backend: "ebpf",
  boot_id: "b",
  started_at: 1,
  rx_bytes_total: 10,
  tx_bytes_total: 20,
  rx_packets_total: 1,
  tx_packets_total: 2,
  ts_monotonic: 5,
  ts_unix: Date.now() / 1000,
  interval_s: 0.5,
  services: { s: { rx_bytes_total: 10, tx_bytes_total: 20, cgroup: "/x", present: true } },
}; // deno-fmt-ignore
const VALUES = [-1, NaN, null, "12", [], {}, 1e400, -0, 2 ** 60, true, "", { a: { b: [] } }];
const SERVICE: ServiceFacts = NO_SERVICE;

Deno.test(`status fuzz: ${N} bad counters files never crash the reader, verdict or report`, async () => {
  const seed = fuzzSeed();
  console.log(`status fuzz: seed ${seed} (FUZZ_SEED=${seed} replays), ${N} cases`);
  const g = gen(seed);
  const dir = await Deno.makeTempDir({ prefix: "stb-statusfuzz-" });
  const path = `${dir}/counters.json`;
  try {
    for (let i = 0; i < N; i++) {
      const base = JSON.stringify(GOOD);
      let text: string;
      switch (g.int(6)) {
        case 0:
          text = base.slice(0, g.int(base.length));
          break;
        case 1: {
          const o: Record<string, unknown> = structuredClone(GOOD);
          o[g.pick(Object.keys(GOOD))] = g.pick(VALUES);
          text = JSON.stringify(o) ?? "";
          break;
        }
        case 2:
          text = "[".repeat(1 + g.int(5000)) + "]".repeat(g.int(5000));
          break;
        case 3:
          text = Array.from({ length: g.int(200) }, () => String.fromCharCode(g.int(0x3000))).join(
            "",
          );
          break;
        case 4: {
          const at = g.int(base.length);
          text = base.slice(0, at) + g.pick(["{", "}", '"', ",", "\u0000", "NaN", "-"]) +
            base.slice(at);
          break;
        }
        default:
          text = base.replace(
            /"rx_bytes_total":10/,
            `"rx_bytes_total":${g.pick(["-5", "1e999", "NaN", "0.5", '"x"'])}`,
          );
      }
      await Deno.writeTextFile(path, text);
      const where = `case ${i} (seed ${seed}): ${JSON.stringify(text.slice(0, 120))}`;
      const r = await new CountersFileReader(path).read();
      const facts: CounterFacts = {
        path,
        kind: r.kind,
        reason: r.kind === "ok" ? null : r.reason,
        counters: r.kind === "ok" ? r.counters : null,
        clock: r.kind === "ok" ? "dated" : null,
        age_s: r.kind === "ok" ? 0 : null,
        ahead_s: null,
        watched_s: 1,
        changed: true,
        freshness: r.kind === "ok" ? "fresh" : null,
        sampler_pid: null,
        rates: null,
      }; // deno-fmt-ignore
      if (r.kind !== "ok") assert(r.reason.length > 3, `${where}: no reason`);
      const { verdict, fix, note } = judge(SERVICE, facts);
      const report = formatStatus({
        verdict,
        fix,
        note,
        exit_code: 0,
        service: SERVICE,
        counters: facts,
        config: { path: "/c", source: "built-in defaults", error: null },
        cgroups: {},
      }); // deno-fmt-ignore
      assert(report.includes("verdict"), `${where}: report without verdict`);
      if (r.kind !== "ok") {
        assert(report.includes(printable(r.reason)), `${where}: reason not shown`);
      }
      assert(!hasControl(report.replaceAll("\n", "")), `${where}: a control character`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("status on a directory, FIFO, huge, truncated, garbage or nested file: at once, saying why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-statusfuzz-" });
  try {
    const out = `${dir}/counters.json`;
    const cfg = `${dir}/config.json`;
    await Deno.writeTextFile(
      cfg,
      JSON.stringify({ output: out, services: { s: "/stb-statusfuzz/s" } }),
    );
    const kinds: [string, () => Promise<void>, RegExp][] = [
      ["directory", () => Deno.mkdir(out), /directory/i],
      ["FIFO", async () => void await run(["mkfifo", out]), /FIFO|pipe|not a regular/i],
      ["huge", () => Deno.writeTextFile(out, " ".repeat(3 << 20)), /bytes|big|limit/i],
      ["truncated", () => Deno.writeTextFile(out, JSON.stringify(GOOD).slice(0, 40)), /JSON/],
      ["garbage", () => Deno.writeTextFile(out, "\u0000\u0001garbage"), /JSON/],
      ["nested", () => Deno.writeTextFile(out, "[".repeat(100000)), /JSON/],
      [
        "negative",
        () => Deno.writeTextFile(out, JSON.stringify({ ...GOOD, rx_bytes_total: -1 })),
        /rx_bytes_total/,
      ],
    ]; // deno-fmt-ignore
    for (const [what, make, want] of kinds) {
      await Deno.remove(out, { recursive: true }).catch(() => {});
      await make();
      const t0 = Date.now();
      const r = await run(cliArgv(["status", "--config", cfg]), { allowFail: true, env: { NO_COLOR: "1" } });
      assert(Date.now() - t0 < 8000, `${what}: status took ${Date.now() - t0} ms`);
      // Each is a file that is there but is no counters file: "malformed" (exit 6).
      assertEquals(r.code, 6, `${what}: exit ${r.code}: ${r.stdout}${r.stderr}`);
      assertMatch(r.stdout, /^verdict {3}malformed: /m, what);
      assertMatch(r.stdout, /^counters .*$/m, `${what}: counters line`);
      assertMatch(r.stdout.split("\n").find((l) => l.startsWith("counters")) ?? "", want, what);
      assertEquals(r.stderr.includes("Uncaught"), false, `${what}: crashed: ${r.stderr}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
