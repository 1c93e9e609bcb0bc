/**
 * The kernel-6.1 lane: the kernel-facing tests, run inside Debian 12's own kernel 6.1 under
 * qemu. The user's host runs that kernel; this testbed runs 6.18, whose verifier accepts
 * programs 6.1's refuses. scripts/test.sh runs the lane after the host suite and adds its
 * counts to the final "N passed, N failed"; to run it alone (after `make build`):
 *
 *   sh scripts/kernel61.sh [--filter REGEX]        (= deno run -A tests/kernel61/lane.ts)
 *
 * Prints one line per guest test, "kernel-6.1 <name> ... ok|FAILED", with the last lines of
 * a failed test's output and error, then the counts, the kernel and the wall time.
 *
 *   --counts FILE     also write "PASSED FAILED SKIPPED" there (for scripts/test.sh)
 *   --filter REGEX    only the listed tests whose names match (quick local runs)
 *   --command 'SH'    run this shell command in the guest instead and print its output
 *   --keep DIR        copy what the guest wrote (output.log, junit.xml) and its console there
 *
 * Environment: STB_NETACCT_SKIP_KERNEL61=1 skips the lane (quick local runs; CI never sets
 * it), STB_NETACCT_KERNEL61_TIMEOUT_S overrides the guest's hard timeout.
 */

import {
  bootGuest,
  type GuestRun,
  type Kernel61,
  LaneSkip,
  prepareKernel,
  RESULTS_DIR,
} from "./qemu.ts";
import {
  finishedFromPretty,
  formatSeconds,
  type GuestCase,
  parseJunit,
  parseResultLine,
  testOutputs,
} from "./report.ts";

/**
 * What runs in the guest: the one list. Per test file, the names of the tests to run from it
 * (prefixes of the full names). Every prefix must match a test that ran, so a renamed test
 * fails the lane instead of quietly dropping out of it. Chosen to cover what the kernel judges
 * (verifier, cgroup hooks, nftables and iptables matches, ring buffer) and to keep the lane
 * well under 8 minutes: the guest runs programs 30-40x slower than this machine.
 */
export const GUEST_TESTS: { file: string; tests: string[] }[] = [
  // The verifier's verdict on each embedded BPF object.
  { file: "bpf/objects_test.ts", tests: ["bpf object "] },
  // A refusal on this kernel (whose full log is cut short, not rotated) still quotes why.
  { file: "bpf/libbpf_test.ts", tests: ["a refused program"] },
  // The programs' address table and target buckets, packet by packet (BPF_PROG_TEST_RUN).
  {
    file: "backends/ebpf_test.ts",
    tests: [
      "ebpf programs judge addresses as configured",
      "ebpf program finds a target among",
      "ebpf programs skip an excluded interface",
    ],
  },
  // The LPM-trie path (exclusions longer than /16), IPv4, IPv6 and mapped, both directions.
  { file: "bpf/trie_path_test.ts", tests: ["netacct trie path"] },
  // exclude_interfaces and internal_onlink through the real CLI: a late and renamed
  // tailscale0, an on-link route that appears while `run` runs (about 70 s in the guest).
  { file: "tests/exclusions_test.ts", tests: ["exclusions ebpf / v2: "] },
  // What a user's first check says on this kernel.
  { file: "tests/doctor_test.ts", tests: ["doctor --json as root: every backend usable"] },
  // Counting through the real CLI on the user's layout: external counted; internal,
  // loopback and an outsider not; a service's subprocess tree; a late and a recreated
  // service cgroup. Then nothing of ours left behind.
  {
    file: "tests/e2e_test.ts",
    tests: ["e2e ebpf / v2: ", "e2e nft / v2: ", "e2e iptables / v2: ", "e2e leftovers: "],
  },
  // Programs linked at the service cgroups only: an outsider's traffic and connects run
  // none of them; a late and a recreated service cgroup count from their first packet.
  {
    file: "tests/attach_test.ts",
    tests: ["attach ebpf / v2: an outsider", "attach ebpf / v2: a late"],
  },
  // Counting survives the sampler: pinned maps and links adopted after a SIGKILL under
  // traffic (BPF_LINK_UPDATE, bpf_map__reuse_fd on this kernel), totals equal the wire.
  // iptables: chains kept and adopted, `iptables-restore -c` with this kernel's nf_tables.
  { file: "tests/survive_test.ts", tests: ["survive ebpf / v2: ", "survive iptables / v2: "] },
  // Bytes as the wire carries them (ebpf's default GSO correction), on this kernel too.
  { file: "tests/wire_bytes_test.ts", tests: ["wire bytes: "] },
  // Connect events: through the CLI, and the ring buffer's overflow accounting.
  // A connect flood on every CPU: samples keep their cadence, drops are counted.
  {
    file: "tests/events_test.ts",
    tests: ["events: connects and first datagrams", "events: a connect flood on every CPU"],
  },
  { file: "events/collector_test.ts", tests: ["events: a full ring buffer's losses"] },
  // The socket cookie (bpf_get_socket_cookie in cgroup/connect and sendmsg) against SO_COOKIE;
  // events off loads no event program; without CAP_BPF auto counts with nft and says why;
  // without CAP_NET_ADMIN the event programs are unavailable with that reason.
  {
    file: "tests/events_lifecycle_test.ts",
    tests: [
      "events lifecycle: a socket's events share",
      "events lifecycle / v2: events off",
      "events lifecycle / v2: without CAP_BPF",
      "events lifecycle: event programs without CAP_NET_ADMIN",
    ],
  },
  // verify's boundary probe on the user's kernel: its own namespaces, a service's child
  // cgroup; public, RFC 1918, ULA, on-link and VPN-named checks pass, CGNAT (not excluded by
  // that sampler's config) fails by name; nothing left.
  { file: "tests/verify_test.ts", tests: ["verify boundary ebpf / v2: a sampler counting CGNAT"] },
  // Names: DNS answers captured on a service's sockets (also from a stub on loopback) name
  // its destinations and connect events; bad answers change nothing; reverse DNS and -n.
  { file: "tests/names_test.ts", tests: ["names / v2: "] },
  { file: "bpf/dns_capture_test.ts", tests: ["dns capture: "] },
  // The installed service's write access to node-exporter's directory: one POSIX ACL entry,
  // set through a descriptor reached without following symlinks.
  {
    file: "install/acl_test.ts",
    tests: ["textfile access: the group may write", "textfile access: a symlink anywhere"],
  },
];

const LABEL = "kernel-6.1";
const FAILURE_TAIL = 40;
const DEFAULT_TIMEOUT_S = 1200;
const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** deno test's --filter for the listed tests, optionally narrowed by `only`. */
export function guestFilter(tests: typeof GUEST_TESTS): string {
  const names = tests.flatMap((t) => t.tests).map(escapeRegExp);
  return `/^(?:${names.join("|")})/`;
}

function sameFile(c: GuestCase, file: string): boolean {
  return c.file.replace(/^\.\//, "") === file;
}

/** Whether a case is one of `tests` (deno reports the ones --filter left out too). */
export function listed(tests: typeof GUEST_TESTS, c: GuestCase): boolean {
  return tests.some((t) => sameFile(c, t.file) && t.tests.some((p) => c.name.startsWith(p)));
}

/** The listed prefixes no test that ran matches, as "file: prefix". */
export function missingTests(tests: typeof GUEST_TESTS, cases: GuestCase[]): string[] {
  return tests.flatMap((t) =>
    t.tests.filter((prefix) =>
      !cases.some((c) => sameFile(c, t.file) && c.name.startsWith(prefix) && c.status !== "ignored")
    ).map((prefix) => `${t.file}: "${prefix}"`)
  );
}

function tail(lines: string[], n = FAILURE_TAIL): string[] {
  const kept = lines.map((l) => l.replace(/\r$/, "")).filter((l, i, all) =>
    l.trim() !== "" || (i > 0 && all[i - 1]!.trim() !== "") // i - 1 is in range
  );
  return kept.length > n ? [`(last ${n} of ${kept.length} lines)`, ...kept.slice(-n)] : kept;
}

function indent(lines: string[]): string {
  return lines.map((l) => `    ${l}`).join("\n");
}

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

/** Prints the per-test lines and returns the counts. */
export function report(run: GuestRun, tests: typeof GUEST_TESTS, log = console.log): Counts {
  const counts = { passed: 0, failed: 0, skipped: 0 };
  const junit = run.files["junit.xml"];
  const outputs = testOutputs(run.output);
  const fromPretty = finishedFromPretty(run.output);
  // Deno lists the tests --filter left out as skipped: only the listed ones are reported.
  const cases = (junit ? parseJunit(junit) : fromPretty.cases).filter((c) => listed(tests, c));
  for (const c of cases) {
    log(`${LABEL} ${c.name} ... ${c.status} (${formatSeconds(c.seconds)})`);
    if (c.status === "ok") counts.passed++;
    if (c.status !== "FAILED") continue;
    counts.failed++;
    const printed = outputs.get(c.name) ?? [];
    const error = c.failure ? c.failure.split("\n") : ["(no error text: the run was cut off)"];
    log(indent(tail([...printed, ...(printed.length ? ["--- error ---"] : []), ...error])));
  }
  const broken = brokenRun(run, Boolean(junit), cases, fromPretty.unfinished);
  if (broken) {
    counts.failed++;
    log(`${LABEL} guest run ... FAILED`);
    log(indent([broken.why, ...tail(broken.lines)]));
  } else {
    for (const missing of missingTests(tests, cases)) {
      counts.failed++;
      log(`${LABEL} ${missing} ... FAILED`);
      log(indent([
        "no test by that name ran in the guest: renamed or removed? Update GUEST_TESTS in " +
        "tests/kernel61/lane.ts",
      ]));
    }
  }
  return counts;
}

/** Why the guest's test run cannot be trusted as complete, with the lines that show it. */
function brokenRun(
  run: GuestRun,
  haveJunit: boolean,
  cases: GuestCase[],
  unfinished: string,
): { why: string; lines: string[] } | null {
  const output = run.output.split("\n");
  if (run.timedOut) {
    return {
      why: `hard timeout after ${formatSeconds(run.wallMs / 1000)}, qemu killed` +
        (unfinished ? `; "${unfinished}" was running` : ""),
      lines: output,
    };
  }
  if (run.exitCode === null) {
    return {
      why: "the guest stopped before the command finished (console, then qemu's stderr):",
      lines: [...run.console.split("\n"), ...run.qemuStderr.split("\n")],
    };
  }
  if (!haveJunit) {
    return { why: `deno test exited ${run.exitCode} without a JUnit report:`, lines: output };
  }
  if (run.exitCode !== 0 && !cases.some((c) => c.status === "FAILED")) {
    return { why: `deno test exited ${run.exitCode} with no failed test:`, lines: output };
  }
  return null;
}

function parseArgs(args: string[]) {
  const opts = { counts: "", filter: "", command: "", keep: "" };
  for (let i = 0; i < args.length; i++) {
    const [flag, value] = [args[i], args[i + 1]];
    if (flag === "--counts" && value !== undefined) opts.counts = value;
    else if (flag === "--filter" && value !== undefined) opts.filter = value;
    else if (flag === "--command" && value !== undefined) opts.command = value;
    else if (flag === "--keep" && value !== undefined) opts.keep = value;
    else {
      console.error(`${LABEL}: unknown argument ${flag}; see the header of tests/kernel61/lane.ts`);
      Deno.exit(2);
    }
    i++;
  }
  return opts;
}

/** The reason the lane cannot run here at all, or null. */
function skipReason(): string | null {
  if (Deno.env.get("STB_NETACCT_SKIP_KERNEL61") === "1") {
    return "STB_NETACCT_SKIP_KERNEL61=1 is set";
  }
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `the lane boots Debian's amd64 kernel; this is ${Deno.build.os}/${Deno.build.arch}`;
  }
  const path = (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":");
  if (!path.some((d) => isExecutable(`${d}/qemu-system-x86_64`))) {
    return "qemu-system-x86_64 is missing (`make deps` installs qemu-system-x86; it could not)";
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    return (Deno.statSync(p).mode! & 0o111) !== 0;
  } catch {
    return false;
  }
}

function writeCounts(path: string, c: Counts): void {
  if (path) Deno.writeTextFileSync(path, `${c.passed} ${c.failed} ${c.skipped}\n`);
}

async function main(): Promise<number> {
  const opts = parseArgs(Deno.args);
  const started = performance.now();
  const elapsed = () => formatSeconds((performance.now() - started) / 1000);
  const say = (line: string) => console.log(`${LABEL}: ${line}`);
  const skip = (why: string) => {
    console.log(`${LABEL} lane ... SKIPPED: ${why}`);
    writeCounts(opts.counts, { passed: 0, failed: 0, skipped: 1 });
    return 0;
  };
  const fail = (why: string) => {
    console.log(`${LABEL} lane ... FAILED: ${why}`);
    writeCounts(opts.counts, { passed: 0, failed: 1, skipped: 0 });
    return 1;
  };

  const reason = skipReason();
  if (reason) return skip(reason);
  if (Deno.uid() !== 0) return fail("run it as root (apt-get download, the cache in /var/cache)");
  const bin = Deno.env.get("STB_NETACCT_BIN") ?? `${REPO}/stb-netacct`;
  if (!opts.command && !isExecutable(bin)) return fail(`${bin} is missing: run \`make build\``);
  const tests = opts.filter
    ? GUEST_TESTS.map((t) => ({
      ...t,
      tests: t.tests.filter((n) => new RegExp(opts.filter).test(n)),
    })).filter((t) => t.tests.length > 0)
    : GUEST_TESTS;
  if (tests.length === 0) return fail(`--filter ${opts.filter} matches none of GUEST_TESTS`);

  const abort = new AbortController();
  const onSignal = () => abort.abort();
  for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, onSignal);

  let kernel: Kernel61;
  try {
    kernel = await prepareKernel((line) => say(line));
  } catch (e) {
    if (e instanceof LaneSkip) return skip(e.message);
    return fail(`preparing the kernel: ${e instanceof Error ? e.message : e}`);
  }
  if (abort.signal.aborted) return 130;
  say(
    `Debian 12 kernel ${kernel.kver} (${kernel.package} ${kernel.version}) ready after ` +
      `${elapsed()} (${kernel.built ? "downloaded and built" : "from the cache"}); booting ` +
      `${kernel.pvh ? "its vmlinux (PVH)" : "its bzImage"} under qemu TCG`,
  );

  const deno = Deno.execPath();
  const command = opts.command ? ["/bin/sh", "-c", opts.command] : [
    deno,
    "test",
    "--allow-all",
    "--no-prompt",
    "--no-check",
    `--junit-path=${RESULTS_DIR}/junit.xml`,
    "--filter",
    guestFilter(tests),
    ...tests.map((t) => t.file),
  ];
  const timeoutS = Number(Deno.env.get("STB_NETACCT_KERNEL61_TIMEOUT_S") ?? DEFAULT_TIMEOUT_S);
  const run = await bootGuest(kernel, {
    command,
    cwd: REPO,
    env: { STB_NETACCT_SLOW: "1", STB_NETACCT_BIN: bin },
    timeoutMs: timeoutS * 1000,
    signal: abort.signal,
    // Progress: each test as it ends (the per-test report follows at the end).
    onLine: (line) => {
      if (opts.command) console.log(line);
      else if (parseResultLine(line) || /^running \d+ tests? from /.test(line)) {
        say(`[${elapsed()}] ${line}`);
      }
    },
  });
  if (abort.signal.aborted) {
    say("interrupted; qemu stopped and its files removed");
    return 130;
  }
  if (opts.keep) {
    await Deno.mkdir(opts.keep, { recursive: true });
    const files = { ...run.files, "output.log": run.output, "console.log": run.console };
    for (const [name, text] of Object.entries(files)) {
      await Deno.writeTextFile(`${opts.keep}/${name}`, text);
    }
  }
  const guest = formatSeconds(run.wallMs / 1000);
  if (opts.command) {
    if (run.exitCode === null) console.log(run.console + run.qemuStderr);
    say(`exit ${run.exitCode ?? "none"}, guest ${guest}${run.timedOut ? " (timed out)" : ""}`);
    return run.exitCode ?? 1;
  }
  const counts = report(run, tests);
  writeCounts(opts.counts, counts);
  say(
    `${counts.passed} passed, ${counts.failed} failed in Debian 12's kernel ${kernel.kver} ` +
      `(${kernel.version}); wall ${elapsed()}, of which qemu ${guest}`,
  );
  return counts.failed === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
