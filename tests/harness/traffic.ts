/**
 * The client side of test traffic: runs inside a service cgroup as the grandchild of the
 * service's process chain and reports, as one JSON line per flow, the payload bytes it
 * really sent and received (the tests' ground truth next to the veth counters).
 *
 *   deno run --allow-net --unstable-net traffic.ts FLOW...
 *   FLOW = tcp,HOST,PORT,UPLOAD,DOWNLOAD[,RATE]   upload/download bytes, both paced at RATE B/s
 *        | udp,HOST,PORT,COUNT,SIZE               COUNT datagrams of SIZE bytes, each echoed
 *
 * HOST may carry a scope, e.g. fe80::2%ext0. Flows run one after another. Exit 1 when a
 * flow fails to connect or a TCP flow comes up short.
 */

import { CHUNK, drain, encodeHeader, pour, TCP_HEADER_BYTES } from "./wire.ts";

export interface TcpResult {
  proto: "tcp";
  host: string;
  /** Payload bytes written, header included. */
  sent: number;
  received: number;
}

export interface UdpResult {
  proto: "udp";
  host: string;
  size: number;
  sent_datagrams: number;
  received_datagrams: number;
  sent: number;
  received: number;
}

export type FlowResult = TcpResult | UdpResult;

async function tcpFlow(host: string, port: number, up: number, down: number, rate: number) {
  const conn = await Deno.connect({ hostname: host, port });
  try {
    await conn.write(encodeHeader(up, down, rate));
    const [sent, received] = await Promise.all([pour(conn, up, rate), drain(conn, down)]);
    const result: TcpResult = { proto: "tcp", host, sent: sent + TCP_HEADER_BYTES, received };
    if (received !== down) throw new Error(`TCP to ${host}: got ${received} of ${down} bytes`);
    return result;
  } finally {
    conn.close();
  }
}

const UDP_WINDOW = 8;
const UDP_WAIT_MS = 500;

async function udpFlow(host: string, port: number, count: number, size: number) {
  const v6 = host.includes(":");
  const sock = Deno.listenDatagram({ transport: "udp", hostname: v6 ? "::" : "0.0.0.0", port: 0 });
  let received = 0, receivedBytes = 0;
  let wake = null as (() => void) | null;
  const receiver = (async () => {
    const buf = new Uint8Array(CHUNK);
    try {
      while (true) {
        const [data] = await sock.receive(buf);
        received++;
        receivedBytes += data.length;
        wake?.();
      }
    } catch {
      // closed
    }
  })();
  const waitEcho = () =>
    new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        wake = null;
        resolve(false);
      }, UDP_WAIT_MS);
      wake = () => {
        clearTimeout(t);
        wake = null;
        resolve(true);
      };
    });
  const payload = new Uint8Array(size).fill(0xa5);
  let sent = 0;
  for (let i = 0; i < count; i++) {
    // A small window keeps the echo from overrunning socket buffers; a lost echo only
    // costs one wait, and the result reports exactly what came back.
    while (sent - received >= UDP_WINDOW) if (!await waitEcho()) break;
    await sock.send(payload, { transport: "udp", hostname: host, port });
    sent++;
  }
  while (received < sent) if (!await waitEcho()) break;
  sock.close();
  await receiver;
  const result: UdpResult = {
    proto: "udp",
    host,
    size,
    sent_datagrams: sent,
    received_datagrams: received,
    sent: sent * size,
    received: receivedBytes,
  };
  return result;
}

export function parseFlow(spec: string): () => Promise<FlowResult> {
  const [proto, host, ...nums] = spec.split(",");
  const n = nums.map(Number);
  if (host === undefined || n.some((x) => !Number.isSafeInteger(x) || x < 0)) {
    throw new Error(`bad flow "${spec}"`);
  }
  // The lengths are checked before any of these is used.
  const [a = 0, b = 0, c = 0, d = 0] = n;
  if (proto === "tcp" && (n.length === 3 || n.length === 4)) {
    return () => tcpFlow(host, a, b, c, d);
  }
  if (proto === "udp" && n.length === 3) return () => udpFlow(host, a, b, c);
  throw new Error(
    `bad flow "${spec}": expected tcp,HOST,PORT,UP,DOWN[,RATE] or udp,HOST,PORT,COUNT,SIZE`,
  );
}

if (import.meta.main) {
  try {
    const flows = Deno.args.map(parseFlow);
    for (const flow of flows) console.log(JSON.stringify(await flow()));
  } catch (e) {
    console.error(`traffic: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
