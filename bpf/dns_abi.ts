/**
 * The TypeScript mirror of bpf/dns.h: the ring-buffer record of bpf/dns.bpf.c and its
 * decoder. The only place this layout is spelt out on this side; dns_abi_test.ts pins it
 * against the header.
 */

export const DNS_RING_BYTES = 1024 * 1024;
/** UDP payload bytes a record holds at most. */
export const DNS_COPY = 512;

/** enum netacct_dns_dir */
export const DIR_ANSWER = 0;
export const DIR_QUERY = 1;

/** Map and program names in dns.bpf.c. */
export const DNS_MAP_ACTIVE = "active";
export const DNS_MAP_CONFIG = "config";
export const DNS_MAP_RING = "dns";
export const DNS_MAP_DROPPED = "dropped";
export const DNS_PROGRAMS = ["dns_ingress", "dns_egress"] as const;

/**
 * struct netacct_dns_record: __u32 len at 0, __u16 copied at 4, __u8 dir at 6, __u8 family
 * at 7, __u8 data[512] at 8; sizeof 520.
 */
export const DNS_OFFSETS = { len: 0, copied: 4, dir: 6, family: 7, data: 8 } as const;
export const DNS_RECORD_SIZE = 520;

export interface RawDnsRecord {
  /** UDP payload bytes of the packet; more than `data` holds when the copy was cut. */
  len: number;
  dir: number;
  family: 4 | 6;
  /** The payload as copied (a view into the record: copy it to keep it). */
  data: Uint8Array;
}

/** One record as the ring buffer hands it over (little-endian host order). */
export function decodeDnsRecord(buf: Uint8Array): RawDnsRecord {
  if (buf.length < DNS_RECORD_SIZE) {
    throw new RangeError(`A DNS record is ${DNS_RECORD_SIZE} bytes, got ${buf.length}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const copied = Math.min(view.getUint16(DNS_OFFSETS.copied, true), DNS_COPY);
  return {
    len: view.getUint32(DNS_OFFSETS.len, true),
    dir: buf[DNS_OFFSETS.dir]!,
    family: buf[DNS_OFFSETS.family] === 6 ? 6 : 4,
    data: buf.subarray(DNS_OFFSETS.data, DNS_OFFSETS.data + copied),
  };
}
