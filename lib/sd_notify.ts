/**
 * systemd's readiness protocol (sd_notify(3)): one datagram of "KEY=value" lines to the
 * AF_UNIX socket named by $NOTIFY_SOCKET. The unit is Type=notify, so `systemctl start`
 * returns once `run` counts and has published its first sample, and `systemctl status`
 * shows what it is doing (STATUS=). Outside systemd there is no socket and nothing is sent.
 */

import { cString, errno, libc, O_CLOEXEC, osError } from "./libc.ts";

const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_CLOEXEC = O_CLOEXEC, MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): sa_family_t, then sun_path[108]. */
const SOCKADDR_UN_SIZE = 110;

/**
 * struct sockaddr_un for `path` and its length: a filesystem path NUL-terminated, an
 * abstract one ("@name") with a leading NUL instead of the "@" and no terminator.
 */
export function sockaddrUn(path: string): { addr: Uint8Array<ArrayBuffer>; length: number } {
  const abstract = path.startsWith("@");
  const name = abstract ? new TextEncoder().encode(path.slice(1)) : cString(path);
  const pathBytes = name.length + (abstract ? 1 : 0);
  if (pathBytes > SOCKADDR_UN_SIZE - 2) {
    throw new Error(`NOTIFY_SOCKET "${path}" is longer than a socket address can hold`);
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, abstract ? 3 : 2);
  return { addr, length: 2 + pathBytes };
}

/**
 * Sends `state` ("READY=1\nSTATUS=...") to systemd. False when not run by systemd as a
 * notify service; throws when the socket is named but the datagram cannot go.
 */
export function sdNotify(state: string, socketPath = Deno.env.get("NOTIFY_SOCKET")): boolean {
  if (!socketPath || !(socketPath.startsWith("/") || socketPath.startsWith("@"))) return false;
  const { addr, length } = sockaddrUn(socketPath);
  const c = libc();
  const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw osError(errno(), "socket(AF_UNIX)");
  try {
    const data = new TextEncoder().encode(state);
    const sent = c.sendto(fd, data, BigInt(data.length), MSG_NOSIGNAL, addr, length);
    if (sent < 0) throw osError(errno(), `sendto '${socketPath}'`);
  } finally {
    c.close(fd);
  }
  return true;
}
