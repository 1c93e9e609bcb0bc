/**
 * bpf/dns.bpf.c on the running kernel, packet by packet (BPF_PROG_TEST_RUN, nothing
 * attached): a DNS answer from port 53 and a query to port 53 land in the ring buffer as
 * they were sent, cut at 512 bytes with their length kept; other traffic (TCP, UDP on
 * other ports, a query seen on ingress) leaves nothing. The kernel-6.1 lane runs it too.
 * Root only:
 *
 *   deno test -A bpf/dns_capture_test.ts
 */

import { OBJECT_BASE64 } from "./dns_object.ts";
import {
  check,
  checkPointer,
  cString,
  decodeEmbeddedObject,
  lib,
  objectMapFd,
  openAndLoadObject,
} from "./libbpf.ts";
import { craftPacket, nonLoopbackIfindex, testRun } from "./packet_run.ts";
import {
  decodeDnsRecord,
  DIR_ANSWER,
  DIR_QUERY,
  DNS_COPY,
  DNS_MAP_RING,
  DNS_RECORD_SIZE,
  type RawDnsRecord,
} from "./dns_abi.ts";
import { assertEquals } from "../lib/test_assert.ts";

const isRoot = Deno.uid() === 0;
const ETH_HLEN = 14;
const PEER4 = new Uint8Array([198, 51, 100, 2]);
const SELF4 = new Uint8Array([198, 51, 100, 1]);
const PEER6 = new Uint8Array([0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
const SELF6 = new Uint8Array([0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/** A UDP frame carrying `payload` (ports as given). */
function udp(o: { v6: boolean; sport: number; dport: number; payload: Uint8Array }) {
  const frame = craftPacket({
    src: o.v6 ? PEER6 : PEER4,
    dst: o.v6 ? SELF6 : SELF4,
    proto: "udp",
    sport: o.sport,
    dport: o.dport,
    payload: 8 + o.payload.length,
  });
  frame.set(o.payload, ETH_HLEN + (o.v6 ? 40 : 20) + 8);
  return frame;
}

const SAMPLE_FN = { parameters: ["pointer", "pointer", "usize"], result: "i32" } as const;

Deno.test({
  name: "dns capture: answers and queries reach the ring whole (cut at 512), nothing else",
  ignore: !isRoot,
  sanitizeResources: false,
  fn() {
    const loaded = openAndLoadObject(decodeEmbeddedObject(OBJECT_BASE64), "dns", "bpf/dns.bpf.o");
    const records: RawDnsRecord[] = [];
    const callback = new Deno.UnsafeCallback(SAMPLE_FN, (_ctx, data, size) => {
      if (data !== null && Number(size) >= DNS_RECORD_SIZE) {
        const copy = new Uint8Array(DNS_RECORD_SIZE);
        new Deno.UnsafePointerView(data).copyInto(copy);
        const r = decodeDnsRecord(copy);
        records.push({ ...r, data: r.data.slice() });
      }
      return 0;
    });
    const b = lib();
    const ring = checkPointer(
      "Opening the ring buffer",
      b.ring_buffer__new(
        objectMapFd(loaded.pointer, DNS_MAP_RING, "dns"),
        callback.pointer,
        null,
        null,
      ),
    );
    try {
      const fd = (name: string) =>
        check(
          name,
          b.bpf_program__fd(
            checkPointer(name, b.bpf_object__find_program_by_name(loaded.pointer, cString(name))),
          ),
        );
      const ingress = fd("dns_ingress"), egress = fd("dns_egress");
      const ifindex = nonLoopbackIfindex();
      const take = () => {
        records.length = 0;
        check("Consuming", b.ring_buffer__consume(ring));
        return records.map((r) => ({
          dir: r.dir,
          family: r.family,
          len: r.len,
          data: [...r.data],
        }));
      };
      const answer = Deno.readFileSync(
        new URL("../names/testdata/cname_chain.bin", import.meta.url),
      );
      for (const v6 of [false, true]) {
        const family = v6 ? 6 : 4;
        const run = (prog: number, frame: Uint8Array<ArrayBuffer>) =>
          assertEquals(testRun(prog, { frame, ifindex, repeat: 1 }).retval, 1, "always 1");
        run(ingress, udp({ v6, sport: 53, dport: 40000, payload: answer }));
        assertEquals(take(), [{ dir: DIR_ANSWER, family, len: answer.length, data: [...answer] }]);
        run(egress, udp({ v6, sport: 40000, dport: 53, payload: answer }));
        assertEquals(take(), [{ dir: DIR_QUERY, family, len: answer.length, data: [...answer] }]);
        const big = new Uint8Array(1200).map((_, i) => i & 0xff);
        run(ingress, udp({ v6, sport: 53, dport: 40000, payload: big }));
        assertEquals(take(), [{
          dir: DIR_ANSWER,
          family,
          len: 1200,
          data: [...big.subarray(0, DNS_COPY)],
        }]);
        // Not DNS on this hook: a query seen arriving, another port, TCP from port 53.
        run(ingress, udp({ v6, sport: 40000, dport: 53, payload: answer }));
        run(ingress, udp({ v6, sport: 443, dport: 40000, payload: answer }));
        run(egress, udp({ v6, sport: 53, dport: 40000, payload: answer }));
        const tcp = craftPacket({ src: v6 ? PEER6 : PEER4, dst: v6 ? SELF6 : SELF4, sport: 53 });
        run(ingress, tcp);
        assertEquals(take(), [], "nothing captured");
      }
    } finally {
      b.ring_buffer__free(ring);
      b.bpf_object__close(loaded.pointer);
      callback.close();
    }
  },
});
