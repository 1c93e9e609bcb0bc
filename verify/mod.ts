/**
 * `stb-netacct verify`: the acceptance plan, run on the user's own host against the
 * running sampler. Probe processes (the CLI's hidden `verify-probe`) are placed in a child
 * cgroup below a configured service, so the sampler must treat them as that service, and
 * the counters in counters.json are watched while they send:
 *
 *   sampler           counters.json is fresh and the probe's service is known to it
 *   loopback-ignored  TCP over 127.0.0.1 from inside the service: must not count
 *   public4-counted … vpn-interface
 *                     the boundary probe (boundary.ts): TCP from inside the service, in a
 *                     namespace of its own, to a peer namespace holding one remote of each
 *                     class; each must count or not as the config says (ebpf backend only)
 *   outsider-ignored  a download by a process outside every service: must not count
 *   service-counted   the same download from inside the service: must count, ±10%
 *
 * The last two contact --external-url and run only when it is given. Every cgroup, process
 * and namespace verify makes is removed in `finally`; signals only set a flag.
 */

import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { type Cgroup2Mount, cgroupDir, findCgroup2Mount } from "../lib/cgroup.ts";
import { type Config, ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from "../lib/config.ts";
import { type CountersV1, isFresh, parseCounters } from "../lib/contract.ts";
import { UsageError } from "../lib/errors.ts";
import { formatBytes } from "../lib/units.ts";
import {
  background,
  type Bytes,
  judgeCounted,
  judgeExchanged,
  judgeIgnored,
  type Judgement,
  probeSize,
  type Verdict,
} from "./judge.ts";
import type { ProbeResult } from "./probe.ts";
import { ipv6Enabled, readHostView, wireBoundary } from "./boundary.ts";
import {
  BOUNDARY_CHECKS,
  type BoundaryPlan,
  type BoundaryTarget,
  planBoundary,
} from "./boundary_plan.ts";

export { verifyProbeCommand } from "./probe.ts";

export const CHECKS = [
  "sampler",
  "loopback-ignored",
  ...BOUNDARY_CHECKS,
  "outsider-ignored",
  "service-counted",
] as const;
export type CheckName = typeof CHECKS[number];

/** Name of the child cgroup verify makes below the service; `pid` keeps runs apart. */
export const PROBE_CGROUP_PREFIX = "stb-netacct-verify-";

const MIN_LOCAL_BYTES = 16 * 1024 * 1024;
const MAX_LOCAL_BYTES = 1024 * 1024 * 1024;
/** Bytes each way per boundary check, at least: 10% of it dwarfs a quiet StB's traffic. */
const MIN_BOUNDARY_BYTES = 8 * 1024 * 1024;

/**
 * The config keys of interface exclusion and on-link networks, read when this build's config
 * has them (they arrive with the backends that honour them); absent, their defaults hold.
 */
type BoundaryConfig = Config & {
  exclude_interfaces?: readonly string[];
  internal_onlink?: boolean;
};

/** What each check proves, for --help and docs/commands.md. */
export const CHECK_HELP: Record<CheckName, string> = {
  "sampler": "counters.json is fresh; a configured service cgroup exists to probe from",
  "loopback-ignored": "TCP over 127.0.0.1 from inside the service does not count",
  "public4-counted": "TCP to a public IPv4 (documentation) address counts, both ways",
  "public6-counted": "TCP to a public IPv6 (2001:db8::/32) address counts, both ways",
  "rfc1918-ignored": "TCP to an RFC 1918 address does not count",
  "cgnat-ignored": "TCP to a CGNAT 100.64.0.0/10 (tailscale) address does not count",
  "ula-ignored": "TCP to an IPv6 ULA (fc00::/7) does not count",
  "onlink6": "TCP to a global IPv6 peer on an on-link network counts unless internal_onlink",
  "vpn-interface": "a public address over an interface named like a VPN counts unless " +
    '"exclude_interfaces" lists it',
  "outsider-ignored": "(--external-url) a download by a process outside every service " +
    "does not count",
  "service-counted": "(--external-url) the same download from inside a service counts, within 10%",
};
/** Seconds of StB's own traffic measured before the probes. */
const BASELINE_S = 2;

export class VerifyError extends Error {
  override name = "VerifyError";
}

export interface VerifyOptions {
  config: Config;
  input: string;
  externalUrl: string | null;
  timeoutS: number;
  print: (line: string) => void;
}

interface CheckResult extends Judgement {
  name: CheckName;
}

function parseTimeout(v: string): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < 1 || n > 3600) {
    throw new InvalidArgumentError("use a number of seconds from 1 to 3600, e.g. 60");
  }
  return n;
}

function parseUrl(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new InvalidArgumentError('use an http(s) URL like "https://example.net/10MB.bin"');
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new InvalidArgumentError(`only http and https URLs can be fetched, not "${u.protocol}"`);
  }
  return u.href;
}

export function verifyCommand() {
  return new Command("verify")
    .summary("prove on this host that the running sampler counts what it should (root)")
    .description(
      "Run the acceptance plan against the running `run`; print PASS/FAIL/SKIP per check " +
        "with what it proved and the figures. Probes run in a temporary child cgroup of the " +
        "first configured service that exists, so the sampler must count them as that " +
        "service. The boundary checks (public4-counted to vpn-interface) run a probe in a " +
        "network namespace of its own, wired to a peer namespace that holds one address of " +
        "each kind (public, RFC 1918, CGNAT, ULA, on-link global IPv6, and one behind an " +
        "interface named like a VPN); nothing reaches this host's own network, routes or " +
        "addresses, and the namespaces go with the probe. They need the ebpf backend: nft " +
        "and iptables rules see only the sampler's own namespace, so with those the " +
        "boundary checks are skipped. With --external-url, a download by a process outside " +
        "every service must not count, and the same download from inside must count by " +
        "about its size. Nothing outside this host is contacted without --external-url. " +
        "Exit status 0 when nothing failed, else 1.",
    )
    .option("-c, --config <path>", "config file `run` uses", DEFAULT_CONFIG_PATH)
    .option("--input <path>", 'counters file (default: config "output")')
    .option(
      "-u, --external-url <url>",
      "http(s) file to download, a few MB or more (StB's own traffic must be small next to it)",
      parseUrl,
    )
    .option("-t, --timeout <seconds>", "longest wait for one probe or sample", parseTimeout, 60)
    .addHelpText(
      "after",
      () =>
        "\nChecks:\n" +
        CHECKS.map((c) => hanging(`  ${c.padEnd(17)} ${CHECK_HELP[c]}`, 20)).join("") +
        "\nExamples:\n" +
        "  sudo stb-netacct verify\n" +
        "  sudo stb-netacct verify --external-url \\\n" +
        "      https://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz\n",
    )
    .action(async (opts, cmd) => {
      let config: Config;
      try {
        config = loadConfig(opts.config, cmd.getOptionValueSource("config") === "cli");
      } catch (e) {
        if (e instanceof ConfigError) throw new UsageError(e.message, { cause: e });
        throw e;
      }
      const results = await runVerify({
        config,
        input: opts.input ?? config.output,
        externalUrl: opts.externalUrl ?? null,
        timeoutS: opts.timeout,
        print: (l) => console.log(l),
      });
      if (results.some((r) => r.verdict === "FAIL")) Deno.exit(1);
    });
}

/** Greedy wrap to the help's width (the terminal's, else 80), continuation lines indented. */
function hanging(line: string, indent: number): string {
  let width = 80;
  try {
    if (Deno.stdout.isTerminal()) width = Deno.consoleSize().columns;
  } catch { /* not a terminal */ }
  const out: string[] = [];
  let cur = "";
  for (const word of line.split(/(?<=\S) (?=\S)/)) {
    if (cur !== "" && cur.length + 1 + word.length > width) {
      out.push(cur);
      cur = " ".repeat(indent) + word.trimStart();
    } else cur = cur === "" ? word : `${cur} ${word}`;
  }
  out.push(cur);
  return out.join("\n") + "\n";
}

/** argv that runs this same program: compiled binary, fallback launcher, or source. */
export function selfArgv(args: string[]): [string, ...string[]] {
  if (Deno.build.standalone) return [Deno.execPath(), ...args];
  const launcher = Deno.env.get("STB_NETACCT_LAUNCHER");
  if (launcher) return [launcher, ...args];
  const main = new URL(Deno.mainModule);
  if (main.protocol !== "file:") {
    throw new VerifyError(`Cannot re-run ${Deno.mainModule} as a probe: run a local copy`);
  }
  return [Deno.execPath(), "run", "-A", "--no-prompt", decodeURIComponent(main.pathname), ...args];
}

/** The probe must reach the URL itself, not through a proxy outside its cgroup. */
function probeEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !/^(https?|all|no)_proxy$/i.test(k)),
  );
}

/** One running probe process, killed (if still alive) by `stop`. */
class Probe {
  #child: Deno.ChildProcess;
  #lines: ReadableStreamDefaultReader<string>;
  #buffer = "";
  #stderr = "";
  #stderrDone: Promise<void>;

  #writer: WritableStreamDefaultWriter<Uint8Array>;

  /** `wrap` goes before the program, e.g. `unshare --net --` for a namespace of its own. */
  constructor(args: string[], wrap: string[] = []) {
    const argv = [...wrap, ...selfArgv(["verify-probe", ...args])] as [string, ...string[]];
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: probeEnv(),
    }).spawn();
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.#stderrDone = (async () => {
      for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr += c;
      }
    })().catch(() => {});
  }

  get pid(): number {
    return this.#child.pid;
  }

  async #line(timeoutS: number, what: string): Promise<string> {
    const deadline = Date.now() + timeoutS * 1000;
    while (!this.#buffer.includes("\n")) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new VerifyError(`the probe did not ${what} within ${timeoutS} s`)),
          Math.max(0, deadline - Date.now()),
        );
      });
      try {
        const { value, done } = await Promise.race([this.#lines.read(), timeout]);
        if (done) {
          await this.#stderrDone;
          throw new VerifyError(
            `the probe exited before it could ${what}` +
              (this.#stderr.trim() ? `: ${this.#stderr.trim().split("\n").pop()}` : ""),
          );
        }
        this.#buffer += value;
      } finally {
        clearTimeout(timer);
      }
    }
    const i = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, i);
    this.#buffer = this.#buffer.slice(i + 1);
    return line;
  }

  /** Waits for the probe's first line; the sink's carries its port. */
  async ready(timeoutS: number): Promise<{ port?: number }> {
    const line = await this.#line(timeoutS, "start");
    if (!line.includes('"ready":true')) {
      throw new VerifyError(`the probe said ${JSON.stringify(line)} instead of ready`);
    }
    return JSON.parse(line) as { port?: number };
  }

  /** Lets the probe send and waits for what it reports. */
  async go(timeoutS: number): Promise<ProbeResult> {
    await this.#writer.write(new TextEncoder().encode("go\n"));
    await this.#writer.close();
    const line = await this.#line(timeoutS, "finish");
    return JSON.parse(line) as ProbeResult;
  }

  /** One request line to a probe that keeps running (`boundary`); its reply. */
  async ask(request: string, timeoutS: number): Promise<ProbeResult> {
    await this.#writer.write(new TextEncoder().encode(request + "\n"));
    const line = await this.#line(timeoutS, "answer");
    return JSON.parse(line) as ProbeResult;
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* exited already */ }
    this.#writer.close().catch(() => {});
    await this.#child.status;
    await this.#stderrDone;
  }
}

/** Temporary child cgroup below a service: made on demand, removed in `remove`. */
class ProbeCgroup {
  readonly dir: string;
  #made = false;

  constructor(mount: Cgroup2Mount, servicePath: string) {
    this.dir = `${cgroupDir(mount, servicePath)}/${PROBE_CGROUP_PREFIX}${Deno.pid}`;
  }

  make(): void {
    try {
      Deno.mkdirSync(this.dir);
    } catch (e) {
      throw new VerifyError(
        `Cannot create the probe cgroup "${this.dir}": ${(e as Error).message}`,
        { cause: e },
      );
    }
    this.#made = true;
  }

  enter(pid: number): void {
    try {
      Deno.writeTextFileSync(`${this.dir}/cgroup.procs`, `${pid}\n`);
    } catch (e) {
      throw new VerifyError(
        `Cannot move the probe into "${this.dir}": ${(e as Error).message}`,
        { cause: e },
      );
    }
  }

  async remove(): Promise<void> {
    if (!this.#made) return;
    // Only our probes are in there; a probe that outlived its stop is killed with it.
    try {
      Deno.writeTextFileSync(`${this.dir}/cgroup.kill`, "1");
    } catch { /* pre-5.14 kernel or already empty */ }
    for (let i = 0;; i++) {
      try {
        Deno.removeSync(this.dir);
        this.#made = false;
        return;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        if (i >= 100) {
          throw new VerifyError(
            `Cannot remove the probe cgroup "${this.dir}": ${(e as Error).message}; ` +
              "remove it with rmdir once its processes are gone",
            { cause: e },
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

/** Cgroup of this process, relative to the cgroup2 mount ("0::/path" in /proc/self/cgroup). */
function ownCgroup(): string | null {
  const line = Deno.readTextFileSync("/proc/self/cgroup").split("\n").find((l) =>
    l.startsWith("0::")
  );
  return line ? line.slice(3) : null;
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function within(path: string, ancestor: string): boolean {
  return path === ancestor || path.startsWith(ancestor + "/");
}

class Stopped extends Error {}

/** Where the probes go: the first configured service whose cgroup exists. */
interface ProbeTarget {
  service: string;
  path: string;
}

/** StB's own traffic before the probes, in bytes per second. */
interface Background {
  total: Bytes;
  service: Bytes;
}

/** What a probe reported, and how the counters moved around it. */
interface Measured {
  result: ProbeResult;
  seconds: number;
  total: Bytes;
  service: Bytes;
}

/** Totals of one sample, exact; only their differences become plain Bytes. */
interface ExactBytes {
  rx: bigint;
  tx: bigint;
}

const totalBytes = (s: CountersV1): ExactBytes => ({
  rx: s.rx_bytes_total,
  tx: s.tx_bytes_total,
});
const diff = (a: ExactBytes, b: ExactBytes): Bytes => ({
  rx: Number(b.rx - a.rx),
  tx: Number(b.tx - a.tx),
});

/** The bytes of `service` in a sample; the totals when the sample does not name it. */
function serviceBytes(s: CountersV1, service: string): ExactBytes {
  const svc = s.services[service];
  return svc ? { rx: svc.rx_bytes_total, tx: svc.tx_bytes_total } : totalBytes(s);
}

/** One run of the plan: its results, the probes and cgroup it made, the stop flag. */
class Verification {
  readonly results: CheckResult[] = [];
  #stopping = false;
  readonly #probes: Probe[] = [];
  #cgroup: ProbeCgroup | null = null;
  readonly #signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  readonly #onSignal = () => {
    this.#stopping = true;
  };

  constructor(readonly opts: VerifyOptions) {}

  async run(): Promise<CheckResult[]> {
    for (const s of this.#signals) Deno.addSignalListener(s, this.#onSignal);
    try {
      const mount = findCgroup2Mount();
      const target = this.#checkSampler(mount);
      if (target === null) return this.results;
      const backend = this.#readSample()?.backend ?? "";
      const background = await this.#background(target);
      this.#sweep(mount);
      this.#cgroup = new ProbeCgroup(mount, target.path);
      this.#cgroup.make();
      await this.#localChecks(target, background);
      await this.#boundaryChecks(target, background, backend);
      await this.#externalChecks(target, background);
      return this.results;
    } catch (e) {
      if (!(e instanceof Stopped)) throw e;
      this.opts.print("verify: interrupted; cleaning up");
      this.results.push({ name: "sampler", verdict: "FAIL", detail: "interrupted" });
      return this.results;
    } finally {
      await this.#cleanup();
    }
  }

  /**
   * Removes the probe cgroups of an earlier verify that was killed (SIGKILL skips cleanup):
   * its probes exit when their stdin closes, which leaves the cgroup empty. One whose verify
   * still runs (its pid in the name is alive) is left alone.
   */
  #sweep(mount: Cgroup2Mount): void {
    for (const path of Object.values(this.opts.config.services)) {
      let entries: Deno.DirEntry[];
      try {
        entries = [...Deno.readDirSync(cgroupDir(mount, path))];
      } catch {
        continue;
      }
      for (const e of entries) {
        const pid = e.name.startsWith(PROBE_CGROUP_PREFIX)
          ? Number(e.name.slice(PROBE_CGROUP_PREFIX.length))
          : NaN;
        if (!e.isDirectory || !Number.isSafeInteger(pid) || pidAlive(pid)) continue;
        const dir = `${cgroupDir(mount, path)}/${e.name}`;
        try {
          Deno.removeSync(dir);
          this.opts.print(`      removed ${dir}, left by a verify that was killed`);
        } catch { /* still has processes: left for the next run */ }
      }
    }
  }

  #report(name: CheckName, verdict: Verdict, detail: string): void {
    this.results.push({ name, verdict, detail });
    this.opts.print(`${verdict.padEnd(5)} ${name.padEnd(17)} ${detail}`);
  }

  #readSample(): CountersV1 | null {
    try {
      return parseCounters(Deno.readTextFileSync(this.opts.input));
    } catch {
      return null;
    }
  }

  /** The first sample written after `sinceUnix` (default now): it includes what came before. */
  async #sampleAfter(sinceUnix = Date.now() / 1000): Promise<CountersV1> {
    const { input, timeoutS } = this.opts;
    const deadline = Date.now() + timeoutS * 1000;
    while (Date.now() < deadline) {
      if (this.#stopping) throw new Stopped();
      const s = this.#readSample();
      if (s && s.ts_unix > sinceUnix) return s;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new VerifyError(
      `No new sample in ${input} for ${timeoutS} s: is \`stb-netacct run\` still running?`,
    );
  }

  /** counters.json is fresh and a service cgroup exists to put probes in; null: it failed. */
  #checkSampler(mount: Cgroup2Mount): ProbeTarget | null {
    const { config, input } = this.opts;
    const first = this.#readSample();
    const services = Object.entries(config.services);
    const target = services.find(([, path]) => {
      try {
        return Deno.statSync(cgroupDir(mount, path)).isDirectory;
      } catch {
        return false;
      }
    });
    if (!first) {
      this.#report(
        "sampler",
        "FAIL",
        `${input} is missing or not a counters file: start the sampler ` +
          "(systemctl start stb-netacct) or pass --input",
      );
      return null;
    }
    const now = Date.now() / 1000;
    const age = now - first.ts_unix;
    if (!isFresh(first, now)) {
      this.#report(
        "sampler",
        "FAIL",
        `${input} was last written ${age.toFixed(0)} s ago: the sampler is not running ` +
          "(systemctl start stb-netacct)",
      );
      return null;
    }
    if (!target) {
      this.#report(
        "sampler",
        "FAIL",
        `none of the configured service cgroups exists (${
          services.map(([n]) => n).join(", ")
        }): start StB, or fix "services" in ${config.source}`,
      );
      return null;
    }
    const [service, path] = target;
    this.#report(
      "sampler",
      "PASS",
      `${input} written ${age.toFixed(1)} s ago by the ${first.backend} backend; probes ` +
        `go to service "${service}" (${path})${this.#knownNote(first, service, path)}`,
    );
    return { service, path };
  }

  /** Whether counters.json counts the probes' service where this config says it is. */
  #knownNote(first: CountersV1, service: string, path: string): string {
    const known = first.services[service];
    if (!known) return `; counters.json has no service "${service}": judged on the totals`;
    if (known.cgroup === path) return "";
    return `; note: counters.json counts "${service}" at "${known.cgroup}", this config says ` +
      `"${path}" (is \`run\` using ${this.opts.config.source}?)`;
  }

  /** StB's own traffic, measured over BASELINE_S, to tell it apart from the probes'. */
  async #background(target: ProbeTarget): Promise<Background> {
    const b0 = await this.#sampleAfter();
    let b1 = await this.#sampleAfter();
    while (b1.ts_unix - b0.ts_unix < BASELINE_S) b1 = await this.#sampleAfter(b1.ts_unix);
    const baseS = b1.ts_unix - b0.ts_unix;
    const rateOf = (f: (s: CountersV1) => ExactBytes): Bytes => {
      const d = diff(f(b0), f(b1));
      return { rx: Math.max(0, d.rx) / baseS, tx: Math.max(0, d.tx) / baseS };
    };
    const total = rateOf(totalBytes);
    const service = rateOf((s) => serviceBytes(s, target.service));
    this.opts.print(
      `      StB's own traffic before the probes: ${formatBytes(total.rx)}/s rx, ` +
        `${formatBytes(total.tx)}/s tx (service ${target.service}: ${
          formatBytes(service.rx)
        }/s rx, ${formatBytes(service.tx)}/s tx)`,
    );
    return { total, service };
  }

  /**
   * Starts a probe, places it (in the probe cgroup, or where verify runs), and returns
   * what it reported with the counters' movement around it.
   */
  async #measure(target: ProbeTarget, inside: boolean, args: string[]): Promise<Measured> {
    const { timeoutS } = this.opts;
    const probe = new Probe(args);
    this.#probes.push(probe);
    await probe.ready(timeoutS);
    if (inside) this.#cgroup?.enter(probe.pid);
    const a = await this.#sampleAfter();
    const result = await probe.go(timeoutS);
    await probe.stop();
    // The second sample after the probe ended was certainly read after its last packet.
    const b = await this.#sampleAfter(await this.#sampleAfter().then((s) => s.ts_unix));
    return {
      result,
      seconds: b.ts_unix - a.ts_unix,
      total: diff(totalBytes(a), totalBytes(b)),
      service: diff(serviceBytes(a, target.service), serviceBytes(b, target.service)),
    };
  }

  /** Loopback and a private address of this host, from inside the service: must not count. */
  async #localChecks(target: ProbeTarget, bg: Background): Promise<void> {
    const local = async (name: CheckName, host: string, label: string) => {
      const bytes = probeSize(bg.total, { windowS: 5, min: MIN_LOCAL_BYTES, max: MAX_LOCAL_BYTES });
      const m = await this.#measure(target, true, [
        "local",
        "--host",
        host,
        "--bytes",
        String(bytes),
      ]);
      if (!m.result.ok) {
        this.#report(name, "FAIL", `the probe could not send over ${label}: ${m.result.error}`);
        return;
      }
      const j = judgeIgnored({
        counted: m.total,
        bg: background(bg.total, m.seconds),
        seconds: m.seconds,
        what: `probe in ${target.service} moved ${formatBytes(bytes)} each way over ${label}`,
      }, bytes);
      this.#report(name, j.verdict, j.detail);
    };
    await local("loopback-ignored", "127.0.0.1", "127.0.0.1");
  }

  /** Why the boundary checks cannot run here, or null when they can. */
  #boundarySkip(backend: string): string | null {
    if (backend !== "ebpf") {
      return `the ${backend} backend's rules see only the sampler's own network namespace, ` +
        "and the boundary probe runs in one of its own so as never to touch this host's " +
        "routes: these checks need the ebpf backend (--external-url checks counting here)";
    }
    const own = ownCgroup();
    const inside = own === null
      ? undefined
      : Object.entries(this.opts.config.services).find(([, path]) => within(own, path))?.[0];
    if (inside !== undefined) {
      return `verify itself runs inside service "${inside}", so would its peer: ` +
        "run it from a login shell";
    }
    return null;
  }

  /**
   * The boundary probe: one TCP exchange per remote class from inside the service, each in
   * its own window of samples, judged against what the config says must (not) count.
   */
  async #boundaryChecks(target: ProbeTarget, bg: Background, backend: string): Promise<void> {
    const skip = this.#boundarySkip(backend);
    const all = (verdict: Verdict, why: string) => {
      const [first, ...rest] = BOUNDARY_CHECKS;
      this.#report(first, verdict, why);
      for (const c of rest) this.#report(c, verdict, `as ${first}: ${why.split(":")[0]}`);
    };
    if (skip !== null) return all("SKIP", skip);
    const config = this.opts.config as BoundaryConfig;
    const { timeoutS } = this.opts;
    let plan: BoundaryPlan, probe: Probe, port: number | undefined;
    try {
      plan = planBoundary({
        host: await readHostView(),
        exclude: config.exclude,
        excludeInterfaces: config.exclude_interfaces ?? [],
        internalOnlink: config.internal_onlink ?? false,
        ipv6: ipv6Enabled(),
      });
      const sink = new Probe(["sink"], ["unshare", "--net", "--"]);
      this.#probes.push(sink);
      ({ port } = await sink.ready(timeoutS));
      probe = new Probe(["boundary"], ["unshare", "--net", "--"]);
      this.#probes.push(probe);
      await probe.ready(timeoutS);
      const { vpnSkipped } = await wireBoundary(plan, { probe: probe.pid, sink: sink.pid });
      if (vpnSkipped !== null) {
        plan = {
          ...plan,
          targets: plan.targets.filter((t) => t.via !== "vpn"),
          skipped: [...plan.skipped, { check: "vpn-interface", reason: vpnSkipped }],
        };
      }
      this.#cgroup?.enter(probe.pid);
    } catch (e) {
      if (e instanceof Stopped) throw e;
      return all(
        "FAIL",
        `the boundary probe could not be set up: ${(e as Error).message} ` +
          "(it needs ip from iproute2, unshare and nsenter from util-linux, and veth)",
      );
    }
    const bytes = probeSize(bg.total, {
      windowS: 5,
      min: MIN_BOUNDARY_BYTES,
      max: MAX_LOCAL_BYTES,
    });
    for (const c of BOUNDARY_CHECKS) {
      const t = plan.targets.find((t) => t.check === c);
      if (!t) {
        const reason = plan.skipped.find((s) => s.check === c)?.reason ?? "not planned";
        this.#report(c, "SKIP", reason);
        continue;
      }
      await this.#boundaryCheck({ target, bg, plan, t, port: port ?? 0, probe, bytes });
    }
  }

  async #boundaryCheck(o: {
    target: ProbeTarget;
    bg: Background;
    plan: BoundaryPlan;
    t: BoundaryTarget;
    port: number;
    probe: Probe;
    bytes: number;
  }): Promise<void> {
    const { target, bg, plan, t, port, probe, bytes } = o;
    const a = await this.#sampleAfter();
    const result = await probe.ask(`send ${t.peerAddress} ${port} ${bytes}`, this.opts.timeoutS);
    const b = await this.#sampleAfter(await this.#sampleAfter().then((s) => s.ts_unix));
    const seconds = b.ts_unix - a.ts_unix;
    const link = t.via === "vpn" ? plan.vpnName : "a veth";
    const what = `probe in ${target.service} exchanged ${formatBytes(bytes)} each way with ` +
      `${t.label} ${t.peerAddress} over ${link}`;
    if (!result.ok) {
      this.#report(t.check, "FAIL", `the probe could not reach ${t.peerAddress}: ${result.error}`);
      return;
    }
    const j = t.expect === "counted"
      ? judgeExchanged({
        counted: diff(serviceBytes(a, target.service), serviceBytes(b, target.service)),
        bg: background(bg.service, seconds),
        seconds,
        what,
      }, bytes)
      : judgeIgnored({
        counted: diff(totalBytes(a), totalBytes(b)),
        bg: background(bg.total, seconds),
        seconds,
        what,
      }, bytes);
    const must = t.expect === "counted" ? "must count" : "must not count";
    const note = j.verdict === "FAIL" && plan.notes[t.check] ? `; ${plan.notes[t.check]}` : "";
    this.#report(t.check, j.verdict, `${must} (${t.reason}): ${j.detail}${note}`);
  }

  /** With --external-url: a download from outside must not count, from inside must. */
  async #externalChecks(target: ProbeTarget, bg: Background): Promise<void> {
    const { externalUrl, timeoutS } = this.opts;
    if (externalUrl === null) {
      for (const name of ["outsider-ignored", "service-counted"] as const) {
        this.#report(
          name,
          "SKIP",
          "needs --external-url (verify contacts nothing outside by default)",
        );
      }
      return;
    }
    const fetchArgs = ["fetch", "--url", externalUrl, "--timeout", String(timeoutS)];
    await this.#outsiderCheck(target, bg, fetchArgs);
    const m = await this.#measure(target, true, fetchArgs);
    if (!m.result.ok) {
      this.#report("service-counted", "FAIL", `cannot fetch ${externalUrl}: ${m.result.error}`);
      return;
    }
    const j = judgeCounted({
      counted: m.service,
      bg: background(bg.service, m.seconds),
      seconds: m.seconds,
      what: `probe in ${target.service} downloaded ${formatBytes(m.result.received)}`,
    }, m.result.received);
    this.#report("service-counted", j.verdict, j.detail);
  }

  async #outsiderCheck(target: ProbeTarget, bg: Background, fetchArgs: string[]): Promise<void> {
    const own = ownCgroup();
    const services = Object.entries(this.opts.config.services);
    const ownService = own === null
      ? undefined
      : services.find(([, path]) => within(own, path))?.[0];
    if (own === null || ownService !== undefined) {
      this.#report(
        "outsider-ignored",
        "SKIP",
        own === null
          ? "cannot tell which cgroup verify runs in"
          : `verify itself runs inside service "${ownService}": run it from a login shell`,
      );
      return;
    }
    const m = await this.#measure(target, false, fetchArgs);
    if (!m.result.ok) {
      this.#report(
        "outsider-ignored",
        "FAIL",
        `cannot fetch ${this.opts.externalUrl}: ${m.result.error}`,
      );
      return;
    }
    const j = judgeIgnored({
      counted: m.total,
      bg: background(bg.total, m.seconds),
      seconds: m.seconds,
      what: `probe outside every service downloaded ${formatBytes(m.result.received)}`,
    }, m.result.received);
    this.#report("outsider-ignored", j.verdict, j.detail);
  }

  /** Probes, then the probe cgroup, then the signal listeners; the tally last. */
  async #cleanup(): Promise<void> {
    for (const p of [...this.#probes].reverse()) await p.stop();
    try {
      await this.#cgroup?.remove();
    } finally {
      for (const s of this.#signals) Deno.removeSignalListener(s, this.#onSignal);
      const failed = this.results.filter((r) => r.verdict === "FAIL").length;
      const skipped = this.results.filter((r) => r.verdict === "SKIP").length;
      this.opts.print(
        `Checks: ${this.results.length - failed - skipped} PASS, ${failed} FAIL, ${skipped} SKIP`,
      );
    }
  }
}

export async function runVerify(opts: VerifyOptions): Promise<CheckResult[]> {
  if (Deno.uid() !== 0) {
    throw new VerifyError(
      "verify moves probe processes into a service cgroup: run it as root (sudo stb-netacct verify)",
    );
  }
  return await new Verification(opts).run();
}
