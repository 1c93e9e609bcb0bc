/**
 * counters.json, schema version 1: what `run` publishes and `graph`/`status` read.
 * The JSON Schema twin is schema/counters.schema.json; keep them in step.
 *
 * Readers must treat the file as untrusted: it may be missing, half-written by a broken
 * writer, replaced by something else, or from a daemon that restarted (totals reset).
 */

export const SCHEMA_VERSION = 1;

export interface ServiceCountersV1 {
  rx_bytes_total: number;
  tx_bytes_total: number;
  rx_packets_total: number;
  tx_packets_total: number;
  /** Cgroup path relative to the cgroup2 mount. */
  cgroup: string;
  /** Whether the cgroup exists at this sample. */
  present: boolean;
}

/**
 * One remote endpoint of one service in one direction: bytes since `run` started (not
 * kept across restarts; an endpoint the kernel's bounded table forgot starts again).
 */
export interface DestinationV1 {
  service: string;
  direction: "rx" | "tx";
  /** Remote address: dotted IPv4 (also for IPv4-mapped IPv6), else IPv6 text. */
  address: string;
  /** Remote TCP/UDP port; 0 for other protocols. */
  port: number;
  /** "tcp", "udp", or the IP protocol number as text. */
  protocol: string;
  bytes: number;
  packets: number;
}

/** At most this many destinations are published, and read. */
export const MAX_DESTINATIONS = 20;

export interface CountersV1 {
  schema: 1;
  backend: string;
  backend_fallback_reason?: string;
  /** /proc/sys/kernel/random/boot_id of the sampling boot: a change means a reboot. */
  boot_id: string;
  /** Unix time this `run` started: a change with totals kept means a restart. */
  started_at: number;
  rx_bytes_total: number;
  tx_bytes_total: number;
  rx_packets_total: number;
  tx_packets_total: number;
  /** Seconds of CLOCK_MONOTONIC at the sample (comparable across processes on one boot). */
  ts_monotonic: number;
  /** Seconds since the Unix epoch at the sample. */
  ts_unix: number;
  interval_s: number;
  services: Record<string, ServiceCountersV1>;
  /**
   * Optional (ebpf backend only): the endpoints with the most bytes, most first, at most
   * MAX_DESTINATIONS. Rates are the reader's: the difference of consecutive samples.
   */
  destinations?: DestinationV1[];
  /** Optional (ebpf with connect events): events lost since the run started. */
  events_dropped_total?: number;
}

/** One line of JSON plus a newline; numbers are integers except the timestamps. */
export function serializeCounters(c: CountersV1): string {
  return JSON.stringify(c) + "\n";
}

export class ContractError extends Error {
  override name = "ContractError";
}

/** Largest file a reader accepts: a real one is well under 64 KiB. */
export const MAX_COUNTERS_BYTES = 1 << 20;

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function isTime(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0;
}

/**
 * Validates parsed JSON as a v1 sample. Unknown extra fields are allowed (later versions
 * add fields); missing or wrong-typed required ones throw a ContractError naming the field.
 * Only the three fields of the original contract are required; the rest default.
 */
export function parseCounters(text: string): CountersV1 {
  if (text.length === 0) throw new ContractError("the file is empty");
  if (text.length > MAX_COUNTERS_BYTES) {
    throw new ContractError(
      `the file is ${text.length} bytes, over the ${MAX_COUNTERS_BYTES} limit`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ContractError(`it is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ContractError("it is not a JSON object");
  }
  const o = raw as Record<string, unknown>;
  if (o.schema !== undefined && o.schema !== SCHEMA_VERSION) {
    throw new ContractError(`schema ${JSON.stringify(o.schema)} is not supported (expected 1)`);
  }
  for (const k of ["rx_bytes_total", "tx_bytes_total"]) {
    if (o[k] === undefined) throw new ContractError(`"${k}" is missing`);
    if (!isCount(o[k])) {
      throw new ContractError(`"${k}" is ${JSON.stringify(o[k])}, not a non-negative integer`);
    }
  }
  if (o.ts_monotonic === undefined) throw new ContractError(`"ts_monotonic" is missing`);
  if (!isTime(o.ts_monotonic)) {
    throw new ContractError(
      `"ts_monotonic" is ${JSON.stringify(o.ts_monotonic)}, not a non-negative number`,
    );
  }
  const services: Record<string, ServiceCountersV1> = {};
  if (typeof o.services === "object" && o.services !== null && !Array.isArray(o.services)) {
    for (const [name, sv] of Object.entries(o.services as Record<string, unknown>)) {
      if (typeof sv !== "object" || sv === null) continue;
      const s = sv as Record<string, unknown>;
      if (!isCount(s.rx_bytes_total) || !isCount(s.tx_bytes_total)) continue;
      services[name] = {
        rx_bytes_total: s.rx_bytes_total,
        tx_bytes_total: s.tx_bytes_total,
        rx_packets_total: isCount(s.rx_packets_total) ? s.rx_packets_total : 0,
        tx_packets_total: isCount(s.tx_packets_total) ? s.tx_packets_total : 0,
        cgroup: typeof s.cgroup === "string" ? s.cgroup : "",
        present: s.present === true,
      };
    }
  }
  const destinations = parseDestinations(o.destinations);
  return {
    schema: 1,
    backend: typeof o.backend === "string" ? o.backend : "unknown",
    ...(typeof o.backend_fallback_reason === "string"
      ? { backend_fallback_reason: o.backend_fallback_reason }
      : {}),
    boot_id: typeof o.boot_id === "string" ? o.boot_id : "",
    started_at: isTime(o.started_at) ? o.started_at : 0,
    rx_bytes_total: o.rx_bytes_total as number,
    tx_bytes_total: o.tx_bytes_total as number,
    rx_packets_total: isCount(o.rx_packets_total) ? o.rx_packets_total : 0,
    tx_packets_total: isCount(o.tx_packets_total) ? o.tx_packets_total : 0,
    ts_monotonic: o.ts_monotonic as number,
    ts_unix: isTime(o.ts_unix) ? o.ts_unix : 0,
    interval_s: isTime(o.interval_s) && o.interval_s > 0 ? o.interval_s : 0.5,
    services,
    ...(destinations ? { destinations } : {}),
    ...(isCount(o.events_dropped_total) ? { events_dropped_total: o.events_dropped_total } : {}),
  };
}

/** Tolerant: a malformed entry is skipped, not fatal; a non-list means none. */
function parseDestinations(v: unknown): DestinationV1[] | null {
  if (!Array.isArray(v)) return null;
  const out: DestinationV1[] = [];
  for (const item of v.slice(0, MAX_DESTINATIONS)) {
    if (typeof item !== "object" || item === null) continue;
    const d = item as Record<string, unknown>;
    if (
      typeof d.service !== "string" || (d.direction !== "rx" && d.direction !== "tx") ||
      typeof d.address !== "string" || d.address.length > 64 || !isCount(d.bytes)
    ) continue;
    out.push({
      service: d.service.slice(0, 64),
      direction: d.direction,
      address: d.address,
      port: isCount(d.port) && d.port <= 65535 ? d.port : 0,
      protocol: typeof d.protocol === "string" ? d.protocol.slice(0, 16) : "",
      bytes: d.bytes,
      packets: isCount(d.packets) ? d.packets : 0,
    });
  }
  return out;
}
