/**
 * The one list of backends. The CLI's `--backend` choices, `doctor` and the tests all
 * come from here; each backend module is imported only when chosen, so picking nft never
 * dlopens libbpf.
 */

import type { Backend } from "./backend.ts";

export type { Backend, BackendOptions, CounterSample, ServiceTarget } from "./backend.ts";
export { BackendError } from "./backend.ts";

export const BACKEND_NAMES = ["ebpf", "nft", "iptables"] as const;
export type BackendName = typeof BACKEND_NAMES[number];

const loaders: Record<BackendName, () => Promise<Backend>> = {
  ebpf: async () => new (await import("./ebpf.ts")).EbpfBackend(),
  nft: async () => new (await import("./nft.ts")).NftBackend(),
  iptables: async () => new (await import("./iptables.ts")).IptablesBackend(),
};

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

export function loadBackend(name: BackendName): Promise<Backend> {
  return loaders[name]();
}
