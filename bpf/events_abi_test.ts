import {
  decodeEvent,
  EVENT_OFFSETS,
  EVENT_SIZE,
  KIND_CONNECT,
  KIND_SENDMSG,
  RING_BYTES,
} from "./events_abi.ts";
import { assertEquals } from "../lib/test_assert.ts";

const header = Deno.readTextFileSync(new URL("./events.h", import.meta.url));

/**
 * Offsets by the C rules (each member at its natural alignment, the size rounded up to the
 * largest), from the member list in the header: the struct only reaches the object's BTF
 * through a void pointer, so BTF does not hold it.
 */
function layout(struct: string): { size: number; members: Record<string, number> } {
  const body = header.match(new RegExp(`struct ${struct} \\{([^}]*)\\}`))?.[1];
  if (!body) throw new Error(`struct ${struct} not in bpf/events.h`);
  const sizes: Record<string, number> = { __u64: 8, __u32: 4, __u16: 2, __u8: 1 };
  const members: Record<string, number> = {};
  let off = 0, align = 1;
  for (const decl of body.replace(/\/\*.*?\*\//g, "").split(";")) {
    const [, type = "", name = "", count] = decl.trim().match(/^(__u\d+) (\w+)(?:\[(\d+)\])?$/) ??
      [];
    const size = sizes[type];
    if (size === undefined) continue;
    off = Math.ceil(off / size) * size;
    members[name] = off;
    off += size * Number(count ?? 1);
    align = Math.max(align, size);
  }
  return { size: Math.ceil(off / align) * align, members };
}

Deno.test("events abi: constants and layout match bpf/events.h", () => {
  assertEquals(Number(header.match(/NETACCT_EVENT_CONNECT = (\d+)/)?.[1]), KIND_CONNECT);
  assertEquals(Number(header.match(/NETACCT_EVENT_SENDMSG = (\d+)/)?.[1]), KIND_SENDMSG);
  assertEquals(
    Number(header.match(/NETACCT_EVENTS_RING_BYTES \((\d+) \* 1024\)/)?.[1]) * 1024,
    RING_BYTES,
  );
  const { size, members } = layout("netacct_event");
  assertEquals(size, EVENT_SIZE);
  assertEquals(members, { ...EVENT_OFFSETS });
});

Deno.test("events abi: decodes a record (little-endian, NUL-padded comm, IPv4 in 4 bytes)", () => {
  const buf = new Uint8Array(EVENT_SIZE);
  const v = new DataView(buf.buffer);
  v.setBigUint64(EVENT_OFFSETS.ts_ns, 2_500_000_000n, true);
  v.setUint32(EVENT_OFFSETS.pid, 4321, true);
  v.setUint32(EVENT_OFFSETS.tgid, 4300, true);
  buf.set(new TextEncoder().encode("curl"), EVENT_OFFSETS.comm);
  buf.set([198, 51, 100, 2], EVENT_OFFSETS.addr);
  v.setUint16(EVENT_OFFSETS.service, 300, true);
  v.setUint16(EVENT_OFFSETS.port, 443, true);
  buf[EVENT_OFFSETS.family] = 4;
  buf[EVENT_OFFSETS.proto] = 6;
  buf[EVENT_OFFSETS.kind] = KIND_SENDMSG;
  // Above 2^53: a double would round it.
  v.setBigUint64(EVENT_OFFSETS.cookie, (1n << 63n) + 3n, true);
  assertEquals(decodeEvent(buf), {
    tsMonotonic: 2.5,
    pid: 4321,
    tgid: 4300,
    comm: "curl",
    addr: new Uint8Array([198, 51, 100, 2]),
    family: 4,
    service: 300,
    port: 443,
    proto: 6,
    kind: KIND_SENDMSG,
    cookie: (1n << 63n) + 3n,
  });
  buf[EVENT_OFFSETS.family] = 6;
  assertEquals(decodeEvent(buf).addr.length, 16);
});
