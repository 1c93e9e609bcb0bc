/**
 * The iptables backend against the real kernel, in the test lab (tests/harness): counting,
 * retargeting and probing in the lab's client netns, on both cgroup layouts. Run as root.
 * The parsers and scripts have unit tests beside the code, backends/iptables_test.ts.
 */

import { noneLeft, runScenario } from "./firewall_scenario.ts";
import { runProbeScenario } from "./probe_scenario.ts";

/** Captured tool output the parser tests in backends/ read (STB_CAPTURE_TESTDATA=1). */
const TESTDATA = new URL("../../backends/testdata/", import.meta.url).pathname;

Deno.test({
  name: "iptables backend counts a cgroup's external traffic on the real kernel (netns)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const result = await runScenario("iptables", {
      capture: Deno.env.get("STB_CAPTURE_TESTDATA")
        ? async (lab) => {
          for (const [tool, file] of [["iptables-save", "v4"], ["ip6tables-save", "v6"]] as const) {
            const out = await lab.inClient([tool, "-c", "-t", "mangle"]);
            await Deno.writeTextFile(`${TESTDATA}iptables_save_${file}.txt`, out);
          }
          for (const [family, file] of [["ip", "v4"], ["ip6", "v6"]] as const) {
            for (const chain of ["STB_NETACCT_OUT", "STB_NETACCT_IN"]) {
              const out = await lab.inClient(["nft", "-j", `list chain ${family} mangle ${chain}`]);
              await Deno.writeTextFile(`${TESTDATA}nft_iptables_${file}_${chain}.json`, out);
            }
          }
        }
        : undefined,
      assertClean: async (lab) => {
        for (const tool of ["iptables-save", "ip6tables-save"]) {
          const out = await lab.inClient([tool]);
          if (/STB_NETACCT|stb-netacct/.test(out)) throw new Error(`${tool} after stop:\n${out}`);
        }
      },
    });
    console.log(
      `iptables: ${result.msPerRead.toFixed(2)} ms per read (libnftables, 4 chain listings)`,
    );
  },
});

Deno.test({
  name:
    "iptables backend on the pure cgroup v2 layout (cgroup2 at /sys/fs/cgroup, as on Debian 12)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { msPerRead } = await runScenario("iptables", { layout: "v2", assertClean: noneLeft });
    console.log(`iptables (pure v2): ${msPerRead.toFixed(2)} ms per read`);
  },
});

Deno.test({
  name: "iptables backend reading through iptables-save (fallback without libnftables)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const result = await runScenario("iptables-save", {
      assertClean: async (lab) => {
        for (const tool of ["iptables-save", "ip6tables-save"]) {
          const out = await lab.inClient([tool]);
          if (/STB_NETACCT|stb-netacct/.test(out)) throw new Error(`${tool} after stop:\n${out}`);
        }
      },
    });
    console.log(`iptables-save: ${result.msPerRead.toFixed(2)} ms per read`);
  },
});

Deno.test({
  name: "iptables probe: restore --test plus a private-netns load, nothing changed (netns)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => runProbeScenario("iptables"),
});
