/**
 * Every BPF object the program embeds loads into the running kernel, i.e. its verifier accepts
 * every program in it. Nothing is attached; each object is closed again. The kernel-6.1 lane
 * (tests/kernel61/) runs this inside Debian 12's kernel, whose older verifier is the one that
 * matters to users. Root only:
 *
 *   deno test -A bpf/objects_test.ts
 */

import { OBJECT_BASE64 as NETACCT } from "./netacct_object.ts";
import { OBJECT_BASE64 as EVENTS } from "./events_object.ts";
import { OBJECT_BASE64 as CALIBRATE } from "./calibrate_object.ts";
import { decodeEmbeddedObject, lib, LibbpfError, openAndLoadObject } from "../backends/libbpf.ts";

const isRoot = Deno.uid() === 0;
/** The verifier states its reason last: this many lines of its log go into the output. */
const LOG_TAIL = 30;

const OBJECTS: [file: string, name: string, base64: string][] = [
  ["netacct.bpf.o", "netacct", NETACCT],
  ["events.bpf.o", "events", EVENTS],
  ["calibrate.bpf.o", "calibrate", CALIBRATE],
];

for (const [file, name, base64] of OBJECTS) {
  Deno.test({
    name: `bpf object ${file} (as embedded) loads: the kernel's verifier accepts its programs`,
    ignore: !isRoot,
    sanitizeResources: false, // libbpf's print callback lives for the whole process
    fn() {
      let object;
      try {
        object = openAndLoadObject(decodeEmbeddedObject(base64), name, `bpf/${file}`);
      } catch (e) {
        if (e instanceof LibbpfError) {
          const log = e.log.filter((l) => l.trim() !== "");
          console.error(`libbpf's log (last ${LOG_TAIL} of ${log.length} lines):`);
          for (const line of log.slice(-LOG_TAIL)) console.error(`  ${line}`);
        }
        throw e;
      }
      lib().bpf_object__close(object);
    },
  });
}
