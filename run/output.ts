/**
 * Where and how `run` publishes. A root daemon writing into a directory someone else
 * controls could be tricked into clobbering any file, so the directory must be root's
 * and closed to others; the file itself is created exclusively and renamed into place.
 */

import { writeFileAtomic } from "../lib/atomic_write.ts";
import type { CountersV1, ServiceCountersV1 } from "../lib/contract.ts";
import { serializeCounters } from "../lib/contract.ts";
import type { DestinationCounters, ServiceCounters } from "../backends/backend.ts";
import type { UserIds } from "../lib/users.ts";

export class OutputError extends Error {
  override name = "OutputError";
}

/**
 * Creates the output directory (0755, or `mode`: 0700 for a state directory only root
 * reads) if needed and refuses one others could write.
 */
export function prepareOutputDir(dir: string, mode = 0o755): void {
  try {
    Deno.mkdirSync(dir, { recursive: true, mode });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) {
      throw new OutputError(`Cannot create output directory "${dir}": ${(e as Error).message}`, {
        cause: e,
      });
    }
  }
  const st = Deno.lstatSync(dir);
  if (st.isSymlink || !st.isDirectory) {
    throw new OutputError(
      `Output directory "${dir}" is a symlink or not a directory: point --output at a real directory`,
    );
  }
  if (st.uid !== Deno.uid()) {
    throw new OutputError(
      `Output directory "${dir}" is owned by uid ${st.uid}, not by the user running stb-netacct ` +
        `(uid ${Deno.uid()}): a root daemon must not write into someone else's directory; ` +
        `use /run/stb-netacct or chown it`,
    );
  }
  if (st.mode !== null && (st.mode & 0o022) !== 0) {
    throw new OutputError(
      `Output directory "${dir}" is writable by group or others (mode ${
        (st.mode & 0o7777).toString(8)
      }): run \`chmod go-w ${dir}\``,
    );
  }
}

export function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : "/";
}

export interface ServiceState {
  path: string;
  present: boolean;
  counters: ServiceCounters;
}

export function buildCounters(
  backend: string,
  fallbackReason: string | null,
  services: Record<string, ServiceState>,
  total: ServiceCounters,
  tsMonotonic: number,
  tsUnix: number,
  intervalS: number,
  run: { boot_id: string; started_at: number },
  /** From Backend.readDestinations, where the backend offers it (ebpf). */
  destinations?: DestinationCounters[],
): CountersV1 {
  // Plain loops and literals, no spreads or entries/fromEntries: this runs every interval,
  // in V8's interpreter (see scripts/deno_flags.txt), where each of those is a builtin call.
  const published: Record<string, ServiceCountersV1> = {};
  for (const name in services) {
    const s = services[name];
    published[name] = {
      rx_bytes_total: s.counters.rxBytes,
      tx_bytes_total: s.counters.txBytes,
      rx_packets_total: s.counters.rxPackets,
      tx_packets_total: s.counters.txPackets,
      cgroup: s.path,
      present: s.present,
    };
  }
  const counters: CountersV1 = {
    schema: 1,
    backend,
    boot_id: run.boot_id,
    started_at: run.started_at,
    rx_bytes_total: total.rxBytes,
    tx_bytes_total: total.txBytes,
    rx_packets_total: total.rxPackets,
    tx_packets_total: total.txPackets,
    ts_monotonic: Math.round(tsMonotonic * 1e6) / 1e6,
    ts_unix: Math.round(tsUnix * 1e3) / 1e3,
    interval_s: intervalS,
    services: published,
  };
  if (fallbackReason) counters.backend_fallback_reason = fallbackReason;
  if (destinations) {
    counters.destinations = destinations.map((d) => ({
      service: d.service,
      direction: d.direction,
      address: d.address,
      port: d.port,
      protocol: d.protocol,
      bytes: d.bytes,
      packets: d.packets,
    }));
  }
  return counters;
}

export function publish(path: string, counters: CountersV1, owner: UserIds | null): void {
  writeFileAtomic(path, serializeCounters(counters), {
    mode: 0o644,
    uid: owner?.uid ?? null,
    gid: owner?.gid ?? null,
  });
}
