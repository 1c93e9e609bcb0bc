/**
 * Every BPF object the program embeds loads into the running kernel, i.e. its verifier accepts
 * every program in it, and says how much work that took. Nothing is attached; each object is
 * closed again. The kernel-6.1 lane (tests/kernel61/) runs this inside Debian 12's kernel,
 * whose older verifier is the one that matters to users. Root only:
 *
 *   deno test -A bpf/objects_test.ts
 */

import { OBJECT_BASE64 as NETACCT } from "./netacct_object.ts";
import { OBJECT_BASE64 as EVENTS } from "./events_object.ts";
import { OBJECT_BASE64 as DNS } from "./dns_object.ts";
import { OBJECT_BASE64 as CALIBRATE } from "./calibrate_object.ts";
import { decodeEmbeddedObject, lib, openAndLoadObject } from "./libbpf.ts";
import { assert, assertEquals } from "../lib/test_assert.ts";

const isRoot = Deno.uid() === 0;

const OBJECTS: [file: string, name: string, base64: string, programs: string[]][] = [
  ["netacct.bpf.o", "netacct", NETACCT, ["netacct_ingress", "netacct_egress"]],
  ["events.bpf.o", "events", EVENTS, [
    "events_connect4",
    "events_connect6",
    "events_sendmsg4",
    "events_sendmsg6",
  ]],
  ["dns.bpf.o", "dns", DNS, ["dns_ingress", "dns_egress"]],
  ["calibrate.bpf.o", "calibrate", CALIBRATE, ["calibrate_egress"]],
];

for (const [file, name, base64, programs] of OBJECTS) {
  Deno.test({
    name: `bpf object ${file} (as embedded) loads: the kernel's verifier accepts its programs`,
    ignore: !isRoot,
    sanitizeResources: false, // libbpf's print callback lives for the whole process
    fn() {
      // A refusal throws a VerifierError whose message quotes the verifier's reason.
      const loaded = openAndLoadObject(decodeEmbeddedObject(base64), name, `bpf/${file}`);
      try {
        assertEquals(loaded.programs.map((p) => p.program).sort(), [...programs].sort());
        for (const p of loaded.programs) {
          assert(p.insns !== null && p.insns > 0, `${p.program}: an instruction count`);
          assert(p.insns < 1_000_000, `${p.program}: ${p.insns} insns, under the limit`);
          console.log(`${p.program}: ${p.insns} insns verified`);
        }
      } finally {
        lib().bpf_object__close(loaded.pointer);
      }
    },
  });
}
