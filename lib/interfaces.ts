/**
 * Network interfaces whose traffic never counts (config "exclude_interfaces"), e.g. a VPN's
 * `tailscale0`: the names as the kernel allows them, and, for the ebpf backend, their
 * current ifindexes. The firewall backends match by name in the rule itself (`oifname`,
 * `-o`), so an interface that appears or is renamed later needs nothing from here.
 */

import { cString, libc } from "./libc.ts";

/** IFNAMSIZ - 1: the kernel's names are at most 15 bytes. */
export const MAX_IFNAME_BYTES = 15;
/** Interfaces one config may exclude: the ebpf program's fixed set (NETACCT_MAX_SKIP_IFS). */
export const MAX_EXCLUDE_INTERFACES = 15;

/**
 * Why the kernel would never give an interface this name (dev_valid_name: 1-15 bytes, no
 * "/", ":" or whitespace, not "." or ".."), or why the firewall backends could not match
 * it literally ('"' and "\" break their quoting, "*" and "+" are their wildcards); null
 * when it is a good name. A name that does not exist (yet) is fine.
 */
export function interfaceNameProblem(name: string): string | null {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes === 0) return "an interface name is never empty";
  if (bytes > MAX_IFNAME_BYTES) {
    return `interface names are at most ${MAX_IFNAME_BYTES} bytes (IFNAMSIZ), this one is ${bytes}`;
  }
  if (name === "." || name === "..") return `"." and ".." are not interface names`;
  if (/[/:]/.test(name)) return `an interface name never contains "/" or ":"`;
  // deno-lint-ignore no-control-regex
  if (/[\s\x00-\x1f\x7f]/.test(name)) return "an interface name never contains whitespace";
  if (/["\\]/.test(name)) return `quotes and backslashes are not supported in interface names`;
  if (/[*+]/.test(name)) return `wildcards ("*", "+") are not supported: list each interface`;
  return null;
}

/** ifindex of `name` in this process's network namespace, 0 when there is none. */
export function interfaceIndex(name: string): number {
  // unsigned int if_nametoindex(const char *ifname): 0 (errno ENODEV) when absent.
  return libc().if_nametoindex(cString(name));
}

/**
 * The excluded names' ifindexes, resolved again on every `resolve` (if_nametoindex: an
 * ioctl, a few µs each), so an interface that appears, goes or is renamed between two
 * samples takes effect at the next one. Names are resolved in `run`'s network namespace,
 * the one whose interfaces the host's traffic uses.
 */
export class InterfaceIndexes {
  #last: number[] | null = null;
  #missing = new Set<string>();

  constructor(
    readonly names: readonly string[],
    readonly log: (message: string) => void,
    readonly lookup: (name: string) => number = interfaceIndex,
  ) {}

  /** The ifindexes now (absent names left out), or null when unchanged since the last call. */
  resolve(): number[] | null {
    const found: number[] = [];
    for (const name of this.names) {
      const index = this.lookup(name);
      if (index > 0) {
        if (this.#missing.delete(name)) this.log(`interface "${name}" appeared: not counted`);
        if (!found.includes(index)) found.push(index);
      } else if (!this.#missing.has(name)) {
        this.#missing.add(name);
        this.log(
          `interface "${name}" (exclude_interfaces) does not exist now; ` +
            `its traffic will not count once it appears`,
        );
      }
    }
    found.sort((a, b) => a - b);
    const same = this.#last !== null && this.#last.length === found.length &&
      this.#last.every((v, i) => v === found[i]);
    if (same) return null;
    this.#last = found;
    return found;
  }
}
