/**
 * The test lab: one test's world in one object (namespaces, a cgroup layout, the cgroups
 * and the peer servers), torn down in reverse order by `close`, also after a failure
 * half-way through `open`.
 */

import { CgroupTree } from "./cgroups.ts";
import { command, DENO, output, randomTag } from "./exec.ts";
import { Driver } from "./driver.ts";
import { type Layout, type LayoutName, openLayout } from "./layouts.ts";
import { type Peer, runTraffic, startPeer, TCP_PORT, UDP_PORT } from "./processes.ts";
import { PEER_IF, type RemoteName, REMOTES, Topology } from "./topology.ts";
import type { FlowResult } from "./traffic.ts";

const DRIVER_TS = new URL("./backend_driver.ts", import.meta.url).pathname;

export interface FlowSizes {
  tcpUp: number;
  tcpDown: number;
  udpCount: number;
  udpSize: number;
}

/** A few MB each way: big enough that 2% is a meaningful bound, small enough to be quick. */
export const DEFAULT_SIZES: FlowSizes = {
  tcpUp: 3_000_000,
  tcpDown: 5_000_000,
  udpCount: 600,
  udpSize: 1200,
};

/** traffic.ts flow specs: one TCP and one UDP flow to a remote. */
export function flowsTo(remote: RemoteName, sizes: FlowSizes = DEFAULT_SIZES): string[] {
  const host = REMOTES[remote];
  return [
    `tcp,${host},${TCP_PORT},${sizes.tcpUp},${sizes.tcpDown}`,
    `udp,${host},${UDP_PORT},${sizes.udpCount},${sizes.udpSize}`,
  ];
}

export class Lab {
  readonly tag = randomTag();
  readonly topology = new Topology(this.tag);
  layout!: Layout;
  cgroups!: CgroupTree;
  #peers: Peer[] = [];
  #cleanups: (() => Promise<void>)[] = [];

  /**
   * Writes a `run` config for this env's services to `path`: `backend`'s ct mark bits (the
   * firewall backends) and `extra` settings, e.g. `{ interval_s: 5 }`. Returns `path`.
   *
   * The lab's byte reference is the veth's own counters, which carry a GSO aggregate as one
   * packet with one set of headers, as every backend's hook sees it; so ebpf counts without
   * its (default) GSO correction here unless `extra` says otherwise. The default, bytes as
   * a wire carries them, is checked against a segmenting veth in tests/wire_bytes_test.ts.
   */
  async writeRunConfig(
    path: string,
    backend: string,
    extra: Record<string, unknown> = {},
  ): Promise<string> {
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        services: this.cgroups.configServices(),
        ...(backend === "ebpf" ? { gso_correction: false } : {}),
        ...extra,
        ...(CT_MARKS[backend] ?? {}),
      }),
    );
    return path;
  }

  static async open(layoutName: LayoutName): Promise<Lab> {
    const env = new Lab();
    try {
      await env.topology.up();
      env.#cleanups.push(() => env.topology.down());
      env.layout = await openLayout(layoutName);
      env.#cleanups.push(() => env.layout.close());
      env.cgroups = new CgroupTree(env.layout.mountHere, env.tag);
      env.#cleanups.push(() => env.cgroups.teardown());
      env.#peers.push(await startPeer(env.topology.peerNetnsPath, PEER_IF));
      // Loopback server inside the client netns, outside every service cgroup.
      env.#peers.push(await startPeer(env.topology.clientNetnsPath));
      env.#cleanups.push(async () => {
        for (const p of env.#peers) await p.stop();
      });
    } catch (e) {
      await env.close();
      throw e;
    }
    return env;
  }

  get clientNetns(): string {
    return this.topology.clientNetnsPath;
  }

  /** Service cgroup directory as processes inside the layout see it. */
  cgroupInView(service: string): string {
    return this.cgroups.dir(service, this.layout.mountInView);
  }

  /** A command in the client netns, through the layout; returns its stdout. */
  inClient(argv: string[], stdin?: string): Promise<string> {
    return output([...this.layout.wrap(this.clientNetns), ...argv], { stdin });
  }

  /** A command in the peer netns. */
  inPeer(argv: string[], stdin?: string): Promise<string> {
    return output([...this.layout.wrap(this.topology.peerNetnsPath), ...argv], { stdin });
  }

  /**
   * Runs flows from a process chain in cgroup `rel` of the lab's tree (cgroups.make), or
   * from an outsider when `rel` is null.
   */
  trafficIn(rel: string | null, flows: string[]): Promise<FlowResult[]> {
    return runTraffic(
      this.layout,
      this.clientNetns,
      rel === null ? null : this.cgroups.dirOf(rel, this.layout.mountInView),
      flows,
    );
  }

  /** A backend (backend_driver.ts) running in the client netns; ended by `close`. */
  startDriver(backend: string): Driver {
    const argv = [...this.layout.wrap(this.clientNetns), DENO, "run", "-A", DRIVER_TS, backend];
    const child = command(argv, {
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const driver = new Driver(child);
    this.#cleanups.push(() => driver.close());
    return driver;
  }

  /** Runs flows from a service's process chain, or from an outsider when `service` is null. */
  traffic(service: string | null, flows: string[]): Promise<FlowResult[]> {
    return runTraffic(
      this.layout,
      this.clientNetns,
      service === null ? null : this.cgroupInView(service),
      flows,
    );
  }

  /** Reverse order of creation; every step runs even if an earlier one fails. */
  async close(): Promise<void> {
    const errors: unknown[] = [];
    for (const f of this.#cleanups.reverse()) {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    }
    this.#cleanups = [];
    if (errors.length) throw new AggregateError(errors, "test environment teardown failed");
  }
}

/**
 * Config ct mark bits per firewall backend, not overlapping, so nft and iptables can count the
 * same flows side by side.
 */
const CT_MARKS: Record<string, { ct_mark: string; ct_mask: string }> = {
  nft: { ct_mark: "0x00510000", ct_mask: "0x00ff0000" },
  iptables: { ct_mark: "0x5a000000", ct_mask: "0xff000000" },
};
