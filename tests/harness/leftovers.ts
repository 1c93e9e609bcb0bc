/**
 * What the suite must not leave behind, and how to count what a backend installed: network
 * namespaces, test cgroups, BPF programs attached to any cgroup and held by nobody, pins in
 * a bpffs, the nft table `stb_netacct`, iptables chains and jumps of ours. Each function
 * lists what it finds so a failure names the leftover.
 */

import { cgroupLeftovers } from "./cgroups.ts";
import { oursOrStale, output, run, sleep } from "./exec.ts";
import { NETNS_PREFIX } from "./topology.ts";

export const NFT_TABLE = "stb_netacct";
/** How our iptables chains and comments are recognised: the backend names them after the tool. */
const OUR_IPTABLES = /stb[_-]?netacct|STB[_-]?NETACCT|STBNA/i;

/** `nsenter --net=PATH` prefix, or nothing for the test's own netns. */
function inNetns(netnsPath?: string): string[] {
  return netnsPath ? ["nsenter", `--net=${netnsPath}`, "--"] : [];
}

export async function netnsLeftovers(): Promise<string[]> {
  const text = await output(["ip", "netns", "list"]);
  return text.split("\n").map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(NETNS_PREFIX) && oursOrStale(n, NETNS_PREFIX));
}

/** Names of nft tables called stb_netacct, as "family name". */
export async function nftTables(netnsPath?: string): Promise<string[]> {
  const text = await output([...inNetns(netnsPath), "nft", "-j", "list", "tables"]);
  const items = (JSON.parse(text) as { nftables: { table?: { family: string; name: string } }[] })
    .nftables;
  return items.filter((i) => i.table?.name === NFT_TABLE).map((i) =>
    `${i.table!.family} ${i.table!.name}`
  );
}

/** Rules in our nft table (rule handles), to see that a restart did not duplicate any. */
export async function nftRuleCount(netnsPath?: string): Promise<number> {
  const text = await output([...inNetns(netnsPath), "nft", "-j", "list", "ruleset"]);
  const items = (JSON.parse(text) as { nftables: { rule?: { table: string } }[] }).nftables;
  return items.filter((i) => i.rule?.table === NFT_TABLE).length;
}

/**
 * Lines of `iptables-save` / `ip6tables-save` (all tables) that are ours: chain
 * declarations, rules in our chains, and jumps or comments naming us.
 */
export async function iptablesLines(netnsPath?: string): Promise<string[]> {
  const found: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const r = await run([...inNetns(netnsPath), tool], { allowFail: true });
    if (r.code !== 0) continue; // family unsupported: nothing of ours either
    for (const line of r.stdout.split("\n")) {
      if (line.startsWith("#")) continue;
      if (OUR_IPTABLES.test(line)) found.push(`${tool}: ${line}`);
    }
  }
  return found;
}

export interface BpfAttachment {
  id: number;
  attach_type: string;
  name: string;
  /** The cgroup directory it is attached to. */
  cgroup: string;
}

/** Programs attached to any cgroup under the cgroup2 mount (bpftool cgroup tree). */
export async function bpfAttachments(mountPoint: string): Promise<BpfAttachment[]> {
  const text = (await output(["bpftool", "-j", "cgroup", "tree", mountPoint])).trim();
  const tree = text ? JSON.parse(text) as { cgroup: string; programs: BpfAttachment[] }[] : [];
  // bpftool 7.1 writes a backslash in a JSON string as "\n" (systemd's "\x2d" comes out
  // as "\nx2d"); no cgroup name of ours holds a newline.
  return tree.flatMap((c) =>
    c.programs.map((p) => ({ ...p, cgroup: c.cgroup.replaceAll("\n", "\\") }))
  );
}

/**
 * Which processes hold a BPF link to each program, from /proc/PID/fdinfo ("prog_id:" of a
 * link fd). A program attached through a link is detached when its last holder exits, so a
 * held attachment belongs to whoever holds it; one held by nobody was attached without a
 * link or pinned, and outlives the process that made it.
 */
export function bpfLinkHolders(): Map<number, number[]> {
  const holders = new Map<number, number[]>();
  for (const p of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(p.name)) continue;
    let fds: Deno.DirEntry[];
    try {
      fds = [...Deno.readDirSync(`/proc/${p.name}/fdinfo`)];
    } catch {
      continue; // exited meanwhile
    }
    for (const fd of fds) {
      let info: string;
      try {
        info = Deno.readTextFileSync(`/proc/${p.name}/fdinfo/${fd.name}`);
      } catch {
        continue;
      }
      if (!/^link_id:/m.test(info)) continue;
      const prog = /^prog_id:\s*(\d+)/m.exec(info);
      if (!prog) continue;
      const list = holders.get(Number(prog[1])) ?? [];
      if (!list.includes(Number(p.name))) list.push(Number(p.name));
      holders.set(Number(prog[1]), list);
    }
  }
  return holders;
}

/** Attachments made through links that process `pid` holds (what one `run` attached). */
export async function bpfAttachedBy(mountPoint: string, pid: number): Promise<BpfAttachment[]> {
  const holders = bpfLinkHolders();
  return (await bpfAttachments(mountPoint)).filter((a) => holders.get(a.id)?.includes(pid));
}

const key = (a: BpfAttachment) => `${a.id}/${a.attach_type}/${a.cgroup}`;

/**
 * Attachments that are nobody's and were not there in `baseline`: programs that stay
 * attached after the process that attached them is gone (pinned links among them).
 * Attachments held by a live process are that process's business (other tests and
 * benchmarks run beside this suite). A link outlives its holder's /proc entry by a moment
 * (the last fput of an exiting process is deferred), so an orphan must still be there a
 * second later to count.
 */
export async function newBpfAttachments(
  mountPoint: string,
  baseline: BpfAttachment[],
): Promise<BpfAttachment[]> {
  const known = new Set(baseline.map(key));
  const orphans = async () => {
    const holders = bpfLinkHolders();
    return (await bpfAttachments(mountPoint)).filter((a) =>
      !known.has(key(a)) && !holders.has(a.id)
    );
  };
  let found = await orphans();
  for (let i = 0; i < 5 && found.length > 0; i++) {
    await sleep(200);
    const now = new Set((await orphans()).map(key));
    found = found.filter((a) => now.has(key(a)));
  }
  return found;
}

/** Pins of ours in any mounted bpffs (a pinned link or map outlives every process). */
export function bpfPins(): string[] {
  const mounts = Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .filter((l) => / - bpf /.test(l)).flatMap((l) => l.split(" ")[4] ?? []);
  const found: string[] = [];
  const walk = (dir: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return;
    }
    for (const e of entries) {
      const path = `${dir}/${e.name}`;
      if (/stb|netacct/i.test(e.name)) found.push(path);
      else if (e.isDirectory) walk(path);
    }
  };
  for (const m of new Set(mounts)) walk(m);
  return found;
}

/**
 * What `run` leaves in the kernel, as readable lines; empty means nothing: programs
 * attached to a cgroup and held by no process, pins, and in each netns (undefined: the
 * test's own) the nft table and iptables chains of ours.
 */
export async function kernelStateLeft(
  mountPoint: string,
  bpfBaseline: BpfAttachment[],
  netnsPaths: (string | undefined)[] = [undefined],
): Promise<string[]> {
  const problems: string[] = [];
  for (const a of await newBpfAttachments(mountPoint, bpfBaseline)) {
    problems.push(`BPF program ${a.id} "${a.name}" (${a.attach_type}) attached at ${a.cgroup}`);
  }
  for (const pin of bpfPins()) problems.push(`BPF pin ${pin}`);
  for (const ns of netnsPaths) {
    const where = ns ?? "the test's netns";
    for (const t of await nftTables(ns)) problems.push(`nft table ${t} in ${where}`);
    for (const l of await iptablesLines(ns)) problems.push(`${l} in ${where}`);
  }
  return problems;
}

/**
 * Everything left over, as readable lines; empty means clean. `netnsPaths` are namespaces
 * still alive that `run` ran in (checked for rules after it stopped).
 */
export async function leftovers(
  mountPoint: string,
  bpfBaseline: BpfAttachment[],
  netnsPaths: string[] = [],
): Promise<string[]> {
  const problems: string[] = [];
  for (const ns of await netnsLeftovers()) problems.push(`netns ${ns}`);
  for (const dir of cgroupLeftovers(mountPoint)) problems.push(`cgroup ${dir}`);
  problems.push(...await kernelStateLeft(mountPoint, bpfBaseline, [undefined, ...netnsPaths]));
  return problems;
}
