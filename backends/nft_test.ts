import { assertEquals } from "../lib/test_assert.ts";
import {
  findMarkers,
  nftCgroupPrefix,
  nftOnlinkBatch,
  type NftPlan,
  nftRebuild,
  nftRetargetBatch,
  nftRuleset,
  parseNftCounters,
} from "./nft.ts";
import { BackendError } from "./backend.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;

Deno.test("parseNftCounters reads captured nft -j list counters output", () => {
  const json = Deno.readTextFileSync(`${TESTDATA}nft_list_counters.json`);
  const counters = parseNftCounters(json);
  assertEquals([...counters.keys()].sort(), ["rx_late", "rx_web", "tx_late", "tx_web"]);
  const tx = counters.get("tx_web")!;
  // Captured after the test's first phase: 9 MiB up, 13 MiB down from "web".
  if (!(tx.bytes > 9 * 1024 * 1024 && tx.packets > 0)) throw new Error(JSON.stringify(tx));
  if (!(counters.get("rx_web")!.bytes > 13 * 1024 * 1024)) throw new Error("rx_web too small");
  assertEquals(counters.get("tx_late"), { packets: 0n, bytes: 0n });
});

Deno.test("parseNftCounters ignores other tables and rejects garbage", () => {
  const json = JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6" } },
      { counter: { family: "ip", name: "tx_web", table: "other", packets: 1, bytes: 2 } },
      { counter: { family: "inet", name: "tx_web", table: "stb_netacct", packets: 3, bytes: 4 } },
    ],
  });
  assertEquals([...parseNftCounters(json)], [["tx_web", { packets: 3n, bytes: 4n }]]);
  for (
    const bad of [
      "",
      "{}",
      '{"nftables": [{"counter": {"family": "inet", "table": "stb_netacct"}}]}',
    ]
  ) {
    let threw = false;
    try {
      parseNftCounters(bad);
    } catch (e) {
      threw = e instanceof BackendError;
    }
    if (!threw) throw new Error(`no BackendError for ${JSON.stringify(bad)}`);
  }
});

Deno.test("nftCgroupPrefix spells the cgroup2 mount relative to /sys/fs/cgroup", () => {
  assertEquals(nftCgroupPrefix("/sys/fs/cgroup"), "");
  assertEquals(nftCgroupPrefix("/sys/fs/cgroup/"), "");
  assertEquals(nftCgroupPrefix("/sys/fs/cgroup/unified"), "unified/");
  assertEquals(nftCgroupPrefix("/mnt/cg2"), "../../../mnt/cg2/");
});

const plan: NftPlan = {
  services: [
    {
      name: "server",
      path: "/user.slice/app-stb\\x2dnext.slice/s.service",
      mark: 0x510000,
      present: true,
    },
    { name: "shell", path: "/user.slice/sh.service", mark: 0x520000, present: false },
  ],
  ctMask: 0x00ff0000,
  cgroupPrefix: "unified/",
  excludeV4: ["10.0.0.0/8"],
  excludeV6: [],
  skipInterfaces: [],
  onlink: null,
};

Deno.test("nftRuleset: absent cgroups get no rule, every service gets counters", () => {
  const text = nftRuleset(plan);
  if (!text.startsWith("table inet stb_netacct {}\ndelete table inet stb_netacct\n")) {
    throw new Error("a stale table is not replaced in the same transaction");
  }
  for (
    const needle of [
      'socket cgroupv2 level 3 "unified/user.slice/app-stb\\x2dnext.slice/s.service" ' +
      "ct mark set ct mark & 0xff00ffff | 0x00510000 return",
      "counter tx_shell {}",
      '0x00520000 : "rx_shell"',
      "elements = { 10.0.0.0/8 }",
    ]
  ) {
    if (!text.includes(needle)) throw new Error(`ruleset lacks ${needle}:\n${text}`);
  }
  if (text.includes("sh.service")) throw new Error("absent cgroup got a rule");
  const batch = nftRetargetBatch(plan);
  if (
    !batch.startsWith(
      "flush chain inet stb_netacct attribute\nadd rule inet stb_netacct attribute socket",
    )
  ) {
    throw new Error(batch);
  }
  if (batch.includes("counter")) throw new Error("retarget must not touch counters");
});

Deno.test("nftRuleset: excluded interfaces by name and on-link sets return before marking and counting", () => {
  const plain = nftRuleset(plan);
  for (const absent of ["oifname", "iifname", "onlink"]) {
    if (plain.includes(absent)) throw new Error(`${absent} without the options:\n${plain}`);
  }
  const text = nftRuleset({
    ...plan,
    skipInterfaces: ["tailscale0", "wg0"],
    onlink: { v4: ["203.0.113.0/24"], v6: ["2001:db8:1::/64"] },
  });
  const output = text.slice(text.indexOf("chain output"), text.indexOf("chain input"));
  const input = text.slice(text.indexOf("chain input"));
  for (
    const [part, needles] of [
      [output, [
        'oifname { "tailscale0", "wg0" } return',
        "ip daddr @onlink4 return",
        "ip6 daddr @onlink6 return",
      ]],
      [input, [
        'iifname { "tailscale0", "wg0" } return',
        "ip saddr @onlink4 return",
        "ip6 saddr @onlink6 return",
      ]],
      [text, ["set onlink4", "elements = { 203.0.113.0/24 }", "elements = { 2001:db8:1::/64 }"]],
    ] as const
  ) {
    for (const n of needles) {
      if (!part.includes(n)) throw new Error(`lacks ${n}:\n${part}`);
      // Before anything marks or counts.
      if (part !== text && part.indexOf(n) > part.indexOf("ct mark")) {
        throw new Error(`${n} too late`);
      }
    }
  }
  const batch = nftOnlinkBatch({ v4: [], v6: ["2001:db8:1::/64"] });
  assertEquals(
    batch,
    "flush set inet stb_netacct onlink4\nflush set inet stb_netacct onlink6\n" +
      "add element inet stb_netacct onlink6 { 2001:db8:1::/64 }\n",
  );
});

Deno.test("nft markers: found among the counters; a rebuild keeps the counters it has", () => {
  assertEquals(findMarkers(["tx_a", "instance_00ff", "config_abcd"]), {
    instance: "00ff",
    config: "abcd",
  });
  assertEquals(findMarkers(["tx_a"]), { instance: null, config: null });
  const plan: NftPlan = {
    services: [{ name: "a", path: "/a", mark: 0x10000, present: true }],
    ctMask: 0xff0000,
    cgroupPrefix: "",
    excludeV4: [],
    excludeV6: [],
    skipInterfaces: [],
    onlink: null,
  };
  const batch = nftRebuild(
    plan,
    { instance: "00ff", config: "beef" },
    new Set([
      "tx_a",
      "rx_a",
      "tx_gone",
      "instance_00ff",
      "config_abcd",
    ]),
  );
  // Kept counters are neither declared again nor deleted; the stale ones go.
  assertEquals(batch.includes("counter tx_a {}"), false);
  assertEquals(batch.includes("delete counter inet stb_netacct tx_gone"), true);
  assertEquals(batch.includes("delete counter inet stb_netacct config_abcd"), true);
  assertEquals(batch.includes("counter config_beef {}"), true);
  assertEquals(batch.includes("delete counter inet stb_netacct tx_a"), false);
});
