import {
  decodeDnsRecord,
  DIR_ANSWER,
  DIR_QUERY,
  DNS_COPY,
  DNS_OFFSETS,
  DNS_RECORD_SIZE,
  DNS_RING_BYTES,
} from "./dns_abi.ts";
import { assertEquals } from "../lib/test_assert.ts";

const header = Deno.readTextFileSync(new URL("./dns.h", import.meta.url));

/** Offsets by the C rules, from the member list in the header (as events_abi_test.ts). */
function layout(struct: string): { size: number; members: Record<string, number> } {
  const body = header.match(new RegExp(`struct ${struct} \\{([^}]*)\\}`))?.[1];
  if (!body) throw new Error(`struct ${struct} not in bpf/dns.h`);
  const sizes: Record<string, number> = { __u64: 8, __u32: 4, __u16: 2, __u8: 1 };
  const members: Record<string, number> = {};
  let off = 0, align = 1;
  for (const decl of body.replace(/\/\*.*?\*\//g, "").split(";")) {
    const [, type = "", name = "", count] = decl.trim().match(/^(__u\d+) (\w+)(?:\[(\w+)\])?$/) ??
      [];
    const size = sizes[type];
    if (size === undefined) continue;
    off = Math.ceil(off / size) * size;
    members[name] = off;
    off += size * (count === "NETACCT_DNS_COPY" ? DNS_COPY : Number(count ?? 1));
    align = Math.max(align, size);
  }
  return { size: Math.ceil(off / align) * align, members };
}

Deno.test("dns abi: constants and layout match bpf/dns.h", () => {
  assertEquals(Number(header.match(/NETACCT_DNS_ANSWER = (\d+)/)?.[1]), DIR_ANSWER);
  assertEquals(Number(header.match(/NETACCT_DNS_QUERY = (\d+)/)?.[1]), DIR_QUERY);
  assertEquals(Number(header.match(/NETACCT_DNS_COPY (\d+)/)?.[1]), DNS_COPY);
  assertEquals(
    Number(header.match(/NETACCT_DNS_RING_BYTES \((\d+) \* 1024\)/)?.[1]) * 1024,
    DNS_RING_BYTES,
  );
  const { size, members } = layout("netacct_dns_record");
  assertEquals(size, DNS_RECORD_SIZE);
  assertEquals(members, { ...DNS_OFFSETS });
});

Deno.test("dns abi: decodes a record; a copied count past the buffer is cut to it", () => {
  const buf = new Uint8Array(DNS_RECORD_SIZE);
  const v = new DataView(buf.buffer);
  v.setUint32(DNS_OFFSETS.len, 700, true);
  v.setUint16(DNS_OFFSETS.copied, 3, true);
  buf[DNS_OFFSETS.dir] = DIR_QUERY;
  buf[DNS_OFFSETS.family] = 6;
  buf.set([1, 2, 3], DNS_OFFSETS.data);
  const r = decodeDnsRecord(buf);
  assertEquals([r.len, r.dir, r.family, [...r.data]], [700, DIR_QUERY, 6, [1, 2, 3]]);
  v.setUint16(DNS_OFFSETS.copied, 9999, true);
  assertEquals(decodeDnsRecord(buf).data.length, DNS_COPY);
});
