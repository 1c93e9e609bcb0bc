/**
 * What the accounting should have counted, and what it did count.
 *
 * The reference for "bytes sent and received" is IP-level bytes, because that is what every
 * backend counts (skb->len at cgroup_skb, nft and iptables counters: IP header + L4 header +
 * payload, one header per GSO/GRO aggregate). The honest source for it is the client veth's
 * own counters around a phase in which only the measured service talks over the veth: bytes
 * minus 14 bytes of Ethernet header per packet. Payload counts from the traffic tool are
 * checked as a floor (the wire can't carry less) but are not the reference: UDP datagrams of
 * 1200 B carry 28 B (IPv4) / 48 B (IPv6) of headers, 2.3%/4% on their own, which a 2% bound
 * against payload would wrongly blame on the backend.
 */

import { assert, assertWithin } from "./assert.ts";
import type { Sample } from "./cli.ts";
import type { Lab } from "./lab.ts";
import { payloadTotals } from "./processes.ts";
import { l3Delta } from "./topology.ts";
import type { FlowResult } from "./traffic.ts";

/**
 * Most IP bytes a flow may put on the wire per payload byte: headers (up to 4% for 1200 B
 * IPv6 datagrams) plus TCP retransmissions on a busy machine (7% seen). Only a sanity
 * bound on the reference; the accounting is compared with the wire itself, retransmissions
 * included, since every backend counts those too.
 */
export const WIRE_SLACK = 1.25;

export interface Bytes {
  rx: number;
  tx: number;
}

export interface Measured {
  /** IP-level bytes the veth carried during the flows. */
  wire: Bytes;
  /** Payload bytes the traffic tool reported. */
  payload: Bytes;
  results: FlowResult[];
}

/**
 * Runs flows from a service (null: outsider) with nothing else on the veth, and returns the
 * wire reference. Fails when the wire carried less than the payload (the reference broke).
 */
export async function measureFlows(
  env: Lab,
  service: string | null,
  flows: string[],
): Promise<Measured> {
  const before = await env.topology.linkCounters();
  const results = await env.traffic(service, flows);
  const after = await env.topology.linkCounters();
  const wire = l3Delta(before, after);
  const p = payloadTotals(results);
  const payload = { rx: p.received, tx: p.sent };
  for (const dir of ["rx", "tx"] as const) {
    assert(
      wire[dir] >= payload[dir] && wire[dir] <= payload[dir] * WIRE_SLACK + 4096,
      `${service ?? "outsider"} ${dir}: veth carried ${wire[dir]} IP bytes for ${
        payload[dir]
      } payload ` +
        "bytes; the reference is off (other traffic on the veth?)",
    );
  }
  return { wire, payload, results };
}

export function addBytes(a: Bytes, b: Bytes): Bytes {
  return { rx: a.rx + b.rx, tx: a.tx + b.tx };
}

/** Bytes counted between two samples, for one service or (null) the file's totals. */
export function countedDelta(before: Sample, after: Sample, service: string | null): Bytes {
  if (service === null) {
    return {
      rx: after.rx_bytes_total - before.rx_bytes_total,
      tx: after.tx_bytes_total - before.tx_bytes_total,
    };
  }
  const a = after.services[service], b = before.services[service];
  assert(a && b, `service "${service}" missing from counters.json`);
  return { rx: a.rx_bytes_total - b.rx_bytes_total, tx: a.tx_bytes_total - b.tx_bytes_total };
}

export function assertBytesWithin(
  counted: Bytes,
  expected: Bytes,
  tolerance: number,
  what: string,
): void {
  assertWithin(counted.rx, expected.rx, tolerance, `${what} rx`);
  assertWithin(counted.tx, expected.tx, tolerance, `${what} tx`);
}
