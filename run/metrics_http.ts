/**
 * The smallest HTTP/1.1 server `/metrics` needs, on a plain TCP listener, because Deno.serve
 * has no header timeout and no connection cap: a client that sends half a request would be
 * held forever, and a few hundred of them would hold the sampler's descriptors and memory.
 * Here every connection answers one request and closes (Prometheus scrapes do not need
 * keep-alive), a connection gets HTTP_LIMITS.timeoutMs in all, at most maxConnections are
 * open at once (more are closed at accept) and a request head is at most maxRequestBytes.
 */

export interface HttpLimits {
  /** Milliseconds a connection may take, from accept to the last byte of the answer. */
  timeoutMs: number;
  /** Connections open at once; more are closed as soon as they are accepted. */
  maxConnections: number;
  /** Bytes of the request line and headers; a longer head is answered 431. */
  maxRequestBytes: number;
}

export const HTTP_LIMITS: Readonly<HttpLimits> = {
  timeoutMs: 5_000,
  maxConnections: 16,
  maxRequestBytes: 8192,
};

export interface HttpAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

/** Answers a request line; the body is dropped for HEAD. */
export type HttpHandler = (method: string, path: string) => HttpAnswer;

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

const HEAD_END = new Uint8Array([13, 10, 13, 10]);

/** Where "\r\n\r\n" starts in `buf[0, len)`, searching from `from`; -1 when absent. */
function headEnd(buf: Uint8Array, len: number, from: number): number {
  for (let i = Math.max(0, from); i + 4 <= len; i++) {
    if (HEAD_END.every((b, k) => buf[i + k] === b)) return i;
  }
  return -1;
}

/** The request head, or the status to answer when it is too long; null: the peer left. */
async function readHead(conn: Deno.Conn, max: number): Promise<string | number | null> {
  const buf = new Uint8Array(max);
  let len = 0;
  while (len < max) {
    const n = await conn.read(buf.subarray(len));
    if (n === null) return null;
    const end = headEnd(buf, len + n, len - 3);
    len += n;
    if (end >= 0) return new TextDecoder().decode(buf.subarray(0, end));
  }
  return 431;
}

function answerBytes(a: HttpAnswer, withBody: boolean): Uint8Array {
  const body = new TextEncoder().encode(a.body ?? "");
  const headers = {
    ...a.headers,
    "content-length": String(body.length),
    connection: "close",
  };
  const head = `HTTP/1.1 ${a.status} ${REASONS[a.status] ?? "Status"}\r\n` +
    Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
  const headBytes = new TextEncoder().encode(head);
  if (!withBody) return headBytes;
  const out = new Uint8Array(headBytes.length + body.length);
  out.set(headBytes);
  out.set(body, headBytes.length);
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** One request, one answer. Errors (a peer gone, a timeout's close) end it quietly. */
async function exchange(conn: Deno.Conn, limits: HttpLimits, handler: HttpHandler) {
  const head = await readHead(conn, limits.maxRequestBytes);
  if (head === null) return;
  if (typeof head === "number") {
    return await writeAll(conn, answerBytes({ status: head, body: "Request too large\n" }, true));
  }
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(head.split("\r\n", 1)[0] ?? "");
  if (!m) return await writeAll(conn, answerBytes({ status: 400, body: "Bad request\n" }, true));
  const [, method = "", target = ""] = m;
  let answer: HttpAnswer;
  try {
    answer = handler(method, target.split("?", 1)[0] ?? "");
  } catch {
    answer = { status: 500, body: "internal error\n" };
  }
  await writeAll(conn, answerBytes(answer, method !== "HEAD"));
}

export interface HttpServer {
  readonly port: number;
  /** Stops accepting, closes every open connection, and waits for them. */
  close(): Promise<void>;
}

/** Serves `handler` on `listener` within `limits` until closed. */
export function serveHttp(
  listener: Deno.Listener,
  handler: HttpHandler,
  limits: HttpLimits = HTTP_LIMITS,
): HttpServer {
  const open = new Set<Deno.Conn>();
  const done = new Set<Promise<void>>();
  const handle = async (conn: Deno.Conn) => {
    const timer = setTimeout(() => closeQuietly(conn), limits.timeoutMs);
    try {
      await exchange(conn, limits, handler);
    } catch {
      /* the peer left, or the timeout closed it */
    } finally {
      clearTimeout(timer);
      open.delete(conn);
      closeQuietly(conn);
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      if (open.size >= limits.maxConnections) {
        closeQuietly(conn);
        continue;
      }
      open.add(conn);
      const p = handle(conn);
      done.add(p);
      p.finally(() => done.delete(p));
    }
  })().catch(() => {/* the listener was closed */});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      closeQuietly(listener);
      for (const c of open) closeQuietly(c);
      await accepting;
      await Promise.all(done);
    },
  };
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* closed already */ }
}
