/**
 * /proc/net/dev: the whole host's per-interface counters, for `graph --host` (what the
 * user's old script graphed), so StB's share of the host's traffic is visible. It is the
 * reader's own network namespace, which for an unprivileged user is the host's.
 */

export interface InterfaceCounters {
  rx: number;
  tx: number;
  rxPackets: number;
  txPackets: number;
}

/**
 * Interfaces by name. The two header lines and anything malformed are skipped. The name
 * ends at the first ':' (the kernel forbids ':' in names), and a wide number may follow it
 * without a space, as in "eth0:123456789".
 */
export function parseProcNetDev(text: string): Map<string, InterfaceCounters> {
  const out = new Map<string, InterfaceCounters>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (name === "" || name.includes("|") || /\s/.test(name)) continue;
    const fields = line.slice(colon + 1).trim().split(/\s+/);
    if (fields.length < 16 || !fields.every((f) => /^\d+$/.test(f))) continue;
    const n = fields.map(Number);
    if (!n.every(Number.isSafeInteger)) continue;
    // At least 16 fields (checked above): receive bytes, packets, ..., transmit bytes, packets.
    const [rx = 0, rxPackets = 0, , , , , , , tx = 0, txPackets = 0] = n;
    out.set(name, { rx, rxPackets, tx, txPackets });
  }
  return out;
}

/** Every interface but loopback: traffic that enters or leaves the machine. */
export function nonLoopback(
  ifaces: ReadonlyMap<string, InterfaceCounters>,
): Map<string, { rx: number; tx: number }> {
  const out = new Map<string, { rx: number; tx: number }>();
  for (const [name, c] of ifaces) {
    if (name === "lo") continue;
    out.set(name, { rx: c.rx, tx: c.tx });
  }
  return out;
}
