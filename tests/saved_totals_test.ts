/**
 * The totals a restart continues from, through the real CLI: the config's owner, who owns
 * counters.json, cannot change them; a SIGKILL loses at most an interval (the runtime
 * copy); a state file that a power loss left empty or garbage never stops `run` (it
 * continues from the backup, or from zero, loudly and with a metric); the disk copy is
 * fsynced, file and directory. Run as root: deno test -A tests/saved_totals_test.ts
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../lib/test_assert.ts";
import { parseExact } from "../lib/exact_json.ts";
import { run, RunningCli, sleep } from "./harness/mod.ts";

const NOBODY = 65534;
const FIVE_GB = 5_000_000_000n;
const BOOT_ID = Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim();

interface Scene {
  dir: string;
  config: string;
  output: string;
  state: string;
  /** The runtime copy, beside counters.json. */
  runtime: string;
  textfile: string;
}

async function withScene(fn: (s: Scene) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "stb-saved-" });
  await Deno.chmod(dir, 0o755); // the owner reaches counters.json, as in /run/stb-netacct
  const scene: Scene = {
    dir,
    config: `${dir}/config.json`,
    output: `${dir}/pub/counters.json`,
    state: `${dir}/lib/state.json`,
    runtime: `${dir}/pub/.runtime-state/counters.json.state`,
    textfile: `${dir}/prom/stb_netacct.prom`,
  };
  await Deno.mkdir(`${dir}/prom`);
  await Deno.writeTextFile(
    scene.config,
    JSON.stringify({
      services: { s: "/stb-saved-absent/s" },
      owner: "nobody",
      events: { enabled: false },
      prometheus: { textfile: scene.textfile },
    }),
  );
  try {
    await fn(scene);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function start(s: Scene): RunningCli {
  return new RunningCli([], {
    backend: "ebpf",
    config: s.config,
    output: s.output,
    state: s.state,
    interval: 0.2,
  });
}

/** A state file as an earlier run wrote it, `rx` bytes received by service s. */
function seed(rx: bigint, seq = 1): string {
  return `{"schema":1,"boot_id":"${BOOT_ID}","saved_unix":${Date.now() / 1000},` +
    `"saved_monotonic":1,"started_at":1700000000,"seq":${seq},"services":{"s":{"rxBytes":${rx},` +
    `"txBytes":${rx / 2n},"rxPackets":7,"txPackets":3}}}\n`;
}

async function writeSeed(path: string, text: string) {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(path, text, { mode: 0o600 });
}

/** counters.json's total received bytes, every digit. */
async function publishedRx(s: Scene): Promise<bigint> {
  const c = parseExact(await Deno.readTextFile(s.output)) as Record<string, unknown>;
  return BigInt(c.rx_bytes_total as number | bigint);
}

/** As the owner would: rewrite counters.json in place (the file is theirs, the directory not). */
async function rewriteAsOwner(path: string, text: string) {
  await run(
    ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "tee", path],
    { stdin: text },
  );
}

Deno.test("the owner of counters.json cannot decide the totals a restart continues from", async () => {
  await withScene(async (s) => {
    await writeSeed(s.state, seed(FIVE_GB));
    const first = start(s);
    const sample = await first.sampleAfter();
    assertEquals(BigInt(sample.rx_bytes_total), FIVE_GB, "continued from the saved totals");
    assertEquals(Deno.statSync(s.output).uid, NOBODY, "counters.json is the owner's");
    // Killed between two saves of the disk copy: what a restart needs is in the runtime copy.
    const killed = await first.stop("SIGKILL");
    assertEquals(killed.signal, "SIGKILL");
    // The owner zeroes every total in counters.json and makes it look newer than any save.
    const c = parseExact(await Deno.readTextFile(s.output)) as Record<string, unknown>;
    const forged = (await Deno.readTextFile(s.output))
      .replaceAll(/"(rx|tx)_(bytes|packets)_total":\d+/g, '"$1_$2_total":0')
      .replace(/"ts_monotonic":[0-9.]+/, `"ts_monotonic":${(c.ts_monotonic as number) + 1000}`)
      .replace(/"ts_unix":[0-9.]+/, `"ts_unix":${Date.now() / 1000 + 1000}`);
    await rewriteAsOwner(s.output, forged);
    assertEquals(await publishedRx(s), 0n, "the forged file is in place");
    const second = start(s);
    try {
      // The forged file looks newer than anything: wait for the restarted run's own sample.
      const after = await poll(async () => {
        const x = await second.read() as unknown as Record<string, unknown> | null;
        return x && x.started_at !== c.started_at ? x : null;
      }, `a sample of the restarted run; stderr: ${second.stderr}`);
      assertEquals(BigInt(after.rx_bytes_total as number), FIVE_GB, `restarted: ${second.stderr}`);
      // No traffic moved the totals after the first save: the disk copy is as new as any.
      assertMatch(second.stderr, /continuing from the (saved totals|runtime copy of the totals) /);
      // The copies a restart chooses from are out of the owner's reach.
      const runtimeDir = Deno.statSync(s.runtime.slice(0, s.runtime.lastIndexOf("/")));
      assertEquals([runtimeDir.uid, runtimeDir.mode! & 0o777], [0, 0o700]);
      assertEquals(Deno.statSync(s.runtime).mode! & 0o777, 0o600);
      const denied = await run(
        ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "cat", s.runtime],
        { allowFail: true },
      );
      assert(denied.code !== 0, "the owner can read the runtime copy");
    } finally {
      const stop = await second.stop();
      assertEquals(stop.code, 0, stop.stderr);
    }
    // A clean stop leaves the disk copy current and no runtime copy behind.
    // (The traffic history beside it is history's own file, never read back for totals.)
    const left = [...Deno.readDirSync(`${s.dir}/pub`)].map((e) => e.name)
      .filter((n) => !n.startsWith("counters.json.history.sqlite")).sort();
    assertEquals(left, ["counters.json"]);
  });
});

Deno.test("an empty state file (a power loss) never stops run: it continues from the backup, loudly", async () => {
  await withScene(async (s) => {
    await writeSeed(s.state, "");
    await writeSeed(`${s.state}.bak`, seed(FIVE_GB));
    const cli = start(s);
    try {
      const sample = await cli.sampleAfter();
      assertEquals(BigInt(sample.rx_bytes_total), FIVE_GB, cli.stderr);
      assertMatch(
        cli.stderr,
        /WARNING: the saved totals ".*\/lib\/state\.json" cannot be used: it is empty/,
      );
      assertMatch(cli.stderr, /continuing from the backup of the saved totals/);
      const prom = await waitForText(s.textfile);
      assertStringIncludes(prom, "\nstb_netacct_state_copies_rejected 1\n");
      // Saved at once: the broken disk copy is replaced, the good backup kept.
      const saved = parseExact(await Deno.readTextFile(s.state)) as { seq: number };
      assert(saved.seq > 1, `state.json rewritten: ${JSON.stringify(saved)}`);
      assertStringIncludes(await Deno.readTextFile(`${s.state}.bak`), `"rxBytes":${FIVE_GB}`);
    } finally {
      const stop = await cli.stop();
      assertEquals(stop.code, 0, stop.stderr);
    }
  });
});

Deno.test("garbage state and no backup: run counts from zero, loudly, and never refuses", async () => {
  await withScene(async (s) => {
    await writeSeed(s.state, '\0\0\0\0{"schema":1,"serv');
    const cli = start(s);
    try {
      const sample = await cli.sampleAfter();
      assertEquals(sample.rx_bytes_total, 0, cli.stderr);
      assertMatch(cli.stderr, /WARNING: the saved totals .* cannot be used: it is not valid JSON/);
      assertMatch(
        cli.stderr,
        /WARNING: no good copy of the saved totals is left: counting from zero/,
      );
      assertStringIncludes(
        await waitForText(s.textfile),
        "\nstb_netacct_state_copies_rejected 1\n",
      );
    } finally {
      const stop = await cli.stop();
      assertEquals(stop.code, 0, stop.stderr);
    }
  });
});

Deno.test("the disk copy is durable: fsynced before its rename, the directory after", async () => {
  await withScene(async (s) => {
    const log = `${s.dir}/strace.log`;
    const strace = ["strace", "-f", "-y", "-qq", "-e", "trace=fsync,rename,renameat,renameat2"];
    const cli = new RunningCli([...strace, "-o", log], {
      backend: "ebpf",
      config: s.config,
      output: s.output,
      state: s.state,
      interval: 0.2,
    });
    try {
      await cli.sampleAfter(Date.now() / 1000, 60);
    } finally {
      // The child is strace; SIGTERM goes to the sampler it traces, which ends strace.
      const sampler = Number(
        Deno.readTextFileSync(`/proc/${cli.pid}/task/${cli.pid}/children`).trim().split(" ")[0],
      );
      if (sampler > 0) Deno.kill(sampler, "SIGTERM");
      await cli.stop("SIGTERM", 60);
    }
    const lines = (await Deno.readTextFile(log)).split("\n");
    const tmp = /\.state\.json\.\d+\.tmp/;
    const fsyncTmp = lines.findIndex((l) => l.includes("fsync(") && tmp.test(l));
    const rename = lines.findIndex((l, i) =>
      i > fsyncTmp && /rename/.test(l) && tmp.test(l) && /"state\.json"/.test(l)
    );
    const dirSync = new RegExp(`fsync\\(\\d+<${s.dir}/lib>`);
    const fsyncDir = lines.findIndex((l, i) => i > rename && dirSync.test(l));
    assert(
      fsyncTmp >= 0 && rename > fsyncTmp && fsyncDir > rename,
      lines.filter((l) => /state/.test(l)).join("\n"),
    );
    // counters.json, written every interval, is not fsynced: cheap.
    assert(
      !lines.some((l) => /fsync\(\d+<[^>]*counters\.json(?!\.history)[^>]*>/.test(l)),
      "counters.json fsynced",
    );
  });
});

/** Polls `get` until it gives a value; fails naming `what` after `timeoutMs`. */
async function poll<T>(get: () => Promise<T | null>, what: string, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function waitForText(path: string, timeoutMs = 15000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await Deno.readTextFile(path);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(100);
    }
  }
}
