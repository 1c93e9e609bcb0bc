/**
 * The network the end-to-end tests push traffic through, built from scratch per test:
 *
 *   client netns (StB's processes, `run`)          peer netns (servers, outside every cgroup we count)
 *   lo: 127.0.0.1, ::1                             lo
 *   ext0 ───────────── veth ─────────────────────── ext1
 *     198.51.100.1/24  2001:db8:1::1/64   internet   198.51.100.2/24  2001:db8:1::2/64
 *     192.168.50.1/24                     LAN        192.168.50.2/24
 *     100.64.0.1/24                       CGNAT      100.64.0.2/24
 *     fd00::1/64                          ULA        fd00::2/64
 *     fe80::1/64                          link-local fe80::2/64
 *
 * One peer host with several addresses on one veth keeps the topology small while every
 * class of remote the accounting must tell apart is a real address on a real link. The
 * "internet" addresses are documentation ranges (TEST-NET-2, 2001:db8::/32): external
 * for stb-netacct, yet never routed anywhere outside these namespaces.
 */

import { output, run, RUN_SCOPE } from "./exec.ts";

/** Netns names start with this so the leftover check can find anything of ours. */
export const NETNS_PREFIX = "stbe2e-";

export const CLIENT_IF = "ext0";
export const PEER_IF = "ext1";

/** Where the client reaches each kind of remote. External ones must count, internal never. */
export const REMOTES = {
  internet4: "198.51.100.2",
  internet6: "2001:db8:1::2",
  // An IPv6 socket talking IPv4 through a v4-mapped address: judged by the IPv4 it carries.
  mapped4: "::ffff:198.51.100.2",
  lan: "192.168.50.2",
  cgnat: "100.64.0.2",
  ula: "fd00::2",
  linkLocal: `fe80::2%${CLIENT_IF}`,
  loopback4: "127.0.0.1",
  loopback6: "::1",
  mappedLan: "::ffff:192.168.50.2",
} as const;

export type RemoteName = keyof typeof REMOTES;
export const EXTERNAL_REMOTES: RemoteName[] = ["internet4", "internet6", "mapped4"];
export const INTERNAL_REMOTES: RemoteName[] = [
  "lan",
  "cgnat",
  "ula",
  "linkLocal",
  "loopback4",
  "loopback6",
  "mappedLan",
];

/** The client's own addresses (traffic to them stays on lo). */
export const CLIENT_OWN = { internet4: "198.51.100.1", internet6: "2001:db8:1::1" } as const;

/** Largest TCP segment payload at MTU 1500 (IPv4 with timestamps): what one retransmit adds. */
export const MSS = 1448;

const CLIENT_ADDRS = [
  "198.51.100.1/24",
  "2001:db8:1::1/64",
  "192.168.50.1/24",
  "100.64.0.1/24",
  "fd00::1/64",
  "fe80::1/64",
];
const PEER_ADDRS = [
  "198.51.100.2/24",
  "2001:db8:1::2/64",
  "192.168.50.2/24",
  "100.64.0.2/24",
  "fd00::2/64",
  "fe80::2/64",
];

export interface LinkCounters {
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
}

export class Topology {
  readonly client: string;
  readonly peer: string;

  constructor(readonly tag: string) {
    this.client = `${NETNS_PREFIX}${RUN_SCOPE}${tag}-c`;
    this.peer = `${NETNS_PREFIX}${RUN_SCOPE}${tag}-p`;
  }

  /** Path nsenter --net takes for the client namespace. */
  get clientNetnsPath(): string {
    return `/run/netns/${this.client}`;
  }

  get peerNetnsPath(): string {
    return `/run/netns/${this.peer}`;
  }

  async up(): Promise<void> {
    try {
      for (const ns of [this.client, this.peer]) {
        await run(["ip", "netns", "add", ns]);
        // No DAD: addresses must work at once, and no router solicitations cluttering the link.
        for (const key of ["accept_dad", "router_solicitations"]) {
          for (const scope of ["all", "default"]) {
            await run([
              "ip",
              "netns",
              "exec",
              ns,
              "sysctl",
              "-qw",
              `net.ipv6.conf.${scope}.${key}=0`,
            ]);
          }
        }
        await run(["ip", "-n", ns, "link", "set", "lo", "up"]);
      }
      await run([
        "ip",
        "link",
        "add",
        CLIENT_IF,
        "netns",
        this.client,
        "type",
        "veth",
        "peer",
        "name",
        PEER_IF,
        "netns",
        this.peer,
      ]); // deno-fmt-ignore
      for (const [ns, dev, addrs] of [
        [this.client, CLIENT_IF, CLIENT_ADDRS],
        [this.peer, PEER_IF, PEER_ADDRS],
      ] as const) {
        for (const a of addrs) {
          const v6 = a.includes(":");
          await run(["ip", "-n", ns, ...(v6 ? ["-6"] : []), "addr", "add", a, "dev", dev, ...(v6 ? ["nodad"] : [])]);
        }
        await run(["ip", "-n", ns, "link", "set", dev, "up"]);
      }
    } catch (e) {
      await this.down();
      throw e;
    }
  }

  /** Deletes both namespaces (and with them the veth, rules and tables inside). Idempotent. */
  async down(): Promise<void> {
    const problems: string[] = [];
    for (const ns of [this.client, this.peer]) {
      const r = await run(["ip", "netns", "del", ns], { allowFail: true });
      if (r.code !== 0 && !/No such file/.test(r.stderr)) problems.push(r.stderr.trim());
    }
    if (problems.length) throw new Error(`Cannot delete test namespaces: ${problems.join("; ")}`);
  }

  /** Counters of the client's veth end. */
  async linkCounters(): Promise<LinkCounters> {
    const text = await output(["ip", "-n", this.client, "-s", "-j", "link", "show", CLIENT_IF]);
    return parseLinkCounters(text);
  }

  /**
   * TCP segments retransmitted so far by the client and by the peer (RetransSegs of each
   * netns). Counters see a retransmitted segment again, as it is on the wire again: drops
   * on a busy veth backlog make a count exceed the payload by that much.
   */
  async retransmits(): Promise<{ client: number; peer: number }> {
    const get = async (path: string) =>
      parseRetransSegs(await output(["nsenter", `--net=${path}`, "cat", "/proc/net/snmp"]));
    return { client: await get(this.clientNetnsPath), peer: await get(this.peerNetnsPath) };
  }
}

/** RetransSegs from a netns's /proc/net/snmp: the "Tcp:" names line, then its values line. */
export function parseRetransSegs(snmp: string): number {
  const [names, values] = snmp.split("\n").filter((l) => l.startsWith("Tcp:"))
    .map((l) => l.split(/\s+/));
  const at = names?.indexOf("RetransSegs") ?? -1;
  if (at < 0 || !values) throw new Error(`No Tcp RetransSegs in /proc/net/snmp: ${snmp}`);
  return Number(values[at]);
}

/** Parses `ip -s -j link show DEV` output. */
export function parseLinkCounters(json: string): LinkCounters {
  type Stats = { bytes: number; packets: number };
  const [link] = JSON.parse(json) as { stats64: { rx: Stats; tx: Stats } }[];
  if (!link?.stats64) throw new Error(`no stats64 in ip output: ${json.slice(0, 200)}`);
  return {
    rxBytes: link.stats64.rx.bytes,
    rxPackets: link.stats64.rx.packets,
    txBytes: link.stats64.tx.bytes,
    txPackets: link.stats64.tx.packets,
  };
}

const ETHERNET_HEADER = 14;

/**
 * IP-level bytes that crossed the client's veth between two snapshots: what skb->len at a
 * cgroup_skb hook, an nft counter and an iptables counter all measure. veth counts one
 * skb per GSO/GRO aggregate, with one Ethernet header each, exactly as those hooks see it.
 */
export function l3Delta(before: LinkCounters, after: LinkCounters): { rx: number; tx: number } {
  return {
    rx: (after.rxBytes - before.rxBytes) - ETHERNET_HEADER * (after.rxPackets - before.rxPackets),
    tx: (after.txBytes - before.txBytes) - ETHERNET_HEADER * (after.txPackets - before.txPackets),
  };
}
