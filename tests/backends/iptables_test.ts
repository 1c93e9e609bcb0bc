/**
 * The iptables backend against the real kernel, in the test lab (tests/harness): counting,
 * retargeting and probing in the lab's client netns, on both cgroup layouts. Run as root.
 * The parsers and scripts have unit tests beside the code, backends/iptables_test.ts.
 */

import type { CounterSample } from "../../backends/mod.ts";
import { parseIptablesState } from "../../backends/iptables.ts";
import { DEFAULT_EXCLUDE } from "../../lib/cidr.ts";
import { assertEquals } from "../../lib/test_assert.ts";
import { Lab, REMOTES, TCP_PORT } from "../harness/mod.ts";
import { noneLeft, runScenario } from "./firewall_scenario.ts";
import { runProbeScenario } from "./probe_scenario.ts";

/** Captured tool output the parser tests in backends/ read (STB_CAPTURE_TESTDATA=1). */
const TESTDATA = new URL("../../backends/testdata/", import.meta.url).pathname;
const MiB = 1024 * 1024;

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

/**
 * Chains kept by `stop({ keep })` across starts in one netns: the same config adopts them
 * (same kernel state id, counts continue, the on-link and interface rules as they were); a
 * duplicated jump or another config (on-link and an excluded interface, on or off) rebuilds
 * them keeping the counts and leaving one jump each; chains without markers (an older
 * release's) are replaced.
 */
Deno.test({
  name: "iptables kept chains: adopted, rebuilt keeping counts, replaced without markers (netns)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lab = await Lab.open("hybrid");
    try {
      lab.cgroups.make("/web.service");
      const web = lab.cgroups.path("/web.service");
      const driver = lab.startDriver("iptables");
      const base = {
        op: "start",
        services: { web, late: lab.cgroups.path("/late.service") },
        exclude: [...DEFAULT_EXCLUDE],
        ctMark: 0x00510000,
        ctMask: 0x00ff0000,
      };
      const linked = { ...base, internalOnlink: true, excludeInterfaces: ["stbx0"] };
      const kernel = () => driver.request<{ id: string; adopted: boolean }>({ op: "kernel" });
      const read = () => driver.request<CounterSample>({ op: "read" });
      const save = async () => ({
        4: await lab.inClient(["iptables-save", "-c", "-t", "mangle"]),
        6: await lab.inClient(["ip6tables-save", "-c", "-t", "mangle"]),
      });
      const jumps = (text: string) =>
        parseIptablesState(text).jumps.map((j) => j.split(" ")[0]).sort();
      const flow = `tcp,${REMOTES.internet4},${TCP_PORT},${MiB},${MiB}`;

      const ours = (text: string) =>
        text.split("\n").filter((l) => /-A STB_NETACCT_(LINK|OUT|IN) /.test(l))
          .filter((l) => !/stb-netacct (tx|rx)/.test(l)).map((l) => l.replace(/^\[\d+:\d+\] /, ""));

      // The lab's "internet" peer is on-link: counted without internal_onlink only.
      await driver.request(base);
      const first = await kernel();
      assertEquals(first.adopted, false);
      await lab.trafficIn("/web.service", [flow]);
      const r1 = await read();
      if (!(r1.web!.txBytes > BigInt(MiB))) throw new Error(`nothing counted: ${r1.web!.txBytes}`);
      await driver.request({ op: "stop", keep: true });

      // Attached twice by someone: rebuilt, one jump each, the counts carried.
      await lab.inClient([
        "iptables",
        "-t",
        "mangle",
        "-I",
        "OUTPUT",
        "-m",
        "comment",
        "--comment",
        "stb-netacct",
        "-j",
        "STB_NETACCT_OUT",
      ]);
      await driver.request(base);
      assertEquals(await kernel(), { id: first.id, adopted: true });
      const r2 = await read();
      if (r2.web!.txBytes < r1.web!.txBytes) throw new Error("counts lost by the rebuild");
      for (const text of Object.values(await save())) {
        assertEquals(jumps(text), ["OUTPUT", "PREROUTING"]);
      }

      // Another config (on-link, an excluded interface): rebuilt, counts carried.
      await driver.request({ op: "stop", keep: true });
      await driver.request(linked);
      assertEquals(await kernel(), { id: first.id, adopted: true });
      const r3 = await read();
      if (r3.web!.txBytes < r2.web!.txBytes) throw new Error("counts lost by the rebuild");
      await driver.request({ op: "stop", keep: true });
      const keptText = await save();
      if (Deno.env.get("STB_CAPTURE_TESTDATA")) {
        for (const f of [4, 6] as const) {
          await Deno.writeTextFile(`${TESTDATA}iptables_save_kept_v${f}.txt`, keptText[f]);
        }
      }
      const rebuilt = ours(keptText[4]);
      for (
        const want of [
          /-A STB_NETACCT_LINK -d 198\.51\.100\.0\/24 -j RETURN/,
          /-A STB_NETACCT_OUT -o stbx0 -j RETURN/,
          /-A STB_NETACCT_IN -i stbx0 -j RETURN/,
        ]
      ) {
        if (!rebuilt.some((l) => want.test(l))) {
          throw new Error(`no ${want}:\n${rebuilt.join("\n")}`);
        }
      }

      // The same config: adopted; the on-link and interface rules as they were.
      await driver.request(linked);
      assertEquals(await kernel(), { id: first.id, adopted: true });
      assertEquals(ours((await save())[4]), rebuilt);
      const r4 = await read();
      if (r4.web!.txBytes < r3.web!.txBytes) throw new Error("counts lost by the adoption");

      // Without on-link again: rebuilt, the LINK chain gone, the chains count on.
      await driver.request({ op: "stop", keep: true });
      await driver.request(base);
      assertEquals(await kernel(), { id: first.id, adopted: true });
      for (const text of Object.values(await save())) {
        assertEquals(jumps(text), ["OUTPUT", "PREROUTING"]);
        if (text.includes("STB_NETACCT_LINK")) throw new Error(`LINK left:\n${text}`);
      }
      await lab.trafficIn("/web.service", [flow]);
      const r5 = await read();
      if (!(r5.web!.txBytes > r4.web!.txBytes + BigInt(MiB))) {
        throw new Error(
          `the kept chains did not count on: ${r4.web!.txBytes} -> ${r5.web!.txBytes}`,
        );
      }

      // An older release's chains (no markers): replaced, counting from zero.
      await driver.request({ op: "stop", keep: true });
      for (const tool of ["iptables", "ip6tables"]) {
        await lab.inClient([tool, "-t", "mangle", "-F", "STB_NETACCT_META"]);
      }
      await driver.request(base);
      const replaced = await kernel();
      assertEquals(replaced.adopted, false);
      if (replaced.id === first.id) throw new Error("chains without markers were adopted");
      const r6 = await read();
      if (r6.web!.txBytes >= r5.web!.txBytes) throw new Error("replaced chains kept counts");
      await driver.request({ op: "stop" });
      await noneLeft(lab);
    } finally {
      await lab.close();
    }
  },
});
