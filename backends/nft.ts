/**
 * nftables backend: one table of its own, `inet stb_netacct`, never touching any other.
 *
 *   output (hook output):  lo and the excluded interfaces (by name: `oifname`, so one that
 *                          appears or is renamed later is judged by its name then) ->
 *                          return; an on-link remote (set onlink4/6) -> return; flows not yet marked whose remote address is not
 *                          excluded -> chain `attribute`, which sets the service's ct mark
 *                          when `socket cgroupv2` matches; then one counter lookup
 *                          `ct mark & mask` -> "tx_<svc>".
 *   input  (hook input):   lo, excluded interfaces, on-link remotes -> return;
 *                          `ct mark & mask` -> "rx_<svc>".
 *
 * The on-link sets exist only with "internal_onlink"; `read` re-reads the connected routes
 * (lib/onlink.ts) and, when they changed, replaces the sets' elements in one transaction
 * (counters untouched).
 *
 * A reply carries no socket, so RX is attributed through the conntrack mark set on the
 * flow's outgoing packets; only the bits of `ct_mask` are written (tailscale, firewalld
 * and friends keep theirs). See firewall.ts for the per-service mark scheme.
 *
 * nft resolves a cgroupv2 path to an inode when the rule is loaded: a missing cgroup makes
 * the load fail and a recreated one silently stops matching. So `attribute` holds rules
 * only for the cgroups that exist now, and retarget rebuilds just that chain (`flush
 * chain` + `add rule` in one transaction): the named counters are separate objects a chain
 * flush does not touch, so totals survive.
 *
 * The table outlives `run` (docs/design.md, "Kernel state kept"): a SIGKILL, a crash or a
 * service restart leaves it counting, and the next start adopts it. Two marker counters say
 * what it is: `instance_<nonce>` (made with the table, kept for its life: the id the saved
 * totals record readings of) and `config_<digest>` (the ruleset's shape: exclusions, marks,
 * services). A table of another shape is rebuilt in one transaction that keeps the named
 * counters, so its counts carry on and nothing is lost in between; a table without the
 * markers (an older release's) is replaced.
 *
 * Everything goes through one NftRunner (nft_libnftables.ts): libnftables via FFI when it
 * loads, else the nft binary, with the same command text either way.
 */

import { asCount, parseExact, stringifyExact } from "../lib/exact_json.ts";
import {
  type Backend,
  BackendError,
  type BackendOptions,
  type CounterSample,
  type KernelState,
  type ServiceTarget,
  type StopOptions,
} from "./backend.ts";
import { cgroupId, cgroupLevel } from "../lib/cgroup.ts";
import { ToolError } from "./exec.ts";
import {
  exclusionsByFamily,
  FirewallRun,
  hex32,
  markPlan,
  type PlannedService,
} from "./firewall.ts";
import { type NftRunner, openNftRunner } from "./nft_libnftables.ts";
import type { Cidr } from "../lib/cidr.ts";
import { OnlinkWatch } from "../lib/onlink.ts";
import { newNonce, shortDigest } from "../lib/digest.ts";

export const NFT_FAMILY = "inet";
export const NFT_TABLE = "stb_netacct";
const TABLE = `${NFT_FAMILY} ${NFT_TABLE}`;

/** Where nft looks up cgroupv2 paths; it prepends this itself. */
const NFT_CGROUP_BASE = "/sys/fs/cgroup";

export interface NftCounter {
  packets: bigint;
  bytes: bigint;
}

/**
 * Named counters of our table from `nft -j list counters table inet stb_netacct`.
 * Counters of other tables (should a wider listing be passed) are ignored.
 */
export function parseNftCounters(json: string): Map<string, NftCounter> {
  let doc: unknown;
  try {
    doc = parseExact(json); // counts above 2^53 keep every digit
  } catch (cause) {
    throw new BackendError(`nft printed malformed JSON: ${String(cause)}`, { cause });
  }
  const items = (doc as { nftables?: unknown })?.nftables;
  if (!Array.isArray(items)) {
    throw new BackendError(`nft JSON has no "nftables" array: ${json.slice(0, 80)}`);
  }
  const out = new Map<string, NftCounter>();
  for (const item of items) {
    const c = (item as { counter?: Record<string, unknown> })?.counter;
    if (!c || c.table !== NFT_TABLE || c.family !== NFT_FAMILY) continue;
    const packets = asCount(c.packets), bytes = asCount(c.bytes);
    if (typeof c.name !== "string" || packets === null || bytes === null) {
      throw new BackendError(
        `nft JSON has a counter without name, packets or bytes: ${stringifyExact(c)}`,
      );
    }
    out.set(c.name, { packets, bytes });
  }
  return out;
}

/**
 * How nft must spell a path under the cgroup2 mount: nft resolves it relative to
 * /sys/fs/cgroup, so hybrid hosts need "unified/", and a mount elsewhere is reached
 * through "../../..".
 */
export function nftCgroupPrefix(mountPoint: string): string {
  const mp = mountPoint.replace(/\/+$/, "") || "/";
  if (mp === NFT_CGROUP_BASE) return "";
  if (mp.startsWith(NFT_CGROUP_BASE + "/")) return mp.slice(NFT_CGROUP_BASE.length + 1) + "/";
  return "../../.." + (mp === "/" ? "" : mp) + "/";
}

export interface NftPlan {
  services: PlannedService[];
  ctMask: number;
  /** nftCgroupPrefix of the mount. */
  cgroupPrefix: string;
  excludeV4: string[];
  excludeV6: string[];
  /** Interfaces whose traffic never counts, by name. */
  skipInterfaces: string[];
  /** On-link prefixes per family (IPv4 also IPv4-mapped in v6), or null without internal_onlink. */
  onlink: { v4: string[]; v6: string[] } | null;
}

export const txCounter = (service: string) => `tx_${service}`;
export const rxCounter = (service: string) => `rx_${service}`;

/** The `attribute` chain's rules: one per present service. */
export function nftAttributeRules(plan: NftPlan): string[] {
  const keep = hex32(~plan.ctMask);
  return plan.services.filter((s) => s.present).map((s) =>
    `socket cgroupv2 level ${cgroupLevel(s.path)} "${plan.cgroupPrefix}${s.path.slice(1)}" ` +
    `ct mark set ct mark & ${keep} | ${hex32(s.mark)} return`
  );
}

function counterMap(plan: NftPlan, counter: (name: string) => string): string {
  const entries = plan.services.map((s) => `${hex32(s.mark)} : "${counter(s.name)}"`);
  return `counter name ct mark & ${hex32(plan.ctMask)} map { ${entries.join(", ")} }`;
}

/** The marker counters' names (see the header). */
export interface NftMarkers {
  instance: string;
  config: string;
}

const INSTANCE_PREFIX = "instance_";
const CONFIG_PREFIX = "config_";
const NO_MARKERS: NftMarkers = { instance: "", config: "" };

/** The marker counters found among a table's counters; null fields: absent. */
export function findMarkers(
  names: Iterable<string>,
): { instance: string | null; config: string | null } {
  let instance: string | null = null, config: string | null = null;
  for (const n of names) {
    if (n.startsWith(INSTANCE_PREFIX)) instance = n.slice(INSTANCE_PREFIX.length);
    if (n.startsWith(CONFIG_PREFIX)) config = n.slice(CONFIG_PREFIX.length);
  }
  return { instance, config };
}

/** The counters the plan's table declares: per service and the markers. */
function counterNames(plan: NftPlan, markers: NftMarkers): string[] {
  return [
    ...plan.services.flatMap((s) => [txCounter(s.name), rxCounter(s.name)]),
    ...(markers.instance ? [INSTANCE_PREFIX + markers.instance] : []),
    ...(markers.config ? [CONFIG_PREFIX + markers.config] : []),
  ];
}

/**
 * The digest of the table's shape: its ruleset with no service present and no markers (what
 * the cgroups' presence changes is the `attribute` chain, which every start rewrites).
 */
export async function nftConfigDigest(plan: NftPlan): Promise<string> {
  // The on-link prefixes of the moment are no part of it: `read` keeps the sets current.
  const shape = nftRuleset({
    ...plan,
    services: plan.services.map((s) => ({ ...s, present: false })),
    onlink: plan.onlink ? { v4: [], v6: [] } : plan.onlink,
  });
  return await shortDigest(`nft-1\n${shape}`);
}

/**
 * The whole table as one `nft -f` transaction. It first adds then deletes the table so a
 * stale one from a crashed run goes away in the same atomic step (and the delete cannot
 * fail on a missing table).
 */
export function nftRuleset(plan: NftPlan, markers: NftMarkers = NO_MARKERS): string {
  return `table ${TABLE} {}\ndelete table ${TABLE}\n${tableBody(plan, markers, new Set())}`;
}

/**
 * Rebuilds an existing table's sets and chains for `plan` in one transaction, keeping the
 * named counters it has (`existing`): their counts carry on. Counters of services no longer
 * configured and the old config marker go.
 */
export function nftRebuild(plan: NftPlan, markers: NftMarkers, existing: Set<string>): string {
  const wanted = new Set(counterNames(plan, markers));
  return [
    `flush table ${TABLE}`,
    ...["output", "input", "attribute"].map((c) => `delete chain ${TABLE} ${c}`),
    ...["excl4", "excl6"].map((set) => `delete set ${TABLE} ${set}`),
    // An older table may lack them: added first, so the delete cannot fail.
    ...(["onlink4", "onlink6"] as const).flatMap((name) => [
      `add set ${TABLE} ${name} { type ipv${name === "onlink4" ? 4 : 6}_addr; flags interval; }`,
      `delete set ${TABLE} ${name}`,
    ]),
    ...[...existing].filter((n) => !wanted.has(n)).map((n) => `delete counter ${TABLE} ${n}`),
    tableBody(plan, markers, existing),
  ].join("\n");
}

function tableBody(plan: NftPlan, markers: NftMarkers, existing: Set<string>): string {
  const mask = hex32(plan.ctMask);
  const names = plan.skipInterfaces.map((n) => `"${n}"`).join(", ");
  const skip = (key: string) => names ? `    ${key} { ${names} } return\n` : "";
  const onlink = (dir: "daddr" | "saddr") =>
    plan.onlink ? `    ip ${dir} @onlink4 return\n    ip6 ${dir} @onlink6 return\n` : "";
  const onlinkSets = plan.onlink
    ? set("onlink4", "ipv4_addr", plan.onlink.v4) + set("onlink6", "ipv6_addr", plan.onlink.v6)
    : "";
  const counters = counterNames(plan, markers).filter((n) => !existing.has(n))
    .map((n) => `  counter ${n} {}\n`).join("");
  const attribute = nftAttributeRules(plan).map((r) => `    ${r}\n`).join("");
  return `table ${TABLE} {
${counters}${set("excl4", "ipv4_addr", plan.excludeV4)}${
    set("excl6", "ipv6_addr", plan.excludeV6)
  }${onlinkSets}
  chain attribute {
${attribute}  }

  chain output {
    type filter hook output priority filter; policy accept;
    oif "lo" return
${skip("oifname")}${onlink("daddr")}    ct mark & ${mask} == 0 ip daddr != @excl4 jump attribute
    ct mark & ${mask} == 0 ip6 daddr != @excl6 jump attribute
    ${counterMap(plan, txCounter)}
  }

  chain input {
    type filter hook input priority filter; policy accept;
    iif "lo" return
${skip("iifname")}${onlink("saddr")}    ${counterMap(plan, rxCounter)}
  }
}
`;
}

const set = (name: string, type: string, elems: string[]) =>
  `  set ${name} {\n    type ${type}; flags interval; auto-merge;\n` +
  (elems.length ? `    elements = { ${elems.join(", ")} }\n` : "") + "  }\n";

/** The on-link prefixes per family as the sets hold them. */
export function onlinkElements(prefixes: Cidr[]): { v4: string[]; v6: string[] } {
  return exclusionsByFamily(prefixes);
}

/** Replaces the on-link sets' elements in one transaction; counters and rules stay. */
export function nftOnlinkBatch(onlink: { v4: string[]; v6: string[] }): string {
  return [
    ...(["v4", "v6"] as const).flatMap((f) => {
      const name = `onlink${f === "v4" ? 4 : 6}`;
      const elems = onlink[f];
      return [
        `flush set ${TABLE} ${name}`,
        ...(elems.length ? [`add element ${TABLE} ${name} { ${elems.join(", ")} }`] : []),
      ];
    }),
    "",
  ].join("\n");
}

/** Replaces the `attribute` chain's rules only, keeping the counters. */
export function nftRetargetBatch(plan: NftPlan): string {
  return [
    `flush chain ${TABLE} attribute`,
    ...nftAttributeRules(plan).map((r) => `add rule ${TABLE} attribute ${r}`),
    "",
  ].join("\n");
}

const REMOVE_TABLE = `table ${TABLE} {}\ndelete table ${TABLE}\n`;

/** Names nft accepts unquoted as an object name; config names are a subset already. */
const NFT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * Checks targets and options the way `start` needs them and builds the plan; throws a
 * BackendError naming the config value to change.
 */
export function nftPlan(targets: ServiceTarget[], options: BackendOptions): NftPlan {
  for (const t of targets) {
    if (!NFT_NAME.test(t.name)) {
      throw new BackendError(
        `Service name "${t.name}" cannot name an nft counter: use letters, digits, "_", "." and "-"`,
      );
    }
    if (/["\n\r]/.test(t.path)) {
      throw new BackendError(
        `Cgroup path "${t.path}" of service "${t.name}" contains a quote or newline, ` +
          `which nft cannot take: use the nft-free ebpf backend`,
      );
    }
  }
  const { services, ctMask, v4, v6 } = markPlan(targets, options);
  return {
    services,
    ctMask,
    cgroupPrefix: nftCgroupPrefix(options.mount.mountPoint),
    excludeV4: v4,
    excludeV6: v6,
    skipInterfaces: [...(options.excludeInterfaces ?? [])],
    onlink: options.internalOnlink ? { v4: [], v6: [] } : null,
  };
}

export class NftBackend implements Backend {
  readonly name = "nft";
  #runner: NftRunner | null = null;
  #run: FirewallRun<NftPlan> | null = null;
  #onlink: OnlinkWatch | null = null;
  #onlinkError = "";
  #kernel: KernelState | null = null;

  /** `via: "binary"` uses the nft binary even where libnftables loads (benchmarks). */
  constructor(readonly preference: { via?: "library" | "binary" } = {}) {}

  get #via(): "library" | "binary" {
    return this.preference.via ?? "library";
  }

  /** How this backend reaches nftables ("libnftables" or "nft binary"); null before start. */
  get via(): string | null {
    return this.#runner?.via ?? null;
  }

  #openRunner(log: (message: string) => void): NftRunner {
    this.#runner ??= openNftRunner(log, this.#via);
    return this.#runner;
  }

  async start(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
    const run = this.#run = new FirewallRun(nftPlan(targets, options), options);
    this.#onlink = options.internalOnlink ? new OnlinkWatch(options.exclude, options.log) : null;
    const onlink = this.#onlink?.poll();
    if (onlink) run.plan.onlink = onlinkElements(onlink);
    this.#openRunner(options.log);
    let how: string;
    try {
      how = await this.#install(await nftConfigDigest(run.plan));
    } catch (e) {
      await this.stop().catch(() => {});
      throw e;
    }
    run.loaded(targets);
    const absent = targets.filter((t) => t.id === null).map((t) => t.name);
    options.log(
      `nft: table ${TABLE} ${how} for ${targets.length} service(s) via ${this.via}` +
        (absent.length ? `; waiting for the cgroup of ${absent.join(", ")}` : ""),
    );
  }

  /**
   * Adopts the table an earlier run left when its shape is this config's (only the cgroup
   * rules are rewritten), rebuilds it keeping its counters when not, and makes it when there
   * is none or it has no markers. Says which, for the log.
   */
  async #install(digest: string): Promise<string> {
    const found = await this.#listCounters();
    const markers = found === null ? { instance: null, config: null } : findMarkers(found.keys());
    if (found === null || markers.instance === null) {
      const instance = newNonce();
      this.#kernel = { id: `nft:${instance}`, adopted: false };
      await this.#load((plan) => nftRuleset(plan, { instance, config: digest }));
      return found === null ? "installed" : "replaced (it had no instance marker)";
    }
    const instance = markers.instance;
    this.#kernel = { id: `nft:${instance}`, adopted: true };
    if (markers.config === digest) {
      await this.#load(nftRetargetBatch);
      // The sets hold what was on-link when the last run read the routes.
      const onlink = this.#run?.plan.onlink;
      if (onlink) await this.#runner!.run(nftOnlinkBatch(onlink));
      return "adopted, its counters continued";
    }
    const existing = new Set(found.keys());
    await this.#load((plan) => nftRebuild(plan, { instance, config: digest }, existing));
    return "rebuilt for this config, its counters kept";
  }

  /** The named counters of our table; null when there is no table. */
  async #listCounters(): Promise<Map<string, NftCounter> | null> {
    try {
      return parseNftCounters(
        await this.#runner!.run(`list counters table ${TABLE}`, { json: true }),
      );
    } catch (e) {
      if (!(e instanceof ToolError) || !/No such file or directory/.test(e.stderr)) throw e;
      return null;
    }
  }

  kernelState(): KernelState {
    if (!this.#kernel) throw new BackendError("nft backend has no table before start");
    return { ...this.#kernel };
  }

  /**
   * Has the kernel check the exact ruleset `start` would load (`nft --check`: the batch is
   * sent and then aborted, so nothing changes, also not a table a running `run` owns).
   */
  async probe(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
    const plan = nftPlan(targets, options);
    const runner = openNftRunner(options.log, this.#via);
    try {
      await runner.run(nftRuleset(plan), { dryRun: true });
    } catch (e) {
      const said = e instanceof ToolError ? e.stderr : "";
      let fix = "see nft's message above";
      if (/cgroupv2 path fails/.test(said)) {
        fix = "a service cgroup vanished while checking; run doctor again";
      } else if (/Operation not permitted/.test(said)) {
        fix = "run as root (CAP_NET_ADMIN)";
      } else if (/Could not process rule|not supported|No such file/.test(said)) {
        fix = "this kernel lacks an nf_tables feature the rules need " +
          "(nf_tables inet, socket, ct, counter objects); use --backend ebpf or iptables";
      }
      throw new BackendError(
        `nft refused the ruleset of table ${TABLE} on a dry run: ` +
          `${e instanceof Error ? e.message : e}: ${fix}`,
        { cause: e },
      );
    } finally {
      runner.close();
    }
  }

  async read(): Promise<CounterSample> {
    const run = this.#run;
    if (!run) throw new BackendError("nft backend read before start");
    const plan = run.plan;
    await this.#followOnlink(run);
    let counters = await this.#listCounters() ?? new Map<string, NftCounter>();
    if (plan.services.some((s) => !counters.has(txCounter(s.name)))) {
      // Someone flushed the ruleset (`nft flush ruleset`, a firewall reload): put ours back,
      // as new kernel state (a new id), counting from zero; the totals carry on.
      run.options.log(`nft: table ${TABLE} vanished or lost counters; installing it again`);
      const instance = newNonce();
      const digest = await nftConfigDigest(plan);
      await this.#load((p) => nftRuleset(p, { instance, config: digest }));
      this.#kernel = { id: `nft:${instance}`, adopted: false };
      counters = new Map();
    }
    const raw: CounterSample = {};
    for (const s of plan.services) {
      const tx = counters.get(txCounter(s.name)) ?? { packets: 0n, bytes: 0n };
      const rx = counters.get(rxCounter(s.name)) ?? { packets: 0n, bytes: 0n };
      raw[s.name] = {
        txBytes: tx.bytes,
        txPackets: tx.packets,
        rxBytes: rx.bytes,
        rxPackets: rx.packets,
      };
    }
    return raw;
  }

  /** Puts changed on-link prefixes into the sets; a failure is logged, counting goes on. */
  async #followOnlink(run: FirewallRun<NftPlan>): Promise<void> {
    const now = this.#onlink?.poll();
    if (!now) return;
    const elements = onlinkElements(now);
    try {
      await this.#runner!.run(nftOnlinkBatch(elements));
      run.plan.onlink = elements;
      this.#onlinkError = "";
    } catch (e) {
      const said = e instanceof Error ? e.message : String(e);
      if (said !== this.#onlinkError) {
        run.options.log(`nft: cannot update the on-link sets: ${said}`);
      }
      this.#onlinkError = said;
      // Forget what was seen, so the next read tries again.
      this.#onlink = new OnlinkWatch(run.options.exclude, () => {});
    }
  }

  async retarget(targets: ServiceTarget[]): Promise<void> {
    const run = this.#run;
    if (!run) throw new BackendError("nft backend retarget before start");
    await run.retarget(targets, () => this.#load(nftRetargetBatch), "nft");
  }

  async stop(options: StopOptions = {}): Promise<void> {
    const runner = this.#runner ?? openNftRunner(() => {}, this.#via);
    try {
      // Adding then deleting in one batch succeeds whether or not the table exists.
      if (!options.keep) await runner.run(REMOVE_TABLE);
    } finally {
      this.#kernel = null;
      runner.close();
      this.#runner = null;
      this.#run = null;
      this.#onlink = null;
    }
  }

  /**
   * Loads `build(plan)`; when nft reports a cgroup path missing (the cgroup went away
   * between the id check and the load), re-checks which cgroups exist and tries again.
   */
  async #load(build: (plan: NftPlan) => string): Promise<void> {
    const { plan, options: { mount } } = this.#run!;
    for (let attempt = 1;; attempt++) {
      try {
        await this.#runner!.run(build(plan));
        return;
      } catch (e) {
        const raced = e instanceof ToolError && /cgroupv2 path fails/.test(e.stderr);
        if (!raced || attempt >= 3) {
          throw new BackendError(
            `Cannot load the nft rules of table ${TABLE}: ${e instanceof Error ? e.message : e}`,
            { cause: e },
          );
        }
        for (const s of plan.services) s.present = cgroupId(mount, s.path) !== null;
      }
    }
  }
}
