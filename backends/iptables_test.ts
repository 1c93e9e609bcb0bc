import { assertEquals } from "../lib/test_assert.ts";
import {
  decideIptables,
  iptablesCleanupScript,
  iptablesConfigDigest,
  type IptablesFound,
  iptablesInstallScript,
  iptablesOnlinkScript,
  type IptablesPlan,
  iptablesRetargetScript,
  parseIptablesCounters,
  parseIptablesState,
  parseNftChainCounters,
  restoreQuote,
} from "./iptables.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;
const MiB = 1024 * 1024;

function byKey(text: string) {
  return Object.fromEntries(
    parseIptablesCounters(text).map((c) => [`${c.direction} ${c.service}`, c]),
  );
}

Deno.test("parseIptablesCounters reads captured iptables-save -c (IPv4)", () => {
  const c = byKey(Deno.readTextFileSync(`${TESTDATA}iptables_save_v4.txt`));
  assertEquals(Object.keys(c).sort(), ["rx late", "rx web", "tx late", "tx web"]);
  // Captured after the test's first phase: 6 MiB up and 9 MiB down over IPv4 from "web".
  const tx = Number(c["tx web"]?.bytes ?? 0n);
  if (!(tx > 6 * MiB && tx < 6.2 * MiB)) throw new Error(`tx web: ${tx}`);
  const rx = Number(c["rx web"]?.bytes ?? 0n);
  if (!(rx > 9 * MiB && rx < 9.2 * MiB)) throw new Error(`rx web: ${rx}`);
  assertEquals([c["tx late"]?.packets, c["tx late"]?.bytes], [0n, 0n]);
});

Deno.test("parseIptablesCounters reads captured ip6tables-save -c (IPv6)", () => {
  const c = byKey(Deno.readTextFileSync(`${TESTDATA}iptables_save_v6.txt`));
  assertEquals(Object.keys(c).sort(), ["rx late", "rx web", "tx late", "tx web"]);
  // 3 MiB up and 4 MiB down over IPv6.
  const tx = c["tx web"]?.bytes ?? 0;
  if (!(tx > 3 * MiB && tx < 3.1 * MiB)) {
    throw new Error(JSON.stringify(c));
  }
  const rx = c["rx web"]?.bytes ?? 0;
  if (!(rx > 4 * MiB && rx < 4.1 * MiB)) {
    throw new Error(JSON.stringify(c));
  }
});

Deno.test("parseNftChainCounters agrees with iptables-save on output captured together", () => {
  // Both listings were taken at the same moment of the scenario (services web, late in
  // that order), so the position-based reading must give what the comments say.
  for (
    const [family, saveFile] of [
      ["v4", "iptables_save_v4.txt"],
      ["v6", "iptables_save_v6.txt"],
    ] as const
  ) {
    const save = byKey(Deno.readTextFileSync(`${TESTDATA}${saveFile}`));
    for (const [chain, dir] of [["STB_NETACCT_OUT", "tx"], ["STB_NETACCT_IN", "rx"]] as const) {
      const json = Deno.readTextFileSync(`${TESTDATA}nft_iptables_${family}_${chain}.json`);
      const rules = parseNftChainCounters(json, chain, 2);
      if (!rules) throw new Error(`${family} ${chain}: not recognised`);
      rules.forEach((r, i) => {
        const svc = ["web", "late"][i];
        assertEquals(
          [r.service, r.packets, r.bytes],
          [null, save[`${dir} ${svc}`]?.packets, save[`${dir} ${svc}`]?.bytes],
          `${family} ${chain} ${svc}`,
        );
      });
      if (!((rules[0]?.bytes ?? 0) > MiB)) {
        throw new Error(`${family} ${chain}: web counted nothing`);
      }
      // A service count that does not match the chain means "not as installed": no guess.
      assertEquals(parseNftChainCounters(json, chain, 3), null);
    }
  }
});

Deno.test("parseNftChainCounters skips jumps and targets, reads native comments", () => {
  const rule = (expr: unknown[], comment?: string) => ({
    rule: { family: "ip", table: "mangle", chain: "STB_NETACCT_IN", expr, comment },
  });
  const counter = (n: number) => ({ counter: { packets: n, bytes: n * 100 } });
  const xt = (type: string, name: string) => ({ xt: { type, name } });
  const json = JSON.stringify({
    nftables: [
      rule([xt("match", "comment"), counter(1), { jump: { target: "X" } }]),
      rule([xt("match", "comment"), counter(2), xt("target", "CONNMARK")]),
      rule([xt("match", "connmark"), counter(3)], "stb-netacct rx b"),
      rule([xt("match", "connmark"), xt("match", "comment"), counter(4)]),
      { rule: { chain: "OTHER", expr: [xt("match", "comment"), counter(5)] } },
    ],
  });
  assertEquals(parseNftChainCounters(json, "STB_NETACCT_IN", 2), [
    { service: "b", packets: 3n, bytes: 300n },
    { service: null, packets: 4n, bytes: 400n },
  ]);
  assertEquals(parseNftChainCounters("not json", "STB_NETACCT_IN", 0), null);
});

Deno.test("parseIptablesCounters ignores rules that are not our counting rules", () => {
  const text = [
    '[5:500] -A OUTPUT -m comment --comment "stb-netacct tx web" -j ACCEPT',
    '[7:700] -A STB_NETACCT_MARK -m comment --comment "stb-netacct tx web"',
    "[1:100] -A STB_NETACCT_OUT -o lo -j RETURN",
    '[2:200] -A STB_NETACCT_IN -m connmark --mark 0x520000/0xff0000 -m comment --comment "stb-netacct rx a.b-c_d"',
  ].join("\n");
  assertEquals(parseIptablesCounters(text), [
    { direction: "rx", service: "a.b-c_d", packets: 2n, bytes: 200n },
  ]);
});

Deno.test("iptablesCleanupScript removes only our jumps and chains", () => {
  const save = [
    "*filter",
    ":STB_NETACCT_OTHER - [0:0]",
    "COMMIT",
    "*mangle",
    ":PREROUTING ACCEPT [0:0]",
    ":OUTPUT ACCEPT [0:0]",
    ":STB_NETACCT_IN - [0:0]",
    ":STB_NETACCT_OUT - [0:0]",
    "-A PREROUTING -m comment --comment stb-netacct -j STB_NETACCT_IN",
    "-A OUTPUT -j MARK --set-xmark 0x1/0x1",
    "-A OUTPUT -m comment --comment stb-netacct -j STB_NETACCT_OUT",
    "-A STB_NETACCT_OUT -o lo -j RETURN",
    "COMMIT",
  ].join("\n");
  assertEquals(
    iptablesCleanupScript(save),
    [
      "*mangle",
      "-D PREROUTING -m comment --comment stb-netacct -j STB_NETACCT_IN",
      "-D OUTPUT -m comment --comment stb-netacct -j STB_NETACCT_OUT",
      "-F STB_NETACCT_IN",
      "-F STB_NETACCT_OUT",
      "-X STB_NETACCT_IN",
      "-X STB_NETACCT_OUT",
      "COMMIT",
      "",
    ].join("\n"),
  );
  assertEquals(iptablesCleanupScript("*mangle\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"), "");
});

Deno.test("iptables scripts: cgroup paths quoted for restore, absent cgroups left out", () => {
  assertEquals(restoreQuote('/a\\x2db/"q"'), '"/a\\\\x2db/\\"q\\""');
  const plan: IptablesPlan = {
    services: [
      { name: "server", path: "/app-stb\\x2dnext.slice/s.service", mark: 0x510000, present: true },
      { name: "shell", path: "/sh.service", mark: 0x520000, present: false },
    ],
    ctMask: 0x00ff0000,
    exclude: { 4: ["10.0.0.0/8"], 6: ["fc00::/7"] },
    skipInterfaces: [],
    onlink: null,
  };
  const v4 = iptablesInstallScript(plan, 4);
  for (
    const needle of [
      '-A STB_NETACCT_MARK -m cgroup --path "/app-stb\\\\x2dnext.slice/s.service" -j CONNMARK --set-xmark 0x510000/0xff0000',
      '-A STB_NETACCT_IN -m connmark --mark 0x520000/0xff0000 -m comment --comment "stb-netacct rx shell"',
      "-A STB_NETACCT_OUT -m connmark --mark 0x0/0xff0000 -j STB_NETACCT_MARK",
      "-A STB_NETACCT_MARK -d 10.0.0.0/8 -j RETURN",
      "-I OUTPUT 1 -m comment --comment stb-netacct -j STB_NETACCT_OUT",
    ]
  ) {
    if (!v4.includes(needle)) throw new Error(`install script lacks ${needle}:\n${v4}`);
  }
  if (v4.includes("sh.service") || v4.includes("fc00") || v4.includes("LINK")) throw new Error(v4);
  const re6 = iptablesRetargetScript(plan, 6);
  assertEquals(re6.split("\n").slice(0, 3), [
    "*mangle",
    "-F STB_NETACCT_MARK",
    "-A STB_NETACCT_MARK -d fc00::/7 -j RETURN",
  ]);
  if (re6.includes("comment")) throw new Error("retarget must not touch the counting rules");
});

Deno.test("iptables scripts: excluded interfaces RETURN by name, on-link flows stay unmarked", () => {
  const plan: IptablesPlan = {
    services: [{ name: "server", path: "/s.service", mark: 0x510000, present: true }],
    ctMask: 0x00ff0000,
    exclude: { 4: ["10.0.0.0/8"], 6: ["fc00::/7"] },
    skipInterfaces: ["tailscale0"],
    onlink: { 4: ["203.0.113.0/24"], 6: ["2001:db8:1::/64"] },
  };
  const v4 = iptablesInstallScript(plan, 4).split("\n");
  const at = (line: string) => {
    const i = v4.indexOf(line);
    if (i < 0) throw new Error(`install script lacks ${line}:\n${v4.join("\n")}`);
    return i;
  };
  at(":STB_NETACCT_LINK - [0:0]");
  const mark = at("-A STB_NETACCT_OUT -m connmark --mark 0x0/0xff0000 -j STB_NETACCT_LINK");
  if (at("-A STB_NETACCT_OUT -o tailscale0 -j RETURN") > mark) {
    throw new Error("interface after marking");
  }
  at("-A STB_NETACCT_IN -i tailscale0 -j RETURN");
  const link = at("-A STB_NETACCT_LINK -d 203.0.113.0/24 -j RETURN");
  if (at("-A STB_NETACCT_LINK -g STB_NETACCT_MARK") < link) throw new Error("goto before on-link");
  assertEquals(iptablesOnlinkScript(plan, 6).split("\n"), [
    "*mangle",
    "-F STB_NETACCT_LINK",
    "-A STB_NETACCT_LINK -d 2001:db8:1::/64 -j RETURN",
    "-A STB_NETACCT_LINK -g STB_NETACCT_MARK",
    "COMMIT",
    "",
  ]);
});

const KEPT_PLAN: IptablesPlan = {
  services: [
    { name: "web", path: "/web.service", mark: 0x510000, present: true },
    { name: "late", path: "/late.service", mark: 0x520000, present: false },
  ],
  ctMask: 0x00ff0000,
  exclude: { 4: ["10.0.0.0/8"], 6: ["fc00::/7"] },
  skipInterfaces: [],
  onlink: null,
};

/**
 * Captured (tests/backends/iptables_test.ts, STB_CAPTURE_TESTDATA=1): `iptables-save -c -t
 * mangle` / ip6tables-save of chains a run stopped with `keep` left, with internal_onlink.
 */
const kept = (f: 4 | 6) => Deno.readTextFileSync(`${TESTDATA}iptables_save_kept_v${f}.txt`);

Deno.test("parseIptablesState reads markers, jumps and counters of kept chains", () => {
  for (const f of [4, 6] as const) {
    const s = parseIptablesState(kept(f));
    assertEquals(s.chains.sort(), [
      "STB_NETACCT_IN",
      "STB_NETACCT_LINK",
      "STB_NETACCT_MARK",
      "STB_NETACCT_META",
      "STB_NETACCT_OUT",
    ]);
    if (!/^[0-9a-f]{16}$/.test(s.instance ?? "")) throw new Error(`instance: ${s.instance}`);
    if (!/^[0-9a-f]{16}$/.test(s.config ?? "")) throw new Error(`config: ${s.config}`);
    assertEquals(s.jumps.map((j) => j.split(" ")[0]).sort(), ["OUTPUT", "PREROUTING"]);
    assertEquals(s.counters.map((c) => `${c.direction} ${c.service}`).sort(), [
      "rx late",
      "rx web",
      "tx late",
      "tx web",
    ]);
  }
  // Both families were made by one start.
  assertEquals(parseIptablesState(kept(4)).instance, parseIptablesState(kept(6)).instance);
  // An older release's chains: no markers.
  const old = parseIptablesState(Deno.readTextFileSync(`${TESTDATA}iptables_save_v4.txt`));
  assertEquals([old.instance, old.config, old.jumps.length], [null, null, 2]);
});

Deno.test("iptablesConfigDigest: the shape counts, cgroups present and on-link prefixes do not", async () => {
  const base = await iptablesConfigDigest(KEPT_PLAN);
  const same = await iptablesConfigDigest({
    ...KEPT_PLAN,
    services: KEPT_PLAN.services.map((s) => ({ ...s, present: !s.present })),
  });
  assertEquals(same, base);
  const linked = { ...KEPT_PLAN, onlink: { 4: ["192.0.2.0/24"], 6: [] } };
  const linked2 = { ...KEPT_PLAN, onlink: { 4: [], 6: ["2001:db8::/64"] } };
  assertEquals(await iptablesConfigDigest(linked), await iptablesConfigDigest(linked2));
  for (
    const other of [
      linked,
      { ...KEPT_PLAN, exclude: { 4: ["10.0.0.0/8", "192.0.2.0/24"], 6: ["fc00::/7"] } },
      { ...KEPT_PLAN, skipInterfaces: ["wg0"] },
      { ...KEPT_PLAN, services: KEPT_PLAN.services.slice(0, 1) },
    ]
  ) {
    if (await iptablesConfigDigest(other) === base) throw new Error(JSON.stringify(other));
  }
});

function found(over: Partial<IptablesFound> = {}): IptablesFound {
  return {
    chains: ["STB_NETACCT_OUT", "STB_NETACCT_MARK", "STB_NETACCT_IN", "STB_NETACCT_META"],
    jumps: [
      "OUTPUT -m comment --comment stb-netacct -j STB_NETACCT_OUT",
      "PREROUTING -m comment --comment stb-netacct -j STB_NETACCT_IN",
    ],
    instance: "00112233aabbccdd",
    config: "cafe",
    counters: [
      { direction: "tx", service: "web", packets: 3n, bytes: 300n },
      { direction: "rx", service: "web", packets: 4n, bytes: 400n },
    ],
    ...over,
  };
}

Deno.test("decideIptables: adopt, rebuild keeping counts, replace, install", () => {
  const none: IptablesFound = { chains: [], jumps: [], instance: null, config: null, counters: [] };
  assertEquals(decideIptables({ 4: none, 6: none }, "cafe", ["web"]), { kind: "install" });
  assertEquals(decideIptables({ 4: found(), 6: found() }, "cafe", ["web"]), {
    kind: "adopt",
    instance: "00112233aabbccdd",
  });
  // Another config (a service more): rebuilt, the same instance, the counts carried.
  const rebuilt = decideIptables({ 4: found(), 6: found() }, "beef", ["web"]);
  assertEquals(rebuilt.kind, "rebuild");
  if (rebuilt.kind !== "rebuild") return;
  assertEquals(rebuilt.instance, "00112233aabbccdd");
  assertEquals(rebuilt.carried[4].get("tx web"), { packets: 3n, bytes: 300n });
  assertEquals(decideIptables({ 4: found(), 6: found() }, "cafe", ["web", "new"]).kind, "rebuild");
  // Attached twice, or not at all: rebuilt (one jump each afterwards).
  const twice = found({ jumps: [...found().jumps, found().jumps[0]!] });
  assertEquals(decideIptables({ 4: twice, 6: found() }, "cafe", ["web"]).kind, "rebuild");
  assertEquals(
    decideIptables({ 4: found(), 6: found({ jumps: [] }) }, "cafe", ["web"]).kind,
    "rebuild",
  );
  // A counting rule found twice counted the same packets twice: the larger count is carried.
  const dup = found({
    counters: [...found().counters, { direction: "tx", service: "web", packets: 1n, bytes: 100n }],
  });
  const d = decideIptables({ 4: dup, 6: found() }, "cafe", ["web"]);
  if (d.kind !== "rebuild") throw new Error(d.kind);
  assertEquals(d.carried[4].get("tx web"), { packets: 3n, bytes: 300n });
  // No markers (an older release), half of them, or two different starts: replaced.
  assertEquals(
    decideIptables({ 4: found({ instance: null }), 6: found() }, "cafe", []).kind,
    "replace",
  );
  assertEquals(
    decideIptables({ 4: found(), 6: found({ instance: "ff" }) }, "cafe", []).kind,
    "replace",
  );
  assertEquals(decideIptables({ 4: none, 6: found() }, "cafe", []).kind, "replace");
});

Deno.test("iptablesInstallScript rebuilding: old jumps out, chains flushed, counts carried", () => {
  const existing = found({ chains: [...found().chains, "STB_NETACCT_LINK"] });
  const script = iptablesInstallScript(KEPT_PLAN, 4, {
    markers: { instance: "00112233aabbccdd", config: "beef" },
    existing,
    carried: new Map([["tx web", { packets: 3n, bytes: 300n }]]),
  }).split("\n");
  const at = (line: string) => {
    const i = script.indexOf(line);
    if (i < 0) throw new Error(`rebuild script lacks ${line}:\n${script.join("\n")}`);
    return i;
  };
  // Existing chains are not declared again (that would fail or flush twice).
  assertEquals(script.filter((l) => l.startsWith(":")), []);
  const del = at("-D OUTPUT -m comment --comment stb-netacct -j STB_NETACCT_OUT");
  at("-D PREROUTING -m comment --comment stb-netacct -j STB_NETACCT_IN");
  const flush = at("-F STB_NETACCT_OUT");
  // The on-link chain is no longer wanted: flushed after what refers to it, then deleted.
  if (at("-X STB_NETACCT_LINK") < flush || del > flush) throw new Error(script.join("\n"));
  at('-A STB_NETACCT_META -m comment --comment "stb-netacct instance 00112233aabbccdd"');
  at('-A STB_NETACCT_META -m comment --comment "stb-netacct config beef"');
  at(
    '[3:300] -A STB_NETACCT_OUT -m connmark --mark 0x510000/0xff0000 -m comment --comment "stb-netacct tx web"',
  );
  at(
    '-A STB_NETACCT_IN -m connmark --mark 0x510000/0xff0000 -m comment --comment "stb-netacct rx web"',
  );
  assertEquals(script.filter((l) => l.startsWith("-I ")).length, 2);
  // A fresh install declares every chain, the marker chain too.
  const fresh = iptablesInstallScript(KEPT_PLAN, 6).split("\n");
  assertEquals(fresh.filter((l) => l.startsWith(":")).sort(), [
    ":STB_NETACCT_IN - [0:0]",
    ":STB_NETACCT_MARK - [0:0]",
    ":STB_NETACCT_META - [0:0]",
    ":STB_NETACCT_OUT - [0:0]",
  ]);
});
