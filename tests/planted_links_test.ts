/**
 * Links planted where root writes, through the real CLI against the real kernel: whoever
 * controls a directory on the way (or the sampler's own directory, if the sampler were
 * compromised) must not steer a write of root's into another file. Run as root:
 * deno test -A tests/planted_links_test.ts
 */

import { assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import { cliArgv, run, RunningCli } from "./harness/mod.ts";

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
