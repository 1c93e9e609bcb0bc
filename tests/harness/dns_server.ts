/**
 * A small DNS server for the lab (UDP only), run in the peer netns: answers A, AAAA and
 * PTR from a zone given on the command line, following CNAME chains in the zone the way
 * a recursive resolver's answer carries them (the CNAMEs, then the final name's records;
 * names compressed). With `--forward` it is a stub resolver instead (like systemd-resolved
 * on 127.0.0.53): every query is passed to the upstream server and its answer relayed.
 * Prints one JSON line `{"ready":true}` when it listens, runs until SIGTERM.
 *
 *   deno run --allow-net --unstable-net dns_server.ts --listen 0.0.0.0:53 --listen [::]:53 \
 *     --zone '{"a.stb.test":[["A","198.51.100.2"]],"www.stb.test":[["CNAME","a.stb.test"]]}'
 *   deno run ... dns_server.ts --listen 127.0.0.53:53 --forward 198.51.100.2:53
 *
 * Names that misbehave on purpose (for the tests that feed StB bad input):
 *   malformed.stb.test   an answer whose name pointer loops
 *   offchain.stb.test    an answer whose A record belongs to another name (no CNAME to it)
 *   unasked.stb.test     an answer for "other.stb.test" (same id): a name nobody asked
 *   N.flood.stb.test     A 198.18.x.y for N = 0..65535 (many distinct names and addresses)
 */

import { parseIpv4, parseIpv6 } from "../../lib/cidr.ts";

type Zone = Record<string, [string, string][]>;
const TYPES: Record<string, number> = { A: 1, CNAME: 5, PTR: 12, AAAA: 28 };
const TTL = 300;

function args(name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < Deno.args.length - 1; i++) {
    if (Deno.args[i] === name) out.push(Deno.args[i + 1]!);
  }
  return out;
}

function hostPort(text: string): { hostname: string; port: number } {
  const m = text.match(/^\[?([^\]]+?)\]?:(\d+)$/);
  if (!m) throw new Error(`"${text}" is not host:port`);
  return { hostname: m[1]!, port: Number(m[2]) };
}

const zone: Zone = JSON.parse(args("--zone")[0] ?? "{}");
const forward = args("--forward")[0];

/** Writes a message: names compressed against every name written before. */
class Writer {
  bytes: number[] = [];
  #names = new Map<string, number>();
  u16(v: number) {
    this.bytes.push(v >> 8, v & 0xff);
  }
  u32(v: number) {
    this.u16(v >>> 16);
    this.u16(v & 0xffff);
  }
  name(name: string) {
    const labels = name.split(".").filter((l) => l !== "");
    for (let i = 0; i < labels.length; i++) {
      const rest = labels.slice(i).join(".");
      const at = this.#names.get(rest);
      if (at !== undefined) return this.u16(0xc000 | at);
      if (this.bytes.length < 0x3fff) this.#names.set(rest, this.bytes.length);
      const l = new TextEncoder().encode(labels[i]);
      this.bytes.push(l.length, ...l);
    }
    this.bytes.push(0);
  }
  record(owner: string, type: number, rdata: () => void) {
    this.name(owner);
    this.u16(type);
    this.u16(1);
    this.u32(TTL);
    const lenAt = this.bytes.length;
    this.u16(0);
    rdata();
    const len = this.bytes.length - lenAt - 2;
    this.bytes[lenAt] = len >> 8;
    this.bytes[lenAt + 1] = len & 0xff;
  }
}

function readQuestion(q: Uint8Array): { id: number; name: string; type: number } | null {
  if (q.length < 17) return null;
  const labels: string[] = [];
  let at = 12;
  while (at < q.length && q[at] !== 0) {
    const len = q[at]!;
    if (len > 63 || at + 1 + len > q.length) return null;
    labels.push(new TextDecoder().decode(q.subarray(at + 1, at + 1 + len)).toLowerCase());
    at += len + 1;
  }
  if (at + 5 > q.length) return null;
  return { id: (q[0]! << 8) | q[1]!, name: labels.join("."), type: (q[at + 1]! << 8) | q[at + 2]! };
}

function rdataOf(w: Writer, type: string, value: string): void {
  if (type === "A") w.bytes.push(...parseIpv4(value)!);
  else if (type === "AAAA") w.bytes.push(...parseIpv6(value)!);
  else w.name(value);
}

function answer(q: { id: number; name: string; type: number }): Uint8Array {
  const w = new Writer();
  const records: [string, string, string][] = [];
  let name = q.name;
  let asked = q.name;
  const flood = name.match(/^(\d+)\.flood\.stb\.test$/);
  if (flood) {
    const n = Number(flood[1]) & 0xffff;
    if (q.type === 1) records.push([name, "A", `198.18.${n >> 8}.${n & 0xff}`]);
  } else if (name === "offchain.stb.test") {
    records.push(["elsewhere.stb.test", "A", "198.51.100.2"]);
  } else if (name === "unasked.stb.test") {
    asked = "other.stb.test";
    records.push([asked, "A", "198.51.100.2"], [asked, "AAAA", "2001:db8:1::2"]);
  } else {
    for (let hops = 0; hops < 20; hops++) {
      const rrs = zone[name] ?? [];
      const cname = rrs.find(([t]) => t === "CNAME");
      if (cname && q.type !== 5) {
        records.push([name, "CNAME", cname[1]]);
        name = cname[1];
        continue;
      }
      for (const [t, v] of rrs) if (TYPES[t] === q.type) records.push([name, t, v]);
      break;
    }
  }
  w.u16(q.id);
  w.u16(records.length === 0 && !(q.name in zone) && !flood ? 0x8183 : 0x8180);
  w.u16(1);
  w.u16(records.length);
  w.u32(0);
  w.name(asked);
  w.u16(q.type);
  w.u16(1);
  for (const [owner, t, v] of records) w.record(owner, TYPES[t]!, () => rdataOf(w, t, v));
  const out = new Uint8Array(w.bytes);
  if (q.name === "malformed.stb.test") {
    // The question's name becomes a pointer to itself.
    out[12] = 0xc0;
    out[13] = 12;
  }
  return out;
}

async function relay(query: Uint8Array): Promise<Uint8Array | null> {
  const up = hostPort(forward!);
  const sock = Deno.listenDatagram({
    transport: "udp",
    hostname: up.hostname.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  });
  try {
    await sock.send(query, { transport: "udp", ...up });
    const timer = setTimeout(() => sock.close(), 2000);
    try {
      const [data] = await sock.receive();
      return data;
    } finally {
      clearTimeout(timer);
    }
  } catch {
    return null;
  } finally {
    try {
      sock.close();
    } catch { /* closed by the timer */ }
  }
}

async function serve(sock: Deno.DatagramConn): Promise<void> {
  const buf = new Uint8Array(4096);
  for (;;) {
    let data: Uint8Array, from: Deno.Addr;
    try {
      [data, from] = await sock.receive(buf);
    } catch {
      return;
    }
    const query = data.slice();
    const reply = async () => {
      let out: Uint8Array | null;
      if (forward) out = await relay(query);
      else {
        const q = readQuestion(query);
        out = q ? answer(q) : null;
      }
      if (out) await sock.send(out, from).catch(() => {});
    };
    reply();
  }
}

const socks = args("--listen").map((l) =>
  Deno.listenDatagram({ transport: "udp", ...hostPort(l) })
);
const stop = () => socks.forEach((s) => s.close());
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
console.log(JSON.stringify({ ready: true }));
await Promise.all(socks.map(serve));
