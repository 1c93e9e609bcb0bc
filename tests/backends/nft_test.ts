/**
 * The nft backend against the real kernel, in the test lab (tests/harness): counting,
 * retargeting and probing in the lab's client netns, on both cgroup layouts. Run as root.
 * The parsers and scripts have unit tests beside the code, backends/nft_test.ts.
 */

import { noneLeft, runScenario } from "./firewall_scenario.ts";
import { runProbeScenario } from "./probe_scenario.ts";

/** Captured tool output the parser tests in backends/ read (STB_CAPTURE_TESTDATA=1). */
const TESTDATA = new URL("../../backends/testdata/", import.meta.url).pathname;

Deno.test({
  name: "nft backend counts a cgroup's external traffic on the real kernel (netns)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const result = await runScenario("nft", {
      capture: Deno.env.get("STB_CAPTURE_TESTDATA")
        ? async (lab) => {
          const out = await lab.inClient([
            "nft",
            "-j",
            "list",
            "counters",
            "table",
            "inet",
            "stb_netacct",
          ]);
          await Deno.writeTextFile(`${TESTDATA}nft_list_counters.json`, out);
        }
        : undefined,
      assertClean: async (lab) => {
        const tables = await lab.inClient(["nft", "list", "tables"]);
        if (tables.includes("stb_netacct")) throw new Error(`table left after stop:\n${tables}`);
      },
    });
    console.log(`nft: ${result.msPerRead.toFixed(2)} ms per read (libnftables)`);
  },
});

Deno.test({
  name: "nft backend on the pure cgroup v2 layout (cgroup2 at /sys/fs/cgroup, as on Debian 12)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { msPerRead } = await runScenario("nft", { layout: "v2", assertClean: noneLeft });
    console.log(`nft (pure v2): ${msPerRead.toFixed(2)} ms per read`);
  },
});

Deno.test({
  name: "nft probe checks the exact ruleset on the kernel and changes nothing (netns)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => runProbeScenario("nft"),
});

Deno.test({
  name: "nft backend through the nft binary (fallback when libnftables does not load)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const result = await runScenario("nft-binary", {
      assertClean: async (lab) => {
        const tables = await lab.inClient(["nft", "list", "tables"]);
        if (tables.includes("stb_netacct")) throw new Error(`table left after stop:\n${tables}`);
      },
    });
    console.log(`nft binary: ${result.msPerRead.toFixed(2)} ms per read`);
  },
});

Deno.test({
  name: "nft probe through the nft binary (nft --check) changes nothing (netns)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => runProbeScenario("nft-binary"),
});
