/**
 * What a service process does with DNS in the names tests, run as the grandchild of a
 * service's process chain (processes.ts). Steps, in order, one JSON line printed each:
 *
 *   resolve,SERVER,NAME,A|AAAA   through Deno.resolveDns (a real resolver) at SERVER
 *   raw,SERVER,NAME,A|AAAA       one query of our own; prints the reply's size (or null)
 *   flood,SERVER,COUNT           COUNT queries for N.flood.stb.test, paced, answers read
 *
 * SERVER is host:port, an IPv6 host in brackets.
 *
 *   deno run --allow-net --unstable-net dns_client.ts resolve,198.51.100.2:53,a.stb.test,A
 */

import { encodeDnsQuery } from "../../names/dns.ts";

function hostPort(text: string): { hostname: string; port: number } {
  const m = text.match(/^\[?([^\]]+?)\]?:(\d+)$/);
  if (!m) throw new Error(`"${text}" is not host:port`);
  return { hostname: m[1]!, port: Number(m[2]) };
}

const TYPE: Record<string, number> = { A: 1, AAAA: 28 };

function socketFor(server: { hostname: string }): Deno.DatagramConn {
  return Deno.listenDatagram({
    transport: "udp",
    hostname: server.hostname.includes(":") ? "::" : "0.0.0.0",
    port: 0,
  });
}

async function receiveWithin(sock: Deno.DatagramConn, ms: number): Promise<Uint8Array | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), ms));
  try {
    return await Promise.race([sock.receive().then(([d]) => d), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

for (const step of Deno.args) {
  const [what, serverText = "", a = "", b = ""] = step.split(",");
  const server = hostPort(serverText);
  if (what === "resolve") {
    const addresses = await Deno.resolveDns(a, b as "A" | "AAAA", {
      nameServer: { ipAddr: server.hostname, port: server.port },
    });
    console.log(JSON.stringify({ name: a, type: b, addresses }));
  } else if (what === "raw") {
    const sock = socketFor(server);
    try {
      await sock.send(encodeDnsQuery(0x4242, a, TYPE[b] ?? 1), { transport: "udp", ...server });
      const reply = await receiveWithin(sock, 2000);
      console.log(JSON.stringify({ name: a, reply: reply?.length ?? null }));
    } finally {
      sock.close();
    }
  } else if (what === "flood") {
    const count = Number(a);
    const sock = socketFor(server);
    let answered = 0;
    const reader = (async () => {
      while (answered < count && await receiveWithin(sock, 2000) !== null) answered++;
    })();
    for (let i = 0; i < count; i++) {
      await sock.send(encodeDnsQuery(i & 0xffff, `${i}.flood.stb.test`, 1), {
        transport: "udp",
        ...server,
      });
      // Paced so the capture's ring buffer keeps up: a flood, not a burst to lose.
      if (i % 200 === 199) await new Promise((r) => setTimeout(r, 60));
    }
    await reader;
    sock.close();
    console.log(JSON.stringify({ flood: count, answered }));
  } else {
    throw new Error(`unknown step "${step}"`);
  }
}
