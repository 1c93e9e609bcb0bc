/**
 * The systemd unit `install` writes, as a pure function of the backend and paths, so the
 * hardening can be checked by `systemd-analyze verify` and `security` without a running
 * systemd (unit_test.ts) and proven under a real one (tests/systemd_test.ts).
 *
 * The service runs as a dynamic user, not root: what it may do comes only from the ambient
 * capabilities of its backend plus CAP_CHOWN (counters.json belongs to the config's
 * "owner"). Everything else is closed; docs/service.md lists what stays open and why.
 */

import { BACKEND_INFO, type BackendChoice, type BackendName, backendsOf } from "../backends/mod.ts";
import { DEFAULT_CONFIG_PATH } from "../lib/config.ts";
import { COUNTERS_DIR } from "../lib/contract.ts";
import { DEFAULT_HISTORY_DIR } from "../history/paths.ts";
import { PIN_ROOT_ENV, SERVICE_PIN_ROOT } from "../bpf/pins.ts";

export const UNIT_NAME = "stb-netacct.service";
export const UNIT_PATH = `/etc/systemd/system/${UNIT_NAME}`;
/** RuntimeDirectory=; the only place the hardened service can publish counters.json. */
export const RUNTIME_DIR = COUNTERS_DIR;
/** StateDirectory=; with DynamicUser= systemd keeps it in /var/lib/private/stb-netacct. */
export const STATE_DIR = "/var/lib/stb-netacct";
export const PRIVATE_STATE_DIR = "/var/lib/private/stb-netacct";
/** CacheDirectory=: deno's DENO_DIR (V8 code cache) for the fallback build. */
export const CACHE_DIR = "/var/cache/stb-netacct";
export const PRIVATE_CACHE_DIR = "/var/cache/private/stb-netacct";
/**
 * Traffic history, which the config's owner reads too: not under StateDirectory=, which a
 * dynamic user's unit keeps where only root can reach (/var/lib/private). install makes it
 * root's; the service takes it with CAP_CHOWN and gives it back to root when it stops.
 */
export const HISTORY_DIR = DEFAULT_HISTORY_DIR;
export { SERVICE_PIN_ROOT };

/** Kernel capability names by number; lib/capabilities.ts only names the ones `run` checks. */
const CAP_NAMES: Record<number, string> = {
  0: "CAP_CHOWN",
  12: "CAP_NET_ADMIN",
  21: "CAP_SYS_ADMIN",
  38: "CAP_PERFMON",
  39: "CAP_BPF",
};

/**
 * What each backend needs beyond the capabilities in BACKEND_INFO. A Record over
 * BackendName, so a new backend does not type-check until its sandbox is decided.
 */
const BACKEND_SANDBOX: Record<BackendName, { families: string[]; syscalls: string[] }> = {
  // libbpf talks to the kernel through bpf(2) only; no socket at all.
  ebpf: { families: [], syscalls: ["bpf"] },
  // nft and iptables-nft talk nf_tables over netlink.
  nft: { families: ["AF_NETLINK"], syscalls: [] },
  iptables: { families: ["AF_NETLINK"], syscalls: [] },
};

function capName(cap: number): string {
  const name = CAP_NAMES[cap];
  if (!name) throw new Error(`Capability ${cap} has no name in install/unit.ts: add it`);
  return name;
}

export interface Sandbox {
  capabilities: string[];
  families: string[];
  syscalls: string[];
}

/** The union of what the backends `choice` may start need; auto may start any of them. */
export function sandboxFor(choice: BackendChoice): Sandbox {
  const caps = new Set<string>(), families = new Set<string>(), syscalls = new Set<string>();
  for (const b of backendsOf(choice)) {
    for (const c of BACKEND_INFO[b].capabilities) caps.add(capName(c));
    for (const f of BACKEND_SANDBOX[b].families) families.add(f);
    for (const s of BACKEND_SANDBOX[b].syscalls) syscalls.add(s);
  }
  // chown(2) of each counters.json sample to the config's "owner".
  caps.add("CAP_CHOWN");
  const order = (xs: Set<string>) => [...xs].sort();
  return { capabilities: order(caps), families: order(families), syscalls: order(syscalls) };
}

/**
 * One ExecStart= word. systemd splits on blanks, expands `%` specifiers and `$` variables
 * and understands C escapes in double quotes; a path with any of those is quoted.
 */
export function quoteExecArg(arg: string): string {
  if (arg.length === 0) return '""';
  if ([...arg].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) {
    throw new Error(`Argument ${JSON.stringify(arg)} has a control character: rename the path`);
  }
  const escaped = arg.replaceAll("%", "%%").replaceAll("$", "$$$$");
  if (!/[\s"'\\;]/.test(escaped)) return escaped;
  return `"${escaped.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/** What the config asks the service to do beyond counters.json (install/service_config.ts). */
export interface UnitFeatures {
  /**
   * The Prometheus textfile's directory: writable in the unit, and writable for the
   * service's group TEXTFILE_GROUP (install grants it an ACL entry there; the dynamic user
   * has no CAP_DAC_OVERRIDE). Null: no textfile, or one in the runtime directory.
   */
  textfileDir: string | null;
  /** prometheus.listen: the socket family it needs and whether peers may be remote. */
  listen: { family: "AF_INET" | "AF_INET6"; remote: boolean } | null;
}

/** Static group that may write the textfile directory (the dynamic user's is transient). */
export const TEXTFILE_GROUP = "stb-netacct-textfile";

export const NO_FEATURES: UnitFeatures = { textfileDir: null, listen: null };

export interface UnitOptions {
  configPath?: string;
  /** Written into a comment so a unit from another release differs and is upgraded. */
  version?: string;
  features?: UnitFeatures;
}

export function renderUnit(
  backend: BackendChoice,
  binPath: string,
  options: UnitOptions = {},
): string {
  if (!binPath.startsWith("/")) {
    throw new Error(`Program path ${JSON.stringify(binPath)} must be absolute for ExecStart=`);
  }
  const configPath = options.configPath ?? DEFAULT_CONFIG_PATH;
  // With DynamicUser= /var/lib/stb-netacct is a symlink, which run refuses as a state
  // directory; the real directory is the private one.
  const state = ["--state", `${PRIVATE_STATE_DIR}/state.json`];
  const exec = [binPath, "run", "--backend", backend, "--config", configPath, ...state]
    .map(quoteExecArg).join(" ");
  const prepare = [binPath, "run", "--prepare-kernel-state", ...state].map(quoteExecArg).join(" ");
  // The ebpf backend's pinned counters and links keep counting across a restart or an
  // upgrade: our own binary, privileged ("+", no shell), mounts a bpffs of the service's own
  // at SERVICE_PIN_ROOT (once per boot) and gives it to the dynamic user.
  const pins = backendsOf(backend).includes("ebpf")
    ? [
      `Environment=${PIN_ROOT_ENV}=${SERVICE_PIN_ROOT}`,
      `ExecStartPre=+${prepare}`,
      // "-": a failed mount leaves the service counting unpinned rather than not at all.
      `ReadWritePaths=-${SERVICE_PIN_ROOT}`,
    ]
    : [];
  const lines = [
    `# Generated by \`stb-netacct install\`${
      options.version ? ` ${options.version}` : ""
    }; the next install overwrites`,
    "# edits. Remove with `stb-netacct uninstall`.",
    "[Unit]",
    `Description=StB external network traffic accounting (${backend} backend)`,
    "After=network.target",
    "",
    "[Service]",
    // Ready (sd_notify) once counting, with a first counters.json published.
    "Type=notify",
    "NotifyAccess=main",
    ...pins,
    `ExecStart=${exec}`,
    "Restart=on-failure",
    "RestartSec=2s",
    "TimeoutStopSec=10s",
    "RuntimeDirectory=stb-netacct",
    "RuntimeDirectoryMode=0755",
    "StateDirectory=stb-netacct",
    "StateDirectoryMode=0700",
    // deno (fallback build) refuses to start without a cache directory it can write.
    "CacheDirectory=stb-netacct",
    "CacheDirectoryMode=0700",
    "Environment=DENO_DIR=%C/stb-netacct",
    // Nothing stays owned by a dynamic uid systemd may hand to another unit later.
    `ExecStopPost=-+/bin/chown -R -h 0 ${HISTORY_DIR}`,
    ...sandboxLines(sandboxFor(backend), options.features ?? NO_FEATURES),
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ];
  return lines.join("\n");
}

/** The [Service] lines that confine it: a dynamic user with its backend's capabilities only. */
function sandboxLines(sb: Sandbox, features: UnitFeatures): string[] {
  const { textfileDir, listen } = features;
  const families = [...sb.families, ...(listen ? [listen.family] : [])];
  return [
    // A uid of its own, not root: only the capabilities below make it privileged.
    "DynamicUser=yes",
    ...(textfileDir ? [`SupplementaryGroups=${TEXTFILE_GROUP}`] : []),
    `CapabilityBoundingSet=${sb.capabilities.join(" ")}`,
    `AmbientCapabilities=${sb.capabilities.join(" ")}`,
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    `ReadWritePaths=${RUNTIME_DIR}`,
    // The history outlives the service's own directories (see docs/service.md).
    `ReadWritePaths=-${HISTORY_DIR}`,
    // "-": a node-exporter removed later must not keep the service from starting.
    ...(textfileDir ? [`ReadWritePaths=-${textfileDir}`] : []),
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "DevicePolicy=closed",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectKernelTunables=yes",
    // Read-only cgroupfs: the ebpf backend only opens the service cgroups to link its
    // programs at them, and stats them; no cgroup is written.
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "PrivateMounts=yes",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "RemoveIPC=yes",
    "LockPersonality=yes",
    // V8 compiles JavaScript to machine code at run time: W+X mappings are its job.
    "MemoryDenyWriteExecute=no",
    // AF_UNIX: the sd_notify datagram to systemd; an IP family only for /metrics.
    `RestrictAddressFamilies=${["AF_UNIX", ...families].join(" ")}`,
    // No IP traffic but /metrics' own, and that from this host unless the admin opted in;
    // this also covers anything it spawns.
    "IPAddressDeny=any",
    ...(listen ? [`IPAddressAllow=${listen.remote ? "any" : "localhost"}`] : []),
    "SystemCallArchitectures=native",
    `SystemCallFilter=@system-service${sb.syscalls.map((s) => " " + s).join("")}`,
    "SystemCallFilter=~@resources @obsolete",
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
  ];
}
