import { assert, assertEquals } from "./assert.ts";
import { CGROUP_PREFIX } from "./cgroups.ts";
import { oursOrStale, randomTag, run, RUN_SCOPE } from "./exec.ts";
import { bpfAttachments, iptablesLines, leftovers, nftRuleCount, nftTables } from "./leftovers.ts";
import { findCgroup2Mount } from "../../lib/cgroup.ts";
import { NETNS_PREFIX } from "./topology.ts";
import { sweepStale } from "./sweep.ts";
import { CONTAINER_CGROUP_PREFIX, parseNameSystemdMount } from "../systemd/container.ts";

Deno.test("leftovers: the check sees each kind of leftover (so it can fail) and clears when removed", async () => {
  const mount = findCgroup2Mount().mountPoint;
  const baseline = await bpfAttachments(mount);
  const tag = RUN_SCOPE + randomTag();
  const ns = `${NETNS_PREFIX}${tag}-x`;
  const nsPath = `/run/netns/${ns}`;
  const cg = `${mount}/${CGROUP_PREFIX}${tag}`;
  try {
    await run(["ip", "netns", "add", ns]);
    Deno.mkdirSync(cg);
    await run(["nsenter", `--net=${nsPath}`, "nft", "-f", "-"], {
      stdin:
        "table inet stb_netacct { chain output { type filter hook output priority 0; counter; }; }",
    });
    await run(["nsenter", `--net=${nsPath}`, "iptables", "-t", "mangle", "-N", "STB_NETACCT_OUT"]);
    await run([
      "nsenter",
      `--net=${nsPath}`,
      "iptables",
      "-t",
      "mangle",
      "-A",
      "OUTPUT",
      "-j",
      "STB_NETACCT_OUT",
    ]);

    assertEquals(await nftTables(nsPath), ["inet stb_netacct"]);
    assertEquals(await nftRuleCount(nsPath), 1);
    assertEquals((await iptablesLines(nsPath)).length, 2, "chain and jump");
    const found = await leftovers(mount, baseline, [nsPath]);
    for (
      const what of [ns, cg, "nft table inet stb_netacct", ":STB_NETACCT_OUT", "-j STB_NETACCT_OUT"]
    ) {
      assert(
        found.some((l) => l.includes(what)),
        `leftover check missed ${what}: ${found.join("; ")}`,
      );
    }
  } finally {
    await run(["ip", "netns", "del", ns], { allowFail: true });
    try {
      Deno.removeSync(cg);
    } catch { /* not made */ }
  }
  const after = (await leftovers(mount, baseline)).filter((l) => l.includes(tag));
  assertEquals(after, [], "after removal");
});

Deno.test("leftovers: names of this run and of dead runs are ours, a live run's are not", () => {
  assert(oursOrStale(`${NETNS_PREFIX}${RUN_SCOPE}abcd-c`, NETNS_PREFIX), "own tag");
  assert(!oursOrStale(`${NETNS_PREFIX}1xabcd-c`, NETNS_PREFIX), "pid 1 is alive: another run's");
  assert(oursOrStale(`${NETNS_PREFIX}2147483646xabcd-c`, NETNS_PREFIX), "dead pid: stale");
  assert(oursOrStale(`${CGROUP_PREFIX}${RUN_SCOPE}abcd`, CGROUP_PREFIX), "cgroup prefix");
  assert(!oursOrStale(`${NETNS_PREFIX}abcd-c`, NETNS_PREFIX), "no run scope: not made here");
});

Deno.test("sweep: a killed run's namespace and cgroup go, a live run's stay", async () => {
  const mount = findCgroup2Mount().mountPoint;
  const dead = `2147483646x${randomTag()}`;
  const live = `1x${randomTag()}`; // pid 1 is always alive: another run's, to be kept
  const made = [`${NETNS_PREFIX}${dead}-c`, `${NETNS_PREFIX}${live}-c`];
  const cgroups = [`${mount}/${CGROUP_PREFIX}${dead}`, `${mount}/${CGROUP_PREFIX}${live}`];
  // The systemd test's container cgroup, and on a hybrid host its v1 name=systemd mirror.
  const v1 = parseNameSystemdMount(Deno.readTextFileSync("/proc/self/mountinfo"));
  for (const root of v1 === null ? [mount] : [mount, v1]) {
    cgroups.push(`${root}/${CONTAINER_CGROUP_PREFIX}${dead}`);
    cgroups.push(`${root}/${CONTAINER_CGROUP_PREFIX}${live}`);
  }
  try {
    for (const ns of made) await run(["ip", "netns", "add", ns]);
    for (const cg of cgroups) Deno.mkdirSync(`${cg}/child`, { recursive: true });
    const removed = await sweepStale(mount);
    assert(removed.includes(`netns ${made[0]}`), removed.join("; "));
    for (const cg of cgroups.filter((c) => c.includes(dead))) {
      assert(removed.includes(`cgroup ${cg}`), `${cg} not in: ${removed.join("; ")}`);
      assert(!existsDir(cg), `${cg} is still there`);
    }
    assert(!removed.some((l) => l.includes(live)), `a live run's was removed: ${removed}`);
    const names = (await run(["ip", "netns", "list"])).stdout;
    assert(!names.includes(made[0]!) && names.includes(made[1]!), names);
    assert(cgroups.filter((c) => c.includes(live)).every(existsDir), "a live run's cgroups");
  } finally {
    for (const ns of made) await run(["ip", "netns", "del", ns], { allowFail: true });
    for (const cg of cgroups) {
      for (const d of [`${cg}/child`, cg]) {
        try {
          Deno.removeSync(d);
        } catch { /* removed by the sweep, or never made */ }
      }
    }
  }
});

function existsDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}
