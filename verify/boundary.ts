/**
 * The boundary probe's network, made fresh for each `verify` and gone with it:
 *
 *   probe netns (the probe process, in a child cgroup of a service)     peer netns (the sink)
 *   stbv0 ──────────────────────── veth ───────────────────────────── stbv1
 *     one address per check, on-link (public, RFC 1918, CGNAT, ULA, on-link global IPv6)
 *   tailscale0 (or the first "exclude_interfaces" name) ── veth ────── stbvpn1
 *     a CGNAT /32 as tailscale has, a public /32 routed over it; the ifindex of the host's
 *     interface of that name, when it has one (the sampler knows interfaces by index)
 *
 * Both namespaces are anonymous: each belongs to its process (started under
 * `unshare --net`), and the veths live inside them, so nothing is added to this host's own
 * namespace, routes or addresses, nothing is left in /run/netns, and when the two processes
 * end (verify's cleanup, or their stdin closing because verify died) the kernel removes the
 * namespaces with their veths. Nothing can leave the pair: neither namespace has a route
 * anywhere else.
 *
 * Why this proves something only for the ebpf backend: its programs are linked at the
 * service cgroups and run for the cgroup's sockets in any namespace, so they see the probe's
 * packets. nft and iptables rules live in the sampler's own namespace and never see a packet
 * of another one; showing them the probe would mean routing test addresses through this
 * host's own routing table, which verify never touches.
 */

import {
  type BoundaryPlan,
  type HostView,
  parseHostView,
  PEER_LINK,
  PEER_VPN_LINK,
  PROBE_LINK,
} from "./boundary_plan.ts";

export class BoundaryError extends Error {
  override name = "BoundaryError";
}

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(argv[0]!, { args: argv.slice(1), stdin: "null" }).output();
  } catch (e) {
    throw new BoundaryError(
      `Cannot run "${argv[0]}": ${(e as Error).message}`,
      { cause: e },
    );
  }
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Whether this kernel has IPv6 at all (booted with ipv6.disable=1 it has no if_inet6). */
export function ipv6Enabled(): boolean {
  try {
    Deno.statSync("/proc/net/if_inet6");
    return true;
  } catch {
    return false;
  }
}

async function ip(args: string[]): Promise<string> {
  const r = await run(["ip", ...args]);
  if (r.code !== 0) {
    throw new BoundaryError(
      `"ip ${args.join(" ")}" failed: ${r.stderr.trim() || `exit ${r.code}`}`,
    );
  }
  return r.stdout;
}

/** This host's addresses and routes, read (never changed) in verify's own namespace. */
export async function readHostView(): Promise<HostView> {
  const addrs = await ip(["-j", "addr", "show"]);
  const routes = [await ip(["-j", "-4", "route", "show", "table", "all"])];
  if (ipv6Enabled()) routes.push(await ip(["-j", "-6", "route", "show", "table", "all"]));
  return parseHostView(addrs, routes);
}

/** Runs `ip` inside the namespace of process `pid`. */
function ipIn(pid: number, args: string[]): Promise<string> {
  return runIn(pid, ["ip", ...args]);
}

async function runIn(pid: number, argv: string[]): Promise<string> {
  const r = await run(["nsenter", `--net=/proc/${pid}/ns/net`, "--", ...argv]);
  if (r.code !== 0) {
    throw new BoundaryError(
      `"${argv.join(" ")}" in the probe's namespace failed: ${r.stderr.trim() || `exit ${r.code}`}`,
    );
  }
  return r.stdout;
}

/**
 * Wires the probe's namespace (that of `probePid`) to the sink's (`sinkPid`) as the plan
 * says. Everything made is inside those two namespaces. Returns why the VPN-like link could
 * not be made (null when it was, or was not planned).
 */
export async function wireBoundary(
  plan: BoundaryPlan,
  pids: { probe: number; sink: number },
): Promise<{ vpnSkipped: string | null }> {
  const { probe, sink } = pids;
  for (const pid of [probe, sink]) {
    // Addresses usable at once (no DAD wait), and no router solicitations.
    for (const key of ["accept_dad=0", "router_solicitations=0"]) {
      for (const scope of ["all", "default"]) {
        await runIn(pid, ["sysctl", "-qw", `net.ipv6.conf.${scope}.${key}`]).catch(() => {});
      }
    }
    await ipIn(pid, ["link", "set", "lo", "up"]);
  }
  /**
   * A veth from the probe's namespace (`name`, at `index` if asked) to the sink's, made from
   * inside the probe's: Linux 6.1 refuses an index that the *caller's* namespace uses
   * (rtnetlink looks it up there first), and the host's interface has that very index.
   */
  const veth = (name: string, peer: string, index: number | null) =>
    ipIn(probe, [
      ...["link", "add", name, ...(index === null ? [] : ["index", String(index)])],
      ...["type", "veth", "peer", "name", peer, "netns", String(sink)],
    ]);
  // The VPN-like link first, so that the index it asks for is still free in the namespace,
  // unless a device every new namespace gets (sit0, tunl0, ... of loaded tunnel modules)
  // holds it: then no interface there can pass for the host's.
  let vpn = plan.targets.find((t) => t.via === "vpn");
  let vpnSkipped: string | null = null;
  if (vpn && plan.vpnIndex !== null) {
    const links = JSON.parse(await ipIn(probe, ["-j", "link", "show"])) as {
      ifindex: number;
      ifname: string;
    }[];
    const holder = links.find((l) => l.ifindex === plan.vpnIndex);
    if (holder) {
      vpnSkipped = `the host's "${plan.vpnName}" has index ${plan.vpnIndex}, which every new ` +
        `network namespace here gives to "${holder.ifname}", so the probe's interface ` +
        "cannot pass for it";
      vpn = undefined;
    }
  }
  if (vpn) await veth(plan.vpnName, PEER_VPN_LINK, plan.vpnIndex);
  await veth(PROBE_LINK, PEER_LINK, null);
  for (const t of plan.targets.filter((t) => t.via === "main")) {
    const v6 = t.family === 6 ? ["nodad"] : [];
    await ipIn(probe, [
      "addr",
      "add",
      `${t.probeAddress}/${t.prefixLen}`,
      "dev",
      PROBE_LINK,
      ...v6,
    ]);
    await ipIn(sink, ["addr", "add", `${t.peerAddress}/${t.prefixLen}`, "dev", PEER_LINK, ...v6]);
  }
  await ipIn(probe, ["link", "set", PROBE_LINK, "up"]);
  await ipIn(sink, ["link", "set", PEER_LINK, "up"]);
  if (vpn) {
    const [src, dst] = [vpn.probeAddress, vpn.peerAddress];
    await ipIn(probe, ["addr", "add", `${src}/32`, "dev", plan.vpnName]);
    await ipIn(probe, ["link", "set", plan.vpnName, "up"]);
    await ipIn(sink, ["addr", "add", `${dst}/32`, "dev", PEER_VPN_LINK]);
    await ipIn(sink, ["link", "set", PEER_VPN_LINK, "up"]);
    await ipIn(probe, ["route", "add", `${dst}/32`, "dev", plan.vpnName, "src", src]);
    await ipIn(sink, ["route", "add", `${src}/32`, "dev", PEER_VPN_LINK]);
  }
  return { vpnSkipped };
}
