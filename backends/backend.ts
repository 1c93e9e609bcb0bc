/**
 * The contract every counting backend (ebpf, nft, iptables) implements. `run` drives it:
 *
 *   const b = await loadBackend(name);      // lazy: choosing nft never loads libbpf
 *   await b.start(targets, options);
 *   every tick: if ids changed -> await b.retarget(targets); sample = await b.read();
 *   finally: await b.stop();
 *
 * Counters are cumulative since `start` and per service; `run` owns persistence and
 * monotonic totals across restarts, so a backend never writes files of its own.
 */

import type { Cidr } from "../lib/cidr.ts";
import type { Cgroup2Mount, ServiceTarget } from "../lib/cgroup.ts";

export type { ServiceTarget };
export { BackendError } from "../lib/errors.ts";

export interface BackendOptions {
  mount: Cgroup2Mount;
  /** Remote prefixes that never count (already validated, IPv4 and IPv6 mixed). */
  exclude: Cidr[];
  /**
   * Interfaces (by name) whose traffic never counts, besides lo. A name that does not
   * exist yet counts from the moment it appears; a renamed interface is judged by its new
   * name, within one sample.
   */
  excludeInterfaces?: string[];
  /**
   * The prefixes of the host's directly connected networks (lib/onlink.ts) count as
   * internal too, kept current: `read` re-reads them and updates the exclusions in place,
   * never touching `exclude` and never resetting a counter.
   */
  internalOnlink?: boolean;
  /** Conntrack mark bits the firewall backends may use (value within mask). */
  ctMark: number;
  ctMask: number;
  /** One-line progress and warnings; goes to stderr / the journal. */
  log: (message: string) => void;
  /**
   * Count a GSO/GRO aggregate as the packets it stands for on the wire (its repeated IP
   * and TCP/UDP headers added). Only the ebpf backend can; others ignore it. Default on.
   */
  gsoCorrection?: boolean;
}

/** Counts since `start`: exact (the kernel's counters are unsigned 64-bit). */
export interface ServiceCounters {
  rxBytes: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  txPackets: bigint;
}

export type CounterSample = Record<string, ServiceCounters>;

/**
 * Bytes exchanged with one remote endpoint since `start`: the optional extra a backend
 * that sees every packet (ebpf) offers through `readDestinations`, for counters.json's
 * `destinations`. External traffic only, like the service counters.
 */
export interface DestinationCounters {
  service: string;
  direction: "rx" | "tx";
  /** Remote address as text: dotted IPv4 (also for IPv4-mapped IPv6), else IPv6. */
  address: string;
  /** Remote TCP/UDP port; 0 for other protocols. */
  port: number;
  /** "tcp", "udp", or the IP protocol number as text. */
  protocol: string;
  bytes: bigint;
  packets: bigint;
}

export interface Backend {
  readonly name: string;

  /**
   * Installs what counting needs in the kernel (programs, rules) for these targets; a
   * target whose id is null is counted as soon as a retarget brings its id. Cleans up
   * leftovers of a crashed earlier run first. On failure it throws a BackendError and
   * leaves nothing installed.
   */
  start(targets: ServiceTarget[], options: BackendOptions): Promise<void>;

  /**
   * Checks, changing nothing on the host, that `start` with these arguments would work
   * here: e.g. loads the programs without attaching them, or has the firewall tool check
   * the ruleset without applying it. Throws a BackendError saying why not and the fix.
   * Used by `doctor`; never touches what a running `run` installed.
   */
  probe(targets: ServiceTarget[], options: BackendOptions): Promise<void>;

  /**
   * Cumulative counters per service name since `start`, one entry per target. Never
   * decreases, also across retarget (a backend whose kernel counters restart keeps offsets).
   */
  read(): Promise<CounterSample>;

  /**
   * Optional extra, only where the backend can tell (ebpf): the `limit` remote endpoints
   * with the most bytes since `start`, most first. Bounded in the kernel (least recently
   * used endpoints are forgotten), so totals of a rarely used endpoint may restart.
   */
  readDestinations?(limit: number): Promise<DestinationCounters[]>;

  /**
   * The set of cgroup ids changed (a service was restarted, stopped or started late).
   * Must take effect before the next `read` and must not lose the totals counted so far.
   */
  retarget(targets: ServiceTarget[]): Promise<void>;

  /** Removes everything `start` installed. Safe to call twice, and after a failed start. */
  stop(): Promise<void>;
}
