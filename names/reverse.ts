/**
 * Reverse DNS for the readers (`graph`, `events`): a name for an address `run` saw no
 * answer for, asked of the system's resolver (PTR) in the background. A lookup never
 * blocks whoever asks: `lookup` answers from the cache at once and starts what is missing;
 * `settle` waits, bounded, for one-shot output (`graph --once`, `events` without
 * --follow). Results, failures included, are cached; the cache is bounded. `run` never
 * uses this: the root sampler sends no DNS query.
 */

import { parseIpv4, parseIpv6 } from "../lib/cidr.ts";
import { isHostName } from "./dns.ts";

/** Addresses remembered at most (a reader shows a few dozen). */
export const MAX_REVERSE = 1024;
/** Lookups under way at most; more wait for a later frame. */
const MAX_IN_FLIGHT = 16;
const TIMEOUT_MS = 3000;
/** A failed lookup is tried again after this long. */
const RETRY_MS = 300_000;

/** What a PTR lookup is: the system resolver's, or a test's. */
export type PtrResolver = (name: string, signal: AbortSignal) => Promise<string[]>;

export const systemPtr: PtrResolver = (name, signal) => Deno.resolveDns(name, "PTR", { signal });

/** The PTR name of an address ("2.100.51.198.in-addr.arpa", "...ip6.arpa"); null if none. */
export function ptrName(address: string): string | null {
  const v4 = parseIpv4(address);
  if (v4) return `${[...v4].reverse().join(".")}.in-addr.arpa`;
  const v6 = parseIpv6(address);
  if (!v6) return null;
  const nibbles: string[] = [];
  for (const b of v6) nibbles.push((b >> 4).toString(16), (b & 15).toString(16));
  return `${nibbles.reverse().join(".")}.ip6.arpa`;
}

interface Entry {
  name: string | null;
  /** performance.now() when a failed lookup may be tried again. */
  retryAt: number;
}

export class ReverseNames {
  readonly #cache = new Map<string, Entry>();
  readonly #inFlight = new Map<string, Promise<void>>();
  /** Told when a lookup found a name (a frame can show it). */
  onName: (() => void) | null = null;

  constructor(readonly resolve: PtrResolver = systemPtr) {}

  /** The name known for `address` now; starts a lookup when none was tried. */
  lookup(address: string): string | undefined {
    const e = this.#cache.get(address);
    if (e && (e.name !== null || performance.now() < e.retryAt)) return e.name ?? undefined;
    this.#start(address);
    return undefined;
  }

  /** Waits until the lookups under way end, at most `ms`. */
  async settle(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((r) => timer = setTimeout(r, ms));
    try {
      await Promise.race([Promise.all(this.#inFlight.values()), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  #start(address: string): void {
    if (this.#inFlight.has(address) || this.#inFlight.size >= MAX_IN_FLIGHT) return;
    const ptr = ptrName(address);
    if (ptr === null) return this.#keep(address, null);
    const done = (async () => {
      let name: string | null = null;
      try {
        const names = await this.resolve(ptr, AbortSignal.timeout(TIMEOUT_MS));
        const first = names[0]?.toLowerCase().replace(/\.$/, "");
        name = first !== undefined && isHostName(first) ? first : null;
      } catch { /* no name: shown as the address */ }
      this.#inFlight.delete(address);
      this.#keep(address, name);
      if (name !== null) this.onName?.();
    })();
    this.#inFlight.set(address, done);
  }

  #keep(address: string, name: string | null): void {
    this.#cache.delete(address);
    this.#cache.set(address, { name, retryAt: performance.now() + RETRY_MS });
    while (this.#cache.size > MAX_REVERSE) this.#cache.delete(this.#cache.keys().next().value!);
  }
}
