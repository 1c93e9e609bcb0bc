/**
 * The server side of test traffic, run in the peer netns (and once on loopback in the
 * client netns): a TCP server speaking wire.ts and a UDP echo. Prints one JSON line
 * `{"ready":true}` when both listen, runs until SIGTERM.
 *
 *   deno run --allow-net --unstable-net peer.ts --tcp-port 5201 --udp-port 5202 [--scope ext1]
 *
 * `--scope` names the interface to add to link-local reply addresses: the kernel refuses
 * to send to fe80:: without one, and Deno does not hand the scope back with the sender.
 */

import { decodeHeader, drain, pour, TCP_HEADER_BYTES } from "./wire.ts";

function arg(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const tcpPort = Number(arg("--tcp-port") ?? 5201);
const udpPort = Number(arg("--udp-port") ?? 5202);
const scope = arg("--scope");

async function serveTcp(conn: Deno.Conn): Promise<void> {
  try {
    const head = new Uint8Array(TCP_HEADER_BYTES);
    if (await drain(conn, TCP_HEADER_BYTES, head) < TCP_HEADER_BYTES) return;
    const { upload, download, rate } = decodeHeader(head);
    await Promise.all([drain(conn, upload), pour(conn, download, rate)]);
  } catch {
    // A client that went away mid-flow is its own test's failure, not the server's.
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

async function serveUdp(sock: Deno.DatagramConn): Promise<void> {
  const buf = new Uint8Array(65536);
  while (true) {
    let data: Uint8Array, from: Deno.Addr;
    try {
      [data, from] = await sock.receive(buf);
    } catch {
      return; // closed on shutdown
    }
    const addr = from as Deno.NetAddr;
    let hostname = addr.hostname;
    if (scope && hostname.toLowerCase().startsWith("fe80:") && !hostname.includes("%")) {
      hostname += `%${scope}`;
    }
    try {
      await sock.send(data, { transport: "udp", hostname, port: addr.port });
    } catch (e) {
      console.error(`peer: echo to ${hostname} failed: ${e}`);
    }
  }
}

const listener = Deno.listen({ hostname: "::", port: tcpPort });
const udp = Deno.listenDatagram({ transport: "udp", hostname: "::", port: udpPort });
const stop = () => {
  listener.close();
  udp.close();
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
const udpDone = serveUdp(udp);
console.log(JSON.stringify({ ready: true, tcp: tcpPort, udp: udpPort }));
try {
  for await (const conn of listener) serveTcp(conn);
} catch {
  // listener closed
}
await udpDone;
