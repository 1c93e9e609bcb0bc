import { assert, assertEquals } from "./assert.ts";
import { cgroupLeftovers, SERVICE_NAMES } from "./cgroups.ts";
import { Lab } from "./lab.ts";
import { runChain } from "./processes.ts";
import { LAYOUT_NAMES } from "./layouts.ts";

/** Prints pid, cgroup, netns and cmdline of the probe, its parent and grandparent. */
const PROBE = [
  "sh",
  "-c",
  `p=$PPID; g=$(cut -d' ' -f4 /proc/$p/stat)
for x in $$ $p $g; do
  printf '%s|%s|%s\\n' "$(tail -n1 /proc/$x/cgroup | cut -d: -f3-)" "$(readlink /proc/$x/ns/net)" \\
    "$(tr '\\000\\012' '  ' < /proc/$x/cmdline)"
done; exit 0`,
];

for (const layoutName of LAYOUT_NAMES) {
  Deno.test(`cgroups (${layoutName}): service chain of three processes lives in the service cgroup and the client netns`, async () => {
    const env = await Lab.open(layoutName);
    try {
      for (const s of SERVICE_NAMES) env.cgroups.create(s);
      assert(
        env.cgroups.dir("server").includes("app-stb\\x2dnext\\x2dserver.slice"),
        "literal \\x2d",
      );
      const netnsIno = Deno.statSync(env.clientNetns).ino;
      const r = await runChain(env.layout, env.clientNetns, env.cgroupInView("server"), PROBE);
      const rows = r.stdout.trim().split("\n").map((l) => {
        const [cg, net, ...cmd] = l.split("|");
        return [cg, net, cmd.join("|")];
      });
      assertEquals(rows.length, 3, "probe, child, parent");
      for (const [cg, net] of rows) {
        assertEquals(cg, env.cgroups.servicePath("server"), "cgroup of each process");
        assertEquals(net, `net:[${netnsIno}]`, "netns of each process");
      }
      const [, child, parent] = rows.map(([, , cmd]) => cmd ?? "");
      assert(child?.includes("stb-child"), `child is the chain's sh: ${child}`);
      assert(parent?.includes("stb-parent"), `parent is the chain's sh: ${parent}`);

      // An outsider gets the same chain but stays in the test's own cgroup.
      const out = await runChain(env.layout, env.clientNetns, null, PROBE);
      const own =
        Deno.readTextFileSync("/proc/self/cgroup").trim().split("\n").at(-1)!.split(":")[2];
      for (const l of out.stdout.trim().split("\n")) {
        assertEquals(l.split("|")[0], own, "outsider cgroup");
      }

      // Restart: the id changes; late creation works; teardown kills a live process.
      const before = env.cgroups.id("shell");
      await env.cgroups.recreate("shell");
      assert(env.cgroups.id("shell") !== before, "recreate gives a new id");
      const sleeper = runChain(env.layout, env.clientNetns, env.cgroupInView("host-agent"), [
        "sleep",
        "60",
      ])
        .catch(() => null);
      for (
        let i = 0;
        i < 100 && !Deno.readTextFileSync(`${env.cgroups.dir("host-agent")}/cgroup.procs`).trim();
        i++
      ) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await env.cgroups.teardown();
      await sleeper;
      assertEquals(cgroupLeftovers(env.cgroups.mountPoint).filter((d) => d.endsWith(env.tag)), []);
    } finally {
      await env.close();
    }
  });
}
