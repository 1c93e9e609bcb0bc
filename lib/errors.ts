/**
 * How failures reach the user: one line on stderr, sentence case, the offending value
 * quoted, the fix named. Usage errors (bad flags, bad config) exit 2; everything else 1.
 */

/** Bad input the user typed or wrote: exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
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
