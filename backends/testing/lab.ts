/**
 * A throwaway lab for the firewall backend tests, on the real kernel:
 *
 *   client netns (backend runs here)  ==veth==  peer netns (traffic server)
 *     192.0.2.1/24  2001:db8::1/64              192.0.2.2    2001:db8::2      external
 *     192.168.77.1/24  fd00:77::1/64            192.168.77.2 fd00:77::2       internal
 *
 * plus a cgroup tree `stb-netacct-test-<random>` under the cgroup2 mount. Every piece is
 * recorded as it is made, and cleanup() undoes all of it in reverse order, also after a
 * failure halfway through setup.
 */

import { findCgroup2Mount } from "../../lib/cgroup.ts";
import { endProcess } from "../../tests/harness/exec.ts";

const DENO = Deno.execPath();
const HERE = new URL(".", import.meta.url).pathname;

export const PEER = {
  ext4: "192.0.2.2",
  ext6: "2001:db8::2",
  int4: "192.168.77.2",
  int6: "fd00:77::2",
};
export const PORT = 5000;

/** Largest TCP segment payload at MTU 1500 (IPv4 with timestamps): what one retransmit adds. */
export const MSS = 1448;

/** RetransSegs from a netns's /proc/net/snmp: the "Tcp:" names line, then its values line. */
export function parseRetransSegs(snmp: string): number {
  const [names, values] = snmp.split("\n").filter((l) => l.startsWith("Tcp:"))
    .map((l) => l.split(/\s+/));
  const at = names?.indexOf("RetransSegs") ?? -1;
  if (at < 0 || !values) throw new Error(`No Tcp RetransSegs in /proc/net/snmp: ${snmp}`);
  return Number(values[at]);
}

/** Runs a command, returns stdout; throws with its stderr on failure. */
export async function sh(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** A line-oriented JSON request/reply channel to testing/driver.ts. */
export class Driver {
  #reader: ReadableStreamDefaultReader<string>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #buffered = "";

  constructor(readonly child: Deno.ChildProcess) {
    this.#reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.#writer = child.stdin.getWriter();
  }

  async request<T = unknown>(req: Record<string, unknown>): Promise<T> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(req) + "\n"));
    while (!this.#buffered.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`driver exited while answering ${JSON.stringify(req)}`);
      this.#buffered += value;
    }
    const nl = this.#buffered.indexOf("\n");
    const reply = JSON.parse(this.#buffered.slice(0, nl));
    this.#buffered = this.#buffered.slice(nl + 1);
    if (!reply.ok) throw new Error(`driver ${req.op}: ${reply.error}`);
    return reply.result as T;
  }

  async close(): Promise<void> {
    try {
      await this.#writer.close();
    } catch { /* already gone */ }
    // Closing stdin asks the driver to stop; a stuck one is killed.
    await endProcess(this.child, 5000, null);
    await this.#reader.cancel().catch(() => {});
  }
}

export class Lab {
  readonly id = crypto.randomUUID().slice(0, 8);
  readonly clientNs = `stbc-${this.id}`;
  readonly peerNs = `stbp-${this.id}`;
  readonly mount = findCgroup2Mount();
  /** Cgroup path of the test tree relative to the cgroup2 mount. */
  readonly cgroupRoot = `/stb-netacct-test-${this.id}`;
  #netns: string[] = [];
  #cgroups: string[] = [];
  #servers: Deno.ChildProcess[] = [];
  #drivers: Driver[] = [];

  cgroupDir(rel: string): string {
    return this.mount.mountPoint + rel;
  }

  /** Runs a command inside a netns without remounting /sys (unlike `ip netns exec`). */
  inNs(ns: string, cmd: string, args: string[], stdin?: string): Promise<string> {
    return sh("nsenter", [`--net=/run/netns/${ns}`, cmd, ...args], stdin);
  }

  async setup(): Promise<void> {
    for (const ns of [this.clientNs, this.peerNs]) {
      await sh("ip", ["netns", "add", ns]);
      this.#netns.push(ns);
      await sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    }
    const [vc, vp] = [`stbc${this.id.slice(0, 6)}`, `stbp${this.id.slice(0, 6)}`];
    await sh("ip", [
      "-n",
      this.clientNs,
      "link",
      "add",
      vc,
      "type",
      "veth",
      "peer",
      "name",
      vp,
      "netns",
      this.peerNs,
    ]);
    const addrs: [string, string, string[]][] = [
      [this.clientNs, vc, ["192.0.2.1/24", "192.168.77.1/24", "2001:db8::1/64", "fd00:77::1/64"]],
      [this.peerNs, vp, ["192.0.2.2/24", "192.168.77.2/24", "2001:db8::2/64", "fd00:77::2/64"]],
    ];
    for (const [ns, dev, list] of addrs) {
      for (const a of list) {
        await sh("ip", [
          "-n",
          ns,
          "addr",
          "add",
          a,
          "dev",
          dev,
          ...(a.includes(":") ? ["nodad"] : []),
        ]);
      }
      await sh("ip", ["-n", ns, "link", "set", dev, "up"]);
    }
    await this.mkdirCgroup(this.cgroupRoot);
    const server = new Deno.Command("nsenter", {
      args: [
        `--net=/run/netns/${this.peerNs}`,
        DENO,
        "run",
        "-A",
        `${HERE}traffic.ts`,
        "serve",
        ...Object.values(PEER).flatMap((a) => [a, String(PORT)]),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#servers.push(server);
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const { value } = await reader.read();
    if (!value?.includes("ready")) throw new Error("traffic server did not start");
    reader.releaseLock();
    server.stdout.cancel().catch(() => {});
  }

  async mkdirCgroup(rel: string): Promise<void> {
    await Deno.mkdir(this.cgroupDir(rel));
    this.#cgroups.push(rel);
  }

  /** rmdir; the cgroup must be empty (its client processes have exited). */
  async rmdirCgroup(rel: string): Promise<void> {
    await Deno.remove(this.cgroupDir(rel));
    this.#cgroups = this.#cgroups.filter((c) => c !== rel);
  }

  /** Runs transfers from the client netns, from inside cgroup `rel` (null: stay outside). */
  async transfer(rel: string | null, ops: string[]): Promise<void> {
    const out = await this.inNs(this.clientNs, DENO, [
      "run",
      "-A",
      `${HERE}traffic.ts`,
      "client",
      rel === null ? "-" : this.cgroupDir(rel),
      ...ops,
    ]);
    if (!out.includes("done")) throw new Error(`client did not finish: ${out}`);
  }

  /**
   * TCP segments retransmitted so far by the client and by the peer (RetransSegs of each
   * netns). Counters see a retransmitted segment again, as it is on the wire again: drops
   * on a busy veth backlog make the count exceed the payload by that much.
   */
  async retransmits(): Promise<{ client: number; peer: number }> {
    const get = async (ns: string) =>
      parseRetransSegs(await this.inNs(ns, "cat", ["/proc/net/snmp"]));
    return { client: await get(this.clientNs), peer: await get(this.peerNs) };
  }

  startDriver(backend: string): Driver {
    const child = new Deno.Command("nsenter", {
      args: [`--net=/run/netns/${this.clientNs}`, DENO, "run", "-A", `${HERE}driver.ts`, backend],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const d = new Driver(child);
    this.#drivers.push(d);
    return d;
  }

  async cleanup(): Promise<void> {
    const errors: string[] = [];
    const attempt = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        errors.push(`${what}: ${e instanceof Error ? e.message : e}`);
      }
    };
    for (const d of this.#drivers.reverse()) await attempt("driver", () => d.close());
    for (const s of this.#servers.reverse()) {
      await attempt("server", async () => {
        try {
          s.kill("SIGKILL");
        } catch { /* exited */ }
        await s.status;
      });
    }
    // Deepest first: a cgroup with children cannot be removed.
    const byDepth = [...this.#cgroups].sort((a, b) => b.split("/").length - a.split("/").length);
    for (const c of byDepth) await attempt(`rmdir ${c}`, () => Deno.remove(this.cgroupDir(c)));
    for (const ns of this.#netns.reverse()) {
      await attempt(`netns ${ns}`, () => sh("ip", ["netns", "del", ns]));
    }
    if (errors.length) throw new Error(`lab cleanup left things behind: ${errors.join("; ")}`);
  }
}
