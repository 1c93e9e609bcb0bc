/**
 * The lane's report from a guest run, without booting one: the captured run in testdata/
 * (see report_test.ts) as it ended, cut off by the timeout, and dead before its command.
 */

import { assert, assertEquals, assertStringIncludes, present } from "../../lib/test_assert.ts";
import { GUEST_TESTS, guestFilter, listed, missingTests, report } from "./lane.ts";
import type { GuestRun } from "./qemu.ts";

const data = (name: string) =>
  Deno.readTextFileSync(new URL(`./testdata/${name}`, import.meta.url));

/** The tests the captured run ran (lane.ts --filter "bpf object|doctor --json|e2e leftovers"). */
const CAPTURED = GUEST_TESTS.map((t) => ({
  ...t,
  tests: t.tests.filter((n) => /bpf object|doctor --json|e2e leftovers/.test(n)),
})).filter((t) => t.tests.length > 0);

function guestRun(more: Partial<GuestRun> = {}): GuestRun {
  return {
    exitCode: 1,
    timedOut: false,
    output: data("guest_output.log"),
    console: "k61-init: running the job on 6.1.0-57-amd64\n",
    files: { "junit.xml": data("guest_junit.xml") },
    qemuStderr: "",
    wallMs: 48_400,
    ...more,
  };
}

/** A list with tests the captured run did not run: the e2e and connect events cases. */
const WITH_UNRUN = [
  ...CAPTURED,
  {
    file: "tests/e2e_test.ts",
    tests: ["e2e ebpf / v2: ", "e2e nft / v2: ", "e2e iptables / v2: "],
  },
  { file: "tests/events_test.ts", tests: ["events: connects and first datagrams"] },
  { file: "events/collector_test.ts", tests: ["events: a full ring buffer's losses"] },
];

function reported(run: GuestRun, tests = CAPTURED) {
  const lines: string[] = [];
  const counts = report(run, tests, (l) => lines.push(...l.split("\n")));
  return { counts, lines };
}

Deno.test("report: one line per listed guest test, a failure's output and error below it", () => {
  const { counts, lines } = reported(guestRun());
  assertEquals(counts, { passed: 2, failed: 3, skipped: 0 });
  const results = lines.filter((l) => l.startsWith("kernel-6.1 "));
  assertEquals(
    results.map((l) => /^kernel-6\.1 (.{20}).* \.\.\. (ok|FAILED) \(/.exec(l)?.slice(1)),
    [
      ["doctor --json as roo", "FAILED"],
      ["e2e leftovers: no ne", "ok"],
      ["bpf object netacct.b", "FAILED"],
      ["bpf object events.bp", "FAILED"],
      ["bpf object calibrate", "ok"],
    ],
  );
  // What --filter left out is not reported at all.
  assert(!lines.some((l) => l.includes("doctor names an invalid config")), lines.join("\n"));
  const netacct = lines.indexOf(present(results[2], "netacct's line"));
  const below = lines.slice(netacct + 1, lines.indexOf(present(results[3], "events' line")));
  assertEquals(below[0], "    (last 40 of 44 lines)");
  assertEquals(below.length, 41);
  assert(below.every((l) => l.startsWith("    ")), below.join("\n"));
  assertStringIncludes(below.join("\n"), "libbpf: prog 'netacct_ingress': failed to load: -22");
  assertStringIncludes(below.join("\n"), "--- error ---");
  assertStringIncludes(below.join("\n"), "LibbpfError: Loading bpf/netacct.bpf.o");
});

Deno.test("report: a listed test that did not run is a failure naming the list to update", () => {
  const { counts, lines } = reported(guestRun(), WITH_UNRUN);
  assertEquals(counts.passed, 2);
  const missing = lines.filter((l) => l.startsWith("kernel-6.1 ") && l.includes(': "'));
  assertEquals(missing, [
    'kernel-6.1 tests/e2e_test.ts: "e2e ebpf / v2: " ... FAILED',
    'kernel-6.1 tests/e2e_test.ts: "e2e nft / v2: " ... FAILED',
    'kernel-6.1 tests/e2e_test.ts: "e2e iptables / v2: " ... FAILED',
    'kernel-6.1 tests/events_test.ts: "events: connects and first datagrams" ... FAILED',
    `kernel-6.1 events/collector_test.ts: "events: a full ring buffer's losses" ... FAILED`,
  ]);
  assertEquals(counts.failed, 3 + missing.length);
  assertStringIncludes(lines.join("\n"), "Update GUEST_TESTS in tests/kernel61/lane.ts");
});

Deno.test("report: a run cut off by the timeout reports what finished and fails the run", () => {
  const log = data("guest_output.log");
  const output = log.slice(0, log.indexOf("bpf object events.bpf.o") + 200);
  const { counts, lines } = reported(
    guestRun({ timedOut: true, exitCode: null, output, files: {} }),
  );
  assertEquals(counts, { passed: 1, failed: 3, skipped: 0 });
  const run = lines.indexOf("kernel-6.1 guest run ... FAILED");
  assert(run > 0, lines.join("\n"));
  const why = present(lines[run + 1], "the line after the run's");
  assertStringIncludes(why, "hard timeout after 48.4s, qemu killed");
  assertStringIncludes(why, '"bpf object events.bpf.o (as embedded) loads');
});

Deno.test("report: a guest that died before its command shows the console", () => {
  const { counts, lines } = reported(guestRun({
    exitCode: null,
    output: "",
    files: {},
    console: "k61-init: FAILED: mount the host's / over 9p (mount_tag hostroot)\n",
  }));
  assertEquals(counts, { passed: 0, failed: 1, skipped: 0 });
  assertStringIncludes(lines.join("\n"), "the guest stopped before the command finished");
  assertStringIncludes(lines.join("\n"), "k61-init: FAILED: mount the host's /");
});

Deno.test("report: deno failing without a JUnit report or without a failed test is a failure", () => {
  const noJunit = reported(guestRun({ files: {}, output: "error: Module not found\n" }));
  assertEquals(noJunit.counts.failed, 1);
  assertStringIncludes(noJunit.lines.join("\n"), "exited 1 without a JUnit report");
  assertStringIncludes(noJunit.lines.join("\n"), "error: Module not found");
  const passing = data("guest_junit.xml").replace(/<failure[\s\S]*?<\/failure>/g, "");
  const odd = reported(guestRun({ files: { "junit.xml": passing } }));
  assertEquals(odd.counts, { passed: 5, failed: 1, skipped: 0 });
  assertStringIncludes(odd.lines.join("\n"), "exited 1 with no failed test");
});

Deno.test("guestFilter matches exactly the listed tests, '/' and quotes included", () => {
  const filter = guestFilter(GUEST_TESTS);
  assert(filter.startsWith("/^") && filter.endsWith("/"), filter);
  const re = new RegExp(filter.slice(1, -1));
  assert(re.test("e2e nft / v2: per-service external totals, internal ignored"));
  assert(re.test("events: a full ring buffer's losses are counted"));
  assert(!re.test("e2e nft / hybrid: per-service external totals"));
  assert(!re.test("doctor as root: every backend usable, host unchanged"));
  const c = { name: "e2e nft / v2: x", file: "./tests/e2e_test.ts", status: "ok" as const };
  assert(listed(GUEST_TESTS, { ...c, seconds: 0, failure: "" }));
  assert(!listed(GUEST_TESTS, { ...c, file: "./backends/nft_test.ts", seconds: 0, failure: "" }));
  assertEquals(missingTests(GUEST_TESTS, []).length, GUEST_TESTS.flatMap((t) => t.tests).length);
});

Deno.test("GUEST_TESTS names files that exist", () => {
  for (const t of GUEST_TESTS) {
    assert(Deno.statSync(new URL(`../../${t.file}`, import.meta.url)).isFile, t.file);
  }
});
