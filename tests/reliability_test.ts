/**
 * Safety of the root daemon and refusal of bad input, through the real CLI (or
 * $STB_NETACCT_BIN): configs others could change are refused, nothing `run` creates is
 * writable by others, the lock survives its directory being removed, no shell command is
 * ever built, a sample of the config fuzz cases exit 2 through the CLI, and every usage
 * error shows the usage line and a hint. Run as root: deno test -A tests/reliability_test.ts
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../lib/test_assert.ts";
import { badConfig, fuzzSeed, gen } from "../lib/fuzz.ts";
import { cliArgv, command, run, sleep } from "./harness/mod.ts";

const NOBODY = 65534;
const ROOT_DIR = new URL("..", import.meta.url).pathname;

async function cli(args: string[]) {
  const r = await run(cliArgv(args), { allowFail: true, env: { NO_COLOR: "1" } });
  return { ...r, all: r.stdout + r.stderr };
}

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "stb-rel-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `run` against absent cgroups (nothing counted, nothing needed but ebpf). */
function spawnRun(args: string[]) {
  const argv = cliArgv(["run", "--backend", "ebpf", "--interval", "0.2", ...args]);
  return command(argv, {
    stdout: "null",
    stderr: "piped",
  })
    .spawn();
}

async function waitFor(path: string, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      JSON.parse(await Deno.readTextFile(path));
      return;
    } catch { /* not yet */ }
    await sleep(50);
  }
  throw new Error(`${path} never appeared`);
}

const ABSENT = JSON.stringify({ services: { s: "/stb-rel-absent/s" } });

Deno.test("run refuses a config (or its directory) other users could change: exit 2, why and the fix", async () => {
  await withDir(async (dir) => {
    const cases: [string, (cfgDir: string, cfg: string) => void, RegExp][] = [
      [
        "owned by nobody",
        (_d, c) => Deno.chownSync(c, NOBODY, NOBODY),
        /owned by uid 65534.*chown root/,
      ],
      [
        "mode 0666",
        (_d, c) => Deno.chmodSync(c, 0o666),
        /writable by others \(mode 666\).*chmod go-w/,
      ],
      ["group-writable, group nobody", (_d, c) => {
        Deno.chownSync(c, 0, NOBODY);
        Deno.chmodSync(c, 0o664);
      }, /writable by group 65534/],
      [
        "directory 0777 without sticky bit",
        (d) => Deno.chmodSync(d, 0o777),
        /Directory ".*" holding the config is writable by others/,
      ],
      [
        "directory owned by nobody",
        (d) => Deno.chownSync(d, NOBODY, NOBODY),
        /Directory .* owned by uid 65534/,
      ],
    ]; // deno-fmt-ignore
    for (const [what, spoil, want] of cases) {
      const cfgDir = await Deno.makeTempDir({ dir, prefix: "c" });
      const cfg = `${cfgDir}/config.json`;
      await Deno.writeTextFile(cfg, ABSENT, { mode: 0o644 });
      await Deno.chmod(cfg, 0o644);
      spoil(cfgDir, cfg);
      const r = await cli(["run", "--backend", "ebpf", "--config", cfg, "--output", `${dir}/o-${what.length}/c.json`]);
      assertEquals(r.code, 2, `${what}: ${r.all}`);
      assertMatch(r.stderr, want, what);
      assertEquals(r.stderr.trim().split("\n").length, 1, `${what}: one line: ${r.stderr}`);
      assert(!r.stderr.includes("counting with"), `${what}: started counting`);
    }
    // Nothing was created for any refused run.
    assertEquals([...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("o-")), []);
    // Root's own 0644 file in root's 0700 directory is fine, and so is /tmp's sticky 1777.
    const ok = `${dir}/ok.json`;
    await Deno.writeTextFile(ok, ABSENT);
    await Deno.chmod(ok, 0o644);
    const { loadTrustedConfig } = await import("../lib/trusted_config.ts");
    loadTrustedConfig(ok, true);
    const sticky = await Deno.makeTempDir({ dir, prefix: "t" });
    await Deno.chmod(sticky, 0o1777);
    await Deno.writeTextFile(`${sticky}/c.json`, ABSENT);
    loadTrustedConfig(`${sticky}/c.json`, true);
  });
});

Deno.test("run refuses an output that names a file it did not write, and leaves that file alone", async () => {
  await withDir(async (dir) => {
    const cfg = `${dir}/config.json`;
    await Deno.writeTextFile(cfg, ABSENT);
    // Like "/etc/shadow": root's, not a counters file.
    const victim = `${dir}/etc/shadow`;
    await Deno.mkdir(`${dir}/etc`, { mode: 0o755 });
    const secret = "root:$y$j9T$secret:19000:0:99999:7:::\n";
    await Deno.writeTextFile(victim, secret, { mode: 0o640 });
    const r = await cli(["run", "--backend", "ebpf", "--config", cfg, "--output", victim]);
    assertEquals(r.code, 2, r.all);
    assertStringIncludes(r.stderr, `The output "${victim}" exists and is not a counters file`);
    assertStringIncludes(r.stderr, "at a new file");
    assertEquals(await Deno.readTextFile(victim), secret);
    assertEquals((await Deno.stat(victim)).mode! & 0o777, 0o640);
    assertEquals([...Deno.readDirSync(`${dir}/etc`)].map((e) => e.name), ["shadow"], "left behind");
  });
});

Deno.test("nothing run creates is writable by others; the state directory is 0700", async () => {
  await withDir(async (dir) => {
    const cfg = `${dir}/config.json`;
    await Deno.writeTextFile(cfg, ABSENT);
    const out = `${dir}/pub/sub/counters.json`;
    const state = `${dir}/lib/stb/state.json`;
    const child = spawnRun(["--config", cfg, "--output", out, "--state", state]);
    try {
      await waitFor(out);
      await waitFor(state);
      const seen: string[] = [];
      for (const d of [`${dir}/pub`, `${dir}/pub/sub`, `${dir}/lib`, `${dir}/lib/stb`]) {
        for (const p of [d, ...[...Deno.readDirSync(d)].map((e) => `${d}/${e.name}`)]) {
          const st = Deno.lstatSync(p);
          const mode = st.mode! & 0o7777;
          seen.push(`${p.slice(dir.length)} ${mode.toString(8)}`);
          assertEquals(
            mode & 0o022,
            0,
            `${p} is writable by group or others (${mode.toString(8)})`,
          );
          assertEquals(st.uid, 0, `${p} owner`);
        }
      }
      assertEquals(Deno.statSync(`${dir}/lib/stb`).mode! & 0o777, 0o700, `state dir: ${seen}`);
      assertEquals(Deno.statSync(state).mode! & 0o777, 0o600, "state file");
      assertEquals(Deno.statSync(out).mode! & 0o777, 0o644, "counters.json");
      const text = Deno.readTextFileSync(out);
      const c = JSON.parse(text);
      assert(typeof c.boot_id === "string" && c.boot_id.length > 0, "boot_id published");
      assertEquals(c.boot_id, Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim());
      assert(c.started_at > 1.7e9 && c.started_at <= Date.now() / 1000, "started_at published");
    } finally {
      child.kill("SIGTERM");
      await child.output();
    }
  });
});

Deno.test("the output directory removed under a running sampler: it recreates it and keeps the lock", async () => {
  await withDir(async (dir) => {
    const cfg = `${dir}/config.json`;
    await Deno.writeTextFile(cfg, ABSENT);
    const out = `${dir}/pub/counters.json`;
    const child = spawnRun(["--config", cfg, "--output", out]);
    try {
      await waitFor(out);
      for (let n = 0;; n++) {
        try {
          await Deno.remove(`${dir}/pub`, { recursive: true });
          break;
        } catch (e) {
          if (n > 20) throw e;
        }
      }
      await waitFor(out, 5000);
      await waitFor(`${out}.state`, 5000);
      // The lock files went with the directory; the sampler must hold new ones.
      const second = await cli(["run", "--backend", "ebpf", "--config", cfg, "--output", out]);
      assertEquals(second.code, 1, second.all);
      assertStringIncludes(second.stderr, "already writing");
      assertStringIncludes(second.stderr, `pid ${child.pid}`);
    } finally {
      child.kill("SIGTERM");
      const o = await child.output();
      assertEquals(o.code, 0, new TextDecoder().decode(o.stderr));
    }
    // The history went with the directory; the sampler started a new one beside the output.
    assertEquals([...Deno.readDirSync(`${dir}/pub`)].map((e) => e.name).sort(), [
      "counters.json",
      "counters.json.history.sqlite",
      "counters.json.state",
    ]);
  });
});

/** Every .ts file of the program (tests, benchmarks and dev tools excluded). */
function programSources(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) {
        if (
          !["node_modules", "tests", "bench", "dist", "testing", "testdata", ".git"].includes(
            e.name,
          )
        ) walk(p);
      } else if (p.endsWith(".ts") && !p.endsWith("_test.ts")) out.push(p);
    }
  };
  walk(ROOT_DIR.replace(/\/$/, ""));
  return out;
}

Deno.test("no shell command is ever built: every subprocess is an argument vector without a shell", () => {
  const files = programSources();
  assert(files.length > 20, `only ${files.length} source files found`);
  const problems: string[] = [];
  const SHELLS = /["'`](\/bin\/)?(ba|da|z)?sh["'`]\s*,\s*(\[?\s*)?["'`]-c["'`]/;
  for (const f of files) {
    const text = Deno.readTextFileSync(f);
    const rel = f.slice(ROOT_DIR.length);
    // Deno.Command with a shell and -c, or a shell named as the command.
    if (SHELLS.test(text)) problems.push(`${rel}: runs a shell with -c`);
    for (const m of text.matchAll(/new Deno\.Command\(\s*([^,)]+)/g)) {
      if (/^["'`](\/bin\/)?(ba|da|z)?sh["'`]$/.test(m[1]!.trim())) { // the one group
        problems.push(`${rel}: Deno.Command(${m[1]})`);
      }
    }
    if (/\bDeno\.run\(|child_process|\bexecSync\b|\bspawnSync\b/.test(text)) {
      problems.push(`${rel}: uses a shell-capable process API`);
    }
    if (/\bsystem\b["']?\s*:\s*\{\s*parameters/.test(text) || /\bpopen\b/.test(text)) {
      problems.push(`${rel}: binds libc system/popen`);
    }
  }
  assertEquals(problems, [], "shell use in the program");
  // The self-check must be able to fail.
  assert(
    SHELLS.test(`new Deno.Command("sh", { args: ["-c", cmd] })`) || SHELLS.test(`["sh", "-c", x]`),
  );
});

Deno.test("a sample of the config fuzz cases through the real CLI: exit 2, one line, nothing started", async () => {
  const seed = fuzzSeed();
  console.log(`CLI config fuzz: seed ${seed} (FUZZ_SEED=${seed} replays)`);
  const g = gen(seed);
  await withDir(async (dir) => {
    const cases = Array.from({ length: 50 }, () => badConfig(g));
    for (let i = 0; i < cases.length; i += 10) {
      await Promise.all(
        cases.slice(i, i + 10).map(async ([cfg, what], j) => {
          const path = `${dir}/c${i + j}.json`;
          await Deno.writeTextFile(path, JSON.stringify(cfg) ?? "null");
          const r = await cli([
            "run",
            "--backend",
            "ebpf",
            "--config",
            path,
            "--output",
            `${dir}/out${i + j}/c.json`,
          ]);
          const where = `case ${i + j} (${what}, seed ${seed}) ${
            JSON.stringify(cfg)?.slice(0, 200)
          }`;
          assertEquals(r.code, 2, `${where}: ${r.all}`);
          assertEquals(r.stderr.trim().split("\n").length, 1, `${where}: ${r.stderr}`);
          assert(!/counting with|ebpf:/.test(r.stderr), `${where}: backend started: ${r.stderr}`);
        }),
      );
    }
    assertEquals(
      [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("out")),
      [],
      "output dirs",
    );
  });
});

Deno.test("every usage error exits 2 with the usage line and a hint", async () => {
  const cases: string[][] = [
    ["graph", "--bogus"],
    ["graph", "--interval", "abc"],
    ["graph", "--window", "-5"],
    ["graph", "--input"],
    ["status", "--bogus"],
    ["status", "--config"],
    ["reset", "--bogus"],
    ["reset", "--timeout", "x"],
    ["reset", "--timeout", "0"],
    ["run", "--output"],
    ["run", "--interval", "99"],
    ["run", "--interval", ""],
    ["run", "--backend", ""],
    ["run", "-z"],
    ["run", "extra-argument"],
  ];
  for (const args of cases) {
    const r = await cli(args);
    const what = args.join(" ");
    assertEquals(r.code, 2, `${what}: ${r.all}`);
    assertMatch(r.all, /Usage: stb-netacct/, `${what}: usage line`);
    assertMatch(r.all, /--help/, `${what}: hint`);
  }
  // Top level: a hint (main.ts prints no usage line there yet).
  const top = await cli(["--bogus"]);
  assertEquals(top.code, 2, top.all);
  assertMatch(top.all, /--help/);
});
