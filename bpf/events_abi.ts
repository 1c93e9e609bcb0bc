/**
 * The TypeScript mirror of bpf/events.h: the ring-buffer record of bpf/events.bpf.c and
 * its decoder. The only place this layout is spelt out on this side; abi_test.ts pins it
 * against the header and the compiled object's BTF.
 */

export const RING_BYTES = 256 * 1024;

/** enum netacct_event_kind */
export const KIND_CONNECT = 0;
export const KIND_SENDMSG = 1;

/** Map and program names in events.bpf.c. */
export const MAP_ACTIVE = "active";
export const MAP_CONFIG = "config";
export const MAP_EVENTS = "events";
export const MAP_DROPPED = "dropped";
export const PROGRAMS = [
  "events_connect4",
  "events_connect6",
  "events_sendmsg4",
  "events_sendmsg6",
] as const;

/**
 * struct netacct_event: __u64 ts_ns at 0, __u32 pid at 8, __u32 tgid at 12, __u8 comm[16]
 * at 16, __u8 addr[16] at 32, __u16 service at 48, __u16 port at 50, __u8 family at 52,
 * proto at 53, kind at 54, pad at 55, __u64 cookie at 56; sizeof 64.
 */
export const EVENT_OFFSETS = {
  ts_ns: 0,
  pid: 8,
  tgid: 12,
  comm: 16,
  addr: 32,
  service: 48,
  port: 50,
  family: 52,
  proto: 53,
  kind: 54,
  pad: 55,
  cookie: 56,
} as const;
export const EVENT_SIZE = 64;

export interface RawEvent {
  /** CLOCK_MONOTONIC seconds. */
  tsMonotonic: number;
  pid: number;
  tgid: number;
  comm: string;
  /** Network-order address: 4 bytes for IPv4 (also one seen IPv4-mapped), else 16. */
  addr: Uint8Array;
  family: 4 | 6;
  service: number;
  port: number;
  proto: number;
  kind: number;
  /** The socket's cookie (SO_COOKIE), a u64: exact. */
  cookie: bigint;
}

const decoder = new TextDecoder();

/** One record as the ring buffer hands it over (little-endian host order). */
export function decodeEvent(buf: Uint8Array): RawEvent {
  if (buf.length < EVENT_SIZE) {
    throw new RangeError(`An event is ${EVENT_SIZE} bytes, got ${buf.length}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const comm = buf.subarray(EVENT_OFFSETS.comm, EVENT_OFFSETS.comm + 16);
  const end = comm.indexOf(0);
  const family = buf[EVENT_OFFSETS.family] === 6 ? 6 : 4;
  return {
    tsMonotonic: Number(view.getBigUint64(EVENT_OFFSETS.ts_ns, true)) / 1e9,
    pid: view.getUint32(EVENT_OFFSETS.pid, true),
    tgid: view.getUint32(EVENT_OFFSETS.tgid, true),
    comm: decoder.decode(comm.subarray(0, end < 0 ? 16 : end)),
    addr: buf.slice(EVENT_OFFSETS.addr, EVENT_OFFSETS.addr + (family === 4 ? 4 : 16)),
    family,
    service: view.getUint16(EVENT_OFFSETS.service, true),
    port: view.getUint16(EVENT_OFFSETS.port, true),
    proto: view.getUint8(EVENT_OFFSETS.proto),
    kind: view.getUint8(EVENT_OFFSETS.kind),
    cookie: view.getBigUint64(EVENT_OFFSETS.cookie, true),
  };
}
