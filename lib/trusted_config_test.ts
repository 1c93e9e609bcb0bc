/**
 * The config root loads is the file it judged. Root only (files are given to nobody).
 *
 *   deno test -A lib/trusted_config_test.ts
 */

import { assert, assertEquals, assertStringIncludes, assertThrows } from "./test_assert.ts";
import { ConfigError } from "./config.ts";
import { loadTrustedConfig } from "./trusted_config.ts";

const isRoot = Deno.uid() === 0;
const NOBODY = 65534;
const config = (path: string) => JSON.stringify({ services: { s: path } });

/** Renames a fresh symlink over `link` as fast as it can, pointing at `a` then `b`. */
const FLIP = `
import os, sys
link, a, b = sys.argv[1:4]
tmp = link + ".tmp"
while True:
    for target in (a, b):
        os.symlink(target, tmp)
        os.rename(tmp, link)
`;

Deno.test({
  name: "trusted config: a symlink flipped to another user's file never gets that file loaded",
  ignore: !isRoot,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "stb-config-race-" });
    Deno.chmodSync(dir, 0o755);
    const good = `${dir}/good.json`;
    Deno.writeTextFileSync(good, config("/good/s"), { mode: 0o644 });
    // Another user's directory and file: refused when judged, and never to be read.
    Deno.mkdirSync(`${dir}/theirs`, { mode: 0o755 });
    const theirs = `${dir}/theirs/config.json`;
    Deno.writeTextFileSync(theirs, config("/theirs/s"), { mode: 0o644 });
    Deno.chownSync(`${dir}/theirs`, NOBODY, NOBODY);
    Deno.chownSync(theirs, NOBODY, NOBODY);
    const link = `${dir}/config.json`;
    Deno.symlinkSync(good, link);
    const flipper = new Deno.Command("/usr/bin/python3", {
      args: ["-c", FLIP, link, good, theirs],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const seen = { good: 0, refused: 0, theirs: 0 };
    try {
      for (const until = Date.now() + 3000; Date.now() < until;) {
        try {
          const c = loadTrustedConfig(link, true);
          if (c.services.s === "/good/s") seen.good++;
          else seen.theirs++;
        } catch (e) {
          if (!(e instanceof ConfigError)) throw e;
          assertStringIncludes(e.message, `owned by uid ${NOBODY}`);
          seen.refused++;
        }
      }
    } finally {
      flipper.kill("SIGKILL");
      await flipper.status;
      Deno.removeSync(dir, { recursive: true });
    }
    console.log(`loads: ${JSON.stringify(seen)}`);
    assert(seen.good > 100 && seen.refused > 100, `both files were met: ${JSON.stringify(seen)}`);
    assertEquals(seen.theirs, 0, "a file never judged was loaded");
  },
});

Deno.test({
  name: "trusted config: refusals name the file, and a FIFO is not waited on",
  ignore: !isRoot,
  fn() {
    const dir = Deno.makeTempDirSync({ prefix: "stb-config-trust-" });
    try {
      const open = `${dir}/open.json`;
      Deno.writeTextFileSync(open, config("/a/s"));
      Deno.chmodSync(open, 0o666);
      assertThrows(() => loadTrustedConfig(open, true), ConfigError, "writable by others");
      Deno.chmodSync(open, 0o644);
      assertEquals(loadTrustedConfig(open, true).services.s, "/a/s");
      const fifo = `${dir}/fifo.json`;
      new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
      assertThrows(() => loadTrustedConfig(fifo, true), ConfigError, "is not a regular file");
      assertThrows(
        () => loadTrustedConfig(`${dir}/none.json`, true),
        ConfigError,
        "does not exist",
      );
      assertEquals(loadTrustedConfig(`${dir}/none.json`, false).source, "built-in defaults");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
