/**
 * DNS messages in RFC 1035 wire format, as the DNS capture program (bpf/dns.bpf.c) copies
 * them off StB's sockets: queries StB sent and answers it received. Pure functions, no I/O.
 *
 * Everything a remote sends is untrusted: every read is bounds-checked, compression
 * pointers must point backwards (so they cannot loop) and a name is at most 255 bytes.
 * A message the capture cut short (`complete: false`) keeps the records that arrived
 * whole; in a complete message a record running past the end is malformed.
 */

import { formatAddress } from "../lib/cidr.ts";

export const TYPE_A = 1;
export const TYPE_CNAME = 5;
export const TYPE_PTR = 12;
export const TYPE_AAAA = 28;
const CLASS_IN = 1;

/** Hops of a CNAME chain followed at most (resolvers give up well before). */
export const MAX_CNAME_HOPS = 16;
const MAX_NAME_BYTES = 255;
const MAX_RECORDS = 256;

export class DnsParseError extends Error {
  override name = "DnsParseError";
}

export interface DnsQuery {
  id: number;
  /** Lower case, no trailing dot. */
  name: string;
  type: number;
}

/** One address an answer gave for the asked name. */
export interface DnsAddress {
  /** Dotted IPv4 or IPv6 text, as lib/cidr.ts formats it. */
  address: string;
  /** Seconds: the smallest TTL on the way from the asked name (CNAMEs included). */
  ttl: number;
}

export type DnsAnswer =
  | {
    kind: "answer";
    id: number;
    /** The name that was asked (the question), lower case, no trailing dot. */
    name: string;
    type: number;
    /** The CNAME chain from the asked name, the asked name first. */
    chain: string[];
    addresses: DnsAddress[];
  }
  /** Well-formed, but nothing to learn (an error code, no question, not an answer). */
  | { kind: "ignored"; reason: string };

/** Message text as read: big-endian fields over a byte array, every read bounds-checked. */
class Reader {
  readonly view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(at: number, n: number): void {
    if (at < 0 || at + n > this.bytes.length) {
      throw new DnsParseError(`the message ends at byte ${this.bytes.length}, ${at + n} needed`);
    }
  }
  u8(at: number): number {
    this.need(at, 1);
    return this.bytes[at]!;
  }
  u16(at: number): number {
    this.need(at, 2);
    return this.view.getUint16(at);
  }
  u32(at: number): number {
    this.need(at, 4);
    return this.view.getUint32(at);
  }
}

/** A byte of a label as text: host-name characters as they are (lower case), others \DDD. */
function labelText(bytes: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < to; i++) {
    let c = bytes[i]!;
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    const plain = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d ||
      c === 0x5f || c === 0x2a;
    s += plain ? String.fromCharCode(c) : `\\${String(c).padStart(3, "0")}`;
  }
  return s;
}

/**
 * The name at `at`: its text and the offset after it where it is written (a pointer ends
 * it there). Pointers must go strictly backwards, so a name cannot loop.
 */
function readName(r: Reader, at: number): { name: string; next: number } {
  const labels: string[] = [];
  let pos = at;
  let next = -1;
  let bytes = 1;
  let limit = at; // a pointer must point before the start of what points at it
  for (;;) {
    const len = r.u8(pos);
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    const tag = len & 0xc0;
    if (tag === 0xc0) {
      const target = r.u16(pos) & 0x3fff;
      if (next < 0) next = pos + 2;
      if (target >= limit) {
        throw new DnsParseError(`a name's pointer at byte ${pos} does not point backwards`);
      }
      limit = target;
      pos = target;
      continue;
    }
    if (tag !== 0) throw new DnsParseError(`label type 0x${tag.toString(16)} at byte ${pos}`);
    r.need(pos + 1, len);
    bytes += len + 1;
    if (bytes > MAX_NAME_BYTES) throw new DnsParseError(`a name longer than 255 bytes at ${at}`);
    labels.push(labelText(r.bytes, pos + 1, pos + 1 + len));
    pos += len + 1;
  }
  return { name: labels.join("."), next };
}

interface Header {
  id: number;
  response: boolean;
  opcode: number;
  rcode: number;
  qd: number;
  an: number;
}

function readHeader(r: Reader): Header {
  const flags = r.u16(2);
  return {
    id: r.u16(0),
    response: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    rcode: flags & 0xf,
    qd: r.u16(4),
    an: r.u16(6),
  };
}

/** A query StB sent: its id and question; null when it is not a standard query. */
export function parseDnsQuery(bytes: Uint8Array): DnsQuery | null {
  const r = new Reader(bytes);
  const h = readHeader(r);
  if (h.response || h.opcode !== 0 || h.qd !== 1) return null;
  const q = readName(r, 12);
  const type = r.u16(q.next);
  if (r.u16(q.next + 2) !== CLASS_IN) return null;
  return { id: h.id, name: q.name, type };
}

/**
 * The id and question of an answer, read without its records: what decides whether the
 * answer is worth parsing (a query for it must be waiting). Null when it is not a
 * standard answer with one question.
 */
export function peekDnsAnswer(bytes: Uint8Array): DnsQuery | null {
  const r = new Reader(bytes);
  const h = readHeader(r);
  if (!h.response || h.opcode !== 0 || h.qd !== 1) return null;
  const q = readName(r, 12);
  return { id: h.id, name: q.name, type: r.u16(q.next) };
}

interface ResourceRecord {
  owner: string;
  type: number;
  ttl: number;
  /** A/AAAA: the address; CNAME: the target. */
  value: string;
}

/** Address text as the destinations and events write it; IPv4-mapped IPv6 as IPv4. */
function addressText(b: Uint8Array, at: number, len: 4 | 16): string {
  const bytes = b.subarray(at, at + len);
  const mapped = len === 16 && bytes.subarray(0, 10).every((x) => x === 0) &&
    bytes[10] === 0xff && bytes[11] === 0xff;
  return formatAddress(mapped ? bytes.subarray(12) : bytes);
}

/**
 * The answer StB received: the asked name and the addresses the answer gives for it,
 * following the CNAME chain from the asked name (A and AAAA records of names the chain
 * does not reach are not the asked name's and are left out). Throws DnsParseError for a
 * malformed message; `complete` false: the capture cut it, records cut off are dropped.
 */
export function parseDnsAnswer(bytes: Uint8Array, complete = true): DnsAnswer {
  const r = new Reader(bytes);
  const h = readHeader(r);
  if (!h.response) return { kind: "ignored", reason: "a query, not an answer" };
  if (h.opcode !== 0) return { kind: "ignored", reason: `opcode ${h.opcode}` };
  if (h.qd !== 1) return { kind: "ignored", reason: `${h.qd} questions` };
  const q = readName(r, 12);
  const type = r.u16(q.next);
  const qclass = r.u16(q.next + 2);
  if (qclass !== CLASS_IN) return { kind: "ignored", reason: `class ${qclass}` };
  if (h.rcode !== 0) return { kind: "ignored", reason: `rcode ${h.rcode}` };
  if (h.an > MAX_RECORDS) throw new DnsParseError(`${h.an} answer records`);
  const records: ResourceRecord[] = [];
  let at = q.next + 4;
  for (let i = 0; i < h.an; i++) {
    try {
      const rec = readRecord(r, at);
      at = rec.next;
      if (rec.record) records.push(rec.record);
    } catch (e) {
      if (complete || !(e instanceof DnsParseError)) throw e;
      break; // the capture's copy ends inside this record
    }
  }
  return resolveChain({ id: h.id, name: q.name, type }, records);
}

function readRecord(r: Reader, at: number): { record: ResourceRecord | null; next: number } {
  const owner = readName(r, at);
  const p = owner.next;
  const type = r.u16(p);
  const rclass = r.u16(p + 2);
  // RFC 2181 §8: the top bit set means zero.
  const raw = r.u32(p + 4);
  const ttl = raw > 0x7fffffff ? 0 : raw;
  const len = r.u16(p + 8);
  const data = p + 10;
  r.need(data, len);
  const next = data + len;
  if (rclass !== CLASS_IN) return { record: null, next };
  const bad = (what: string) => new DnsParseError(`${what} record of ${len} bytes at ${at}`);
  if (type === TYPE_A) {
    if (len !== 4) throw bad("an A");
    return { record: { owner: owner.name, type, ttl, value: addressText(r.bytes, data, 4) }, next };
  }
  if (type === TYPE_AAAA) {
    if (len !== 16) throw bad("an AAAA");
    return {
      record: { owner: owner.name, type, ttl, value: addressText(r.bytes, data, 16) },
      next,
    };
  }
  if (type === TYPE_CNAME) {
    const target = readName(r, data);
    if (target.next !== next) throw bad("a CNAME");
    return { record: { owner: owner.name, type, ttl, value: target.name }, next };
  }
  return { record: null, next };
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_*]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/** Whether `name` is a host name fit to show (what readName gives for an ordinary name). */
export function isHostName(name: string): boolean {
  return HOST_NAME.test(name);
}

function resolveChain(
  q: { id: number; name: string; type: number },
  records: ResourceRecord[],
): DnsAnswer {
  if (!isHostName(q.name)) return { kind: "ignored", reason: "the asked name is not a host name" };
  const cname = new Map<string, ResourceRecord>();
  for (const rec of records) if (rec.type === TYPE_CNAME) cname.set(rec.owner, rec);
  // Walk from the asked name; the TTL of each name is the least along the way.
  const chain = [q.name];
  const ttlAt = new Map([[q.name, Number.MAX_SAFE_INTEGER]]);
  let current = q.name;
  for (let hops = 0; hops <= MAX_CNAME_HOPS; hops++) {
    const link = cname.get(current);
    if (!link) break;
    if (ttlAt.has(link.value)) return { kind: "ignored", reason: "a CNAME loop" };
    if (hops === MAX_CNAME_HOPS) {
      return { kind: "ignored", reason: `a CNAME chain longer than ${MAX_CNAME_HOPS}` };
    }
    ttlAt.set(link.value, Math.min(ttlAt.get(current)!, link.ttl));
    chain.push(link.value);
    current = link.value;
  }
  const addresses: DnsAddress[] = [];
  let elsewhere = 0;
  for (const rec of records) {
    if (rec.type !== TYPE_A && rec.type !== TYPE_AAAA) continue;
    const before = ttlAt.get(rec.owner);
    if (before === undefined) {
      elsewhere++;
      continue;
    }
    addresses.push({ address: rec.value, ttl: Math.min(before, rec.ttl) });
  }
  if (addresses.length === 0 && elsewhere > 0) {
    return { kind: "ignored", reason: "its addresses are not the asked name's (CNAME chain)" };
  }
  return { kind: "answer", id: q.id, name: q.name, type: q.type, chain, addresses };
}

/** A query in wire format (tests and the lab's tools): recursion desired, one question. */
export function encodeDnsQuery(id: number, name: string, type: number): Uint8Array {
  const labels = name.split(".").filter((l) => l !== "").map((l) => new TextEncoder().encode(l));
  const out = new Uint8Array(12 + labels.reduce((n, l) => n + l.length + 1, 0) + 5);
  const v = new DataView(out.buffer);
  v.setUint16(0, id);
  v.setUint16(2, 0x0100);
  v.setUint16(4, 1);
  let at = 12;
  for (const l of labels) {
    out[at++] = l.length;
    out.set(l, at);
    at += l.length;
  }
  out[at++] = 0;
  v.setUint16(at, type);
  v.setUint16(at + 2, CLASS_IN);
  return out;
}
