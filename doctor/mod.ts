/**
 * `stb-netacct doctor`: what this host offers each backend, and what to do about what it
 * lacks. Runs unprivileged (then it says what it could not check); as root it also asks
 * each backend to `probe`, which loads nothing permanent and touches no live rules.
 */

import { KEPT_STATE_FIX, keptKernelState } from "../backends/kept_state.ts";
import { Command, Option } from "@commander-js/extra-typings";
import {
  AUTO,
  BACKEND_CHOICES,
  BACKEND_INFO,
  BACKEND_NAMES,
  type BackendChoice,
  BackendError,
  type BackendName,
  backendsOf,
  loadBackend,
  type ServiceTarget,
} from "../backends/mod.ts";
import { capabilityName, effectiveCaps, missingCaps } from "../lib/capabilities.ts";
import { type Cgroup2Mount, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { type Config, ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from "../lib/config.ts";
import { describeError } from "../lib/errors.ts";
import { terminalJson } from "../lib/text.ts";

export type Verdict = "usable" | "unusable" | "unchecked";

export interface BackendReport {
  name: BackendName;
  verdict: Verdict;
  /** Why not usable, or what could not be checked. */
  reason?: string;
  fix?: string;
  /** What its byte counts are (BACKEND_INFO), for the configured GSO correction. */
  bytes: string;
}

export interface DoctorReport {
  kernel: string;
  /** Where cgroup2 is mounted (snake_case, like every --json key), or why it is not. */
  cgroup2: { mount_point: string; layout: Cgroup2Mount["layout"] } | { error: string };
  btf: boolean;
  bpffs: string | null;
  libbpf: { found: boolean; version?: string; error?: string };
  tools: Record<string, string | null>;
  privileges: { uid: number; capabilities: string[]; missing_for: Record<string, string[]> };
  config: { source: string; error?: string };
  services: { name: string; cgroup: string; exists: boolean; id: string | null }[];
  backends: BackendReport[];
  /** Connect events (ebpf only): usable, off, or why not. */
  events: { verdict: Verdict | "off"; reason?: string };
  /**
   * The instructions the kernel's verifier processed per BPF program loaded by the probes
   * (its limit is 1,000,000): a program creeping toward a limit shows here first.
   */
  verifier: { object: string; program: string; insns: number | null }[];
  configured_backend: string;
  ok: boolean;
  /**
   * Kernel state of ours that outlives `run` (ebpf pins, the nft table, iptables chains): it counts on while
   * no sampler runs, and the next run adopts it. Null: not looked at (needs root).
   */
  kept_state?: string[] | null;
}

async function toolVersion(bin: string): Promise<string | null> {
  try {
    const out = await new Deno.Command(bin, {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n")[0] ?? "";
    return out.success ? text : null;
  } catch {
    return null;
  }
}

/** The libbpf.so.1 this process would load, through the one FFI table (bpf/libbpf.ts). */
async function libbpfFacts(): Promise<DoctorReport["libbpf"]> {
  try {
    const { libbpfVersion } = await import("../bpf/libbpf.ts");
    return { found: true, version: libbpfVersion() };
  } catch (e) {
    // The loader's own words: what dlopen said, without the fix the backend adds.
    return { found: false, error: ((e as Error).cause as Error | undefined)?.message ?? `${e}` };
  }
}

function bpffsMount(): string | null {
  try {
    for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
      const sep = line.indexOf(" - ");
      if (sep > 0 && line.slice(sep + 3).startsWith("bpf ")) return line.split(" ")[4] ?? null;
    }
  } catch { /* no /proc */ }
  return null;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const PREREQ_FIX: Record<BackendName, string> = {
  ebpf: "install libbpf1 (apt-get install libbpf1) on a kernel with CONFIG_CGROUP_BPF",
  nft: "install nftables (apt-get install nftables)",
  iptables: "install iptables (apt-get install iptables)",
};

export interface DiagnoseOptions {
  /** The config, or null when it is invalid (`configError` says why). */
  config: Config | null;
  configError: string | null;
  /** Where the config came from, for the report. */
  source: string;
  /** The backend the verdict is about. */
  configured: BackendChoice;
}

/** What this host has that every backend needs or reports. */
interface HostFacts {
  mount: Cgroup2Mount | null;
  cgroup2: DoctorReport["cgroup2"];
  caps: bigint;
  tools: Record<string, string | null>;
  libbpf: DoctorReport["libbpf"];
}

async function hostFacts(): Promise<HostFacts> {
  let mount: Cgroup2Mount | null = null;
  let cgroup2: DoctorReport["cgroup2"];
  try {
    mount = findCgroup2Mount();
    cgroup2 = { mount_point: mount.mountPoint, layout: mount.layout };
  } catch (e) {
    cgroup2 = { error: (e as Error).message };
  }
  const tools: Record<string, string | null> = {};
  for (const t of ["nft", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore"]) {
    tools[t] = await toolVersion(t);
  }
  return { mount, cgroup2, caps: effectiveCaps(), tools, libbpf: await libbpfFacts() };
}

/** Why `name` cannot work here before it is even tried, or null. */
function prerequisiteMissing(name: BackendName, host: HostFacts): string | null {
  const { tools, libbpf } = host;
  if (name === "ebpf") {
    return libbpf.found ? null : `libbpf.so.1 cannot be loaded (${libbpf.error})`;
  }
  if (name === "nft") return tools.nft ? null : "the nft binary is missing";
  return tools.iptables && tools.ip6tables && tools["iptables-restore"]
    ? null
    : "iptables, ip6tables or iptables-restore is missing";
}

interface BackendCheck {
  host: HostFacts;
  config: Config | null;
  targets: ServiceTarget[];
}

/** What `name` counts of an aggregate with this config (ebpf: its GSO correction). */
function bytesNote(name: BackendName, config: Config | null): string {
  if (name === "ebpf" && config && !config.gso_correction) {
    return `${BACKEND_INFO.nft.bytes}, as "gso_correction": false asks`;
  }
  return BACKEND_INFO[name].bytes;
}

/** One backend's verdict: unusable for what is missing, unchecked without privileges, else probed. */
async function judgeBackend(name: BackendName, check: BackendCheck): Promise<BackendReport> {
  const report = await verdictOf(name, check);
  return { ...report, bytes: bytesNote(name, check.config) };
}

async function verdictOf(
  name: BackendName,
  check: BackendCheck,
): Promise<Omit<BackendReport, "bytes">> {
  const { host, config } = check;
  const missing = missingCaps(host.caps, BACKEND_INFO[name].capabilities).map(capabilityName);
  const prereq = prerequisiteMissing(name, host);
  if (!host.mount) {
    return {
      name,
      verdict: "unusable",
      reason: "no cgroup2 mount",
      fix: "mount cgroup2 (see the cgroup2 line)",
    };
  }
  if (prereq) return { name, verdict: "unusable", reason: prereq, fix: PREREQ_FIX[name] };
  if (missing.length > 0) {
    return {
      name,
      verdict: "unchecked",
      reason: `probing needs ${missing.join(", ")}`,
      fix: "run `sudo stb-netacct doctor` for a full check",
    };
  }
  if (!config) {
    return {
      name,
      verdict: "unusable",
      reason: "the config is invalid",
      fix: "fix the config (see the config line)",
    };
  }
  try {
    const backend = await loadBackend(name);
    await backend.probe(check.targets, {
      mount: host.mount,
      exclude: config.exclude,
      excludeInterfaces: config.exclude_interfaces,
      internalOnlink: config.internal_onlink,
      ctMark: config.ct_mark,
      ctMask: config.ct_mask,
      log: () => {},
    });
    return { name, verdict: "usable" };
  } catch (e) {
    return {
      name,
      verdict: "unusable",
      reason: describeError(e),
      fix: e instanceof BackendError ? undefined : PREREQ_FIX[name],
    };
  }
}

/** Connect events: off by config, not usable without ebpf, else probed. */
async function judgeEvents(
  ebpf: BackendReport,
  check: BackendCheck,
): Promise<DoctorReport["events"]> {
  const { host, config } = check;
  if (config && !config.events.enabled) {
    return { verdict: "off", reason: 'the config says "events": {"enabled": false}' };
  }
  if (ebpf.verdict !== "usable" || !host.mount || !config) {
    return { verdict: ebpf.verdict, reason: `they need the ebpf backend (${ebpf.verdict})` };
  }
  try {
    const { EventCollector } = await import("../events/collector.ts");
    new EventCollector().probe(check.targets, {
      mount: host.mount,
      exclude: config.exclude,
      monotonicNow: () => 0,
    });
    return { verdict: "usable" };
  } catch (e) {
    return { verdict: "unusable", reason: describeError(e) };
  }
}

function serviceFacts(config: Config | null, mount: Cgroup2Mount | null) {
  if (!config || !mount) return [];
  return Object.entries(config.services).map(([name, path]) => {
    const id = cgroupId(mount, path);
    return { name, cgroup: path, exists: id !== null, id: id === null ? null : String(id) };
  });
}

export async function diagnose(o: DiagnoseOptions): Promise<DoctorReport> {
  const host = await hostFacts();
  const services = serviceFacts(o.config, host.mount);
  const targets: ServiceTarget[] = services.map((s) => ({
    name: s.name,
    path: s.cgroup,
    id: s.id === null ? null : BigInt(s.id),
  }));
  const check = { host, config: o.config, targets };
  const backends: BackendReport[] = [];
  for (const name of BACKEND_NAMES) backends.push(await judgeBackend(name, check));
  const wanted = backends.filter((b) => backendsOf(o.configured).includes(b.name));
  const ebpf = backends.find((b) => b.name === "ebpf")!;
  const missingFor: Record<string, string[]> = {};
  for (const name of BACKEND_NAMES) {
    missingFor[name] = missingCaps(host.caps, BACKEND_INFO[name].capabilities).map(capabilityName);
  }
  return {
    kernel: Deno.osRelease(),
    cgroup2: host.cgroup2,
    btf: exists("/sys/kernel/btf/vmlinux"),
    bpffs: bpffsMount(),
    libbpf: host.libbpf,
    tools: host.tools,
    privileges: {
      uid: Deno.uid() ?? -1,
      capabilities: [12, 21, 38, 39].filter((c) => missingCaps(host.caps, [c]).length === 0).map(
        capabilityName,
      ),
      missing_for: missingFor,
    },
    config: { source: o.source, ...(o.configError ? { error: o.configError } : {}) },
    services,
    backends,
    events: await judgeEvents(ebpf, check),
    verifier: ebpf.verdict === "unchecked" ? [] : await verifierWork(),
    configured_backend: o.configured,
    ok: o.configError === null && wanted.some((b) => b.verdict === "usable"),
    kept_state: await keptKernelState(),
  };
}

/** What the verifier reported for each program the probes loaded, one entry per program. */
async function verifierWork(): Promise<DoctorReport["verifier"]> {
  const { verifiedPrograms } = await import("../bpf/libbpf.ts");
  const latest = new Map<string, DoctorReport["verifier"][number]>();
  for (const p of verifiedPrograms()) latest.set(`${p.object}/${p.program}`, { ...p });
  return [...latest.values()];
}

/** The verifier's limit on processed instructions per program (BPF_COMPLEXITY_LIMIT_INSNS). */
const VERIFIER_INSN_LIMIT = 1_000_000;

const MARK: Record<Verdict, string> = { usable: "ok  ", unusable: "FAIL", unchecked: "??  " };

export function formatReport(r: DoctorReport): string {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${k.padEnd(18)} ${v}`);
  row("kernel", r.kernel);
  row(
    "cgroup2",
    "error" in r.cgroup2
      ? `MISSING: ${r.cgroup2.error}`
      : `${r.cgroup2.mount_point} (${r.cgroup2.layout})`,
  );
  row("BTF", r.btf ? "/sys/kernel/btf/vmlinux" : "absent (not needed by stb-netacct)");
  row(
    "bpffs",
    r.bpffs ?? "not mounted (run mounts one to keep its counters across restarts)",
  );
  row("libbpf", r.libbpf.found ? `libbpf.so.1 ${r.libbpf.version}` : `missing: ${r.libbpf.error}`);
  for (const [t, v] of Object.entries(r.tools)) row(t, v ?? "not found");
  row(
    "privileges",
    `uid ${r.privileges.uid}; ${r.privileges.capabilities.join(", ") || "no capabilities"}`,
  );
  row("config", r.config.error ? `INVALID ${r.config.source}: ${r.config.error}` : r.config.source);
  for (const s of r.services) {
    row(
      `service`,
      `${s.name}: ${
        s.exists ? `present, id ${s.id}` : "absent now (counted once it appears)"
      }  ${s.cgroup}`,
    );
  }
  lines.push("");
  for (const b of r.backends) {
    const detail = b.verdict === "usable"
      ? "usable"
      : `${b.verdict === "unchecked" ? "not checked" : "not usable"} because ${b.reason}` +
        (b.fix ? `; fix: ${b.fix}` : "");
    lines.push(`[${MARK[b.verdict]}] ${b.name.padEnd(9)} ${detail}`);
    lines.push(`${" ".repeat(17)}bytes: ${b.bytes}`);
  }
  const ev = r.events;
  lines.push(
    `[${ev.verdict === "off" ? "off " : MARK[ev.verdict]}] ${"events".padEnd(9)} ` +
      (ev.verdict === "usable"
        ? "usable (connect events; `stb-netacct events` shows them)"
        : `${ev.verdict === "off" ? "off" : "not usable"} because ${ev.reason}`),
  );
  for (const v of r.verifier) {
    row(
      "verifier",
      `${v.object}/${v.program}: ${
        v.insns === null
          ? "accepted (no instruction count reported)"
          : `${v.insns.toLocaleString("en-US")} of ${
            VERIFIER_INSN_LIMIT.toLocaleString("en-US")
          } instructions`
      }`,
    );
  }
  if (r.kept_state?.length) {
    row(
      "kept state",
      `${r.kept_state.join(", ")}: counts on for the next run; if no sampler runs, ` +
        KEPT_STATE_FIX,
    );
  }
  lines.push("");
  lines.push(
    r.ok
      ? `Verdict: the ${r.configured_backend} backend is usable.`
      : `Verdict: the ${r.configured_backend} backend is ${
        r.backends.some((b) => b.verdict === "unchecked") ? "not confirmed usable" : "not usable"
      }; see the lines above.`,
  );
  return lines.join("\n");
}

export function doctorCommand() {
  return new Command("doctor")
    .summary("check what this host offers each backend, and how to fix what it lacks")
    .description(
      "Report the kernel, cgroup2 mount, BTF, bpffs, libbpf, nft and iptables versions, " +
        "privileges, which configured service cgroups exist now, and per backend whether it " +
        "is usable (as root each backend is probed without changing anything). Exit 0 when " +
        "the chosen backend is usable, 1 when it is not, 3 when it could not be checked " +
        "without root.",
    )
    .addOption(
      new Option("-b, --backend <name>", "backend to judge").choices(BACKEND_CHOICES).default(
        AUTO as BackendChoice,
      ),
    )
    .option("-c, --config <path>", "config file", DEFAULT_CONFIG_PATH)
    .option("--json", "print the report as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  stb-netacct doctor\n  sudo stb-netacct doctor --backend nft --json\n",
    )
    .action(async (opts, cmd) => {
      let config: Config | null = null;
      let configError: string | null = null;
      try {
        config = loadConfig(opts.config, cmd.getOptionValueSource("config") === "cli");
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        configError = e.message;
      }
      const report = await diagnose({
        config,
        configError,
        source: config?.source ?? opts.config,
        configured: opts.backend,
      });
      console.log(opts.json ? terminalJson(JSON.stringify(report, null, 2)) : formatReport(report));
      const wanted = report.backends.filter((b) => backendsOf(opts.backend).includes(b.name));
      Deno.exit(report.ok ? 0 : wanted.some((b) => b.verdict === "unchecked") ? 3 : 1);
    });
}
