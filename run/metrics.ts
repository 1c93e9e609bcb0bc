/**
 * Prometheus text exposition (format 0.0.4) of one sample, and the two sinks that publish
 * it: a textfile for node-exporter's textfile collector and an HTTP `/metrics` endpoint.
 *
 * Names follow the Prometheus conventions node_exporter uses: base units (bytes,
 * seconds), `_total` on counters, one metric per quantity with the split in labels
 * (`service`, `direction`) so `sum by` works. No sample timestamps: the textfile collector
 * refuses them, and the scrape time is what dashboards want.
 */

import { HeldDir } from "../lib/held_dir.ts";
import { pathInfo } from "../lib/libc.ts";
import type { CountersV1 } from "../lib/contract.ts";
import type { Config } from "../lib/config.ts";
import { VERSION } from "../lib/version.ts";
import { HEALTHY, type RunHealth, type SampleContext, type Sink } from "./sinks.ts";
import { dirOf } from "./output.ts";
import { type HttpAnswer, type HttpLimits, serveHttp } from "./metrics_http.ts";

export interface MetricsExtra {
  /** stb-netacct's version, for build_info. */
  version: string;
  /** Seconds spent reading the backend and building this sample. */
  sampleDurationS: number;
  /** Absent: nothing went wrong. */
  health?: RunHealth;
}

/** Label values may hold any UTF-8; these three must be escaped (exposition format spec). */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text escapes only backslash and newline. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/**
 * Go's ParseFloat reads what JS prints, except the spellings of the non-finite values. A
 * bigint count is written with every digit (Prometheus itself keeps a float64 of it).
 */
export function formatValue(n: number | bigint): string {
  if (typeof n === "bigint") return n.toString();
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** One metric: its name, type, help and every series of it. */
interface Family {
  name: string;
  type: "counter" | "gauge";
  help: string;
  series: [Labels, number | bigint][];
}

function familyText(f: Family): string[] {
  return [
    `# HELP ${f.name} ${escapeHelp(f.help)}`,
    `# TYPE ${f.name} ${f.type}`,
    ...f.series.map(([labels, value]) => `${f.name}${labelText(labels)} ${formatValue(value)}`),
  ];
}

/**
 * Ring-buffer overflows of the connect-event feature, when the sample carries them
 * (`events_dropped_total` at the top level of counters.json); 0 before events exist.
 */
function eventsDropped(counters: CountersV1): number {
  const v = (counters as unknown as Record<string, unknown>).events_dropped_total;
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0;
}

/** eBPF programs `run` could not attach at start (`ebpf_attach_failures_total`); 0 when absent. */
function ebpfAttachFailures(counters: CountersV1): number {
  const v = counters.ebpf_attach_failures_total;
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : 0;
}

/** History's state and faults (counters.json "history"), when `run` records history. */
function historyFamilies(counters: CountersV1): Family[] {
  const h = counters.history;
  if (!h) return [];
  return [
    {
      name: "stb_netacct_history_recording",
      type: "gauge",
      help: "1 while history is written, 0 while it is paused (a full disk, an unwritable " +
        "directory); counting goes on either way.",
      series: one(h.state === "recording" ? 1 : 0),
    },
    {
      name: "stb_netacct_history_databases_replaced_total",
      type: "counter",
      help: "Corrupt or unreadable history databases moved aside and started anew since run " +
        "started.",
      series: one(h.databases_replaced_total),
    },
    {
      name: "stb_netacct_history_write_failures_total",
      type: "counter",
      help: "History batches that failed to be written since run started (kept and retried).",
      series: one(h.write_failures_total),
    },
  ];
}

/** One unlabelled series. */
const one = (value: number | bigint): [Labels, number | bigint][] => [[{}, value]];

type CountKey = "rx_bytes_total" | "tx_bytes_total" | "rx_packets_total" | "tx_packets_total";

/** Traffic per StB service, and whether each runs. */
function serviceFamilies(counters: CountersV1): Family[] {
  const services = Object.entries(counters.services);
  const byDirection = (rx: CountKey, tx: CountKey) =>
    services.flatMap(([service, s]): [Labels, number | bigint][] => [
      [{ service, direction: "rx" }, s[rx]],
      [{ service, direction: "tx" }, s[tx]],
    ]);
  return [
    {
      name: "stb_netacct_bytes_total",
      type: "counter",
      help: "External IP bytes of a StB service (loopback, private, link-local, CGNAT and " +
        "multicast remotes excluded), by direction: rx received, tx sent.",
      series: byDirection("rx_bytes_total", "tx_bytes_total"),
    },
    {
      name: "stb_netacct_packets_total",
      type: "counter",
      help: "External IP packets of a StB service (GSO/GRO aggregates count once), by direction.",
      series: byDirection("rx_packets_total", "tx_packets_total"),
    },
    {
      name: "stb_netacct_service_present",
      type: "gauge",
      help: "1 when the service's cgroup exists at this sample (the service runs), else 0.",
      series: services.map(([service, s]): [Labels, number] => [{ service }, s.present ? 1 : 0]),
    },
  ];
}

/** The sampler's own state: what it lost or rejected, its timing. */
function samplerFamilies(counters: CountersV1, extra: MetricsExtra): Family[] {
  const health = extra.health ?? HEALTHY;
  return [
    {
      name: "stb_netacct_events_dropped_total",
      type: "counter",
      help: "Connect events lost because the kernel ring buffer was full.",
      series: one(eventsDropped(counters)),
    },
    {
      name: "stb_netacct_ebpf_attach_failures_total",
      type: "counter",
      help: "eBPF programs the sampler could not attach when it started (auto fell back from " +
        "ebpf, or the connect-event programs were refused); the reasons are in its log and in " +
        "events.jsonl. Counting goes on either way.",
      series: one(ebpfAttachFailures(counters)),
    },
    {
      name: "stb_netacct_state_copies_rejected",
      type: "gauge",
      help: "Copies of the saved totals found empty, corrupt or unreadable when the sampler " +
        "started; it continued from the newest good copy, or from zero when none was left.",
      series: one(health.stateCopiesRejected),
    },
    {
      name: "stb_netacct_destinations_errors_total",
      type: "counter",
      help: "Reads of the top destinations that failed (the last list was kept; counting " +
        "goes on).",
      series: one(health.destinationsErrors),
    },
    {
      name: "stb_netacct_sample_duration_seconds",
      type: "gauge",
      help: "Seconds the last sample took to read the kernel counters and build counters.json.",
      series: one(extra.sampleDurationS),
    },
    {
      name: "stb_netacct_sample_interval_seconds",
      type: "gauge",
      help: "Seconds between samples.",
      series: one(counters.interval_s),
    },
    {
      name: "stb_netacct_last_sample_timestamp_seconds",
      type: "gauge",
      help: "Unix time of the last sample; stale when the sampler stopped.",
      series: one(counters.ts_unix),
    },
    {
      name: "stb_netacct_start_time_seconds",
      type: "gauge",
      help: "Unix time the sampler started (totals continue across restarts from saved state).",
      series: one(counters.started_at),
    },
  ];
}

/** The whole exposition of one sample. Pure: same sample, same text. */
export function renderMetrics(counters: CountersV1, extra: MetricsExtra): string {
  const families: Family[] = [
    ...serviceFamilies(counters),
    ...samplerFamilies(counters, extra),
    ...historyFamilies(counters),
    {
      name: "stb_netacct_build_info",
      type: "gauge",
      help: "Always 1; labels name the stb-netacct version and the counting backend in use.",
      series: [[{ version: extra.version, backend: counters.backend }, 1]],
    },
  ];
  return families.flatMap(familyText).join("\n") + "\n";
}

/**
 * How often the textfile is rewritten at most. node-exporter reads it when it is scraped,
 * every 15 s or more on a usual setup, so rewriting it every 0.5 s sample would only write
 * the disk (/var/lib) twice a second.
 */
export const TEXTFILE_EVERY_MS = 10_000;

export interface TextfileOptions {
  path: string;
  /** stb-netacct's version, for build_info. */
  version: string;
  log: (message: string) => void;
  /** At most this often, the first sample at once; the directory is looked for as often. */
  everyMs?: number;
  /** Milliseconds of a monotonic clock (tests drive it). */
  now?: () => number;
}

/**
 * Holds the textfile's directory: no symlink on the way, no directory others may write,
 * the directory itself root's (or this user's); its group may write, since install opens
 * it to the service's own group with an ACL entry. Null when it does not exist.
 */
function holdTextfileDir(dir: string): HeldDir | null {
  try {
    return HeldDir.hold(dir, {
      what: "Prometheus textfile directory",
      owner: "root",
      othersOwnAncestors: true,
      groupWritable: true,
    });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Writes the exposition to `path` (atomically, 0644) whenever its directory exists: a host
 * without node-exporter has no such directory and gets nothing. The directory is held open
 * and the file written relative to it (lib/held_dir.ts); held anew when the path no longer
 * leads there. The file is removed on close, because node-exporter would go on serving a
 * stale file as if it were current.
 */
export function textfileSink(options: TextfileOptions): Sink {
  const { path, version, log, everyMs = TEXTFILE_EVERY_MS, now = () => performance.now() } =
    options;
  const dir = dirOf(path);
  const name = path.slice(dir.length + 1);
  let held: HeldDir | null = null;
  let written = false;
  let closed = false;
  let nextWrite = -Infinity;
  const release = () => {
    held?.close();
    held = null;
  };
  /** The directory as held, anew when the path no longer leads to it; null: absent. */
  const current = (): HeldDir | null => {
    if (held && pathInfo(dir, false)?.ino !== held.ino) release();
    return held ??= holdTextfileDir(dir);
  };
  return {
    name: `prometheus textfile ${path}`,
    publish({ counters, sampleDurationS, health }) {
      if (closed || now() < nextWrite) return;
      // Looked for as often as written: a directory that appears is written within everyMs.
      nextWrite = now() + everyMs;
      const d = current();
      if (!d) {
        if (written) log(`prometheus textfile: ${dir} is gone; writing again once it exists`);
        written = false;
        return;
      }
      try {
        d.writeAtomic(name, renderMetrics(counters, { version, sampleDurationS, health }), {
          mode: 0o644,
          uid: null,
          gid: null,
        });
      } catch (e) {
        release(); // removed meanwhile, say: looked for again next time
        throw e;
      }
      if (!written) log(`prometheus textfile: writing ${path}`);
      written = true;
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        if (written && held) held.remove(name);
      } finally {
        release();
      }
    },
  };
}

export interface ListenAddress {
  hostname: string;
  port: number;
}

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export interface ListenOptions {
  /** stb-netacct's version, for build_info. */
  version: string;
  log: (message: string) => void;
  /** Timeout and caps for clients (run/metrics_http.ts); tests shorten them. */
  limits?: HttpLimits;
}

/**
 * Serves the latest sample's exposition at `/metrics` (404 elsewhere, 405 for anything but
 * GET/HEAD, 503 before the first sample), with a timeout for slow clients and caps on
 * connections and request size. Fails at once when the address cannot be bound, so `run`
 * stops with the reason instead of running without the endpoint it was asked for.
 */
export function listenSink(
  address: ListenAddress,
  options: ListenOptions,
): Sink & { readonly port: number } {
  const { version, log } = options;
  /** Rendered when scraped, not every sample: scrapes come far less often than samples. */
  let latest: SampleContext | null = null;
  let body: string | null = null;
  const shown = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  const server = serveHttp(listenOn(address, shown), (method, path): HttpAnswer => {
    if (path !== "/metrics") return { status: 404, body: "Not found: metrics are at /metrics\n" };
    if (method !== "GET" && method !== "HEAD") {
      return { status: 405, headers: { allow: "GET, HEAD" }, body: "Method not allowed\n" };
    }
    if (latest === null) return { status: 503, body: "No sample yet: try again in a moment\n" };
    body ??= renderMetrics(latest.counters, {
      version,
      sampleDurationS: latest.sampleDurationS,
      health: latest.health,
    });
    return { status: 200, headers: { "content-type": METRICS_CONTENT_TYPE }, body };
  }, options.limits);
  const port = server.port;
  log(`prometheus: serving http://${shown}:${port}/metrics`);
  let closed = false;
  return {
    name: `prometheus listener ${shown}:${port}`,
    port,
    servesBetweenSamples: true,
    publish(sample) {
      latest = sample;
      body = null;
    },
    async close() {
      if (closed) return;
      closed = true;
      await server.close();
    },
  };
}

/** The bound socket, or an error naming the address, why and the fix. */
function listenOn(address: ListenAddress, shown: string): Deno.Listener {
  try {
    return Deno.listen({ hostname: address.hostname, port: address.port, transport: "tcp" });
  } catch (e) {
    const why = e instanceof Deno.errors.AddrInUse
      ? "the address is in use"
      : e instanceof Deno.errors.AddrNotAvailable
      ? "no interface of this host has that address"
      : (e as Error).message;
    throw new Error(
      `Cannot serve metrics on ${shown}:${address.port}: ${why}; ` +
        "pick another address with --metrics-listen or the config key prometheus.listen",
      { cause: e },
    );
  }
}

export interface SinkOptions {
  config: Config;
  log: (message: string) => void;
}

/** The Prometheus sinks this configuration asks for, in publish order. */
export function createSinks(options: SinkOptions): Promise<Sink[]> {
  const { config, log } = options;
  const sinks: Sink[] = [];
  try {
    if (config.prometheus.textfile !== null) {
      sinks.push(textfileSink({ path: config.prometheus.textfile, version: VERSION, log }));
    }
    if (config.prometheus.listen !== null) {
      sinks.push(listenSink(config.prometheus.listen, { version: VERSION, log }));
    }
  } catch (e) {
    // Those made before the failure are closed by nobody else.
    return Promise.all(sinks.map((s) => s.close())).then(() => Promise.reject(e));
  }
  return Promise.resolve(sinks);
}
