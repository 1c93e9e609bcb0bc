/**
 * How failures reach the user: one line on stderr, sentence case, the offending value
 * quoted, the fix named. Usage errors (bad flags, bad config) exit 2; everything else 1.
 */

/** Bad input the user typed or wrote: exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * A failure of counting itself that the user can fix (a missing capability, a refused
 * program, a tool that is absent): `message` names the problem and the fix. `run` stops on
 * one rather than retrying it every interval. Raised by the backends and the BPF toolkit.
 */
export class BackendError extends Error {
  override name = "BackendError";
}

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** The cause chain as "a: b: c", so libbpf's or nft's own words reach the user. */
export function describeError(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (!parts.some((p) => p.includes(msg))) parts.push(msg);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(": ");
}
