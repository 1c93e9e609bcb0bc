/**
 * The one list of backends. The CLI's `--backend` choices, `doctor` and the tests all
 * come from here; each backend module is imported only when chosen, so picking nft never
 * dlopens libbpf.
 */

import type { Backend } from "./backend.ts";
import { CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON } from "../lib/capabilities.ts";

export type {
  Backend,
  BackendOptions,
  CounterSample,
  DestinationCounters,
  ServiceTarget,
} from "./backend.ts";
export { BackendError } from "./backend.ts";

export const BACKEND_NAMES = ["ebpf", "nft", "iptables"] as const;
export type BackendName = typeof BACKEND_NAMES[number];

const loaders: Record<BackendName, () => Promise<Backend>> = {
  ebpf: async () => new (await import("./ebpf.ts")).EbpfBackend(),
  nft: async () => new (await import("./nft.ts")).NftBackend(),
  iptables: async () => new (await import("./iptables.ts")).IptablesBackend(),
};

/** What each backend needs to count, shown by --help and checked before `start`. */
export const BACKEND_INFO: Record<BackendName, { summary: string; capabilities: number[] }> = {
  ebpf: {
    summary: "cgroup_skb programs via libbpf (most accurate, survives cgroup re-creation)",
    capabilities: [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN],
  },
  nft: {
    summary: "nftables table inet stb_netacct (socket cgroupv2 + conntrack mark)",
    capabilities: [CAP_NET_ADMIN],
  },
  iptables: {
    summary: "iptables-nft mangle chains (-m cgroup + CONNMARK)",
    capabilities: [CAP_NET_ADMIN],
  },
};

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

export function loadBackend(name: BackendName): Promise<Backend> {
  return loaders[name]();
}
