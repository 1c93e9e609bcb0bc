/**
 * The counting programs add to their per-CPU counters atomically. Egress runs in process
 * context with softirqs enabled, so a softirq on the same CPU (an ACK sent for received
 * data, a retransmit timer) can run egress for the same counter slot between a plain add's
 * load and store, and one of the two updates would be lost. The window is a few
 * nanoseconds, so no traffic test can show it reliably: this reads the embedded object's
 * instructions instead (llvm-objdump, which `make bpf`'s clang comes with).
 *
 *   deno test -A bpf/atomic_adds_test.ts
 */

import { OBJECT_BASE64 } from "./netacct_object.ts";
import { decodeEmbeddedObject } from "./libbpf.ts";
import { assert, assertEquals } from "../lib/test_assert.ts";

const hasObjdump = new Deno.Command("sh", { args: ["-c", "command -v llvm-objdump"] })
  .outputSync().success;

/** The disassembly of each program (function name to its instruction lines). */
function disassemble(object: Uint8Array): Map<string, string[]> {
  const path = Deno.makeTempFileSync({ suffix: ".bpf.o" });
  try {
    Deno.writeFileSync(path, object);
    const out = new Deno.Command("llvm-objdump", { args: ["-d", "--no-show-raw-insn", path] })
      .outputSync();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const programs = new Map<string, string[]>();
    let current: string[] | null = null;
    for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
      // Branch targets (LBB0_7) are labelled like functions but belong to the one above.
      const fn = /^[0-9a-f]+ <(\w+)>:$/.exec(line);
      if (fn && !fn[1]!.startsWith("LBB")) programs.set(fn[1]!, current = []);
      else if (current && /^\s+\d+:/.test(line)) current.push(line.trim());
    }
    return programs;
  } finally {
    Deno.removeSync(path);
  }
}

Deno.test({
  name: "netacct programs add bytes and packets to their counters atomically",
  ignore: !hasObjdump,
  fn() {
    const programs = disassemble(decodeEmbeddedObject(OBJECT_BASE64));
    for (const name of ["netacct_ingress", "netacct_egress"]) {
      const insns = programs.get(name) ?? [];
      assert(insns.length > 0, `${name} is in the object`);
      // A counter is { bytes, packets }: an atomic add at +0 and one at +8, once for the
      // service's counter and once for a destination flushed from pending.
      const atomic = insns.filter((l) => /lock \*\(u64 \*\)\(r\d+ \+ (0|8)\) \+= r\d+/.test(l));
      assertEquals(atomic.length, 4, `${name}'s atomic adds:\n${atomic.join("\n")}`);
    }
  },
});
