/**
 * Runs the firewall backend scenario on the user's host layout: cgroup2 alone at
 * /sys/fs/cgroup (this testbed is hybrid, cgroup2 at /sys/fs/cgroup/unified). Must be
 * started inside a private mount namespace, `unshare --mount --propagation private deno run
 * -A pure_v2.ts nft|iptables`, so the mount below never reaches the machine; it goes away
 * with this process. Prints one JSON line with the result.
 */

import { runScenario } from "./scenario.ts";
import { sh } from "./lab.ts";
import { findCgroup2Mount } from "../../lib/cgroup.ts";

const backend = Deno.args[0];
await sh("mount", ["-t", "cgroup2", "none", "/sys/fs/cgroup"]);
const { mountPoint } = findCgroup2Mount();
if (mountPoint !== "/sys/fs/cgroup") {
  throw new Error(`cgroup2 found at ${mountPoint}, not /sys/fs/cgroup`);
}
const result = await runScenario(backend, {
  assertClean: async (lab) => {
    const tables = await lab.inNs(lab.clientNs, "nft", ["list", "tables"]);
    const v4 = await lab.inNs(lab.clientNs, "iptables-save", []);
    const v6 = await lab.inNs(lab.clientNs, "ip6tables-save", []);
    if (/stb_netacct|STB_NETACCT/.test(tables + v4 + v6)) throw new Error("rules left after stop");
  },
});
console.log(JSON.stringify({ msPerRead: result.msPerRead, mountPoint }));
