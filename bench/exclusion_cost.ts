/**
 * What following `exclude_interfaces` and `internal_onlink` costs `run` per sample: every
 * sample resolves the excluded names (if_nametoindex, lib/interfaces.ts) and re-reads the
 * connected routes (/proc/net/route and /proc/net/ipv6_route, parsed, lib/onlink.ts) in
 * `run`'s network namespace. Measured in a fresh netns holding a desktop-like set of
 * interfaces and routes (a LAN with IPv4 and a global IPv6 /64, a tailscale-like and a
 * VPN link), so the figure does not depend on this machine's own network. Root:
 *
 *   deno run -A bench/exclusion_cost.ts [OUT.json] [--samples N]
 */

import { median } from "./stats.ts";
import { InterfaceIndexes } from "../lib/interfaces.ts";
import { OnlinkWatch } from "../lib/onlink.ts";
import { DEFAULT_EXCLUDE, parseCidr } from "../lib/cidr.ts";
import { cString, libc as sys, O_CLOEXEC, O_RDONLY } from "../lib/libc.ts";

const NETNS = `stb-bench-excl-${crypto.randomUUID().slice(0, 8)}`;

async function sh(args: string[]): Promise<void> {
  const r = await new Deno.Command(args[0]!, { args: args.slice(1), stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
}

/** Enters the netns on this thread only (setns), as `run` would live in one. */
function enter(path: string): void {
  const libc = Deno.dlopen("libc.so.6", {
    // int setns(int fd /* i32 */, int nstype /* i32 */)
    setns: { parameters: ["i32", "i32"], result: "i32" },
  });
  const fd = sys().open(cString(path), O_RDONLY | O_CLOEXEC, 0);
  try {
    if (fd < 0 || libc.symbols.setns(fd, 0x40000000 /* CLONE_NEWNET */) !== 0) {
      throw new Error(`setns(${path}) failed`);
    }
  } finally {
    if (fd >= 0) sys().close(fd);
    libc.close();
  }
}

async function main(): Promise<void> {
  const args = [...Deno.args];
  const at = args.indexOf("--samples");
  const samples = at >= 0 ? Number(args.splice(at, 2)[1]) : 20_000;
  const out = args[0] ?? null;
  if (Deno.uid() !== 0) {
    console.error("exclusion_cost: run as root (it makes a network namespace)");
    Deno.exit(1);
  }
  await sh(["ip", "netns", "add", NETNS]);
  try {
    const x = (...a: string[]) => sh(["ip", "-n", NETNS, ...a]);
    await x("link", "set", "lo", "up");
    for (const dev of ["wlan0", "tailscale0", "tun0"]) {
      await x("link", "add", dev, "type", "veth", "peer", "name", `${dev}p`);
      await x("link", "set", dev, "up");
    }
    await x("addr", "add", "192.168.1.23/24", "dev", "wlan0");
    await x("-6", "addr", "add", "2001:db8:42::23/64", "dev", "wlan0", "nodad");
    await x("addr", "add", "100.74.95.80/32", "dev", "tailscale0");
    await x("-6", "addr", "add", "fd7a:115c:a1e0::1/128", "dev", "tailscale0", "nodad");
    await x("route", "add", "default", "via", "192.168.1.1");
    await x("-6", "route", "add", "default", "via", "2001:db8:42::1");
    await x("route", "add", "10.8.0.0/24", "dev", "tun0");
    enter(`/run/netns/${NETNS}`);

    const names = new InterfaceIndexes(["tailscale0", "wg0"], () => {});
    const onlink = new OnlinkWatch(DEFAULT_EXCLUDE.map(parseCidr), () => {});
    const time = (f: () => unknown) => {
      const us: number[] = [];
      for (let i = 0; i < samples; i++) {
        const t = performance.now();
        f();
        us.push((performance.now() - t) * 1000);
      }
      return Number(median(us.slice(samples / 10)).toFixed(2)); // past the warm-up
    };
    const routesUs = time(() => onlink.poll());
    const namesUs = time(() => names.resolve());
    const lines = (p: string) => Deno.readTextFileSync(p).trim().split("\n").length;
    const routes = `${lines("/proc/net/route") - 1} IPv4 / ${lines("/proc/net/ipv6_route")} IPv6`;
    const result = {
      exclusion_refresh: {
        method: `median µs per sample over ${samples} calls in a netns with 3 links and ` +
          `${routes} routes; the first tenth is warm-up`,
        samples,
        resolve_2_names_us: namesUs,
        read_routes_us: routesUs,
        per_sample_us: Number((namesUs + routesUs).toFixed(2)),
      },
    };
    console.log(
      `per sample: resolve 2 excluded names ${namesUs} µs, read on-link routes ${routesUs} µs`,
    );
    if (out) await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
  } finally {
    await sh(["ip", "netns", "del", NETNS]);
  }
}

if (import.meta.main) await main();
