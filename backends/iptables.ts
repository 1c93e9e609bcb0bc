/**
 * iptables backend (iptables-nft as on Debian 12): three chains of its own in the mangle
 * table of each family, reached by one jump at the top of OUTPUT and of PREROUTING.
 *
 *   STB_NETACCT_OUT  (from OUTPUT):     lo, excluded interfaces (`-o NAME`: by name, so one
 *                                       that appears or is renamed later just works) ->
 *                                       RETURN; flows not yet marked -> STB_NETACCT_MARK (or
 *                                       STB_NETACCT_LINK); one counting rule per service on
 *                                       its connmark
 *   STB_NETACCT_LINK (internal_onlink): on-link destinations -> RETURN (the flow stays
 *                                       unmarked); else goto STB_NETACCT_MARK
 *   STB_NETACCT_MARK:                   excluded destinations -> RETURN; `-m cgroup --path`
 *                                       per existing service cgroup -> CONNMARK --set-xmark
 *   STB_NETACCT_IN   (from PREROUTING): lo, excluded interfaces -> RETURN; one counting
 *                                       rule per service
 *
 * On-link prefixes are judged when a flow is marked, like the static exclusions: `read`
 * re-reads the connected routes (lib/onlink.ts) and, when they changed, rebuilds
 * STB_NETACCT_LINK alone (no ipset needed; counting rules untouched), so new flows to a
 * network that became on-link count no more.
 *
 * Counting rules carry stable comments ("stb-netacct tx <svc>") so a read finds them in
 * `iptables-save -c`. xt_cgroup binds a path to the cgroup at insert time (and refuses a
 * missing one), so retarget rebuilds only STB_NETACCT_MARK: the counting rules, and so
 * their counters, stay. Every change is one `iptables-restore --noflush` per family that
 * names only our chains and jumps.
 *
 * The chains outlive `run` (docs/design.md, "Kernel state kept"): a SIGKILL, a crash or a
 * service restart leaves them counting, and the next start adopts them. A fourth chain,
 * STB_NETACCT_META, which nothing jumps to, holds two no-op marker rules per family:
 * `-m comment --comment "stb-netacct instance <nonce>"` (made with the chains, kept for their
 * life: the id the saved totals record readings of) and `"stb-netacct config <digest>"` (the
 * rules' shape: exclusions, marks, services, interfaces, on-link or not). Chains of the same
 * shape, one jump each from OUTPUT and PREROUTING and every counting rule there, are adopted
 * (only STB_NETACCT_MARK and STB_NETACCT_LINK are rewritten); others are rebuilt in one
 * `iptables-restore -c --noflush` per family that writes each service's counting rule with
 * the counts it had (`[packets:bytes]`), so they carry on; chains without markers (an older
 * release's) are replaced.
 *
 * Reading: iptables-nft rules live in nftables, so where libnftables loads a read is four
 * `list chain` calls through it (~0.5 ms) instead of two iptables-save processes (3-15 ms);
 * see parseNftChainCounters for how rules are told apart there. Where that listing does
 * not show our rules as expected (iptables-legacy, another iptables-nft version),
 * iptables-save it is, said once in the log.
 */

import { asCount, parseExact } from "../lib/exact_json.ts";
import {
  type Backend,
  BackendError,
  type BackendOptions,
  type CounterSample,
  type KernelState,
  type ServiceTarget,
  type StopOptions,
} from "./backend.ts";
import { cgroupId } from "../lib/cgroup.ts";
import { runTool, ToolError } from "./exec.ts";
import {
  addCounter,
  exclusionsByFamily,
  FirewallRun,
  hex32,
  markPlan,
  type PlannedService,
  zeroSample,
} from "./firewall.ts";
import { LibnftablesRunner, type NftRunner } from "./nft_libnftables.ts";
import { OnlinkWatch } from "../lib/onlink.ts";
import { newNonce, shortDigest } from "../lib/digest.ts";

export const CHAIN_OUT = "STB_NETACCT_OUT";
export const CHAIN_MARK = "STB_NETACCT_MARK";
export const CHAIN_IN = "STB_NETACCT_IN";
export const CHAIN_LINK = "STB_NETACCT_LINK";
/** Holds the marker rules only; nothing jumps to it. */
export const CHAIN_META = "STB_NETACCT_META";
const OUR_CHAINS = [CHAIN_OUT, CHAIN_MARK, CHAIN_IN];
const CHAIN_PREFIX = "STB_NETACCT_";
const JUMP_COMMENT = "stb-netacct";
/** xt_cgroup's path field (revision 2) is 512 bytes with the NUL. */
const XT_CGROUP_PATH_MAX = 511;

export type IpFamily = 4 | 6;
const TOOLS: Record<IpFamily, { save: string; restore: string }> = {
  4: { save: "iptables-save", restore: "iptables-restore" },
  6: { save: "ip6tables-save", restore: "ip6tables-restore" },
};

const FAMILIES: IpFamily[] = [4, 6];

export interface IptablesCounter {
  direction: "tx" | "rx";
  service: string;
  packets: bigint;
  bytes: bigint;
}

/**
 * Our counting rules from `iptables-save -c -t mangle` (or ip6tables-save): lines like
 * `[12:3456] -A STB_NETACCT_OUT -m connmark --mark 0x510000/0xff0000 -m comment --comment "stb-netacct tx web"`.
 */
export function parseIptablesCounters(saveText: string): IptablesCounter[] {
  const out: IptablesCounter[] = [];
  const re = new RegExp(
    `^\\[(\\d+):(\\d+)\\] -A (?:${CHAIN_OUT}|${CHAIN_IN}) .*--comment "stb-netacct (tx|rx) ([^"\\s]+)"`,
  );
  for (const line of saveText.split("\n")) {
    const m = re.exec(line);
    if (!m) continue;
    // Every group of the pattern takes part in a match.
    out.push({
      direction: m[3] as "tx" | "rx",
      service: m[4]!,
      packets: BigInt(m[1]!),
      bytes: BigInt(m[2]!),
    });
  }
  return out;
}

export interface ChainCounter {
  /** From the rule's own comment when nft shows it, else null (identify by position). */
  service: string | null;
  packets: bigint;
  bytes: bigint;
}

interface NftJsonExpr {
  xt?: { type?: string; name?: string };
  counter?: { packets?: unknown; bytes?: unknown };
  [key: string]: unknown;
}

/**
 * The counting rules of one chain of ours, in chain order, from libnftables' JSON listing
 * of it (`list chain ip mangle STB_NETACCT_OUT`). iptables-nft 1.8.9 stores `-m connmark`
 * and `-m comment` as xt matches whose arguments nft's JSON leaves out, so a counting rule
 * is recognised by its shape: a comment match, a counter, and no verdict or target; it
 * belongs to the service at its position, as the install script wrote them in service
 * order. Rules that carry a native comment (newer iptables-nft) say their service. Returns
 * null when the listing is not one chain holding exactly `count` counting rules, so the
 * caller reads the comments through iptables-save instead of guessing.
 */
export function parseNftChainCounters(
  json: string,
  chain: string,
  count: number,
): ChainCounter[] | null {
  let doc: unknown;
  try {
    doc = parseExact(json); // counts above 2^53 keep every digit
  } catch {
    return null;
  }
  const items = (doc as { nftables?: unknown })?.nftables;
  if (!Array.isArray(items)) return null;
  const out: ChainCounter[] = [];
  for (const item of items) {
    const rule = (item as { rule?: { chain?: unknown; expr?: unknown; comment?: unknown } })
      ?.rule;
    if (!rule || rule.chain !== chain || !Array.isArray(rule.expr)) continue;
    const exprs = rule.expr as NftJsonExpr[];
    const xtComment = exprs.some((e) => e.xt?.type === "match" && e.xt.name === "comment");
    const ownComment = typeof rule.comment === "string" &&
      /^stb-netacct (tx|rx) \S+$/.test(rule.comment);
    const acts = exprs.some((e) =>
      e.xt?.type === "target" || "jump" in e || "goto" in e || "return" in e || "accept" in e ||
      "drop" in e || "mangle" in e
    );
    const counters = exprs.filter((e) => e.counter);
    const counter = counters.length === 1 ? counters[0]?.counter : undefined;
    if (!(xtComment || ownComment) || acts || !counter) continue;
    const packets = asCount(counter.packets), bytes = asCount(counter.bytes);
    if (packets === null || bytes === null) return null;
    const service = ownComment ? (rule.comment as string).split(" ")[2] ?? null : null;
    out.push({ service, packets, bytes });
  }
  return out.length === count ? out : null;
}

/**
 * A restore script that deletes every jump to a chain of ours and then our chains, found
 * in an `iptables-save -t mangle` listing; "" when there is nothing of ours. Rules are
 * deleted by their own saved spelling, so nothing else can match.
 */
export function iptablesCleanupScript(saveText: string): string {
  const jumps: string[] = [];
  const chains: string[] = [];
  let inMangle = false;
  for (const line of saveText.split("\n")) {
    if (line.startsWith("*")) inMangle = line === "*mangle";
    if (!inMangle) continue;
    const chain = /^:(\S+) /.exec(line)?.[1];
    if (chain?.startsWith(CHAIN_PREFIX)) chains.push(chain);
    const rule = /^(?:\[\d+:\d+\] )?-A (\S+) (.*)$/.exec(line);
    if (!rule) continue;
    const [, from = "", spec = ""] = rule;
    if (!from.startsWith(CHAIN_PREFIX) && /-j STB_NETACCT_\S+$/.test(spec)) {
      jumps.push(`-D ${from} ${spec}`);
    }
  }
  if (!jumps.length && !chains.length) return "";
  return [
    "*mangle",
    ...jumps,
    ...chains.map((c) => `-F ${c}`),
    ...chains.map((c) => `-X ${c}`),
    "COMMIT",
    "",
  ].join("\n");
}

/** Quotes one argument for iptables-restore, which undoes backslash escapes inside quotes. */
export function restoreQuote(arg: string): string {
  return `"${arg.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export interface IptablesPlan {
  /** Paths relative to the cgroup2 root, as xt_cgroup wants them. */
  services: PlannedService[];
  ctMask: number;
  exclude: Record<IpFamily, string[]>;
  /** Interfaces whose traffic never counts, by name. */
  skipInterfaces: string[];
  /** On-link prefixes per family, or null without internal_onlink (no LINK chain then). */
  onlink: Record<IpFamily, string[]> | null;
}

const markSpec = (value: number, mask: number) =>
  `0x${(value >>> 0).toString(16)}/0x${(mask >>> 0).toString(16)}`;

function markRules(plan: IptablesPlan, family: IpFamily): string[] {
  return [
    ...plan.exclude[family].map((c) => `-A ${CHAIN_MARK} -d ${c} -j RETURN`),
    ...plan.services.filter((s) => s.present).map((s) =>
      `-A ${CHAIN_MARK} -m cgroup --path ${restoreQuote(s.path)} ` +
      `-j CONNMARK --set-xmark ${markSpec(s.mark, plan.ctMask)}`
    ),
  ];
}

function linkRules(plan: IptablesPlan, family: IpFamily): string[] {
  return [
    ...(plan.onlink?.[family] ?? []).map((c) => `-A ${CHAIN_LINK} -d ${c} -j RETURN`),
    `-A ${CHAIN_LINK} -g ${CHAIN_MARK}`,
  ];
}

/** The marker rules' values (see the header); "" leaves a marker out. */
export interface IptablesMarkers {
  instance: string;
  config: string;
}

/** Counts a rebuilt counting rule starts from, by "tx <service>" / "rx <service>". */
export type CarriedCounts = Map<string, { packets: bigint; bytes: bigint }>;

export interface InstallExtras {
  markers?: IptablesMarkers;
  /**
   * What is there now (parseIptablesState): its jumps are deleted and its chains flushed
   * (deleted when the plan has no use for them) in the same transaction.
   */
  existing?: IptablesFound;
  /** Counts for the counting rules (`iptables-restore -c`). */
  carried?: CarriedCounts;
}

const markerComment = (kind: "instance" | "config", value: string) =>
  `"${JUMP_COMMENT} ${kind} ${value}"`;

/**
 * Our chains and jumps, as one atomic `iptables-restore --noflush` script (with `-c` when
 * `carried` counts are given).
 */
export function iptablesInstallScript(
  plan: IptablesPlan,
  family: IpFamily,
  extras: InstallExtras = {},
): string {
  const { markers, existing, carried } = extras;
  const chains = [...(plan.onlink ? [...OUR_CHAINS, CHAIN_LINK] : OUR_CHAINS), CHAIN_META];
  const had = new Set(existing?.chains ?? []);
  const skip = (flag: string, chain: string) =>
    plan.skipInterfaces.map((n) => `-A ${chain} ${flag} ${n} -j RETURN`);
  const count = (chain: string, dir: string) =>
    plan.services.map((s) => {
      const c = carried?.get(`${dir} ${s.name}`);
      return (c ? `[${c.packets}:${c.bytes}] ` : "") +
        `-A ${chain} -m connmark --mark ${markSpec(s.mark, plan.ctMask)} ` +
        `-m comment --comment "stb-netacct ${dir} ${s.name}"`;
    });
  const gone = [...had].filter((c) => !chains.includes(c));
  return [
    "*mangle",
    ...chains.filter((c) => !had.has(c)).map((c) => `:${c} - [0:0]`),
    ...(existing?.jumps ?? []).map((j) => `-D ${j}`),
    // Flushed first, all of them, so no rule of ours still refers to a chain deleted here.
    ...[...had].map((c) => `-F ${c}`),
    ...gone.map((c) => `-X ${c}`),
    ...(markers?.instance
      ? [`-A ${CHAIN_META} -m comment --comment ${markerComment("instance", markers.instance)}`]
      : []),
    ...(markers?.config
      ? [`-A ${CHAIN_META} -m comment --comment ${markerComment("config", markers.config)}`]
      : []),
    `-A ${CHAIN_OUT} -o lo -j RETURN`,
    ...skip("-o", CHAIN_OUT),
    `-A ${CHAIN_OUT} -m connmark --mark ${markSpec(0, plan.ctMask)} -j ${
      plan.onlink ? CHAIN_LINK : CHAIN_MARK
    }`,
    ...count(CHAIN_OUT, "tx"),
    ...markRules(plan, family),
    ...(plan.onlink ? linkRules(plan, family) : []),
    `-A ${CHAIN_IN} -i lo -j RETURN`,
    ...skip("-i", CHAIN_IN),
    ...count(CHAIN_IN, "rx"),
    `-I OUTPUT 1 -m comment --comment ${JUMP_COMMENT} -j ${CHAIN_OUT}`,
    `-I PREROUTING 1 -m comment --comment ${JUMP_COMMENT} -j ${CHAIN_IN}`,
    "COMMIT",
    "",
  ].join("\n");
}

/** What one family's mangle table holds of ours, from `iptables-save -c -t mangle`. */
export interface IptablesFound {
  /** Our chains (STB_NETACCT_*). */
  chains: string[];
  /** Rules of other chains that jump to ours, as saved without counters ("OUTPUT -m ..."). */
  jumps: string[];
  instance: string | null;
  config: string | null;
  counters: IptablesCounter[];
}

/** Reads what is ours out of an `iptables-save [-c] -t mangle` listing (see IptablesFound). */
export function parseIptablesState(saveText: string): IptablesFound {
  const found: IptablesFound = {
    chains: [],
    jumps: [],
    instance: null,
    config: null,
    counters: parseIptablesCounters(saveText),
  };
  let inMangle = false;
  for (const line of saveText.split("\n")) {
    if (line.startsWith("*")) inMangle = line === "*mangle";
    if (!inMangle) continue;
    const chain = /^:(\S+) /.exec(line)?.[1];
    if (chain?.startsWith(CHAIN_PREFIX)) found.chains.push(chain);
    const rule = /^(?:\[\d+:\d+\] )?-A (\S+) (.*)$/.exec(line);
    if (!rule) continue;
    const [, from = "", spec = ""] = rule;
    if (!from.startsWith(CHAIN_PREFIX) && /-[jg] STB_NETACCT_\S+$/.test(spec)) {
      found.jumps.push(`${from} ${spec}`);
    }
    if (from !== CHAIN_META) continue;
    const marker = /--comment "?stb-netacct (instance|config) ([0-9a-f]+)"?/.exec(spec);
    if (marker?.[1] === "instance") found.instance = marker[2] ?? null;
    if (marker?.[1] === "config") found.config = marker[2] ?? null;
  }
  return found;
}

/**
 * The digest of the rules' shape: both families' install scripts with no service present
 * and no markers (the cgroup rules and the on-link prefixes of the moment are rewritten by
 * every start and `read`).
 */
export async function iptablesConfigDigest(plan: IptablesPlan): Promise<string> {
  const shape: IptablesPlan = {
    ...plan,
    services: plan.services.map((s) => ({ ...s, present: false })),
    onlink: plan.onlink ? { 4: [], 6: [] } : null,
  };
  const text = `iptables-1\n${FAMILIES.map((f) => iptablesInstallScript(shape, f)).join("")}`;
  return await shortDigest(text);
}

/** What `start` does with what it found (see the header). */
export type IptablesAction =
  | { kind: "install" }
  | { kind: "replace" }
  | { kind: "adopt"; instance: string }
  | { kind: "rebuild"; instance: string; carried: Record<IpFamily, CarriedCounts> };

/**
 * Adopt, rebuild keeping the counts, replace, or install, from both families' findings.
 * Adopting needs the same instance and config in both, one jump each from OUTPUT and
 * PREROUTING, and every service's counting rules in place: anything less is rebuilt.
 */
export function decideIptables(
  found: Record<IpFamily, IptablesFound>,
  digest: string,
  services: string[],
): IptablesAction {
  const all = FAMILIES.map((f) => found[f]);
  if (all.every((x) => x.chains.length === 0 && x.jumps.length === 0)) return { kind: "install" };
  const instance = all[0]!.instance;
  if (instance === null || all.some((x) => x.instance !== instance)) return { kind: "replace" };
  const intact = (x: IptablesFound) => {
    const jumps = x.jumps.map((j) => `${j.split(" ")[0]}>${/\S+$/.exec(j)?.[0]}`).sort();
    const keys = x.counters.map((c) => `${c.direction} ${c.service}`);
    return x.config === digest &&
      jumps.join() === [`OUTPUT>${CHAIN_OUT}`, `PREROUTING>${CHAIN_IN}`].join() &&
      keys.length === new Set(keys).size &&
      services.every((s) => keys.includes(`tx ${s}`) && keys.includes(`rx ${s}`));
  };
  if (all.every(intact)) return { kind: "adopt", instance };
  const carried = (x: IptablesFound): CarriedCounts => {
    const out: CarriedCounts = new Map();
    for (const c of x.counters) {
      const key = `${c.direction} ${c.service}`;
      // A rule found twice counted the same packets twice: its larger count is the real one.
      const had = out.get(key);
      if (!had || c.bytes > had.bytes) out.set(key, { packets: c.packets, bytes: c.bytes });
    }
    return out;
  };
  return { kind: "rebuild", instance, carried: { 4: carried(found[4]), 6: carried(found[6]) } };
}

/** Rebuilds only the attribution chain; counting rules and their counters stay. */
export function iptablesRetargetScript(plan: IptablesPlan, family: IpFamily): string {
  return ["*mangle", `-F ${CHAIN_MARK}`, ...markRules(plan, family), "COMMIT", ""].join("\n");
}

/** Rebuilds only the on-link chain; nothing else changes. */
export function iptablesOnlinkScript(plan: IptablesPlan, family: IpFamily): string {
  return ["*mangle", `-F ${CHAIN_LINK}`, ...linkRules(plan, family), "COMMIT", ""].join("\n");
}

/**
 * Checks targets and options the way `start` needs them and builds the plan; throws a
 * BackendError naming the config value to change.
 */
export function iptablesPlan(targets: ServiceTarget[], options: BackendOptions): IptablesPlan {
  for (const t of targets) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(t.name)) {
      throw new BackendError(
        `Service name "${t.name}" cannot go into an iptables comment: use letters, digits, "_", "." and "-"`,
      );
    }
    if (/[\n\r\0]/.test(t.path) || new TextEncoder().encode(t.path).length > XT_CGROUP_PATH_MAX) {
      throw new BackendError(
        `Cgroup path "${t.path}" of service "${t.name}" is longer than ${XT_CGROUP_PATH_MAX} ` +
          `bytes or contains a line break, which iptables' cgroup match cannot take: use the nft or ebpf backend`,
      );
    }
  }
  const { services, ctMask, v4, v6 } = markPlan(targets, options);
  return {
    services,
    ctMask,
    exclude: { 4: v4, 6: v6 },
    skipInterfaces: [...(options.excludeInterfaces ?? [])],
    onlink: options.internalOnlink ? { 4: [], 6: [] } : null,
  };
}

function onlinkByFamily(prefixes: Parameters<typeof exclusionsByFamily>[0]) {
  const { v4, v6 } = exclusionsByFamily(prefixes);
  return { 4: v4, 6: v6 };
}

const NFT_FAMILY_OF: Record<IpFamily, string> = { 4: "ip", 6: "ip6" };

export class IptablesBackend implements Backend {
  readonly name = "iptables";
  /** Set while reads go through libnftables; null: iptables-save. */
  #nft: NftRunner | null = null;
  #run: FirewallRun<IptablesPlan> | null = null;
  #onlink: OnlinkWatch | null = null;
  #onlinkError = "";
  #kernel: KernelState | null = null;

  /** `read: "save"` reads through iptables-save even where libnftables loads (benchmarks). */
  constructor(readonly preference: { read?: "auto" | "save" } = {}) {}

  /** How reads are done: "libnftables" or "iptables-save"; null before start. */
  get readVia(): string | null {
    if (!this.#run) return null;
    return this.#nft ? "libnftables" : "iptables-save";
  }

  async start(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
    const run = this.#run = new FirewallRun(iptablesPlan(targets, options), options);
    this.#onlink = options.internalOnlink ? new OnlinkWatch(options.exclude, options.log) : null;
    const onlink = this.#onlink?.poll();
    if (onlink) run.plan.onlink = onlinkByFamily(onlink);
    let how: string;
    try {
      how = await this.#install(await iptablesConfigDigest(run.plan));
    } catch (e) {
      await this.#removeOurs().catch(() => {});
      this.#kernel = null;
      throw e;
    }
    run.loaded(targets);
    const why = await this.#chooseReader();
    const absent = targets.filter((t) => t.id === null).map((t) => t.name);
    options.log(
      `iptables: chains ${OUR_CHAINS.join(", ")} ${how} (IPv4 and IPv6) for ` +
        `${targets.length} service(s), mark base ${hex32(options.ctMark)} mask ${
          hex32(options.ctMask)
        }` +
        (absent.length ? `; waiting for the cgroup of ${absent.join(", ")}` : "") +
        `; counters read via ${this.readVia}${why ? ` (${why})` : ""}`,
    );
  }

  /**
   * Adopts the chains an earlier run left when their shape is this config's (only the cgroup
   * and on-link rules are rewritten), rebuilds them keeping their counts when not, and
   * makes them when there are none or they have no markers. Says which, for the log.
   */
  async #install(digest: string): Promise<string> {
    const plan = this.#run!.plan;
    const found = { 4: await this.#found(4), 6: await this.#found(6) };
    const action = decideIptables(found, digest, plan.services.map((s) => s.name));
    if (action.kind === "install" || action.kind === "replace") {
      const instance = newNonce();
      this.#kernel = { id: `iptables:${instance}`, adopted: false };
      if (action.kind === "replace") await this.#removeOurs();
      await this.#apply((p, f) =>
        iptablesInstallScript(p, f, { markers: { instance, config: digest } })
      );
      return action.kind === "install" ? "installed" : "replaced (they had no instance marker)";
    }
    this.#kernel = { id: `iptables:${action.instance}`, adopted: true };
    if (action.kind === "adopt") {
      await this.#apply(iptablesRetargetScript);
      if (plan.onlink) await this.#apply(iptablesOnlinkScript);
      return "adopted, their counters continued";
    }
    const markers = { instance: action.instance, config: digest };
    await this.#apply(
      (p, f) =>
        iptablesInstallScript(p, f, { markers, existing: found[f], carried: action.carried[f] }),
      ["-c"],
    );
    return "rebuilt for this config, their counters kept";
  }

  /** What one family's mangle table holds of ours, with counters. */
  async #found(family: IpFamily): Promise<IptablesFound> {
    return parseIptablesState(await runTool(TOOLS[family].save, ["-c", "-t", "mangle"]));
  }

  kernelState(): KernelState {
    if (!this.#kernel) throw new BackendError("iptables backend has no chains before start");
    return { ...this.#kernel };
  }

  /**
   * Checks, changing nothing, that `start` would work: the exact install script of each
   * family goes through `iptables-restore --test --noflush` here (parsed against the live
   * tables, never committed, so chains a running `run` owns are untouched), and then for
   * real into a private network namespace that dies with the process (`unshare --net`),
   * because --test never reaches the kernel: only a real load shows a missing xt_cgroup or
   * CONNMARK, or a cgroup path the kernel refuses.
   */
  async probe(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
    const plan = iptablesPlan(targets, options);
    for (const f of FAMILIES) {
      const script = iptablesInstallScript(plan, f);
      const label = f === 4 ? "IPv4" : "IPv6";
      for (
        const [tool, args, where] of [
          [TOOLS[f].restore, ["--test", "--noflush"], "parsing them (--test)"],
          ["unshare", ["--net", TOOLS[f].restore, "--noflush"], "loading them in a private netns"],
        ] as const
      ) {
        try {
          await runTool(tool, [...args], { stdin: script });
        } catch (e) {
          const said = e instanceof ToolError ? e.stderr : "";
          let fix = "see the tool's message";
          if (/Operation not permitted|Permission denied/.test(said)) {
            fix = "run as root (CAP_NET_ADMIN, and CAP_SYS_ADMIN for the private netns)";
          } else if (/cgroup|Invalid argument/.test(said)) {
            fix = "a service cgroup vanished while checking, or this kernel lacks xt_cgroup; " +
              "run doctor again, or use --backend nft or ebpf";
          } else if (/No chain\/target\/match|Couldn't load/.test(said)) {
            fix = "this kernel or iptables lacks a match or target the rules need " +
              "(cgroup, connmark, CONNMARK, comment); use --backend nft or ebpf";
          }
          throw new BackendError(
            `iptables refused the ${label} rules of chains ${OUR_CHAINS.join(", ")} when ` +
              `${where}: ${e instanceof Error ? e.message : e}: ${fix}`,
            { cause: e },
          );
        }
      }
    }
  }

  /**
   * Reads through libnftables when it loads and lists our just-installed rules as
   * expected; otherwise iptables-save. Returns why libnftables is not used, or "".
   */
  async #chooseReader(): Promise<string> {
    this.#nft?.close();
    this.#nft = null;
    if (this.preference.read === "save") return "";
    let runner: NftRunner;
    try {
      runner = new LibnftablesRunner();
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
    this.#nft = runner;
    if (await this.#readNft() === null) {
      runner.close();
      this.#nft = null;
      return "nftables does not list our counting rules as iptables-nft 1.8 writes them " +
        "(iptables-legacy?)";
    }
    return "";
  }

  /** Raw counters per service through libnftables, or null when the listing is unexpected. */
  async #readNft(): Promise<CounterSample | null> {
    const plan = this.#run!.plan, runner = this.#nft!;
    const raw = zeroSample(plan.services);
    for (const f of FAMILIES) {
      for (const [chain, dir] of [[CHAIN_OUT, "tx"], [CHAIN_IN, "rx"]] as const) {
        let json: string;
        try {
          json = await runner.run(`list chain ${NFT_FAMILY_OF[f]} mangle ${chain}`, {
            json: true,
          });
        } catch (e) {
          if (e instanceof ToolError && /No such file or directory/.test(e.stderr)) return null;
          throw e;
        }
        const rules = parseNftChainCounters(json, chain, plan.services.length);
        if (!rules) return null;
        for (const [i, c] of rules.entries()) {
          const r = raw[c.service ?? plan.services[i]?.name ?? ""];
          if (!r) return null;
          addCounter(r, dir, c);
        }
      }
    }
    return raw;
  }

  async read(): Promise<CounterSample> {
    const run = this.#run;
    if (!run) throw new BackendError("iptables backend read before start");
    const plan = run.plan;
    await this.#followOnlink(run);
    if (this.#nft) {
      const raw = await this.#readNft();
      if (raw) return raw;
      // Not as installed (chains flushed by a firewall reload?): iptables-save below tells
      // which counting rules are left and reinstalls.
    }
    const listings = await Promise.all(
      FAMILIES.map((f) => runTool(TOOLS[f].save, ["-c", "-t", "mangle"])),
    );
    let raw = zeroSample(plan.services);
    let found = 0;
    for (const listing of listings) {
      for (const c of parseIptablesCounters(listing)) {
        const r = raw[c.service];
        if (!r) continue;
        found++;
        addCounter(r, c.direction, c);
      }
    }
    if (found < plan.services.length * 2 * FAMILIES.length) {
      // A firewall reload flushed our chains: put them back, as new kernel state (a new id)
      // counting from zero; the totals carry on.
      run.options.log(
        "iptables: counting rules vanished (firewall reload?); installing them again",
      );
      await this.#removeOurs();
      const instance = newNonce();
      const config = await iptablesConfigDigest(plan);
      await this.#apply((p, f) => iptablesInstallScript(p, f, { markers: { instance, config } }));
      this.#kernel = { id: `iptables:${instance}`, adopted: false };
      raw = zeroSample(plan.services);
    }
    return raw;
  }

  /** Rebuilds the on-link chain when the routes changed; a failure is logged, counting goes on. */
  async #followOnlink(run: FirewallRun<IptablesPlan>): Promise<void> {
    const now = this.#onlink?.poll();
    if (!now) return;
    const before = run.plan.onlink;
    run.plan.onlink = onlinkByFamily(now);
    try {
      for (const f of FAMILIES) {
        await runTool(TOOLS[f].restore, ["--noflush"], {
          stdin: iptablesOnlinkScript(run.plan, f),
        });
      }
      this.#onlinkError = "";
    } catch (e) {
      run.plan.onlink = before;
      const said = e instanceof Error ? e.message : String(e);
      if (said !== this.#onlinkError) {
        run.options.log(`iptables: cannot update ${CHAIN_LINK}: ${said}`);
      }
      this.#onlinkError = said;
      this.#onlink = new OnlinkWatch(run.options.exclude, () => {}); // try again next read
    }
  }

  async retarget(targets: ServiceTarget[]): Promise<void> {
    const run = this.#run;
    if (!run) throw new BackendError("iptables backend retarget before start");
    await run.retarget(targets, () => this.#apply(iptablesRetargetScript), "iptables");
  }

  async stop(options: StopOptions = {}): Promise<void> {
    this.#nft?.close();
    this.#nft = null;
    try {
      if (!options.keep) await this.#removeOurs();
    } finally {
      this.#kernel = null;
      this.#run = null;
      this.#onlink = null;
    }
  }

  /** Deletes every chain of ours and every jump to one, in both families. */
  async #removeOurs(): Promise<void> {
    for (const f of FAMILIES) {
      const script = iptablesCleanupScript(await runTool(TOOLS[f].save, ["-t", "mangle"]));
      if (script) await runTool(TOOLS[f].restore, ["--noflush"], { stdin: script });
    }
  }

  /**
   * Applies `build(plan, family)` for both families. xt_cgroup refuses a cgroup that is
   * gone ("Invalid argument"), which happens when one vanishes between the id check and
   * the load: re-check which exist and try again.
   */
  async #apply(
    build: (plan: IptablesPlan, family: IpFamily) => string,
    flags: string[] = [],
  ): Promise<void> {
    const { plan, options: { mount } } = this.#run!;
    for (const f of FAMILIES) {
      for (let attempt = 1;; attempt++) {
        try {
          await runTool(TOOLS[f].restore, ["--noflush", ...flags], { stdin: build(plan, f) });
          break;
        } catch (e) {
          const raced = e instanceof ToolError && /Invalid argument/.test(e.stderr) &&
            plan.services.some((s) => s.present && cgroupId(mount, s.path) === null);
          if (!raced || attempt >= 3) {
            throw new BackendError(
              `Cannot install the ${f === 4 ? "IPv4" : "IPv6"} rules of chains ${
                OUR_CHAINS.join(", ")
              }: ` +
                (e instanceof Error ? e.message : String(e)),
              { cause: e },
            );
          }
          for (const s of plan.services) s.present = cgroupId(mount, s.path) !== null;
        }
      }
    }
  }
}
