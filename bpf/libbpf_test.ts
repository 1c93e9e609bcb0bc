import {
  capturedLog,
  lib,
  LibbpfError,
  openAndLoadObject,
  parseVerifiedInsns,
  VerifierError,
  verifierReason,
} from "./libbpf.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../lib/test_assert.ts";

const isRoot = Deno.uid() === 0;
const testdata = (name: string) => new URL(`./testdata/${name}`, import.meta.url);

Deno.test("parseVerifiedInsns reads the verifier's statistics line", () => {
  const log = Deno.readTextFileSync(testdata("verifier_log_refused.txt"));
  assertEquals(parseVerifiedInsns(log), 412);
  assertEquals(
    parseVerifiedInsns(
      "processed 1234 insns (limit 1000000) max_states_per_insn 2 total_states 88",
    ),
    1234,
  );
  assertEquals(parseVerifiedInsns("no statistics here"), null);
});

Deno.test("verifierReason: the last lines before the statistics, where the reason is", () => {
  const log = Deno.readTextFileSync(testdata("verifier_log_refused.txt"));
  const reason = verifierReason(log, 2);
  assertEquals(reason.length, 2);
  assertMatch(reason[1]!, /unbounded min value is not allowed/);
  assertEquals(verifierReason(""), []);
  assertEquals(
    verifierReason("a\nb\nR0 invalid mem access 'scalar'\nprocessed 9 insns (limit 1000000)\n", 1),
    ["R0 invalid mem access 'scalar'"],
  );
});

Deno.test({
  name: "a refused program: the error keeps the whole verifier log and quotes its reason",
  ignore: !isRoot,
  async fn() {
    const bytes = await Deno.readFile(testdata("refused.bpf.o"));
    let error: unknown;
    try {
      const loaded = openAndLoadObject(bytes, "refused", "the refused test object");
      lib().bpf_object__close(loaded.pointer);
    } catch (e) {
      error = e;
    }
    assert(error instanceof VerifierError, `a VerifierError: ${error}`);
    assertEquals(error.program, "refused");
    assert(error.cause instanceof LibbpfError, "the libbpf failure is its cause");
    // Far beyond the 4 KiB that one formatted libbpf message used to keep.
    assert(error.verifierLog.length > 16 * 1024, `whole log: ${error.verifierLog.length} bytes`);
    assertMatch(error.verifierLog, /^0: \(/m, "from the first instruction");
    const reason = verifierReason(error.verifierLog);
    assert(reason.length > 0, "a reason");
    assertMatch(reason.at(-1)!, /unbounded/);
    assertStringIncludes(error.message, reason.at(-1)!, "the message quotes the reason");
    assertStringIncludes(error.message, '"refused"');
  },
});

Deno.test({
  name: "a libbpf message longer than 4 KiB reaches the captured log whole",
  ignore: !isRoot,
  fn() {
    lib(); // installs the print callback
    // A second handle to the same libbpf: its warning goes through that callback.
    const extra = Deno.dlopen("libbpf.so.1", {
      // struct bpf_object *bpf_object__open_file(const char *path, const void *opts)
      bpf_object__open_file: { parameters: ["buffer", "pointer"], result: "pointer" },
    });
    try {
      const path = `/nonexistent-stb-netacct/${"x".repeat(6000)}.bpf.o`;
      const obj = extra.symbols.bpf_object__open_file(
        new TextEncoder().encode(`${path}\0`),
        null,
      );
      assertEquals(obj, null);
      const line = capturedLog().find((l) => l.includes("nonexistent-stb-netacct"));
      assert(line !== undefined, `the warning was captured: ${capturedLog().join(" | ")}`);
      assertStringIncludes(line, `${"x".repeat(6000)}.bpf.o`, "not cut at 4 KiB");
    } finally {
      extra.close();
    }
  },
});
