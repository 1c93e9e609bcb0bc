/**
 * The little protocol between traffic.ts (client, inside a service cgroup) and peer.ts
 * (server, outside every counted cgroup). A TCP flow opens with a 24-byte header: bytes
 * the client will upload, bytes the server must send back, and the server's send rate
 * (bytes/s, 0 = as fast as possible). UDP is a plain echo.
 */

export const TCP_HEADER_BYTES = 24;
export const CHUNK = 64 * 1024;

export function encodeHeader(upload: number, download: number, rate: number): Uint8Array {
  const buf = new Uint8Array(TCP_HEADER_BYTES);
  const view = new DataView(buf.buffer);
  view.setBigUint64(0, BigInt(upload));
  view.setBigUint64(8, BigInt(download));
  view.setBigUint64(16, BigInt(rate));
  return buf;
}

export function decodeHeader(buf: Uint8Array): { upload: number; download: number; rate: number } {
  const view = new DataView(buf.buffer, buf.byteOffset, TCP_HEADER_BYTES);
  return {
    upload: Number(view.getBigUint64(0)),
    download: Number(view.getBigUint64(8)),
    rate: Number(view.getBigUint64(16)),
  };
}

/** Reads exactly `n` bytes (or until EOF) and returns how many arrived. */
export async function drain(conn: Deno.Conn, n: number, into?: Uint8Array): Promise<number> {
  const buf = into ?? new Uint8Array(CHUNK);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(0, Math.min(buf.length, n - got)));
    if (r === null) break;
    got += r;
  }
  return got;
}

/** Writes `n` bytes, paced to `rate` bytes/s when non-zero. Returns bytes written. */
export async function pour(conn: Deno.Conn, n: number, rate = 0): Promise<number> {
  const chunk = new Uint8Array(CHUNK).fill(0x5a);
  const start = performance.now();
  let sent = 0;
  while (sent < n) {
    const size = Math.min(chunk.length, n - sent);
    sent += await conn.write(chunk.subarray(0, size));
    if (rate > 0) {
      const due = start + (sent / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }
  return sent;
}
