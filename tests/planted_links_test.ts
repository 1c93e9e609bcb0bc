/**
 * Links planted where root writes, through the real CLI against the real kernel: whoever
 * controls a directory on the way (or the sampler's own directory, if the sampler were
 * compromised) must not steer a write of root's into another file. Run as root:
 * deno test -A tests/planted_links_test.ts
 */

import { assert, assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import {
  cliArgv,
  flowsTo,
  Lab,
  nativeLayout,
  run,
  RunningCli,
  sleep,
  startRun,
} from "./harness/mod.ts";

const SMALL = { tcpUp: 10_000, tcpDown: 10_000, udpCount: 5, udpSize: 100 };

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "stb-links-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const ABSENT = { services: { s: "/stb-links-absent/s" }, prometheus: { textfile: null } };

async function writeConfig(path: string, extra: Record<string, unknown> = {}) {
  await Deno.writeTextFile(path, JSON.stringify({ ...ABSENT, ...extra }));
}

/** A root-owned 0600 file whose content must survive: what an attacker would aim at. */
async function victim(path: string): Promise<() => void> {
  await Deno.writeTextFile(path, "precious\n", { mode: 0o600 });
  return () => {
    const st = Deno.lstatSync(path);
    assertEquals(
      [Deno.readTextFileSync(path), st.isFile, st.uid, st.mode! & 0o777],
      ["precious\n", true, 0, 0o600],
      `${path} was written through a planted link`,
    );
  };
}

Deno.test("reset never writes through a link planted at its request's name", async () => {
  await withDir(async (dir) => {
    const config = `${dir}/config.json`;
    await writeConfig(config, { events: { enabled: false } });
    const output = `${dir}/pub/counters.json`;
    const sampler = new RunningCli([], { backend: "ebpf", config, output, interval: 0.2 });
    try {
      await sampler.sampleAfter();
      const intact = await victim(`${dir}/victim`);
      // The state (OUTPUT.state) is beside counters.json; its reset request is STATE.reset.
      await Deno.symlink(`${dir}/victim`, `${output}.state.reset`);
      const reset = await run(cliArgv(["reset", "--output", output, "--timeout", "5"]), {
        allowFail: true,
      });
      intact();
      assertEquals(reset.code, 0, reset.stdout + reset.stderr);
      assertStringIncludes(reset.stdout, "the running sampler zeroed them");
    } finally {
      const stop = await sampler.stop();
      assertEquals(stop.code, 0, stop.stderr);
    }
  });
});

const NOBODY = 65534;

/** As the user who controls a parent directory would. */
function asNobody(args: string[]) {
  return run(["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", ...args]);
}

async function lines(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l !== "");
}

Deno.test({
  name:
    "a parent swapped for a symlink mid-run steers none of run's writes (counters, events, textfile)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const env = await Lab.open(nativeLayout());
    const dir = await Deno.makeTempDir({ prefix: "stb-links-" });
    await Deno.chmod(dir, 0o755);
    let cli: RunningCli | null = null;
    try {
      env.cgroups.create("server");
      const out = `${dir}/pub/out`, prom = `${dir}/prom/node`;
      await Deno.mkdir(prom, { recursive: true });
      const config = `${dir}/config.json`;
      await writeConfig(config, {
        services: env.cgroups.configServices(),
        owner: "nobody",
        events: { enabled: true, required: true },
        prometheus: { textfile: `${prom}/stb_netacct.prom` },
      });
      // What the attacker aims at: root's own files in a root directory.
      await Deno.mkdir(`${dir}/victim`);
      const names = ["counters.json", "events.jsonl", "stb_netacct.prom"];
      const intact = await Promise.all(names.map((n) => victim(`${dir}/victim/${n}`)));
      cli = await startRun(env.layout, env.clientNetns, {
        backend: "ebpf",
        config,
        output: `${out}/counters.json`,
        interval: 0.2,
      });
      await env.traffic("server", flowsTo("internet4", SMALL));
      await cli.sampleAfter();
      const before = (await lines(`${out}/events.jsonl`)).length;
      assert(before > 0, "events before the swap");
      // Mid-run the parents become a user's (as if they had been all along), who swaps the
      // directories run holds for links to the victim's.
      for (const [parent, held] of [[`${dir}/pub`, "out"], [`${dir}/prom`, "node"]]) {
        await Deno.chown(parent!, NOBODY, NOBODY);
        await asNobody(["mv", `${parent}/${held}`, `${parent}/${held}.old`]);
        await asNobody(["ln", "-s", `${dir}/victim`, `${parent}/${held}`]);
      }
      const swapped = Date.now() / 1000;
      await env.traffic("server", flowsTo("internet4", SMALL));
      // Samples, events and a textfile round (every 10 s) after the swap.
      const deadline = Date.now() + 12_000;
      while (Date.now() < deadline) await sleep(200);
      for (const check of intact) check();
      assertEquals([...Deno.readDirSync(`${dir}/victim`)].map((e) => e.name).sort(), names);
      // Counting went on in the directory run holds, whatever the path now says.
      const c = JSON.parse(await Deno.readTextFile(`${out}.old/counters.json`));
      assert(c.ts_unix > swapped, `counters.json written after the swap: ${c.ts_unix}`);
      assert((await lines(`${out}.old/events.jsonl`)).length > before, "events after the swap");
      const stop = await cli.stop();
      cli = null;
      assertEquals(stop.code, 0, stop.stderr);
      for (const check of intact) check();
    } finally {
      await cli?.stop("SIGKILL");
      await env.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
