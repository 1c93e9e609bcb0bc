/**
 * Which privileges this process holds, from /proc/self/status. Checked before touching the
 * kernel so a missing privilege is one clear line, not a half-done start and an EPERM.
 */

export const CAP_CHOWN = 0;
export const CAP_NET_ADMIN = 12;
export const CAP_SYS_ADMIN = 21;
export const CAP_PERFMON = 38;
export const CAP_BPF = 39;

const NAMES: Record<number, string> = {
  [CAP_CHOWN]: "CAP_CHOWN",
  [CAP_NET_ADMIN]: "CAP_NET_ADMIN",
  [CAP_SYS_ADMIN]: "CAP_SYS_ADMIN",
  [CAP_PERFMON]: "CAP_PERFMON",
  [CAP_BPF]: "CAP_BPF",
};

export function capabilityName(cap: number): string {
  return NAMES[cap] ?? `capability ${cap}`;
}

/** The effective capability set from /proc/<pid>/status text. */
export function parseEffectiveCaps(status: string): bigint {
  const m = status.match(/^CapEff:\s*([0-9a-fA-F]+)$/m);
  return m ? BigInt("0x" + m[1]) : 0n;
}

export function effectiveCaps(): bigint {
  try {
    return parseEffectiveCaps(Deno.readTextFileSync("/proc/self/status"));
  } catch {
    return 0n;
  }
}

export function hasCap(caps: bigint, cap: number): boolean {
  return ((caps >> BigInt(cap)) & 1n) === 1n;
}

/** The capabilities of `needed` that `caps` lacks. CAP_SYS_ADMIN stands in for BPF/PERFMON. */
export function missingCaps(caps: bigint, needed: readonly number[]): number[] {
  return needed.filter((c) => {
    if (hasCap(caps, c)) return false;
    return !((c === CAP_BPF || c === CAP_PERFMON) && hasCap(caps, CAP_SYS_ADMIN));
  });
}
