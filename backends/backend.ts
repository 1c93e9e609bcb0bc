/**
 * The contract every counting backend (ebpf, nft, iptables) implements. `run` drives it:
 *
 *   const b = await loadBackend(name);      // lazy: choosing nft never loads libbpf
 *   await b.start(targets, options);
 *   every tick: if ids changed -> await b.retarget(targets); sample = await b.read();
 *   finally: await b.stop();
 *
 * Counters are cumulative and per service; `run` owns persistence and monotonic totals
 * across restarts, so a backend never writes files of its own. A backend whose kernel state
 * outlives the process (ebpf: pinned maps and links; nft: its table) says which state it
 * reads (`kernelState`): its counters then count from that state's creation, possibly by an
 * earlier run, and `run` adds only what its saved totals do not include yet.
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
  /**
   * The saved totals this run continues (run's --state): kernel state is kept per state
   * file, so runs with separate totals never adopt each other's. Absent: nothing outlives the
   * process.
   */
  stateKey?: string;
}

/** The kernel state a backend counts in, which may outlive `run` (see the header). */
export interface KernelState {
  /**
   * Unique per creation (a new table, a new pinned counters map), never reused: the saved
   * totals record which readings of it they include.
   */
  id: string;
  /** Found in the kernel at start (left by an earlier run) rather than made by this one. */
  adopted: boolean;
}

/**
 * The last counts of kernel state that `start` found incompatible (another object or
 * config) and replaced: `run` adds what its saved totals do not include yet, once.
 */
export interface ReplacedState {
  id: string;
  services: CounterSample;
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

export interface StopOptions {
  keep?: boolean;
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
   * Cumulative counters per service name, one entry per target: since `start`, or, with
   * `kernelState`, since that state was created. Never decreases, also across retarget;
   * kernel state lost and made anew (a flushed ruleset) has a new id and counts from zero.
   */
  read(): Promise<CounterSample>;

  /**
   * The kernel state `read` reads now, for backends whose state outlives the process.
   * Compatible state an earlier run left is adopted (its counters continue, nothing is
   * attached twice); incompatible state is taken over (`replaced`) and replaced.
   */
  kernelState?(): KernelState;

  /** What `start` took over from incompatible kernel state (empty: nothing). */
  replaced?(): ReplacedState[];

  /**
   * Removes what is left of replaced state, once `run` saved totals that include it: a
   * crash before that finds it again, and the saved totals say what is already counted.
   */
  releaseReplaced?(): Promise<void>;

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

  /**
   * Removes everything `start` installed. Safe to call twice, and after a failed start.
   * `keep`: kernel state that outlives the process stays counting for the next run (a
   * service restart or upgrade); only this process's hold on it goes.
   */
  stop(options?: StopOptions): Promise<void>;
}
