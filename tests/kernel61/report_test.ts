/**
 * The report parsers against captured output: testdata/guest_junit.xml and guest_output.log
 * are what `deno test` wrote inside the kernel-6.1 guest (lane.ts --keep, run with --filter
 * "bpf object|doctor --json|e2e leftovers"); steps_junit.xml is deno's JUnit for a test file
 * with a passing test, a failing one, an ignored one and one with a failed step.
 */

import { assert, assertEquals, assertStringIncludes, present } from "../../lib/test_assert.ts";
import {
  finishedFromPretty,
  formatSeconds,
  parseJunit,
  parseResultLine,
  testOutputs,
} from "./report.ts";

const data = (name: string) =>
  Deno.readTextFileSync(new URL(`./testdata/${name}`, import.meta.url));
const NETACCT = "bpf object netacct.bpf.o (as embedded) loads: the kernel's verifier accepts " +
  "its programs";

Deno.test("parseJunit reads the guest's report: names unescaped, status, file, time, error", () => {
  const cases = parseJunit(data("guest_junit.xml"));
  assertEquals(cases.length, 20);
  const byName = new Map(cases.map((c) => [c.name, c]));
  const netacct = byName.get(NETACCT)!;
  assertEquals([netacct.status, netacct.file], ["FAILED", "./bpf/objects_test.ts"]);
  assert(Math.abs(netacct.seconds - 0.783) < 0.01, `time ${netacct.seconds}`);
  assertStringIncludes(netacct.failure, "LibbpfError: Loading bpf/netacct.bpf.o");
  assertStringIncludes(netacct.failure, "prog 'netacct_ingress': BPF program load failed");
  assertStringIncludes(netacct.failure, "cfg->first[b]; j < end && j < NETACCT_MAX_TARGETS");
  const leftovers = cases.find((c) => c.name.startsWith("e2e leftovers"))!;
  assertEquals([leftovers.status, leftovers.failure], ["ok", ""]);
  // What --filter left out, deno reports as skipped.
  assertEquals(byName.get("doctor names an invalid config and fails")!.status, "ignored");
  assertEquals(
    cases.map((c) => c.status).join(","),
    "ignored,FAILED,ignored,ignored,ignored,ignored," + "ignored,".repeat(10) +
      "ok,FAILED,FAILED,ok",
  );
});

Deno.test("parseJunit folds steps into their test and keeps their failures", () => {
  const cases = parseJunit(data("steps_junit.xml"));
  assertEquals(cases.map((c) => [c.name, c.status]), [
    ["passes & <ok>", "ok"],
    ['fails "quoted"', "FAILED"],
    ["ignored one", "ignored"],
    ["with steps", "FAILED"],
  ]);
  assertStringIncludes(present(cases[1], "case 1").failure, "boom: verifier said\nline two <x>");
  assertStringIncludes(
    present(cases[3], "case 3").failure,
    "1 test step failed.\nstep b: Error: step fail",
  );
});

Deno.test("testOutputs: what each test printed, also after its code ran (post-test)", () => {
  const outputs = testOutputs(data("guest_output.log"));
  const netacct = outputs.get(NETACCT)!;
  assertEquals(netacct[0], "libbpf's log (last 30 of 60 lines):");
  assertEquals(netacct.at(-1), "  libbpf: failed to load object 'netacct'");
  assertEquals(netacct.length, 31);
  assertEquals(outputs.has("e2e leftovers"), false);
  const plain = testOutputs(
    "a ...\n------- output -------\nx\ny\n----- output end -----\na ... ok (1s)",
  );
  assertEquals([...plain], [["a", ["x", "y"]]]);
});

Deno.test("finishedFromPretty: the tests a cut-off run finished, and the one it was in", () => {
  const log = data("guest_output.log");
  const cut = log.slice(0, log.indexOf("bpf object events.bpf.o") + 200);
  const { cases, unfinished } = finishedFromPretty(cut);
  assertEquals(cases.map((c) => [c.file, c.status]), [
    ["./tests/doctor_test.ts", "FAILED"],
    ["./tests/e2e_test.ts", "ok"],
    ["./bpf/objects_test.ts", "FAILED"],
  ]);
  assertEquals(unfinished, NETACCT.replace("netacct", "events"));
  assertEquals(finishedFromPretty(log).unfinished, "");
  assertEquals(finishedFromPretty(log).cases.length, 5);
});

Deno.test("parseResultLine: top-level results only, steps and output are not", () => {
  assertEquals(parseResultLine("e2e nft / v2: a, b ... ok (1m22s)"), {
    name: "e2e nft / v2: a, b",
    status: "ok",
  });
  assertEquals(parseResultLine("with steps ... FAILED (due to 1 failed step) (5ms)"), {
    name: "with steps",
    status: "FAILED",
  });
  assertEquals(parseResultLine("  step a ... ok (0ms)"), null);
  assertEquals(parseResultLine("name ..."), null);
});

Deno.test("formatSeconds as deno prints durations", () => {
  assertEquals(formatSeconds(0.0161), "0.0s");
  assertEquals(formatSeconds(16.54), "16.5s");
  assertEquals(formatSeconds(59.97), "1m00s");
  assertEquals(formatSeconds(82.2), "1m22s");
  assertEquals(formatSeconds(119.7), "2m00s");
});
