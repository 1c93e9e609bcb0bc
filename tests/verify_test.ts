/**
 * End-to-end: `verify` against a real `run` in the test topology. The "external URL" is an
 * HTTP server on the internet peer (198.51.100.2, a documentation address that exists only
 * inside the test's namespaces). Run as root:
 *
 *   deno test -A tests/verify_test.ts       (STB_NETACCT_BIN=./stb-netacct to test the build)
 *
 * verify must pass on a correct setup, contact nothing without --external-url, leave no
 * cgroup, probe or namespace behind, and fail naming the check when its config points at a
 * cgroup the sampler does not count. With ebpf its boundary probe must also catch a sampler
 * whose exclusions lack CGNAT (cgnat-ignored fails, and says the config lacks it); with nft
 * the boundary checks are skipped with the reason.
 */

import {
  assert,
  assertEquals,
  cliArgv,
  countedDelta,
  DENO,
  Lab,
  type LayoutName,
  REMOTES,
  run,
  type RunningCli,
  type RunResult,
  startRun,
} from "./harness/mod.ts";
import { DEFAULT_EXCLUDE } from "../lib/cidr.ts";
import { validateConfig } from "../lib/config.ts";

const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
const HTTP_PORT = 8089;
const BLOB_BYTES = 4_000_000;
const BLOB_URL = `http://${REMOTES.internet4}:${HTTP_PORT}/blob`;

/** A plain HTTP server in the peer netns serving BLOB_BYTES at /blob. */
async function startHttpPeer(netnsPath: string): Promise<() => Promise<void>> {
  const code = `
    const body = new Uint8Array(${BLOB_BYTES}).fill(0x61);
    Deno.serve({ hostname: "::", port: ${HTTP_PORT}, onListen() { console.log("ready"); } },
      (req) => new URL(req.url).pathname === "/blob"
        ? new Response(body)
        : new Response("not here", { status: 404 }));`;
  const child = new Deno.Command("nsenter", {
    args: [`--net=${netnsPath}`, "--", DENO, "eval", "--no-config", code],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  if (!first.value?.includes("ready")) {
    await stop();
    throw new Error("HTTP server on the peer did not start");
  }
  return stop;
}

/** Processes still running a verify probe (there must be none after verify exits). */
function probeProcesses(): string[] {
  const found: string[] = [];
  for (const p of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(p.name)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${p.name}/cmdline`).split("\0").join(" ");
      if (cmd.includes("verify-probe")) found.push(`${p.name}: ${cmd}`);
    } catch { /* exited */ }
  }
  return found;
}

/** Child cgroups verify made below the services (there must be none after it exits). */
function probeCgroups(env: Lab): string[] {
  const found: string[] = [];
  for (const name of ["host-agent", "server", "shell"]) {
    if (!env.cgroups.exists(name)) continue;
    for (const e of Deno.readDirSync(env.cgroups.dir(name))) {
      if (e.isDirectory && e.name.startsWith("stb-netacct-verify-")) found.push(e.name);
    }
  }
  return found;
}

/** Links verify's boundary probe names (they live in its own namespaces, never here). */
async function boundaryLinksIn(netnsPath: string): Promise<string[]> {
  const r = await run(["nsenter", `--net=${netnsPath}`, "--", "ip", "-j", "link", "show"]);
  return (JSON.parse(r.stdout) as { ifname: string }[]).map((l) => l.ifname)
    .filter((n) => /^(stbv|tailscale)/.test(n));
}

function netnsNames(): string[] {
  try {
    return [...Deno.readDirSync("/run/netns")].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

function verdicts(out: string): Record<string, string> {
  const v: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const [, verdict, check] = /^(PASS|FAIL|SKIP)\s+(\S+)/.exec(line) ?? [];
    if (verdict && check) v[check] = verdict;
  }
  return v;
}

async function verify(env: Lab, args: string[], prefix: string[] = []): Promise<RunResult> {
  const netns0 = netnsNames();
  const links0 = await boundaryLinksIn(env.clientNetns);
  const t0 = Date.now();
  const argv = [...env.layout.wrap(env.clientNetns), ...prefix, ...cliArgv(["verify", ...args])];
  const r = await run(argv, { allowFail: true });
  console.log(`verify ${args.join(" ")} (${Date.now() - t0} ms)\n${r.stdout}${r.stderr}`);
  assertEquals(probeProcesses(), [], "probe processes left running (they hold its namespaces)");
  assertEquals(probeCgroups(env), [], "probe cgroups left behind");
  assertEquals(netnsNames(), netns0, "verify added or removed a named netns");
  assertEquals(await boundaryLinksIn(env.clientNetns), links0, "verify changed the host's links");
  return r;
}

/**
 * verify interrupted by SIGINT (Ctrl-C) once its boundary probe is wired and sending: it
 * must stop, say so, exit 1 and leave nothing (checked as after any verify).
 */
async function interruptedVerify(env: Lab, args: string[]): Promise<void> {
  const netns0 = netnsNames();
  const argv = [...env.layout.wrap(env.clientNetns), ...cliArgv(["verify", ...args])];
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const deadline = Date.now() + 60_000;
  while (!/^\S+\s+public4-counted/m.test(out) && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  assert(/public4-counted/.test(out), `verify never reached the boundary checks:\n${out}`);
  child.kill("SIGINT"); // nsenter and the launcher exec: this is verify itself
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const status = await child.status;
  const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  console.log(`verify interrupted:\n${out}${stderr}`);
  assertEquals(status.code, 1, "exit code after SIGINT");
  assert(/interrupted; cleaning up/.test(out), "verify says it was interrupted");
  assertEquals(probeProcesses(), [], "probe processes left running after SIGINT");
  assertEquals(probeCgroups(env), [], "probe cgroups left behind after SIGINT");
  assertEquals(netnsNames(), netns0, "named netns changed after SIGINT");
  assertEquals(await boundaryLinksIn(env.clientNetns), [], "boundary links after SIGINT");
}

/**
 * verify killed (SIGKILL: no cleanup of its own) once its boundary probe is wired: its
 * probes exit as their stdin closes, taking their namespaces and veths; only the empty probe
 * cgroup stays, for the next verify to remove.
 */
async function killedVerify(env: Lab, args: string[]): Promise<void> {
  const argv = [...env.layout.wrap(env.clientNetns), ...cliArgv(["verify", ...args])];
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let out = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  while (!/^\S+\s+public4-counted/m.test(out)) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  child.kill("SIGKILL");
  await child.status;
  reader.cancel().catch(() => {});
  assert(/public4-counted/.test(out), `verify never reached the boundary checks:\n${out}`);
  for (let i = 0; probeProcesses().length > 0 && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assertEquals(probeProcesses(), [], "probes outlived a killed verify by 10 s");
  assertEquals(await boundaryLinksIn(env.clientNetns), [], "boundary links after SIGKILL");
  assertEquals(probeCgroups(env).length, 1, "the killed verify's probe cgroup");
}

const BOUNDARY_PASS = {
  "public4-counted": "PASS",
  "public6-counted": "PASS",
  "rfc1918-ignored": "PASS",
  "cgnat-ignored": "PASS",
  "ula-ignored": "PASS",
  "onlink6": "PASS",
  "vpn-interface": "PASS",
};
const BOUNDARY_SKIP = Object.fromEntries(Object.keys(BOUNDARY_PASS).map((k) => [k, "SKIP"]));

async function scenario(backend: string, layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  const dir = await Deno.makeTempDir({ prefix: "stb-verify-e2e-" });
  let stopHttp: (() => Promise<void>) | null = null;
  let cli: RunningCli | null = null;
  try {
    env.cgroups.create("host-agent");
    env.cgroups.create("server");
    stopHttp = await startHttpPeer(env.topology.peerNetnsPath);
    const config = `${dir}/config.json`;
    const output = `${dir}/counters.json`;
    const base = { interval_s: 0.5, prometheus: { textfile: null } };
    await Deno.writeTextFile(
      config,
      JSON.stringify({ services: env.cgroups.configServices(), ...base }),
    );
    cli = await startRun(env.layout, env.clientNetns, { backend, config, output });
    const common = ["--config", config, "--input", output, "--timeout", "30"];

    // Without --external-url nothing leaves the client namespace.
    const link0 = await env.topology.linkCounters();
    const local = await verify(env, common);
    const link1 = await env.topology.linkCounters();
    assertEquals(local.code, 0, "verify without --external-url exit code");
    const boundary = backend === "ebpf" ? BOUNDARY_PASS : BOUNDARY_SKIP;
    assertEquals(verdicts(local.stdout), {
      "sampler": "PASS",
      "loopback-ignored": "PASS",
      ...boundary,
      "outsider-ignored": "SKIP",
      "service-counted": "SKIP",
    });
    if (backend !== "ebpf") {
      assert(
        /^SKIP\s+public4-counted\s+the nft backend's rules see only/m.test(local.stdout),
        "the skip names the reason",
      );
    } else {
      // The on-link check uses the host's (here: the client netns's) on-link global prefix.
      assert(
        /^PASS\s+onlink6\s+must count \(internal_onlink is off.*2001:db8:1::\/64/m.test(
          local.stdout,
        ),
        "onlink6 probes the host's on-link 2001:db8:1::/64 and says why it must count",
      );
      assert(/^PASS\s+vpn-interface\s+.*over tailscale0/m.test(local.stdout), "vpn link named");
    }
    assert(
      link1.txBytes - link0.txBytes < 1024,
      `verify without --external-url sent ${link1.txBytes - link0.txBytes} bytes out of the host`,
    );

    // A killed verify leaves its empty probe cgroup, which the next one removes.
    if (backend === "ebpf") await killedVerify(env, common);

    // The full plan passes, and the counters moved by the one in-cgroup download only.
    const s0 = await cli.sampleAfter();
    const full = await verify(env, [...common, "--external-url", BLOB_URL]);
    const s1 = await cli.sampleAfter();
    assertEquals(full.code, 0, "verify --external-url exit code on a correct setup");
    assertEquals(verdicts(full.stdout), {
      "sampler": "PASS",
      "loopback-ignored": "PASS",
      ...boundary,
      "outsider-ignored": "PASS",
      "service-counted": "PASS",
    });
    const moved = countedDelta(s0, s1, "host-agent");
    // ebpf also counted the counted boundary exchanges (public4, public6, onlink6, vpn).
    const exchanged = backend === "ebpf" ? 4 * boundaryBytes(full.stdout) : 0;
    assert(
      moved.rx > BLOB_BYTES + exchanged && moved.rx < (BLOB_BYTES + exchanged) * 1.1,
      `host-agent rx moved ${moved.rx} B around verify: expected one ${BLOB_BYTES} B ` +
        `download and ${exchanged} B of boundary exchanges`,
    );

    // A config naming a cgroup the sampler does not count: the counted check fails by name.
    const wrongPath = `${env.cgroups.top}/wrong.slice/stb-next-host-agent@split.service`;
    Deno.mkdirSync(env.cgroups.mountPoint + wrongPath, { recursive: true });
    const wrongConfig = `${dir}/wrong.json`;
    await Deno.writeTextFile(
      wrongConfig,
      JSON.stringify({ services: { "host-agent": wrongPath }, ...base }),
    );
    const wrong = await verify(env, [
      "--config",
      wrongConfig,
      "--input",
      output,
      "--timeout",
      "30",
      "--external-url",
      BLOB_URL,
    ]);
    assertEquals(wrong.code, 1, "verify exit code with the wrong cgroup");
    assertEquals(verdicts(wrong.stdout)["service-counted"], "FAIL", "service-counted verdict");
    assert(
      /^FAIL\s+service-counted\s+nothing was counted/m.test(wrong.stdout),
      "the failure says nothing was counted",
    );
    assert(/counts "host-agent" at/.test(wrong.stdout), "the mismatch with counters.json");

    if (backend === "ebpf") {
      await interruptedVerify(env, common);

      // Without ip and unshare the boundary checks cannot be set up: they fail, saying why.
      // The PATH keeps only what the fallback launcher itself runs (dirname, readlink).
      const bare = await Deno.makeTempDir({ prefix: "stb-verify-path-" });
      let noTools: RunResult;
      try {
        for (const tool of ["dirname", "readlink"]) {
          Deno.symlinkSync(`/usr/bin/${tool}`, `${bare}/${tool}`);
        }
        noTools = await verify(env, common, ["env", `PATH=${bare}`]);
      } finally {
        Deno.removeSync(bare, { recursive: true });
      }
      assertEquals(noTools.code, 1, "verify exit code without ip/unshare");
      assert(
        /^FAIL\s+public4-counted\s+the boundary probe could not be set up: .*"ip".*iproute2/m
          .test(noTools.stdout),
        "the failure names the missing tool",
      );
      assertEquals(
        Object.entries(verdicts(noTools.stdout)).filter(([, x]) => x === "FAIL").length,
        7,
        "every boundary check fails, nothing else",
      );

      // The boundary probe catches the wrong cgroup too, without any download.
      const wrongLocal = await verify(env, [
        "--config",
        wrongConfig,
        "--input",
        output,
        "--timeout",
        "30",
      ]);
      assertEquals(wrongLocal.code, 1, "verify exit code with the wrong cgroup, no URL");
      assert(
        /^FAIL\s+public4-counted\s+must count .*nothing was counted/m.test(wrongLocal.stdout),
        "public4-counted fails saying nothing was counted",
      );
      assertEquals(verdicts(wrongLocal.stdout)["cgnat-ignored"], "PASS", "ignored still holds");
    }

    const stop = await cli.stop("SIGTERM");
    cli = null;
    assertEquals(stop.code, 0, `run exit code; stderr:\n${stop.stderr}`);
  } finally {
    await cli?.stop("SIGKILL");
    await stopHttp?.();
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * One verify against a sampler whose exclusions lack CGNAT: cgnat-ignored fails, saying the
 * config lacks it, and every other boundary check passes (short enough for the 6.1 lane).
 */
async function cgnatMutation(layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  const dir = await Deno.makeTempDir({ prefix: "stb-verify-e2e-" });
  let cli: RunningCli | null = null;
  try {
    env.cgroups.create("host-agent");
    // The host has a tailscale0 (the user's does): the probe's one takes its index.
    const tsIndex = await addDummy(env, "tailscale0");
    const noCgnat = `${dir}/no-cgnat.json`;
    const output = `${dir}/counters.json`;
    await Deno.writeTextFile(
      noCgnat,
      JSON.stringify({
        services: env.cgroups.configServices(),
        exclude: DEFAULT_EXCLUDE.filter((p) => p !== "100.64.0.0/10"),
        interval_s: 0.5,
        prometheus: { textfile: null },
      }),
    );
    cli = await startRun(env.layout, env.clientNetns, {
      backend: "ebpf",
      config: noCgnat,
      output,
    });
    const mutated = await verify(env, [
      "--config",
      noCgnat,
      "--input",
      output,
      "--timeout",
      "60",
    ]);
    assertEquals(mutated.code, 1, "verify exit code against a sampler counting CGNAT");
    assertEquals(verdicts(mutated.stdout), {
      "sampler": "PASS",
      "loopback-ignored": "PASS",
      ...BOUNDARY_PASS,
      "cgnat-ignored": "FAIL",
      "outsider-ignored": "SKIP",
      "service-counted": "SKIP",
    });
    assert(
      /^FAIL\s+cgnat-ignored\s+must not count .*counted \d+% of traffic that must not count.*do not cover CGNAT 100\.64\.0\.0\/10/m
        .test(mutated.stdout),
      "the failure says what was counted and that the config lacks CGNAT",
    );
    assert(
      new RegExp(
        `^PASS\\s+vpn-interface\\s+.*"tailscale0" \\(index ${tsIndex}, as this host's\\)`,
        "m",
      )
        .test(mutated.stdout),
      "the probe's tailscale0 has the host's index",
    );
    const stop = await cli.stop("SIGTERM");
    cli = null;
    assertEquals(stop.code, 0, `run exit code; stderr:\n${stop.stderr}`);
  } finally {
    await cli?.stop("SIGKILL");
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

for (const layout of ["v2", "hybrid"] as const) {
  Deno.test({
    name: `verify boundary ebpf / ${layout}: a sampler counting CGNAT fails cgnat-ignored only`,
    ...TEST_OPTIONS,
    fn: () => cgnatMutation(layout),
  });
}

/**
 * An interface in the lab's host (client) netns; its ifindex. Gone with the netns. The index
 * is a high one, as a VPN's is on a desktop that booted long ago: a new namespace's own
 * devices (sit0, tunl0, ... where tunnel modules are loaded, as in the 6.1 lane) take low
 * ones, and verify skips its VPN check when the host's index is one of those.
 */
async function addDummy(env: Lab, name: string): Promise<number> {
  const ns = ["nsenter", `--net=${env.clientNetns}`, "--", "ip"];
  // A veth with its peer beside it: this kernel may lack the dummy driver.
  const index = ["index", "4242"];
  await run([...ns, "link", "add", name, ...index, "type", "veth", "peer", "name", `${name}p`]);
  const r = await run([...ns, "-j", "link", "show", name]);
  return (JSON.parse(r.stdout) as { ifindex: number }[])[0]!.ifindex;
}

/** Whether this build's config knows the keys of issue 18's items 1 and 2. */
const HAS_INTERFACE_KEYS = (() => {
  try {
    validateConfig({ exclude_interfaces: ["tailscale0"], internal_onlink: true }, "probe");
    return true;
  } catch {
    return false;
  }
})();

/**
 * exclude_interfaces and internal_onlink, both ways: verify reading a config with both,
 * first against a sampler run with that config (every check passes; vpn-interface and
 * onlink6 must not count), then against one run without them (those two fail by name).
 * Runs once the config has the keys (they come with the backends that honour them).
 */
async function interfaceOptions(layout: LayoutName): Promise<void> {
  const env = await Lab.open(layout);
  const dir = await Deno.makeTempDir({ prefix: "stb-verify-e2e-" });
  let cli: RunningCli | null = null;
  try {
    env.cgroups.create("host-agent");
    await addDummy(env, "tailscale0");
    const base = {
      services: env.cgroups.configServices(),
      interval_s: 0.5,
      prometheus: { textfile: null },
    };
    const withKeys = `${dir}/with.json`;
    const without = `${dir}/without.json`;
    await Deno.writeTextFile(
      withKeys,
      JSON.stringify({ ...base, exclude_interfaces: ["tailscale0"], internal_onlink: true }),
    );
    await Deno.writeTextFile(without, JSON.stringify(base));
    const output = `${dir}/counters.json`;
    const args = ["--config", withKeys, "--input", output, "--timeout", "60"];
    for (const runConfig of [withKeys, without]) {
      cli = await startRun(env.layout, env.clientNetns, {
        backend: "ebpf",
        config: runConfig,
        output,
      });
      const r = await verify(env, args);
      const honoured = runConfig === withKeys;
      assertEquals(r.code, honoured ? 0 : 1, `verify exit code, sampler config ${runConfig}`);
      const v = verdicts(r.stdout);
      assertEquals(
        [v["vpn-interface"], v["onlink6"], v["public4-counted"], v["cgnat-ignored"]],
        honoured ? ["PASS", "PASS", "PASS", "PASS"] : ["FAIL", "FAIL", "PASS", "PASS"],
        `verdicts against a sampler run with ${runConfig}`,
      );
      assert(/^\S+\s+vpn-interface\s+must not count \("exclude_interfaces" lists/m.test(r.stdout));
      assert(/^\S+\s+onlink6\s+must not count \(internal_onlink is on/m.test(r.stdout));
      const stop = await cli.stop("SIGTERM");
      cli = null;
      assertEquals(stop.code, 0, `run exit code; stderr:\n${stop.stderr}`);
    }
  } finally {
    await cli?.stop("SIGKILL");
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "verify boundary ebpf / v2: exclude_interfaces and internal_onlink, honoured or not",
  ignore: !HAS_INTERFACE_KEYS,
  ...TEST_OPTIONS,
  fn: () => interfaceOptions("v2"),
});

/** Bytes each way of one boundary exchange, as verify printed it ("exchanged 8.00 MiB"). */
function boundaryBytes(out: string): number {
  const m = /exchanged (\d+\.\d+) MiB each way/.exec(out);
  assert(m !== null, "verify names the size of its boundary exchanges");
  return Math.round(Number(m[1]) * 1024 * 1024);
}

// The boundary probe on the hybrid layout: the CGNAT mutation above.
for (const [backend, layout] of [["nft", "hybrid"], ["ebpf", "v2"]] as const) {
  Deno.test({
    name: `verify ${backend} / ${layout}: passes on a correct setup, fails on the wrong cgroup`,
    ...TEST_OPTIONS,
    fn: () => scenario(backend, layout),
  });
}

Deno.test("verify: usage errors exit 2, sampler absent fails check 'sampler'", async () => {
  const bad = await run(cliArgv(["verify", "--external-url", "ftp://x/y"]), { allowFail: true });
  assertEquals(bad.code, 2, `bad URL exit code; stderr: ${bad.stderr}`);
  assert(/only http and https/.test(bad.stderr), bad.stderr);
  const badT = await run(cliArgv(["verify", "--timeout", "0"]), { allowFail: true });
  assertEquals(badT.code, 2, "bad timeout exit code");
  const dir = await Deno.makeTempDir({ prefix: "stb-verify-e2e-" });
  try {
    await Deno.writeTextFile(`${dir}/c.json`, JSON.stringify({ services: { a: "/nope" } }));
    const r = await run(
      cliArgv(["verify", "--config", `${dir}/c.json`, "--input", `${dir}/none.json`]),
      { allowFail: true },
    );
    assertEquals(r.code, 1, `exit code without a sampler; ${r.stdout}${r.stderr}`);
    assert(/^FAIL\s+sampler\s+.*none\.json is missing/m.test(r.stdout), r.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
