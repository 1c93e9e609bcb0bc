/**
 * The one list of backends, and what `auto` means. The CLI's `--backend` choices (run,
 * install, doctor), the fallback order and the tests all come from here; each backend
 * module is imported only when chosen, so picking nft never dlopens libbpf.
 */

import type { Backend, BackendOptions, ServiceTarget } from "./backend.ts";
import { BackendError } from "./backend.ts";
import {
  CAP_BPF,
  CAP_NET_ADMIN,
  CAP_PERFMON,
  capabilityName,
  effectiveCaps,
  missingCaps,
} from "../lib/capabilities.ts";

export type {
  Backend,
  BackendOptions,
  CounterSample,
  DestinationCounters,
  KernelState,
  ReplacedState,
  ServiceCounters,
  ServiceTarget,
  StopOptions,
} from "./backend.ts";
export { BackendError } from "./backend.ts";

export const BACKEND_NAMES = ["ebpf", "nft", "iptables"] as const;
export type BackendName = typeof BACKEND_NAMES[number];

const loaders: Record<BackendName, () => Promise<Backend>> = {
  ebpf: async () => new (await import("./ebpf.ts")).EbpfBackend(),
  nft: async () => new (await import("./nft.ts")).NftBackend(),
  iptables: async () => new (await import("./iptables.ts")).IptablesBackend(),
};

/** What nft and iptables count of a GSO/GRO aggregate, with docs/benchmarks.md's figures. */
const AGGREGATE_BYTES = "each GSO/GRO aggregate with its headers once: bulk TCP about 3.4% " +
  "(IPv4) to 4.7% (IPv6) under the bytes on the wire; small requests and UDP exact";

/**
 * What each backend needs to count, shown by --help and checked before `start`, and what
 * its byte counts are (doctor and the README say it).
 */
export const BACKEND_INFO: Record<
  BackendName,
  { summary: string; capabilities: number[]; bytes: string }
> = {
  ebpf: {
    summary: "cgroup_skb BPF programs (most accurate; survives re-created cgroups)",
    capabilities: [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN],
    bytes: "as the wire carries them: a GSO/GRO aggregate as its segments, headers included " +
      '(unless "gso_correction": false)',
  },
  nft: {
    summary: "nftables table inet stb_netacct (socket cgroupv2 + conntrack mark)",
    capabilities: [CAP_NET_ADMIN],
    bytes: AGGREGATE_BYTES,
  },
  iptables: {
    summary: "iptables-nft mangle chains (-m cgroup + CONNMARK)",
    capabilities: [CAP_NET_ADMIN],
    bytes: AGGREGATE_BYTES,
  },
};

export function loadBackend(name: BackendName): Promise<Backend> {
  return loaders[name]();
}

/** Let the host decide: the first backend of BACKEND_NAMES that starts here. */
export const AUTO = "auto";
export const BACKEND_CHOICES = [AUTO, ...BACKEND_NAMES] as const;
export type BackendChoice = typeof BACKEND_CHOICES[number];
export const AUTO_SUMMARY = "ebpf when this host can load it, else nft, else iptables";

/** The backends `choice` may start, in the order they are tried. */
export function backendsOf(choice: BackendChoice): BackendName[] {
  return choice === AUTO ? [...BACKEND_NAMES] : [choice];
}

/**
 * Throws a BackendError naming what this process lacks to start `choice` at all. auto
 * needs what its cheapest fallback needs; ebpf's extra needs become the fallback reason.
 */
export function checkPrivileges(choice: BackendChoice, caps = effectiveCaps()): void {
  const needed = choice === AUTO
    ? BACKEND_INFO.nft.capabilities
    : BACKEND_INFO[choice].capabilities;
  const missing = missingCaps(caps, needed);
  if (missing.length > 0) {
    throw new BackendError(
      `The ${choice} backend needs ${missing.map(capabilityName).join(", ")}, which this process ` +
        `lacks: run it as root (sudo stb-netacct run) or through the installed systemd service`,
    );
  }
}

export interface StartedBackend {
  backend: Backend;
  /** Why the backends tried before it did not start (auto only), else null. */
  fallbackReason: string | null;
  /** The same, one reason per backend skipped (auto only; empty when the first started). */
  skipped?: { backend: BackendName; reason: string }[];
}

/**
 * Starts the first backend of `choice` that works here. For auto, a backend that lacks
 * privileges or fails to start is skipped and its reason kept; a named one throws.
 */
export async function startWithFallback(
  choice: BackendChoice,
  targets: ServiceTarget[],
  options: BackendOptions,
): Promise<StartedBackend> {
  const skipped: { backend: BackendName; reason: string }[] = [];
  const reasons: string[] = [];
  const skip = (backend: BackendName, reason: string) => {
    skipped.push({ backend, reason });
    reasons.push(`${backend}: ${reason}`);
  };
  for (const name of backendsOf(choice)) {
    const missing = missingCaps(effectiveCaps(), BACKEND_INFO[name].capabilities);
    if (missing.length > 0) {
      skip(name, `needs ${missing.map(capabilityName).join(", ")}`);
      continue;
    }
    let backend: Backend | null = null;
    try {
      backend = await loadBackend(name);
      await backend.start(targets, options);
      return {
        backend,
        fallbackReason: reasons.length > 0 ? reasons.join("; ") : null,
        skipped,
      };
    } catch (e) {
      await backend?.stop().catch(() => {});
      if (choice !== AUTO) throw e;
      skip(name, (e as Error).message);
    }
  }
  throw new BackendError(`No backend could start: ${reasons.join("; ")}`);
}
