/**
 * `doctor` and `--backend auto` as a user meets them, on the real host: as root every backend
 * is probed (and the probe leaves nothing behind), unprivileged it says what it could not
 * check, and `auto` falls back with its reason published when ebpf is not allowed.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../lib/test_assert.ts";
import { cliArgv, command, run, sleep } from "./harness/mod.ts";
import { findCgroup2Mount } from "../lib/cgroup.ts";

const NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"];
/** Root without the BPF capabilities: what a host that forbids BPF looks like to us. */
const NO_BPF = ["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin"];

async function doctor(prefix: string[], args: string[]) {
  return await run([...prefix, ...cliArgv(["doctor", ...args])], {
    allowFail: true,
    env: { NO_COLOR: "1" },
  });
}

async function hostRules(): Promise<string> {
  const nft = (await run(["nft", "list", "ruleset"], { allowFail: true })).stdout;
  const ipt = (await run(["iptables-save"], { allowFail: true })).stdout.replace(/^#.*$/gm, "");
  const bpf = (await run(["bpftool", "cgroup", "show", findCgroup2Mount().mountPoint], {
    allowFail: true,
  })).stdout;
  return nft + ipt + bpf;
}

Deno.test("doctor as root: every backend usable, host unchanged, JSON for scripts", async () => {
  const before = await hostRules();
  const text = await doctor([], []);
  assertEquals(text.code, 0, text.stdout + text.stderr);
  for (
    const word of [
      "kernel",
      "cgroup2",
      "libbpf",
      "nft",
      "iptables",
      "Verdict: the auto backend is usable",
    ]
  ) {
    assertStringIncludes(text.stdout, word);
  }
  for (const b of ["ebpf", "nft", "iptables"]) {
    assertMatch(text.stdout, new RegExp(`\\[ok  \\] ${b}\\s+usable`));
  }
  // What each backend's byte counts are: the wire's for ebpf by default; nft and iptables
  // say by how much they fall short on bulk TCP.
  const bytesLines = text.stdout.split("\n").filter((l) => /^\s+bytes: /.test(l));
  assertEquals(bytesLines.length, 3, text.stdout);
  assertStringIncludes(bytesLines[0] ?? "", "as the wire carries them");
  for (const l of bytesLines.slice(1)) assertMatch(l, /3\.4% \(IPv4\) to 4\.7% \(IPv6\) under/);
  const json = await doctor([], ["--json", "--backend", "nft"]);
  assertEquals(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout);
  assertEquals(report.configured_backend, "nft");
  assertEquals(report.ok, true);
  assertEquals(report.services.length, 3);
  assertEquals(report.cgroup2.mount_point, findCgroup2Mount().mountPoint);
  // The verifier's work per program: every program of the three objects, counted.
  const verified = (report.verifier as { object: string; program: string; insns: number }[])
    .map((v) => `${v.object}/${v.program}`).sort();
  assertEquals(verified, [
    "calibrate/calibrate_egress",
    "events/events_connect4",
    "events/events_connect6",
    "events/events_sendmsg4",
    "events/events_sendmsg6",
    "netacct/netacct_egress",
    "netacct/netacct_ingress",
  ]);
  for (const v of report.verifier) {
    assert(v.insns > 0 && v.insns < 1_000_000, `${v.object}/${v.program}: ${v.insns}`);
  }
  assertMatch(text.stdout, /verifier\s+netacct\/netacct_ingress: [\d,]+ of 1,000,000 instructions/);
  assertEquals(await hostRules(), before);
});

Deno.test("doctor --json as root: every backend usable, and why not when one is not", async () => {
  const r = await doctor([], ["--json"]);
  let report;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`doctor --json printed no JSON (exit ${r.code}):\n${r.stdout}${r.stderr}`);
  }
  const verdicts = (report.backends as { name: string; verdict: string; reason?: string }[])
    .map((b) => `${b.name}: ${b.verdict}${b.reason ? ` because ${b.reason}` : ""}`);
  assertEquals(verdicts, ["ebpf: usable", "nft: usable", "iptables: usable"]);
  assertEquals(report.events.verdict, "usable", report.events.reason);
  assertEquals(r.code, 0, r.stderr);
});

Deno.test("doctor unprivileged says what it could not check and exits 3", async () => {
  const r = await doctor(NOBODY, []);
  assertEquals(r.code, 3, r.stdout + r.stderr);
  assertMatch(r.stdout, /\[\?\? {2}\] ebpf\s+not checked because probing needs CAP_BPF/);
  assertStringIncludes(r.stdout, "sudo stb-netacct doctor");
});

Deno.test("doctor without BPF capabilities: ebpf not usable, nft usable, exit by chosen backend", async () => {
  const ebpf = await doctor(NO_BPF, ["--backend", "ebpf"]);
  assertEquals(ebpf.code, 3, ebpf.stdout);
  const nft = await doctor(NO_BPF, ["--backend", "nft"]);
  assertEquals(nft.code, 0, nft.stdout);
});

Deno.test("doctor names an invalid config and fails", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-doctor-" });
  try {
    await Deno.writeTextFile(`${dir}/c.json`, '{"services": {"x": "no-slash"}}');
    const r = await doctor([], ["--config", `${dir}/c.json`]);
    assertEquals(r.code, 1, r.stdout);
    assertStringIncludes(r.stdout, "INVALID");
    assertStringIncludes(r.stdout, '"services.x"');
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("auto falls back to nft when BPF is not allowed and says why in counters.json", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-auto-" });
  // A throwaway network namespace: the nft table lives and dies with it.
  const argv = [
    "unshare",
    "--net",
    ...NO_BPF,
    ...cliArgv([
      "run",
      "--backend",
      "auto",
      "--output",
      `${dir}/out/counters.json`,
      "--interval",
      "0.2",
    ]),
  ];
  const child = command(argv, {
    stderr: "piped",
    stdout: "null",
  })
    .spawn();
  try {
    let sample: Record<string, unknown> | null = null;
    for (let i = 0; i < 100 && !sample; i++) {
      await sleep(100);
      try {
        sample = JSON.parse(await Deno.readTextFile(`${dir}/out/counters.json`));
      } catch { /* not yet */ }
    }
    assert(sample, "auto run never published");
    assertEquals(sample.backend, "nft");
    assertMatch(String(sample.backend_fallback_reason), /ebpf: needs CAP_BPF/);
  } finally {
    child.kill("SIGTERM");
    const out = await child.output();
    await Deno.remove(dir, { recursive: true });
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, stderr);
    assertStringIncludes(stderr, "fell back");
  }
});
