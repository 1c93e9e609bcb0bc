/**
 * Load for the soak test, run as the grandchild of a service's process chain (inside the
 * service cgroup, in the client netns): many concurrent TCP connections to the harness
 * peer, each paced both ways, plus a UDP flood against the peer's echo, sent as fast as
 * this process can. Runs until SIGTERM, on which it closes every socket and exits, the way
 * a service stops (the test then removes the cgroup), or until killed. Counting is checked
 * against the veth, not against what this tool reports, so it only reports progress:
 *
 *   deno run --allow-net --allow-write load.ts HOST TCP_PORT UDP_PORT CONNS RATE UDP_SIZE READY_FILE
 *
 * RATE is bytes/s per connection and direction; UDP_SIZE 0 turns the flood off. When all
 * connections are up, {"connected": N, "ms": T} is written to READY_FILE.
 */

import { CHUNK, encodeHeader } from "../harness/wire.ts";

function usage(): never {
  throw new Error("usage: load.ts HOST TCP_PORT UDP_PORT CONNS RATE UDP_SIZE READY_FILE");
}
const [host = usage(), tcpPort, udpPort, conns, rate, udpSize, readyFile = usage()] = Deno.args;
const CONNS = Number(conns), RATE = Number(rate), UDP_SIZE = Number(udpSize);
/** Far more than a soak moves: connections run until the process is killed. */
const ENDLESS = 1e15;
/** Connects in batches so the peer's accept backlog never overflows (SYN retries: 1 s). */
const BATCH = 100;

const open: { close(): void }[] = [];
let stopping = false;
/** Longer than the peer's pacing period (one chunk a second), so every connection has data. */
const QUIESCE_MS = 1200;
Deno.addSignalListener("SIGTERM", () => {
  // Stop sending and reading, let the peer's next chunk land unread, then close: unread
  // data makes the kernel answer the close with a RST, so the peer stops at once. A plain
  // FIN would leave the peer pouring into a TIME_WAIT socket, which no cgroup hook sees.
  stopping = true;
  setTimeout(() => {
    for (const c of open) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    Deno.exit(0);
  }, QUIESCE_MS);
});

/** harness pour/drain, but stoppable. */
async function paced(conn: Deno.Conn): Promise<void> {
  const chunk = new Uint8Array(CHUNK).fill(0x5a);
  const start = performance.now();
  let sent = 0;
  while (!stopping) {
    sent += await conn.write(chunk);
    const wait = start + (sent / RATE) * 1000 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

async function reader(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(CHUNK);
  while (!stopping && await conn.read(buf) !== null) { /* discard */ }
}

async function connection(): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: host, port: Number(tcpPort) });
  open.push(conn);
  await conn.write(encodeHeader(ENDLESS, ENDLESS, RATE));
  return conn;
}

function flow(conn: Deno.Conn): void {
  // Errors end the flow quietly: the process is about to be stopped anyway.
  paced(conn).catch(() => {});
  reader(conn).catch(() => {});
}

async function udpFlood(): Promise<void> {
  const sock = Deno.listenDatagram({
    transport: "udp",
    hostname: host.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  });
  open.push(sock);
  const payload = new Uint8Array(UDP_SIZE).fill(0xc3);
  const buf = new Uint8Array(65536);
  // Echoes are read so they are delivered to the socket (and counted), never processed.
  (async () => {
    try {
      while (!stopping) await sock.receive(buf);
    } catch { /* closed */ }
  })();
  const sender = async () => {
    while (!stopping) {
      try {
        await sock.send(payload, { transport: "udp", hostname: host, port: Number(udpPort) });
      } catch {
        // ENOBUFS and friends: the machine's limit, which is the point of a flood.
        await new Promise((r) => setTimeout(r, 1));
      }
    }
  };
  // A few sends in flight keep the socket busy while each await returns.
  await Promise.all(Array.from({ length: 8 }, sender));
}

const start = performance.now();
let up = 0;
for (let i = 0; i < CONNS; i += BATCH) {
  const batch = await Promise.all(
    Array.from({ length: Math.min(BATCH, CONNS - i) }, () => connection()),
  );
  for (const c of batch) flow(c);
  up += batch.length;
}
Deno.writeTextFileSync(
  readyFile,
  JSON.stringify({ connected: up, ms: Math.round(performance.now() - start) }) + "\n",
);
if (UDP_SIZE > 0) await udpFlood();
else await new Promise(() => {});
