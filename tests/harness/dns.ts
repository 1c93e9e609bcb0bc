/**
 * DNS in the lab: the server (dns_server.ts) in the peer netns, a stub resolver on
 * loopback in the client netns that forwards to it (as systemd-resolved does on
 * 127.0.0.53), and the client steps a service process runs (dns_client.ts). Nothing here
 * reaches beyond the lab's namespaces.
 */

import { endProcess } from "./exec.ts";
import { denoTool } from "./processes.ts";

const HARNESS_DIR = new URL(".", import.meta.url).pathname;
export const DNS_SERVER_TS = `${HARNESS_DIR}dns_server.ts`;
export const DNS_CLIENT_TS = `${HARNESS_DIR}dns_client.ts`;

/** Where the lab's DNS server and the stub answer. */
export const DNS_SERVER4 = "198.51.100.2:53";
export const DNS_SERVER6 = "[2001:db8:1::2]:53";
export const DNS_STUB = "127.0.0.53:53";

export interface DnsServer {
  stop(): Promise<void>;
}

/** Starts dns_server.ts with `args` in a netns and waits until it listens. */
export async function startDnsServer(netnsPath: string, args: string[]): Promise<DnsServer> {
  const child = new Deno.Command("nsenter", {
    args: [`--net=${netnsPath}`, "--", ...denoTool(DNS_SERVER_TS, args)],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stop = () => endProcess(child, 2000).then(() => {});
  const first = await reader.read();
  if (!first.value?.includes('"ready"')) {
    await stop();
    throw new Error(`DNS server ${args.join(" ")} in ${netnsPath} did not start`);
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return { stop };
}

/**
 * A command line that runs `argv` in `netnsPath` with /etc/resolv.conf naming only
 * `nameserver` (bind-mounted in a private mount namespace, as `ip netns exec` does with
 * /etc/netns/NAME/resolv.conf): the system resolver then asks the lab, nothing else.
 */
export function withResolvConf(netnsPath: string, resolvConf: string, argv: string[]): string[] {
  return [
    "nsenter",
    `--net=${netnsPath}`,
    "--",
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount --bind "$0" /etc/resolv.conf && exec "$@"',
    resolvConf,
    ...argv,
  ];
}
