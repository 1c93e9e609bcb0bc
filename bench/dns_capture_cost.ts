/**
 * What the DNS capture (bpf/dns.bpf.c, linked at the service cgroups beside the counting
 * programs) adds to each of StB's packets that is not DNS, by BPF_PROG_TEST_RUN: a bulk
 * TCP segment (returns at the protocol check) and a UDP datagram to another port (QUIC,
 * say: its ports are read), ingress and egress, next to the return-1 floor of
 * bench/trivial.bpf.o measured the same way. Median of interleaved rounds. Root only:
 *
 *   deno run -A bench/dns_capture_cost.ts [OUT.json] [--repeat N] [--rounds N]
 *
 * Writes {"dns_capture_cost": {...}} to OUT.json when given.
 */

import { OBJECT_BASE64 } from "../bpf/dns_object.ts";
import {
  check,
  checkPointer,
  cString,
  decodeEmbeddedObject,
  lib,
  openAndLoadObject,
} from "../bpf/libbpf.ts";
import { craftPacket, nonLoopbackIfindex, testRun } from "../bpf/packet_run.ts";
import { median } from "./stats.ts";

const args = [...Deno.args];
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  return v;
};
const repeat = flag("--repeat", 5_000_000);
const rounds = flag("--rounds", 7);
const out = args.find((a) => !a.startsWith("--")) ?? null;
if (Deno.uid() !== 0) {
  console.error("dns_capture_cost needs root (it loads BPF programs)");
  Deno.exit(1);
}

function programFds(bytes: Uint8Array<ArrayBuffer>, name: string, programs: string[]) {
  const b = lib();
  const loaded = openAndLoadObject(bytes, name, name);
  const fds = programs.map((p) =>
    check(
      p,
      b.bpf_program__fd(
        checkPointer(p, b.bpf_object__find_program_by_name(loaded.pointer, cString(p))),
      ),
    )
  );
  return { fds, close: () => b.bpf_object__close(loaded.pointer) };
}

const dns = programFds(decodeEmbeddedObject(OBJECT_BASE64), "dns", ["dns_ingress", "dns_egress"]);
const trivialBytes = await Deno.readFile(new URL("./trivial.bpf.o", import.meta.url));
const floor = programFds(trivialBytes, "trivial", ["trivial"]);
try {
  const ifindex = nonLoopbackIfindex();
  const src = new Uint8Array([198, 51, 100, 2]), dst = new Uint8Array([198, 51, 100, 1]);
  const frames = {
    tcp: craftPacket({ src, dst }),
    udp: craftPacket({ src, dst, proto: "udp", sport: 443, dport: 40000 }),
  };
  const cases = [
    { name: "floor (return 1)", fd: floor.fds[0]!, frame: frames.tcp },
    { name: "ingress, TCP segment", fd: dns.fds[0]!, frame: frames.tcp },
    { name: "egress, TCP segment", fd: dns.fds[1]!, frame: frames.tcp },
    { name: "ingress, UDP not DNS", fd: dns.fds[0]!, frame: frames.udp },
    { name: "egress, UDP not DNS", fd: dns.fds[1]!, frame: frames.udp },
  ];
  const ns = cases.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    cases.forEach((c, i) =>
      ns[i]!.push(testRun(c.fd, { frame: c.frame, ifindex, repeat }).durationNs)
    );
  }
  const floorNs = median(ns[0]!);
  const rows = cases.map((c, i) => ({
    case: c.name,
    ns: median(ns[i]!),
    over_floor_ns: median(ns[i]!) - floorNs,
  }));
  console.log(
    `DNS capture per packet (BPF_PROG_TEST_RUN, ${repeat} repeats, median of ${rounds}):`,
  );
  for (const r of rows) console.log(`  ${r.case.padEnd(22)} ${r.ns} ns  (+${r.over_floor_ns} ns)`);
  if (out) {
    await Deno.writeTextFile(
      out,
      JSON.stringify({ dns_capture_cost: { repeat, rounds, rows } }, null, 2),
    );
  }
} finally {
  dns.close();
  floor.close();
}
