/**
 * /etc/stb-netacct/config.json: which cgroups are StB, which remotes never count, where
 * the counters go. Every error names the field, quotes the bad value and says the fix,
 * because the person reading it is a user with a text editor, not a developer.
 */

import {
  type Cidr,
  CidrError,
  DEFAULT_EXCLUDE,
  findOverlaps,
  isExcluded,
  parseCidr,
  parseIpv4,
  parseIpv6,
} from "./cidr.ts";
import { CgroupError, validateCgroupPath } from "./cgroup.ts";
import { DEFAULT_COUNTERS_PATH } from "./contract.ts";
import { DEFAULT_INTERVAL_S, INTERVAL_FIX, isInterval } from "./interval.ts";
import { interfaceNameProblem, MAX_EXCLUDE_INTERFACES } from "./interfaces.ts";
import { defaultRetention, parseRetention, type Retention, TIERS } from "../history/retention.ts";

export const DEFAULT_CONFIG_PATH = "/etc/stb-netacct/config.json";
export const MAX_CONFIG_BYTES = 1 << 20;
export const MAX_SERVICES = 512;

export const DEFAULT_SERVICES: Readonly<Record<string, string>> = {
  "host-agent":
    "/user.slice/user-1000.slice/user@1000.service/app.slice/app-stb\\x2dnext\\x2dhost\\x2dagent.slice/stb-next-host-agent@split.service",
  "server":
    "/user.slice/user-1000.slice/user@1000.service/app.slice/app-stb\\x2dnext\\x2dserver.slice/stb-next-server@split.service",
  "shell":
    "/user.slice/user-1000.slice/user@1000.service/app.slice/app-stb\\x2dnext\\x2dshell.slice/stb-next-shell@split.service",
};

export interface Config {
  /** Service name -> cgroup path relative to the cgroup2 mount, in config order. */
  services: Record<string, string>;
  exclude: Cidr[];
  /** Interfaces whose traffic never counts, by name (lo never counts anyway). */
  exclude_interfaces: string[];
  /** The host's directly connected networks count as internal, kept current (default false). */
  internal_onlink: boolean;
  output: string;
  /** User name or numeric uid that owns counters.json; null keeps root. */
  owner: string | null;
  interval_s: number;
  /** Conntrack mark value and mask for the nft/iptables backends. */
  ct_mark: number;
  ct_mask: number;
  prometheus: PrometheusConfig;
  /**
   * ebpf only (default true): count GSO/GRO aggregates as the packets they stand for on
   * the wire; nft and iptables cannot (they see an aggregate's headers once).
   */
  gso_correction: boolean;
  /** ebpf only: connect/first-datagram events of the services (events/collector.ts). */
  events: EventsConfig;
  /** ebpf only: name destinations and events by the DNS answers StB received (names/). */
  names: NamesConfig;
  /** Traffic history for `report` (history/): on or off, and how long each resolution stays. */
  history: HistoryConfig;
  /** Where the config came from, for messages ("built-in defaults" when no file). */
  source: string;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const KNOWN_KEYS = [
  "services",
  "exclude",
  "exclude_extra",
  "exclude_interfaces",
  "internal_onlink",
  "output",
  "owner",
  "interval_s",
  "ct_mark",
  "ct_mask",
  "prometheus",
  "gso_correction",
  "events",
  "names",
  "history",
] as const;

/** Levenshtein distance, one row of the table at a time. */
function editDistance(a: string, b: string): number {
  let above = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    // j runs within both rows (b.length + 1 entries each): the indexes are in range.
    for (let j = 1; j <= b.length; j++) {
      row.push(Math.min(
        above[j]! + 1,
        row[j - 1]! + 1,
        above[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      ));
    }
    above = row;
  }
  return above[b.length]!;
}

export function didYouMean(word: string, choices: readonly string[]): string | null {
  let best: string | null = null, bestD = Infinity;
  for (const c of choices) {
    const dist = editDistance(word.toLowerCase(), c.toLowerCase());
    if (dist < bestD) [best, bestD] = [c, dist];
  }
  return best !== null && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : null;
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + "..." : s;
}

const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const OWNER = /^([a-z_][a-z0-9_-]{0,31}\$?|[0-9]{1,10})$/;

function parseCidrList(field: string, v: unknown): Cidr[] {
  if (!Array.isArray(v)) {
    throw new ConfigError(
      `"${field}" is ${
        show(v)
      }: it must be a list of prefixes like ["192.0.2.0/24", "2001:db8::/32"]`,
    );
  }
  return v.map((item, i) => {
    if (typeof item !== "string") {
      throw new ConfigError(`"${field}[${i}]" is ${show(item)}: write prefixes as strings`);
    }
    try {
      return parseCidr(item);
    } catch (e) {
      if (e instanceof CidrError) throw new ConfigError(`"${field}[${i}]": ${e.message}`);
      throw e;
    }
  });
}

function parseMark(field: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  const n = typeof v === "string" && /^0x[0-9a-fA-F]{1,8}$/.test(v) ? parseInt(v, 16) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 0xffffffff) {
    throw new ConfigError(
      `"${field}" is ${show(v)}: use a non-zero 32-bit value such as "0x00510000"`,
    );
  }
  return n;
}

/** Validates an already-parsed config object. `source` names it in messages. */
export function validateConfig(raw: unknown, source: string): Config {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${source} must hold a JSON object like {"services": {...}}`);
  }
  const o = raw as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(KNOWN_KEYS as readonly string[]).includes(key)) {
      const guess = didYouMean(key, KNOWN_KEYS);
      throw new ConfigError(
        `Unknown key "${key}" in ${source}` +
          (guess ? `: did you mean "${guess}"?` : `: known keys are ${KNOWN_KEYS.join(", ")}`),
      );
    }
  }
  // In this order, so that of several bad keys the same one is reported first.
  const services = parseServices(o.services);
  const exclude = parseExclusions(o.exclude, o.exclude_extra);
  const exclude_interfaces = parseInterfaces(o.exclude_interfaces);
  const internal_onlink = parseFlag("internal_onlink", o.internal_onlink, false);
  const output = parseOutput(o.output);
  const owner = parseOwner(o.owner);
  const interval_s = o.interval_s === undefined
    ? DEFAULT_INTERVAL_S
    : checkInterval(o.interval_s, `"interval_s" in ${source}`);
  const marks = parseMarks(o.ct_mark, o.ct_mask);
  return {
    services,
    exclude,
    exclude_interfaces,
    internal_onlink,
    output,
    owner,
    interval_s,
    ct_mark: marks.mark,
    ct_mask: marks.mask,
    prometheus: parsePrometheus(o.prometheus),
    gso_correction: parseFlag("gso_correction", o.gso_correction, true),
    events: parseEvents(o.events),
    names: parseNames(o.names),
    history: parseHistory(o.history),
    source,
  };
}

/** "services": name -> cgroup path; absent: the StB defaults. */
function parseServices(v: unknown): Record<string, string> {
  if (v === undefined) return { ...DEFAULT_SERVICES };
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(
      `"services" is ${show(v)}: it must map names to cgroup paths, ` +
        `like {"server": "/user.slice/.../stb-next-server@split.service"}`,
    );
  }
  const services: Record<string, string> = {};
  const seenPaths = new Map<string, string>();
  for (const [name, path] of Object.entries(v as Record<string, unknown>)) {
    const normal = parseServicePath(name, path);
    const other = seenPaths.get(normal);
    if (other !== undefined) {
      throw new ConfigError(
        `"services.${name}" and "services.${other}" name the same cgroup ${show(normal)}: ` +
          `keep one of them`,
      );
    }
    seenPaths.set(normal, name);
    services[name] = normal;
  }
  const count = Object.keys(services).length;
  if (count === 0) {
    throw new ConfigError(
      `"services" is empty: name at least one cgroup, or remove the key for the StB defaults`,
    );
  }
  if (count > MAX_SERVICES) {
    throw new ConfigError(
      `"services" has ${count} entries: at most ${MAX_SERVICES} are supported`,
    );
  }
  return services;
}

/** One service's name and cgroup path, the path normalised. */
function parseServicePath(name: string, path: unknown): string {
  if (!SERVICE_NAME.test(name)) {
    throw new ConfigError(
      `Service name ${show(name)} is not allowed: use 1-64 letters, digits, "-", "_" or "."`,
    );
  }
  if (typeof path !== "string") {
    throw new ConfigError(`"services.${name}" is ${show(path)}: it must be a cgroup path string`);
  }
  try {
    return validateCgroupPath(path);
  } catch (e) {
    if (e instanceof CgroupError) throw new ConfigError(`"services.${name}": ${e.message}`);
    throw e;
  }
}

/** "exclude" (absent: the defaults) plus "exclude_extra", with no prefix listed twice. */
function parseExclusions(exclude: unknown, excludeExtra: unknown): Cidr[] {
  const base = exclude !== undefined
    ? parseCidrList("exclude", exclude)
    : DEFAULT_EXCLUDE.map((c) => parseCidr(c));
  const extra = excludeExtra !== undefined ? parseCidrList("exclude_extra", excludeExtra) : [];
  const mine = [...(exclude !== undefined ? base : []), ...extra];
  for (const [a, b] of findOverlaps(mine)) {
    // The default list itself nests 255.255.255.255/32 in 240.0.0.0/4 on purpose (it
    // names the broadcast address); a config that copies the defaults stays valid.
    if (a.text !== b.text && DEFAULT_EXCLUDE.includes(a.text) && DEFAULT_EXCLUDE.includes(b.text)) {
      continue;
    }
    throw new ConfigError(
      a.text === b.text
        ? `Prefix "${a.text}" is listed twice in the exclusions: remove one`
        : `Prefixes "${a.text}" and "${b.text}" overlap in the exclusions: keep the wider one`,
    );
  }
  for (const e of extra) {
    const cover = base.find((b) => b !== e && findOverlaps([b, e]).length > 0);
    if (cover) {
      throw new ConfigError(
        `"exclude_extra" prefix "${e.text}" overlaps "${cover.text}", which is already excluded: remove it`,
      );
    }
  }
  return [...base, ...extra];
}

/** "exclude_interfaces": names as the kernel allows them; one that does not exist yet is fine. */
function parseInterfaces(v: unknown): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) {
    throw new ConfigError(
      `"exclude_interfaces" is ${
        show(v)
      }: it must be a list of interface names like ["tailscale0"]`,
    );
  }
  if (v.length > MAX_EXCLUDE_INTERFACES) {
    throw new ConfigError(
      `"exclude_interfaces" lists ${v.length} interfaces: at most ${MAX_EXCLUDE_INTERFACES} ` +
        `are supported; exclude a VPN's addresses with "exclude_extra" instead`,
    );
  }
  const seen = new Set<string>();
  return v.map((name, i) => {
    if (typeof name !== "string") {
      throw new ConfigError(
        `"exclude_interfaces[${i}]" is ${
          show(name)
        }: write interface names as strings like "tailscale0"`,
      );
    }
    const problem = interfaceNameProblem(name);
    if (problem) {
      throw new ConfigError(
        `"exclude_interfaces[${i}]" is ${show(name)}, which cannot name an interface: ` +
          `${problem}; write the name \`ip link\` shows, like "tailscale0"`,
      );
    }
    if (name === "lo") {
      throw new ConfigError(
        `"exclude_interfaces[${i}]" is "lo": loopback never counts anyway; remove it`,
      );
    }
    if (seen.has(name)) {
      throw new ConfigError(
        `Interface "${name}" is listed twice in "exclude_interfaces": remove one`,
      );
    }
    seen.add(name);
    return name;
  });
}

function parseOutput(v: unknown): string {
  if (v === undefined) return DEFAULT_COUNTERS_PATH;
  if (typeof v !== "string" || !v.startsWith("/") || v.endsWith("/")) {
    throw new ConfigError(
      `"output" is ${show(v)}: it must be an absolute file path like "${DEFAULT_COUNTERS_PATH}"`,
    );
  }
  if (v.split("/").some((p) => p === "..")) {
    throw new ConfigError(`"output" is ${show(v)}: ".." is not allowed in it`);
  }
  return v;
}

/** The highest uid: (uid_t)-1 = 4294967295 is chown's "leave unchanged", never a user. */
export const MAX_UID = 4294967294;

function parseOwner(v: unknown): string | null {
  if (v === undefined || v === null) return null;
  const numeric = typeof v === "number" || (typeof v === "string" && /^[0-9]+$/.test(v));
  if (numeric && !(Number.isInteger(Number(v)) && Number(v) >= 0 && Number(v) <= MAX_UID)) {
    throw new ConfigError(
      `"owner" is ${show(v)}: a uid is 0 to ${MAX_UID} (4294967295 means "no owner" to ` +
        `chown): use the owner's user name such as "cad", or their uid (\`id -u cad\`)`,
    );
  }
  if (typeof v === "number") return String(v);
  if (typeof v === "string" && OWNER.test(v)) return v;
  throw new ConfigError(`"owner" is ${show(v)}: use a user name such as "cad" or a numeric uid`);
}

/** "ct_mark" within "ct_mask" (defaults 0x00510000 within 0x00ff0000). */
function parseMarks(markValue: unknown, maskValue: unknown): { mark: number; mask: number } {
  const mask = parseMark("ct_mask", maskValue, 0x00ff0000);
  const mark = parseMark("ct_mark", markValue, 0x00510000);
  if ((mark & ~mask) >>> 0 !== 0) {
    throw new ConfigError(
      `"ct_mark" 0x${mark.toString(16)} has bits outside "ct_mask" 0x${mask.toString(16)}: ` +
        `pick a mark inside the mask`,
    );
  }
  return { mark, mask };
}

function parseFlag(field: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== "boolean") throw new ConfigError(`"${field}" is ${show(v)}: use true or false`);
  return v;
}

export interface EventsConfig {
  /** Report connects and first datagrams (ebpf backend only). Default true. */
  enabled: boolean;
  /** When events cannot work here, fail `run` instead of logging why and going on. */
  required: boolean;
}

const EVENTS_KEYS = ["enabled", "required"] as const;

function parseEvents(v: unknown): EventsConfig {
  if (v === undefined) return { enabled: true, required: false };
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(
      `"events" is ${show(v)}: it must be an object like {"enabled": true, "required": false}`,
    );
  }
  const o = v as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(EVENTS_KEYS as readonly string[]).includes(key)) {
      const guess = didYouMean(key, EVENTS_KEYS);
      throw new ConfigError(
        `Unknown key "events.${key}"` +
          (guess ? `: did you mean "events.${guess}"?` : `: known keys are enabled, required`),
      );
    }
  }
  const enabled = parseFlag("events.enabled", o.enabled, true);
  const required = parseFlag("events.required", o.required, false);
  if (required && !enabled) {
    throw new ConfigError(
      `"events.required" is true but "events.enabled" is false: enable events or drop "required"`,
    );
  }
  return { enabled, required };
}

export interface NamesConfig {
  /** Capture StB's DNS answers to name its destinations (ebpf backend only). Default true. */
  enabled: boolean;
}

function parseNames(v: unknown): NamesConfig {
  if (v === undefined) return { enabled: true };
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(`"names" is ${show(v)}: it must be an object like {"enabled": true}`);
  }
  const o = v as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (key !== "enabled") {
      throw new ConfigError(`Unknown key "names.${key}": the one known key is enabled`);
    }
  }
  return { enabled: parseFlag("names.enabled", o.enabled, true) };
}

export interface HistoryConfig {
  /** `run` records history (default true). */
  enabled: boolean;
  retention: Retention;
}

const HISTORY_KEYS = ["enabled", "retention"] as const;

/** Refuses a key not in `known` with a guess, under `prefix` ("history."). */
function checkKeys(o: Record<string, unknown>, known: readonly string[], prefix: string): void {
  for (const key of Object.keys(o)) {
    if (known.includes(key)) continue;
    const guess = didYouMean(key, known);
    throw new ConfigError(
      `Unknown key "${prefix}${key}"` +
        (guess ? `: did you mean "${prefix}${guess}"?` : `: known keys are ${known.join(", ")}`),
    );
  }
}

/** "history": {"enabled": true, "retention": {"minutes": "48h", ...}}; absent: the defaults. */
function parseHistory(v: unknown): HistoryConfig {
  const out: HistoryConfig = { enabled: true, retention: defaultRetention() };
  if (v === undefined) return out;
  const example = '{"enabled": true, "retention": {"minutes": "48h", "hours": "90d", ' +
    '"days": "5y", "months": "forever"}}';
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(`"history" is ${show(v)}: it must be an object like ${example}`);
  }
  const o = v as Record<string, unknown>;
  checkKeys(o, HISTORY_KEYS, "history.");
  out.enabled = parseFlag("history.enabled", o.enabled, true);
  if (o.retention === undefined) return out;
  const r = o.retention;
  if (typeof r !== "object" || r === null || Array.isArray(r)) {
    throw new ConfigError(
      `"history.retention" is ${show(r)}: it must be an object like ` +
        `{"minutes": "48h", "hours": "90d", "days": "5y", "months": "forever"}`,
    );
  }
  const ro = r as Record<string, unknown>;
  checkKeys(ro, TIERS, "history.retention.");
  for (const tier of TIERS) {
    if (ro[tier] === undefined) continue;
    const parsed = parseRetention(tier, ro[tier]);
    if (parsed !== null && typeof parsed === "object") {
      throw new ConfigError(`"history.retention.${tier}" is ${show(ro[tier])}: ${parsed.error}`);
    }
    out.retention[tier] = parsed;
  }
  return out;
}

/** Where `run` also publishes the counters in Prometheus text format; null turns one off. */
export interface PrometheusConfig {
  /** File for node-exporter's textfile collector, written only while its directory exists. */
  textfile: string | null;
  /** Address `/metrics` is served on. */
  listen: { hostname: string; port: number } | null;
  /** The explicit consent to serve `/metrics` on a non-loopback address. */
  allowRemote: boolean;
}

/** Where Debian's prometheus-node-exporter textfile collector looks. */
export const DEFAULT_PROMETHEUS_TEXTFILE = "/var/lib/prometheus/node-exporter/stb_netacct.prom";
const PROMETHEUS_KEYS = ["textfile", "listen", "allow_remote"] as const;

function parsePrometheus(v: unknown): PrometheusConfig {
  const out: PrometheusConfig = {
    textfile: DEFAULT_PROMETHEUS_TEXTFILE,
    listen: null,
    allowRemote: false,
  };
  if (v === undefined) return out;
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConfigError(
      `"prometheus" is ${show(v)}: it must be an object like ` +
        `{"textfile": "${DEFAULT_PROMETHEUS_TEXTFILE}", "listen": "127.0.0.1:9877"}`,
    );
  }
  const o = v as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(PROMETHEUS_KEYS as readonly string[]).includes(key)) {
      const guess = didYouMean(key, PROMETHEUS_KEYS);
      throw new ConfigError(
        `Unknown key "prometheus.${key}"` +
          (guess ? `: did you mean "${guess}"?` : `: known keys are ${PROMETHEUS_KEYS.join(", ")}`),
      );
    }
  }
  if (o.textfile === null) {
    out.textfile = null;
  } else if (o.textfile !== undefined) {
    const t = o.textfile;
    if (typeof t !== "string" || !t.startsWith("/") || !t.endsWith(".prom")) {
      throw new ConfigError(
        `"prometheus.textfile" is ${show(t)}: use an absolute path ending in ".prom" ` +
          `(node-exporter reads only those), like "${DEFAULT_PROMETHEUS_TEXTFILE}", or null for none`,
      );
    }
    if (t.split("/").some((p) => p === ".." || p === ".")) {
      throw new ConfigError(
        `"prometheus.textfile" is ${show(t)}: "." and ".." are not allowed in it`,
      );
    }
    out.textfile = t;
  }
  if (o.listen !== undefined && o.listen !== null) {
    if (typeof o.listen !== "string") {
      throw new ConfigError(
        `"prometheus.listen" is ${
          show(o.listen)
        }: use "ADDRESS:PORT" like "127.0.0.1:9877", or null`,
      );
    }
    out.listen = parseListenAddress(o.listen, '"prometheus.listen"');
  }
  if (o.allow_remote !== undefined) {
    if (typeof o.allow_remote !== "boolean") {
      throw new ConfigError(
        `"prometheus.allow_remote" is ${show(o.allow_remote)}: use true or false`,
      );
    }
    out.allowRemote = o.allow_remote;
  }
  if (out.listen) checkListenAllowed(out.listen, out.allowRemote, '"prometheus.listen"');
  return out;
}

const LOOPBACK_LISTEN: Cidr[] = ["127.0.0.0/8", "::1/128"].map((c) => parseCidr(c));

/**
 * /metrics shows StB's traffic to whoever reaches it, so it is served on loopback only,
 * unless the config says `"prometheus.allow_remote": true`. `what` names the setting.
 */
export function checkListenAllowed(
  listen: { hostname: string; port: number },
  allowRemote: boolean,
  what: string,
): void {
  const bytes = parseIpv4(listen.hostname) ?? parseIpv6(listen.hostname);
  if (allowRemote || (bytes && isExcluded(bytes, LOOPBACK_LISTEN))) return;
  const shown = listen.hostname.includes(":") ? `[${listen.hostname}]` : listen.hostname;
  throw new ConfigError(
    `${what} is "${shown}:${listen.port}", which is not a loopback address: anyone who ` +
      `can reach it would see StB's traffic. Use "127.0.0.1:${listen.port}" (scrape it ` +
      `locally or through a proxy), or set "prometheus.allow_remote": true in the config ` +
      `to serve it there on purpose`,
  );
}

/**
 * "127.0.0.1:9877", "[::1]:9877" or "localhost:9877": one explicit address, never a
 * wildcard (the counters would be served to every network the host is on) and never a
 * name to look up (a root daemon should not depend on DNS to decide where it listens).
 */
export function parseListenAddress(
  text: string,
  what: string | null = "--metrics-listen",
): { hostname: string; port: number } {
  const fail = (reason: string) =>
    new ConfigError(
      what === null
        ? reason.charAt(0).toUpperCase() + reason.slice(1)
        : `${what} is ${show(text)}: ${reason}`,
    );
  const example = 'like "127.0.0.1:9877" or "[::1]:9877"';
  const m = /^(?:\[([^\]]*)\]|([^:\[\]]*)):([0-9]{1,5})$/.exec(text);
  if (!m) throw fail(`write ADDRESS:PORT, ${example}`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw fail(`the port must be 1 to 65535, ${example}`);
  // One of the alternatives matched: a bracketed (IPv6) host or a bare one.
  const host = m[2] === "localhost" ? "127.0.0.1" : m[1] ?? m[2] ?? "";
  const bytes = m[1] === undefined ? parseIpv4(host) : parseIpv6(host);
  if (!bytes) {
    throw fail(
      `${show(host)} is not an IP address: name one address of this host (IPv6 in ` +
        `brackets), ${example}`,
    );
  }
  const wildcard = `that listens on every network of this host and would show StB's ` +
    `traffic to anyone who can reach it: name one address, ${example}`;
  if (bytes.every((b) => b === 0)) throw fail(wildcard);
  if (bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0)) {
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible) are IPv4 in IPv6 clothes: the
    // socket listens on the IPv4 address, so ::ffff:0.0.0.0 is the IPv4 wildcard.
    const v4 = bytes.subarray(12).join(".");
    const mapped = bytes[10] === 0xff && bytes[11] === 0xff;
    if (mapped && v4 === "0.0.0.0") throw fail(wildcard);
    if (mapped || (bytes[10] === 0 && bytes[11] === 0 && !isLoopback6(bytes))) {
      throw fail(
        `an IPv4 address written as IPv6: write the IPv4 address itself, like ` +
          `"${v4 === "0.0.0.0" ? "127.0.0.1" : v4}:${port}"`,
      );
    }
  }
  return { hostname: host, port };
}

const isLoopback6 = (b: Uint8Array) => b.subarray(0, 15).every((x) => x === 0) && b[15] === 1;

/** The interval rule (lib/interval.ts) for a config value; `what` names it in the error. */
export function checkInterval(v: unknown, what: string): number {
  if (!isInterval(v)) throw new ConfigError(`${what} is ${show(v)}: ${INTERVAL_FIX}`);
  return v;
}

/**
 * Reads and validates a config file. A missing file at the default path means built-in
 * defaults; a missing file the user named explicitly is an error.
 */
export function loadConfig(path: string, explicit: boolean): Config {
  let text: string;
  try {
    const st = Deno.statSync(path);
    if (!st.isFile) throw new ConfigError(`Config ${show(path)} is not a regular file`);
    if (st.size > MAX_CONFIG_BYTES) {
      throw new ConfigError(
        `Config ${
          show(path)
        } is ${st.size} bytes: a config is never over ${MAX_CONFIG_BYTES} bytes, check the path`,
      );
    }
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    if (e instanceof Deno.errors.NotFound && !explicit) {
      return validateConfig({}, "built-in defaults");
    }
    if (e instanceof Deno.errors.NotFound) {
      throw new ConfigError(
        `Config ${
          show(path)
        } does not exist: create it (see README "Config file") or drop --config`,
        { cause: e },
      );
    }
    throw new ConfigError(`Cannot read config ${show(path)}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return configFromText(text, path);
}

/** The config in `text`, read from `path` (named in errors). */
export function configFromText(text: string, path: string): Config {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(
      `Config ${show(path)} is not valid JSON (${(e as Error).message}): fix the syntax`,
      { cause: e },
    );
  }
  return validateConfig(raw, show(path));
}

/**
 * A root daemon must not take orders from a file other users can change: the config
 * decides which traffic counts and where root writes. Throws (ConfigError, so exit 2) why
 * `p`, the config or the directory holding it, fails: owned by someone other than root or
 * `uid` (the user running us), or writable by group or others (a group write bit is fine
 * when the group is root's; a sticky directory keeps others from replacing the file).
 * lib/trusted_config.ts applies it to the file it opened.
 */
export function checkTrust(
  p: string,
  st: { uid: number | null; gid: number | null; mode: number | null; isDirectory: boolean },
  uid: number | null,
): void {
  const mode = (st.mode ?? 0) & 0o7777;
  const isDir = st.isDirectory;
  const shown = isDir ? `Directory ${show(p)} holding the config` : `Config ${show(p)}`;
  if (st.uid !== 0 && st.uid !== uid) {
    throw new ConfigError(
      `${shown} is owned by uid ${st.uid}, so that user could change what root counts and ` +
        `where it writes: \`chown root:root ${p}\` (and \`chmod go-w ${p}\`)`,
    );
  }
  // The sticky bit (/tmp) keeps others from replacing a file they do not own.
  const sticky = isDir && (mode & 0o1000) !== 0;
  const othersWrite = (mode & 0o002) !== 0 && !sticky;
  const groupWrite = (mode & 0o020) !== 0 && st.gid !== 0 && !sticky;
  if (othersWrite || groupWrite) {
    throw new ConfigError(
      `${shown} is writable by ${othersWrite ? "others" : `group ${st.gid}`} ` +
        `(mode ${mode.toString(8)}), so other users could change what root counts: ` +
        `\`chmod go-w ${p}\``,
    );
  }
}

/** The defaults as a file `install` writes and users edit. */
export function defaultConfigJson(owner: string | null): string {
  return JSON.stringify(
    {
      services: DEFAULT_SERVICES,
      exclude: DEFAULT_EXCLUDE,
      output: DEFAULT_COUNTERS_PATH,
      owner,
      interval_s: DEFAULT_INTERVAL_S,
    },
    null,
    2,
  ) + "\n";
}
