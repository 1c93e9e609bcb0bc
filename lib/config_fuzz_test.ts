/**
 * 10,000 generated bad configs through validateConfig (and, as file text, loadConfig):
 * each must end in a ConfigError with a one-line message, never another exception or a
 * hang. Every case breaks exactly one rule on an otherwise valid config, so "accepted" is
 * a bug, not luck. Seeded: FUZZ_SEED=<printed seed> FUZZ_N=<n> replays a run.
 */

import { assert } from "./test_assert.ts";
import { ConfigError, loadConfig, validateConfig } from "./config.ts";
import { badConfig, fuzzSeed, gen, VALID_CONFIG as VALID } from "./fuzz.ts";

export const FUZZ_N = Number(Deno.env.get("FUZZ_N") ?? 10_000);

Deno.test(`config fuzz: ${FUZZ_N} generated bad configs each give one ConfigError, never a crash`, async () => {
  const seed = fuzzSeed();
  console.log(`config fuzz: seed ${seed} (replay with FUZZ_SEED=${seed}), ${FUZZ_N} cases`);
  const g = gen(seed);
  const dir = await Deno.makeTempDir({ prefix: "stb-cfgfuzz-" });
  const start = performance.now();
  let viaFile = 0;
  try {
    validateConfig(structuredClone(VALID), "base"); // the base itself is valid
    for (let i = 0; i < FUZZ_N; i++) {
      const [cfg, what] = badConfig(g);
      const where = `case ${i} (${what}, seed ${seed}): ${JSON.stringify(cfg)?.slice(0, 300)}`;
      const t0 = performance.now();
      try {
        if (i % 10 === 0) {
          // Through the file path too: text, mutated text, and the parse step.
          let text = JSON.stringify(cfg) ?? "null";
          if (g.chance(0.3)) text = text.slice(0, g.int(text.length));
          await Deno.writeTextFile(`${dir}/c.json`, text);
          viaFile++;
          loadConfig(`${dir}/c.json`, true);
        } else {
          validateConfig(cfg, "fuzz.json");
        }
        throw new Error(`accepted a bad config: ${where}`);
      } catch (e) {
        if (!(e instanceof ConfigError)) {
          throw new Error(`${where}: threw ${(e as Error)?.name}: ${(e as Error)?.message}`, {
            cause: e,
          });
        }
        assert(
          e.message.length > 10 && !e.message.includes("\n"),
          `${where}: message "${e.message}"`,
        );
      }
      assert(performance.now() - t0 < 1000, `${where}: took over 1 s`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  console.log(
    `config fuzz: ${FUZZ_N} cases (${viaFile} through files) in ${
      Math.round(performance.now() - start)
    } ms`,
  );
});
