/**
 * Kernel state that outlives `run` (docs/design.md, "Kernel state kept"): the ebpf
 * backend's pins, the nft table and the iptables chains in this network namespace. Found for `status` and
 * `doctor` (which say when it counts with no sampler reading it) and removed by `uninstall`.
 * Reading either needs root; without it nothing can be said (null).
 */

import { keptStateDirs, removeAllPins } from "../bpf/pins.ts";

/** backends/nft.ts's table, named here so status does not load the nft backend's code. */
const NFT_FAMILY = "inet";
const NFT_TABLE = "stb_netacct";

/** What is kept, one line each; null when this process may not look (not root). */
export async function keptKernelState(): Promise<string[] | null> {
  if (Deno.uid() !== 0) return null;
  const found = keptStateDirs().map((d) => `ebpf pins ${d}`);
  if (await nftTableExists()) found.push(`nft table ${NFT_FAMILY} ${NFT_TABLE}`);
  for (const [tool, family] of IPTABLES_SAVE) {
    const chains = ourIptablesChains(await iptablesSave(tool));
    if (chains.length) found.push(`iptables chains ${chains.join(", ")} (${family})`);
  }
  return found;
}

/** backends/iptables.ts's chains all start with this (named here for the same reason). */
const IPTABLES_CHAIN_PREFIX = "STB_NETACCT_";
const IPTABLES_SAVE = [["iptables-save", "IPv4"], ["ip6tables-save", "IPv6"]] as const;

/** Our chains in an `iptables-save -t mangle` listing, sorted. */
export function ourIptablesChains(saveText: string): string[] {
  return saveText.split("\n").map((l) => /^:(\S+) /.exec(l)?.[1] ?? "")
    .filter((c) => c.startsWith(IPTABLES_CHAIN_PREFIX)).sort();
}

/** The mangle table's listing; "" when the tool is missing or fails (nothing to say then). */
async function iptablesSave(tool: string): Promise<string> {
  try {
    const out = await new Deno.Command(tool, {
      args: ["-t", "mangle"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : "";
  } catch {
    return "";
  }
}

/** How to remove it, for the messages. */
export const KEPT_STATE_FIX = "`sudo stb-netacct uninstall` removes it (or start `run` and " +
  "stop it with Ctrl-C)";

async function nftTableExists(): Promise<boolean> {
  try {
    const out = await new Deno.Command("nft", {
      args: ["list", "table", NFT_FAMILY, NFT_TABLE],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false; // no nft here: no table either
  }
}

/** Removes the ebpf pins (links held by nobody then detach); returns where they were. */
export function removeKeptPins(): Promise<string[]> {
  return removeAllPins();
}

/**
 * Removes what the named backends keep (`install` switching the service to another backend:
 * the old one's state would count on, unread, until a reboot). Best effort: says what failed.
 */
export async function removeKernelStateOf(
  backends: readonly string[],
  say: (message: string) => void,
): Promise<void> {
  if (backends.includes("ebpf")) {
    for (const p of await removeAllPins().catch(() => [])) {
      say(`Removed the ebpf backend's pinned counters and links in ${p}`);
    }
  }
  if (backends.includes("nft") && await nftTableExists()) {
    const out = await new Deno.Command("nft", {
      args: ["delete", "table", NFT_FAMILY, NFT_TABLE],
      stdout: "null",
      stderr: "piped",
    }).output().catch(() => null);
    say(
      out?.success
        ? `Removed the nft table ${NFT_FAMILY} ${NFT_TABLE} the nft backend kept`
        : `Warning: could not remove the nft table ${NFT_FAMILY} ${NFT_TABLE}`,
    );
  }
  if (backends.includes("iptables")) {
    const had = (await Promise.all(IPTABLES_SAVE.map(([t]) => iptablesSave(t))))
      .some((t) => ourIptablesChains(t).length > 0);
    if (!had) return;
    try {
      // Its stop without `keep` removes every chain and jump of ours, both families.
      await new (await import("./iptables.ts")).IptablesBackend().stop();
      say("Removed the iptables chains the iptables backend kept");
    } catch (e) {
      say(`Warning: could not remove the iptables chains: ${(e as Error).message}`);
    }
  }
}
