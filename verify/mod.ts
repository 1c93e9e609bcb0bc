/**
 * `stb-netacct verify`: the acceptance plan, run on the user's own host against the
 * running sampler. Probe processes (the CLI's hidden `verify-probe`) are placed in a child
 * cgroup below a configured service, so the sampler must treat them as that service, and
 * the counters in counters.json are watched while they send:
 *
 *   sampler           counters.json is fresh and the probe's service is known to it
 *   loopback-ignored  TCP over 127.0.0.1 from inside the service: must not count
 *   private-ignored   TCP to a private (excluded) address of this host: must not count
 *   outsider-ignored  a download by a process outside every service: must not count
 *   service-counted   the same download from inside the service: must count, ±10%
 *
 * The last two contact --external-url and run only when it is given. Every cgroup and
 * process verify makes is removed in `finally`; signals only set a flag.
 */

import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { type Cgroup2Mount, cgroupDir, findCgroup2Mount } from "../lib/cgroup.ts";
import { formatAddress, isExcluded, parseIpv4, parseIpv6 } from "../lib/cidr.ts";
import { type Config, ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from "../lib/config.ts";
import { type CountersV1, isFresh, parseCounters } from "../lib/contract.ts";
import { UsageError } from "../lib/errors.ts";
import { formatBytes } from "../lib/units.ts";
import {
  background,
  type Bytes,
  judgeCounted,
  judgeIgnored,
  type Judgement,
  probeSize,
  type Verdict,
} from "./judge.ts";
import type { ProbeResult } from "./probe.ts";

export { verifyProbeCommand } from "./probe.ts";

export const CHECKS = [
  "sampler",
  "loopback-ignored",
  "private-ignored",
  "outsider-ignored",
  "service-counted",
] as const;
export type CheckName = typeof CHECKS[number];

/** Name of the child cgroup verify makes below the service; `pid` keeps runs apart. */
export const PROBE_CGROUP_PREFIX = "stb-netacct-verify-";

const MIN_LOCAL_BYTES = 16 * 1024 * 1024;
const MAX_LOCAL_BYTES = 1024 * 1024 * 1024;
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
      "Run the acceptance plan against the running `run`; print PASS/FAIL per check\n" +
        "with figures. Probes run in a temporary child cgroup of the first configured\n" +
        "service that exists, so the sampler must count them as that service: their\n" +
        "loopback and private-address traffic must not count. With --external-url, a\n" +
        "download by a process outside every service must not count, and the same\n" +
        "download from inside must count by about its size. Nothing outside this host\n" +
        "is contacted without --external-url. Exit status 0 when nothing failed, else 1.",
    )
    .option("-c, --config <path>", "config file `run` uses", DEFAULT_CONFIG_PATH)
    .option("-i, --input <path>", 'counters file (default: config "output")')
    .option(
      "-u, --external-url <url>",
      "http(s) file to download, a few MB or more (StB's own traffic must be small next to it)",
      parseUrl,
    )
    .option("-t, --timeout <seconds>", "longest wait for one probe or sample", parseTimeout, 60)
    .addHelpText(
      "after",
      "\nChecks: " + CHECKS.join(", ") + "\n" +
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

/** argv that runs this same program: compiled binary, fallback launcher, or source. */
export function selfArgv(args: string[]): string[] {
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

  constructor(args: string[]) {
    const argv = selfArgv(["verify-probe", ...args]);
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: probeEnv(),
    }).spawn();
    this.#child = child;
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

  async ready(timeoutS: number): Promise<void> {
    const line = await this.#line(timeoutS, "start");
    if (!line.includes('"ready":true')) {
      throw new VerifyError(`the probe said ${JSON.stringify(line)} instead of ready`);
    }
  }

  /** Lets the probe send and waits for what it reports. */
  async go(timeoutS: number): Promise<ProbeResult> {
    const w = this.#child.stdin.getWriter();
    await w.write(new TextEncoder().encode("go\n"));
    await w.close();
    const line = await this.#line(timeoutS, "finish");
    return JSON.parse(line) as ProbeResult;
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* exited already */ }
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

function within(path: string, ancestor: string): boolean {
  return path === ancestor || path.startsWith(ancestor + "/");
}

/** A local address of this host that the exclusions cover (not loopback, not link-local). */
export function privateLocalAddress(
  addresses: string[],
  exclude: Config["exclude"],
): string | null {
  const candidates = addresses.flatMap((a) => {
    const bytes = a.includes(":") ? parseIpv6(a.split("%")[0]) : parseIpv4(a);
    if (!bytes) return [];
    const v4 = bytes.length === 4;
    if (v4 && bytes[0] === 127) return [];
    if (!v4 && (bytes.every((b, i) => b === (i === 15 ? 1 : 0)) || bytes[0] === 0xfe)) return [];
    return isExcluded(bytes, exclude) ? [{ text: formatAddress(bytes), v4 }] : [];
  });
  // IPv4 first: the most common private range on a desktop.
  return (candidates.find((c) => c.v4) ?? candidates[0])?.text ?? null;
}

class Stopped extends Error {}

export async function runVerify(opts: VerifyOptions): Promise<CheckResult[]> {
  if (Deno.uid() !== 0) {
    throw new VerifyError(
      "verify moves probe processes into a service cgroup: run it as root (sudo stb-netacct verify)",
    );
  }
  const { config, print, timeoutS } = opts;
  const results: CheckResult[] = [];
  const report = (name: CheckName, verdict: Verdict, detail: string) => {
    results.push({ name, verdict, detail });
    print(`${verdict.padEnd(5)} ${name.padEnd(17)} ${detail}`);
  };

  let stopping = false;
  const onSignal = () => {
    stopping = true;
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const probes: Probe[] = [];
  let cgroup: ProbeCgroup | null = null;

  const readSample = (): CountersV1 | null => {
    try {
      return parseCounters(Deno.readTextFileSync(opts.input));
    } catch {
      return null;
    }
  };
  /** The first sample written after `sinceUnix` (default now): it includes what came before. */
  const sampleAfter = async (sinceUnix = Date.now() / 1000): Promise<CountersV1> => {
    const deadline = Date.now() + timeoutS * 1000;
    while (Date.now() < deadline) {
      if (stopping) throw new Stopped();
      const s = readSample();
      if (s && s.ts_unix > sinceUnix) return s;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new VerifyError(
      `No new sample in ${opts.input} for ${timeoutS} s: is \`stb-netacct run\` still running?`,
    );
  };

  try {
    const mount = findCgroup2Mount();
    const first = readSample();
    const services = Object.entries(config.services);
    const target = services.find(([, path]) => {
      try {
        return Deno.statSync(cgroupDir(mount, path)).isDirectory;
      } catch {
        return false;
      }
    });

    // sampler
    if (!first) {
      report(
        "sampler",
        "FAIL",
        `${opts.input} is missing or not a counters file: start the sampler ` +
          "(systemctl start stb-netacct) or pass --input",
      );
      return results;
    }
    const now = Date.now() / 1000;
    const age = now - first.ts_unix;
    if (!isFresh(first, now)) {
      report(
        "sampler",
        "FAIL",
        `${opts.input} was last written ${age.toFixed(0)} s ago: the sampler is not running ` +
          "(systemctl start stb-netacct)",
      );
      return results;
    }
    if (!target) {
      report(
        "sampler",
        "FAIL",
        `none of the configured service cgroups exists (${
          services.map(([n]) => n).join(", ")
        }): start StB, or fix "services" in ${config.source}`,
      );
      return results;
    }
    const [service, servicePath] = target;
    const known = first.services[service];
    let note = "";
    if (!known) note = `; counters.json has no service "${service}": judged on the totals`;
    else if (known.cgroup !== servicePath) {
      note = `; note: counters.json counts "${service}" at "${known.cgroup}", this config says ` +
        `"${servicePath}" (is \`run\` using ${config.source}?)`;
    }
    report(
      "sampler",
      "PASS",
      `${opts.input} written ${age.toFixed(1)} s ago by the ${first.backend} backend; probes ` +
        `go to service "${service}" (${servicePath})${note}`,
    );

    const serviceBytes = (s: CountersV1): Bytes =>
      s.services[service]
        ? { rx: s.services[service].rx_bytes_total, tx: s.services[service].tx_bytes_total }
        : { rx: s.rx_bytes_total, tx: s.tx_bytes_total };
    const totalBytes = (s: CountersV1): Bytes => ({ rx: s.rx_bytes_total, tx: s.tx_bytes_total });
    const diff = (a: Bytes, b: Bytes): Bytes => ({ rx: b.rx - a.rx, tx: b.tx - a.tx });

    // StB's own traffic, to tell it apart from the probes'.
    const b0 = await sampleAfter();
    let b1 = await sampleAfter();
    while (b1.ts_unix - b0.ts_unix < BASELINE_S) b1 = await sampleAfter(b1.ts_unix);
    const baseS = b1.ts_unix - b0.ts_unix;
    const rateOf = (f: (s: CountersV1) => Bytes): Bytes => {
      const d = diff(f(b0), f(b1));
      return { rx: Math.max(0, d.rx) / baseS, tx: Math.max(0, d.tx) / baseS };
    };
    const totalRate = rateOf(totalBytes);
    const serviceRate = rateOf(serviceBytes);
    print(
      `      StB's own traffic before the probes: ${formatBytes(totalRate.rx)}/s rx, ` +
        `${formatBytes(totalRate.tx)}/s tx (service ${service}: ${
          formatBytes(serviceRate.rx)
        }/s rx, ${formatBytes(serviceRate.tx)}/s tx)`,
    );

    cgroup = new ProbeCgroup(mount, servicePath);
    cgroup.make();

    /**
     * Starts a probe, places it (in the probe cgroup, or where verify runs), and returns
     * what it reported with the counters' movement around it.
     */
    const measure = async (inside: boolean, args: string[]) => {
      const probe = new Probe(args);
      probes.push(probe);
      await probe.ready(timeoutS);
      if (inside) cgroup!.enter(probe.pid);
      const a = await sampleAfter();
      const result = await probe.go(timeoutS);
      await probe.stop();
      // The second sample after the probe ended was certainly read after its last packet.
      const b = await sampleAfter(await sampleAfter().then((s) => s.ts_unix));
      const seconds = b.ts_unix - a.ts_unix;
      return {
        result,
        seconds,
        total: diff(totalBytes(a), totalBytes(b)),
        service: diff(serviceBytes(a), serviceBytes(b)),
      };
    };

    const localCheck = async (name: CheckName, host: string, label: string) => {
      const bytes = probeSize(totalRate, 5, MIN_LOCAL_BYTES, MAX_LOCAL_BYTES);
      const m = await measure(true, ["local", "--host", host, "--bytes", String(bytes)]);
      if (!m.result.ok) {
        report(name, "FAIL", `the probe could not send over ${label}: ${m.result.error}`);
        return;
      }
      const j = judgeIgnored(
        m.total,
        background(totalRate, m.seconds),
        m.seconds,
        bytes,
        `probe in ${service} moved ${formatBytes(bytes)} each way over ${label}`,
      );
      report(name, j.verdict, j.detail);
    };

    await localCheck("loopback-ignored", "127.0.0.1", "127.0.0.1");
    let addresses: string[] = [];
    try {
      addresses = Deno.networkInterfaces().map((i) => i.address);
    } catch { /* judged as "no address" below */ }
    const priv = privateLocalAddress(addresses, config.exclude);
    if (priv === null) {
      report(
        "private-ignored",
        "SKIP",
        "this host has no address in the excluded (private) ranges to send to",
      );
    } else {
      await localCheck("private-ignored", priv, `private address ${priv}`);
    }

    if (opts.externalUrl === null) {
      for (const name of ["outsider-ignored", "service-counted"] as const) {
        report(name, "SKIP", "needs --external-url (verify contacts nothing outside by default)");
      }
      return results;
    }
    const fetchArgs = ["fetch", "--url", opts.externalUrl, "--timeout", String(timeoutS)];

    const own = ownCgroup();
    const ownService = own === null
      ? undefined
      : services.find(([, path]) => within(own, path))?.[0];
    if (own === null || ownService !== undefined) {
      report(
        "outsider-ignored",
        "SKIP",
        own === null
          ? "cannot tell which cgroup verify runs in"
          : `verify itself runs inside service "${ownService}": run it from a login shell`,
      );
    } else {
      const m = await measure(false, fetchArgs);
      if (!m.result.ok) {
        report("outsider-ignored", "FAIL", `cannot fetch ${opts.externalUrl}: ${m.result.error}`);
      } else {
        const j = judgeIgnored(
          m.total,
          background(totalRate, m.seconds),
          m.seconds,
          m.result.received,
          `probe outside every service downloaded ${formatBytes(m.result.received)}`,
        );
        report("outsider-ignored", j.verdict, j.detail);
      }
    }

    const m = await measure(true, fetchArgs);
    if (!m.result.ok) {
      report("service-counted", "FAIL", `cannot fetch ${opts.externalUrl}: ${m.result.error}`);
    } else {
      const j = judgeCounted(
        m.service,
        background(serviceRate, m.seconds),
        m.seconds,
        m.result.received,
        `probe in ${service} downloaded ${formatBytes(m.result.received)}`,
      );
      report("service-counted", j.verdict, j.detail);
    }
    return results;
  } catch (e) {
    if (!(e instanceof Stopped)) throw e;
    print("verify: interrupted; cleaning up");
    results.push({ name: "sampler", verdict: "FAIL", detail: "interrupted" });
    return results;
  } finally {
    for (const p of probes) await p.stop();
    try {
      await cgroup?.remove();
    } finally {
      for (const s of signals) Deno.removeSignalListener(s, onSignal);
      const failed = results.filter((r) => r.verdict === "FAIL").length;
      const skipped = results.filter((r) => r.verdict === "SKIP").length;
      print(
        `Checks: ${results.length - failed - skipped} PASS, ${failed} FAIL, ${skipped} SKIP`,
      );
    }
  }
}
