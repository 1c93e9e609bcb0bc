/**
 * Stand-ins for StB inside the test container: the three user services with the exact
 * slice and instance names of the default config, each a parent shell -> child subshell
 * -> grandchild deno traffic client, talking to the "internet" peer, the LAN peer and a
 * loopback server. Each round's flows are appended as JSON lines (harness/traffic.ts
 * output) to /srv/stb-test/NAME.log, then `{"done":N}`: the test's ground truth.
 */

import { DENO } from "../harness/exec.ts";
import { PEER_TS, TRAFFIC_TS } from "../harness/processes.ts";
import { REMOTES } from "../harness/topology.ts";
import type { FlowResult } from "../harness/traffic.ts";

export const SERVICES = ["host-agent", "server", "shell"] as const;
export type ServiceName = typeof SERVICES[number];
export const LOG_DIR = "/srv/stb-test";
export const TCP_PORT = 5201;
export const UDP_PORT = 5202;

/** Bytes per round each way: internet flows are small, internal ones five times bigger. */
export const INTERNET_BYTES = 200_000;
export const INTERNAL_BYTES = 1_000_000;
export const EXTERNAL_HOSTS: string[] = [REMOTES.internet4, REMOTES.internet6];

function systemdEscape(s: string): string {
  return s.replaceAll("-", "\\x2d");
}

export function unitName(name: ServiceName): string {
  return `stb-next-${name}@split.service`;
}

const SVC_SH = `#!/bin/sh
# StB stand-in: this shell, a subshell child, deno grandchildren. $1 name, $2 rounds.
name=$1 rounds=$2
log=${LOG_DIR}/$name.log
# The sampler learns a new service cgroup at its next tick (0.5 s): traffic in the moment
# between is nobody's to count, so the stand-in waits like an app that starts up.
sleep 1.2
(
  i=0
  while [ "$i" -lt "$rounds" ]; do
    "${DENO}" run --no-config --no-prompt --allow-net --unstable-net "${TRAFFIC_TS}" \\
      tcp,${REMOTES.internet4},${TCP_PORT},${INTERNET_BYTES},${INTERNET_BYTES} \\
      tcp,${REMOTES.internet6},${TCP_PORT},${INTERNET_BYTES},${INTERNET_BYTES} \\
      udp,${REMOTES.internet4},${UDP_PORT},20,1000 \\
      tcp,${REMOTES.lan},${TCP_PORT},${INTERNAL_BYTES},${INTERNAL_BYTES} \\
      tcp,${REMOTES.loopback4},${TCP_PORT},${INTERNAL_BYTES},${INTERNAL_BYTES} \\
      udp,${REMOTES.loopback6},${UDP_PORT},50,1000 >> "$log" || echo '{"error":true}' >> "$log"
    i=$((i + 1))
  done
  echo "{\\"done\\":$rounds}" >> "$log"
  exec sleep infinity
) &
wait
`;

function userUnit(name: ServiceName, rounds: number): string {
  return `[Unit]
Description=StB stand-in ${name} (test)

[Service]
Slice=app-${systemdEscape(`stb-next-${name}`)}.slice
Environment=DENO_DIR=${LOG_DIR}/deno-dir
ExecStart=/bin/sh /usr/local/libexec/stb-test/svc.sh ${name} ${rounds}
`;
}

/** A loopback server inside the container, outside every StB cgroup. */
const LO_PEER_UNIT = `[Unit]
Description=loopback peer for the StB stand-ins (test)

[Service]
Environment=DENO_DIR=/var/tmp/stb-test-deno
ExecStart=${DENO} run --no-config --no-prompt --allow-net --unstable-net ${PEER_TS} --tcp-port ${TCP_PORT} --udp-port ${UDP_PORT}
`;

export const LO_PEER = "stb-test-lo-peer.service";

export function containerFiles(rounds: number): Record<string, { text: string; mode: number }> {
  const files: Record<string, { text: string; mode: number }> = {
    "/usr/local/libexec/stb-test/svc.sh": { text: SVC_SH, mode: 0o755 },
    [`/etc/systemd/system/${LO_PEER}`]: { text: LO_PEER_UNIT, mode: 0o644 },
  };
  for (const s of SERVICES) {
    files[`/etc/systemd/user/stb-next-${s}@.service`] = { text: userUnit(s, rounds), mode: 0o644 };
  }
  return files;
}

export interface ServiceLog {
  done: number;
  errors: number;
  flows: FlowResult[];
  /** Payload to and from external hosts (what must be counted). */
  externalSent: number;
  externalReceived: number;
  internalSent: number;
  internalReceived: number;
}

export function parseServiceLog(text: string): ServiceLog {
  const log: ServiceLog = {
    done: 0,
    errors: 0,
    flows: [],
    externalSent: 0,
    externalReceived: 0,
    internalSent: 0,
    internalReceived: 0,
  };
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const o = JSON.parse(line);
    if (typeof o.done === "number") log.done++;
    else if (o.error) log.errors++;
    else {
      const f = o as FlowResult;
      log.flows.push(f);
      if (EXTERNAL_HOSTS.includes(f.host)) {
        log.externalSent += f.sent;
        log.externalReceived += f.received;
      } else {
        log.internalSent += f.sent;
        log.internalReceived += f.received;
      }
    }
  }
  return log;
}
