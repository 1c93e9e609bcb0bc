/**
 * The benchmarks' lab: scratch network namespaces, veths, addresses, cgroups, a tmpfs and
 * processes, each undone in reverse order by `close`, also after a failure half-way. The
 * benches build their topologies from it (`pairLab`, `makeLab`: two hosts on one veth;
 * accuracy: a routed three-host path). The test suite has a lab of its own (tests/harness), made for
 * assertions; this one is for measuring and imports nothing from tests/.
 */

import { cgroupDir, findCgroup2Mount, removeCgroupDir } from "../lib/cgroup.ts";

/** A Deno.Command for `argv` (program first); an empty argv is a caller's bug. */
export function command(
  argv: readonly string[],
  options: Omit<Deno.CommandOptions, "args"> = {},
): Deno.Command {
  const [program, ...args] = argv;
  if (program === undefined) throw new Error("empty command line");
  return new Deno.Command(program, { ...options, args });
}

/** Runs a command; its stdout. Throws with its stderr on failure. */
export async function sh(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`${cmd} ${args.join(" ")} failed: ${err}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/**
 * Ends a child: `signal` (SIGTERM unless told), then SIGKILL if it is still there after
 * `graceMs`; resolves with its status.
 */
export async function endProcess(
  child: Deno.ChildProcess,
  graceMs: number,
  signal: Deno.Signal = "SIGTERM",
): Promise<Deno.CommandStatus> {
  try {
    child.kill(signal);
  } catch { /* already exited */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, graceMs);
  try {
    return await child.status;
  } finally {
    clearTimeout(timer);
  }
}

export class Lab {
  readonly tag = crypto.randomUUID().slice(0, 6);
  readonly mount = findCgroup2Mount();
  #undo: (() => Promise<unknown>)[] = [];

  /** Registers an undo step; `close` runs them newest first. */
  defer(undo: () => Promise<unknown>): void {
    this.#undo.push(undo);
  }

  /** A network namespace with lo up. */
  async netns(name: string): Promise<string> {
    await sh("ip", "netns", "add", name);
    this.defer(() => sh("ip", "netns", "del", name));
    await sh("ip", "-n", name, "link", "set", "lo", "up");
    return name;
  }

  /** A veth pair, one end in each namespace (it goes with them). */
  async veth(a: { ns: string; dev: string }, b: { ns: string; dev: string }): Promise<void> {
    await sh(
      "ip",
      "link",
      "add",
      a.dev,
      "netns",
      a.ns,
      "type",
      "veth",
      "peer",
      "name",
      b.dev,
      "netns",
      b.ns,
    );
  }

  /** Addresses on a device (IPv6 without duplicate detection), then the device up. */
  async addresses(at: { ns: string; dev: string }, cidrs: string[]): Promise<void> {
    for (const c of cidrs) {
      await sh(
        "ip",
        "-n",
        at.ns,
        "addr",
        "add",
        c,
        "dev",
        at.dev,
        ...(c.includes(":") ? ["nodad"] : []),
      );
    }
    await sh("ip", "-n", at.ns, "link", "set", at.dev, "up");
  }

  /** A command inside a namespace (nsenter keeps the mount namespace, and so cgroup2). */
  inNs(ns: string, ...argv: string[]): Promise<string> {
    return sh("nsenter", `--net=/run/netns/${ns}`, ...argv);
  }

  /** A cgroup (relative to the cgroup2 mount); its directory. */
  async cgroup(rel: string): Promise<string> {
    const dir = cgroupDir(this.mount, rel);
    await Deno.mkdir(dir);
    this.defer(() => removeCgroupDir(dir));
    return dir;
  }

  /** A child process, killed (SIGKILL) by `close`. */
  spawn(argv: string[], stdout: "piped" | "null" = "null"): Deno.ChildProcess {
    const child = command(argv, {
      stdin: "null",
      stdout,
      stderr: "null",
    }).spawn();
    this.defer(async () => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
    });
    return child;
  }

  /** A scratch directory on a tmpfs of its own (see makeRunDir). */
  async tmpfs(prefix: string): Promise<string> {
    const dir = await makeRunDir(prefix);
    this.defer(() => removeRunDir(dir));
    return dir;
  }

  async close(): Promise<void> {
    for (const f of this.#undo.splice(0).reverse()) {
      await f().catch((e) => console.error(`cleanup: ${(e as Error).message}`));
    }
  }
}

/**
 * A scratch directory on its own tmpfs, where the benches' samplers publish: on the user's
 * host counters.json lives in /run, a tmpfs, and publishing there costs less than on this
 * VM's ext4 root (a rename over a file makes ext4 allocate and start writeback).
 */
export async function makeRunDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await sh("mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", dir);
  } catch (e) {
    await Deno.remove(dir);
    throw e;
  }
  return dir;
}

export async function removeRunDir(dir: string): Promise<void> {
  await sh("umount", dir);
  await Deno.remove(dir);
}

/** Two hosts on one veth, and a target cgroup for the measured process. */
export interface BenchLab {
  lab: Lab;
  tag: string;
  clientNetns: string;
  serverNetns: string;
  /** The target cgroup (relative to the cgroup2 mount) the measured client runs in. */
  cgroup: string;
  /** Absolute directory of `cgroup`. */
  cgroupDir: string;
  /** The client end of the veth (in clientNetns): only the bench's traffic crosses it. */
  clientDev: string;
  /** Scratch directory on a tmpfs (config, counters, logs); removed with the lab. */
  tmp: string;
}

export const CLIENT_IP = "198.51.100.1";
export const SERVER_IP = "198.51.100.2";

/**
 * client netns 198.51.100.1/24 == veth == server netns 198.51.100.2/24 (TEST-NET-2:
 * external for the default exclusions, so every packet takes the counted path), a target
 * cgroup `/stb-netacct-bench-<tag>/client`, a tmpfs scratch directory.
 */
export async function pairLab(): Promise<BenchLab> {
  const lab = new Lab();
  const tag = lab.tag;
  try {
    const tmp = await lab.tmpfs("stb-netacct-bench-");
    const base = `/stb-netacct-bench-${tag}`;
    const cgroup = `${base}/client`;
    await lab.cgroup(base);
    const dir = await lab.cgroup(cgroup);
    const [clientNetns, serverNetns] = [`stbb-c-${tag}`, `stbb-s-${tag}`];
    for (const ns of [clientNetns, serverNetns]) await lab.netns(ns);
    const [vc, vs] = [`vbc${tag}`, `vbs${tag}`];
    await lab.veth({ ns: clientNetns, dev: vc }, { ns: serverNetns, dev: vs });
    await lab.addresses({ ns: clientNetns, dev: vc }, [`${CLIENT_IP}/24`]);
    await lab.addresses({ ns: serverNetns, dev: vs }, [`${SERVER_IP}/24`]);
    return { lab, tag, clientNetns, serverNetns, cgroup, cgroupDir: dir, clientDev: vc, tmp };
  } catch (e) {
    await lab.close();
    throw e;
  }
}

/** Waits until something listens on `port` in `netns` (iperf3 -s says nothing when ready). */
export async function waitForPort(netns: string, port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const out = await sh("nsenter", `--net=/run/netns/${netns}`, "ss", "-Hltn", `sport = :${port}`);
    if (out.trim() !== "") return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`iperf3 -s in netns "${netns}" is not listening on port ${port} after 5 s`);
}

/** pairLab with `iperf3 -s` listening on the server; `cleanup` undoes all of it. */
export async function makeLab(): Promise<{ lab: BenchLab; cleanup: () => Promise<void> }> {
  const pair = await pairLab();
  try {
    pair.lab.spawn([
      "nsenter",
      `--net=/run/netns/${pair.serverNetns}`,
      "iperf3",
      "-s",
      "-B",
      SERVER_IP,
    ]);
    await waitForPort(pair.serverNetns, 5201);
  } catch (e) {
    await pair.lab.close();
    throw e;
  }
  return { lab: pair, cleanup: () => pair.lab.close() };
}
