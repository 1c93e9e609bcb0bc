/**
 * Short fingerprints for kept kernel state: which config or object made it (a digest) and
 * which run created it (a nonce). 64 bits as hex: a name part for pins, nft counters and
 * iptables comments, long enough never to collide among a host's few states.
 */

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

/** The first 64 bits of the SHA-256 of `data` (text as UTF-8), as hex. */
export async function shortDigest(data: string | Uint8Array<ArrayBuffer>): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)).slice(0, 8));
}

/** 64 random bits as hex: an instance marker never made twice. */
export function newNonce(): string {
  return hex(crypto.getRandomValues(new Uint8Array(8)));
}
