/**
 * iptables backend (iptables-nft as on Debian 12): three chains of its own in the mangle
 * table of each family, reached by one jump at the top of OUTPUT and of PREROUTING.
 *
 *   STB_NETACCT_OUT  (from OUTPUT):     lo -> RETURN; flows not yet marked -> STB_NETACCT_MARK;
 *                                       one counting rule per service on its connmark
 *   STB_NETACCT_MARK:                   excluded destinations -> RETURN; `-m cgroup --path`
 *                                       per existing service cgroup -> CONNMARK --set-xmark
 *   STB_NETACCT_IN   (from PREROUTING): lo -> RETURN; one counting rule per service
 *
 * Counting rules carry stable comments ("stb-netacct tx <svc>") so a read finds them in
 * `iptables-save -c`. xt_cgroup binds a path to the cgroup at insert time (and refuses a
 * missing one), so retarget rebuilds only STB_NETACCT_MARK: the counting rules, and so
 * their counters, stay. Every change is one `iptables-restore --noflush` per family that
 * names only our chains and jumps.
 */

import {
  type Backend,
  BackendError,
  type BackendOptions,
  type CounterSample,
  type ServiceTarget,
} from "./backend.ts";
import { cgroupId } from "../lib/cgroup.ts";
import { runTool, ToolError } from "./exec.ts";
import { exclusionsByFamily, hex32, MonotonicCounters, serviceMarks } from "./firewall.ts";

export const CHAIN_OUT = "STB_NETACCT_OUT";
export const CHAIN_MARK = "STB_NETACCT_MARK";
export const CHAIN_IN = "STB_NETACCT_IN";
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

export interface IptablesCounter {
  direction: "tx" | "rx";
  service: string;
  packets: number;
  bytes: number;
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
    out.push({
      direction: m[3] as "tx" | "rx",
      service: m[4],
      packets: Number(m[1]),
      bytes: Number(m[2]),
    });
  }
  return out;
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
    if (rule && !rule[1].startsWith(CHAIN_PREFIX) && /-j STB_NETACCT_\S+$/.test(rule[2])) {
      jumps.push(`-D ${rule[1]} ${rule[2]}`);
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

export interface IptablesService {
  name: string;
  /** Cgroup path relative to the cgroup2 root, as xt_cgroup wants it. */
  path: string;
  mark: number;
  present: boolean;
}

export interface IptablesPlan {
  services: IptablesService[];
  ctMask: number;
  exclude: Record<IpFamily, string[]>;
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

/** Our chains and jumps, as one atomic `iptables-restore --noflush` script. */
export function iptablesInstallScript(plan: IptablesPlan, family: IpFamily): string {
  const count = (chain: string, dir: string) =>
    plan.services.map((s) =>
      `-A ${chain} -m connmark --mark ${markSpec(s.mark, plan.ctMask)} ` +
      `-m comment --comment "stb-netacct ${dir} ${s.name}"`
    );
  return [
    "*mangle",
    ...OUR_CHAINS.map((c) => `:${c} - [0:0]`),
    `-A ${CHAIN_OUT} -o lo -j RETURN`,
    `-A ${CHAIN_OUT} -m connmark --mark ${markSpec(0, plan.ctMask)} -j ${CHAIN_MARK}`,
    ...count(CHAIN_OUT, "tx"),
    ...markRules(plan, family),
    `-A ${CHAIN_IN} -i lo -j RETURN`,
    ...count(CHAIN_IN, "rx"),
    `-I OUTPUT 1 -m comment --comment ${JUMP_COMMENT} -j ${CHAIN_OUT}`,
    `-I PREROUTING 1 -m comment --comment ${JUMP_COMMENT} -j ${CHAIN_IN}`,
    "COMMIT",
    "",
  ].join("\n");
}

/** Rebuilds only the attribution chain; counting rules and their counters stay. */
export function iptablesRetargetScript(plan: IptablesPlan, family: IpFamily): string {
  return ["*mangle", `-F ${CHAIN_MARK}`, ...markRules(plan, family), "COMMIT", ""].join("\n");
}

const FAMILIES: IpFamily[] = [4, 6];

export class IptablesBackend implements Backend {
  readonly name = "iptables";
  #options: BackendOptions | null = null;
  #plan: IptablesPlan | null = null;
  #ids = new Map<string, bigint | null>();
  #totals: MonotonicCounters | null = null;

  async start(targets: ServiceTarget[], options: BackendOptions): Promise<void> {
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
    const marks = serviceMarks(options.ctMark, options.ctMask, targets.length);
    const { v4, v6 } = exclusionsByFamily(options.exclude);
    this.#options = options;
    this.#plan = {
      services: targets.map((t, i) => ({
        name: t.name,
        path: t.path,
        mark: marks[i],
        present: t.id !== null,
      })),
      ctMask: options.ctMask >>> 0,
      exclude: { 4: v4, 6: v6 },
    };
    this.#totals = new MonotonicCounters(targets.map((t) => t.name));
    try {
      await this.#removeOurs();
      await this.#apply(iptablesInstallScript);
    } catch (e) {
      await this.#removeOurs().catch(() => {});
      throw e;
    }
    this.#ids = new Map(targets.map((t) => [t.name, t.id]));
    const absent = targets.filter((t) => t.id === null).map((t) => t.name);
    options.log(
      `iptables: chains ${OUR_CHAINS.join(", ")} installed (IPv4 and IPv6) for ` +
        `${targets.length} service(s), mark base ${hex32(options.ctMark)} mask ${
          hex32(options.ctMask)
        }` +
        (absent.length ? `; waiting for the cgroup of ${absent.join(", ")}` : ""),
    );
  }

  async read(): Promise<CounterSample> {
    const plan = this.#plan, totals = this.#totals;
    if (!plan || !totals) throw new BackendError("iptables backend read before start");
    const listings = await Promise.all(
      FAMILIES.map((f) => runTool(TOOLS[f].save, ["-c", "-t", "mangle"])),
    );
    const raw: CounterSample = {};
    for (const s of plan.services) {
      raw[s.name] = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
    }
    let found = 0;
    for (const listing of listings) {
      for (const c of parseIptablesCounters(listing)) {
        const r = raw[c.service];
        if (!r) continue;
        found++;
        if (c.direction === "tx") {
          r.txBytes += c.bytes;
          r.txPackets += c.packets;
        } else {
          r.rxBytes += c.bytes;
          r.rxPackets += c.packets;
        }
      }
    }
    if (found < plan.services.length * 2 * FAMILIES.length) {
      // A firewall reload flushed our chains: put them back; the totals carry on.
      this.#options?.log(
        "iptables: counting rules vanished (firewall reload?); installing them again",
      );
      await this.#removeOurs();
      await this.#apply(iptablesInstallScript);
      for (const s of plan.services) {
        raw[s.name] = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };
      }
    }
    return totals.update(raw);
  }

  async retarget(targets: ServiceTarget[]): Promise<void> {
    const plan = this.#plan;
    if (!plan) throw new BackendError("iptables backend retarget before start");
    const byName = new Map(targets.map((t) => [t.name, t]));
    const changed = plan.services.some((s) =>
      byName.has(s.name) && byName.get(s.name)!.id !== this.#ids.get(s.name)
    );
    if (!changed) return;
    for (const s of plan.services) {
      const t = byName.get(s.name);
      if (t) s.present = t.id !== null;
    }
    await this.#apply(iptablesRetargetScript);
    this.#ids = new Map(plan.services.map((s) => [s.name, byName.get(s.name)?.id ?? null]));
    const present = plan.services.filter((s) => s.present).map((s) => s.name);
    this.#options?.log(`iptables: cgroup rules now cover ${present.join(", ") || "no service"}`);
  }

  async stop(): Promise<void> {
    await this.#removeOurs();
    this.#plan = null;
    this.#totals = null;
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
  async #apply(build: (plan: IptablesPlan, family: IpFamily) => string): Promise<void> {
    const plan = this.#plan!, mount = this.#options!.mount;
    for (const f of FAMILIES) {
      for (let attempt = 1;; attempt++) {
        try {
          await runTool(TOOLS[f].restore, ["--noflush"], { stdin: build(plan, f) });
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
