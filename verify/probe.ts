/**
 * The traffic side of `verify`: a hidden `verify-probe` subcommand of the CLI itself, so
 * the same code runs as a separate process from the compiled binary, the fallback launcher
 * and a source checkout alike. A separate process is the point: `verify` writes its pid to
 * a cgroup's `cgroup.procs`, which moves the whole process (every thread) there.
 *
 * Protocol on stdio, one JSON line each: the probe prints {"ready":true}, waits for a line
 * "go" on stdin (by then it sits in its cgroup), does its traffic and prints a ProbeResult.
 */

import { Command, InvalidArgumentError } from "@commander-js/extra-typings";

export interface ProbeResult {
  ok: boolean;
  /** Payload bytes the probe wrote / read (HTTP: request line and body, no headers). */
  sent: number;
  received: number;
  /** HTTP status of a fetch. */
  status?: number;
  error?: string;
}

const CHUNK = 64 * 1024;

function parseBytes(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError("a positive byte count");
  return n;
}

async function writeAll(conn: Deno.Conn, total: number): Promise<number> {
  const buf = new Uint8Array(CHUNK).fill(0x5a);
  let sent = 0;
  while (sent < total) {
    sent += await conn.write(buf.subarray(0, Math.min(CHUNK, total - sent)));
  }
  return sent;
}

async function readAll(conn: Deno.Conn, total: number): Promise<number> {
  const buf = new Uint8Array(CHUNK);
  let got = 0;
  while (got < total) {
    const n = await conn.read(buf);
    if (n === null) break;
    got += n;
  }
  return got;
}

/**
 * TCP to a listener this process opens on `host` itself: both ends live in the probe, so
 * both directions belong to the probe's cgroup. `bytes` go each way.
 */
async function localRoundTrip(host: string, bytes: number): Promise<ProbeResult> {
  const listener = Deno.listen({ hostname: host, port: 0 });
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    const server = (async () => {
      const conn = await listener.accept();
      try {
        const [r, w] = await Promise.all([readAll(conn, bytes), writeAll(conn, bytes)]);
        return { r, w };
      } finally {
        conn.close();
      }
    })();
    const conn = await Deno.connect({ hostname: host, port });
    let sent = 0, received = 0;
    try {
      [sent, received] = await Promise.all([writeAll(conn, bytes), readAll(conn, bytes)]);
    } finally {
      conn.close();
    }
    await server;
    const ok = sent === bytes && received === bytes;
    return {
      ok,
      sent,
      received,
      ...(ok ? {} : { error: `moved ${sent}/${received} of ${bytes} bytes` }),
    };
  } finally {
    listener.close();
  }
}

async function fetchUrl(url: string, timeoutS: number): Promise<ProbeResult> {
  const res = await fetch(url, {
    signal: AbortSignal.timeout(timeoutS * 1000),
    headers: { "user-agent": "stb-netacct-verify", "accept-encoding": "identity" },
    redirect: "manual",
  });
  let received = 0;
  if (res.body) {
    for await (const chunk of res.body) received += chunk.length;
  }
  const ok = res.status >= 200 && res.status < 300;
  return {
    ok,
    sent: 0,
    received,
    status: res.status,
    ...(ok ? {} : { error: `the server answered HTTP ${res.status}` }),
  };
}

async function waitForGo(): Promise<void> {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("verify went away before saying go");
    text += value;
  }
  reader.releaseLock();
  if (text.trim() !== "go") throw new Error(`expected "go" on stdin, got ${JSON.stringify(text)}`);
}

async function runProbe(work: () => Promise<ProbeResult>): Promise<void> {
  console.log(JSON.stringify({ ready: true, pid: Deno.pid }));
  let result: ProbeResult;
  try {
    await waitForGo();
    result = await work();
  } catch (e) {
    result = { ok: false, sent: 0, received: 0, error: (e as Error).message };
  }
  console.log(JSON.stringify(result));
}

/** Hidden: only `verify` runs it. */
export function verifyProbeCommand() {
  const cmd = new Command("verify-probe")
    .description("(internal) traffic probe of `stb-netacct verify`; not for direct use");
  cmd.command("local")
    .requiredOption("--host <address>", "an address of this host to listen on and connect to")
    .requiredOption("--bytes <n>", "bytes each way", parseBytes)
    .action((o) => runProbe(() => localRoundTrip(o.host, o.bytes)));
  cmd.command("fetch")
    .requiredOption("--url <url>", "http(s) URL to GET")
    .requiredOption("--timeout <seconds>", "give up after", Number)
    .action((o) => runProbe(() => fetchUrl(o.url, o.timeout)));
  return cmd;
}
