/**
 * The traffic side of `verify`: a hidden `verify-probe` subcommand of the CLI itself, so
 * the same code runs as a separate process from the compiled binary, the fallback launcher
 * and a source checkout alike. A separate process is the point: `verify` writes its pid to
 * a cgroup's `cgroup.procs`, which moves the whole process (every thread) there.
 *
 * Protocol on stdio, one JSON line each: the probe prints {"ready":true}, waits for a line
 * "go" on stdin (by then it sits in its cgroup), does its traffic and prints a ProbeResult.
 *
 * The boundary probe (`boundary`) and its far end (`sink`) run in network namespaces of
 * their own (verify starts them under `unshare --net`): `boundary` answers each line
 * "send HOST PORT BYTES" with a ProbeResult, `sink` echoes what each connection sends. Both
 * exit when stdin ends, so their namespaces (and the veths in them) go with verify even
 * when verify itself is killed.
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

/**
 * TCP to the sink: `bytes` out, the write side shut, then the sink's echo of the same count
 * back; so both directions carry a known payload.
 */
async function exchange(host: string, port: number, bytes: number): Promise<ProbeResult> {
  const conn = await Deno.connect({ hostname: host, port });
  try {
    const sent = await writeAll(conn, bytes);
    await conn.closeWrite();
    const received = await readAll(conn, Number.MAX_SAFE_INTEGER);
    const ok = sent === bytes && received === bytes;
    return {
      ok,
      sent,
      received,
      ...(ok ? {} : { error: `moved ${sent}/${received} of ${bytes} bytes` }),
    };
  } finally {
    conn.close();
  }
}

/** Lines of stdin, one at a time; null at its end. */
function stdinLines(): () => Promise<string | null> {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return async () => {
    while (!buffer.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) return null;
      buffer += value;
    }
    const i = buffer.indexOf("\n");
    const line = buffer.slice(0, i);
    buffer = buffer.slice(i + 1);
    return line;
  };
}

async function runBoundaryProbe(): Promise<void> {
  console.log(JSON.stringify({ ready: true, pid: Deno.pid }));
  const next = stdinLines();
  for (let line = await next(); line !== null; line = await next()) {
    const [verb, host, port, bytes] = line.trim().split(" ");
    let result: ProbeResult;
    try {
      if (verb !== "send" || !host || !Number(port) || !Number(bytes)) {
        throw new Error(`expected "send HOST PORT BYTES", got ${JSON.stringify(line)}`);
      }
      result = await exchange(host, Number(port), Number(bytes));
    } catch (e) {
      result = { ok: false, sent: 0, received: 0, error: (e as Error).message };
    }
    console.log(JSON.stringify(result));
  }
}

async function echoCount(conn: Deno.Conn): Promise<void> {
  try {
    const got = await readAll(conn, Number.MAX_SAFE_INTEGER);
    await writeAll(conn, got);
  } catch {
    /* the probe went away: nothing to report */
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

async function runSink(): Promise<void> {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: "::", port: 0 });
  } catch {
    listener = Deno.listen({ hostname: "0.0.0.0", port: 0 }); // IPv6 disabled
  }
  const port = (listener.addr as Deno.NetAddr).port;
  console.log(JSON.stringify({ ready: true, pid: Deno.pid, port }));
  const next = stdinLines();
  (async () => {
    while (await next() !== null) { /* only the end matters */ }
    Deno.exit(0);
  })();
  for await (const conn of listener) echoCount(conn);
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
  cmd.command("boundary")
    .description("send to the sink on request (in the probe's namespace)")
    .action(() => runBoundaryProbe());
  cmd.command("sink")
    .description("echo what each TCP connection sends (in the peer namespace)")
    .action(() => runSink());
  return cmd;
}
