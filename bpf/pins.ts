/**
 * Where the ebpf backend keeps its kernel state between runs, so counting survives the
 * sampler (a SIGKILL, a crash, `systemctl restart`, an upgrade): the counting maps and the
 * cgroup links pinned in a bpffs, in a directory per state file (runs with separate totals
 * never touch each other's):
 *
 *   /sys/fs/bpf/stb-netacct/<key>/links/<cgroup id>-<program>     the links (CgroupLinks)
 *   /sys/fs/bpf/stb-netacct/<key>/<map id>-<digest>/{counters,dests,pending}
 *   /sys/fs/bpf/stb-netacct/<key>/<map id>-<digest>/services/<index>-<name>
 *
 * A set of maps is one instance of kernel state: `<map id>` is its counters map's id (unique
 * until reboot, which empties the bpffs anyway); `<digest>` covers what makes it usable by
 * this program: the object's bytes and the service names in index order. `services/` names
 * the counter slots, so a set of another digest can still be read and taken over.
 */

import { BackendError } from "../lib/errors.ts";
import { shortDigest } from "../lib/digest.ts";

export const PIN_ROOT = "/sys/fs/bpf/stb-netacct";
const BPFFS = "/sys/fs/bpf";
/**
 * Where the installed service keeps its pins instead: a bpffs of its own, mounted there by the
 * unit's privileged ExecStartPre (prepareForService) and given to its dynamic user, which may
 * not enter /sys/fs/bpf (root's, 0700; /sys is read-only to it). The unit names it in this
 * variable (set by root in the unit, never by a user).
 */
export const PIN_ROOT_ENV = "STB_NETACCT_PIN_ROOT";
export const SERVICE_PIN_ROOT = "/run/stb-netacct-kernel";

/** PIN_ROOT as this process reaches it. */
export function pinRoot(): string {
  return Deno.env.get(PIN_ROOT_ENV) || PIN_ROOT;
}

/** The directory of one state file's kernel state. */
export async function stateDir(stateKey: string): Promise<string> {
  return `${pinRoot()}/${await shortDigest(stateKey)}`;
}

/** The compatibility digest of a set of maps (see the header). */
export async function setDigest(object: Uint8Array, names: readonly string[]): Promise<string> {
  const tail = new TextEncoder().encode("\n" + names.map(encodeURIComponent).join("\n"));
  const all = new Uint8Array(object.length + tail.length);
  all.set(object);
  all.set(tail, object.length);
  return await shortDigest(all);
}

/** One pinned set as found: its directory, digest, counters map id and service names. */
export interface PinnedSet {
  dir: string;
  mapId: number;
  digest: string;
  /** By index; a slot without a name is skipped. */
  names: string[];
}

/** The pinned sets under a state directory, oldest (lowest map id) first. */
export function pinnedSets(dir: string): PinnedSet[] {
  const out: PinnedSet[] = [];
  for (const name of list(dir)) {
    const m = /^(\d+)-([0-9a-f]+)$/.exec(name);
    if (!m) continue;
    const names: string[] = [];
    for (const entry of list(`${dir}/${name}/services`)) {
      const s = /^(\d+)-(.*)$/.exec(entry);
      if (s) names[Number(s[1])] = decodeURIComponent(s[2]!);
    }
    out.push({ dir: `${dir}/${name}`, mapId: Number(m[1]), digest: m[2]!, names });
  }
  return out.sort((a, b) => a.mapId - b.mapId);
}

/** Makes a set's directory and names its slots (before its maps are pinned in it). */
export function makeSetDir(
  o: { dir: string; mapId: number; digest: string; names: readonly string[] },
): string {
  const path = `${o.dir}/${o.mapId}-${o.digest}`;
  Deno.mkdirSync(`${path}/services`, { recursive: true, mode: 0o700 });
  o.names.forEach((n, i) => Deno.mkdirSync(`${path}/services/${i}-${encodeURIComponent(n)}`));
  return path;
}

/** Removes a directory of pins (unpinning; an object lives on while an fd holds it). */
export function removeTree(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Removes `path` and its parents up to PIN_ROOT (included) while they are empty. */
export function pruneEmpty(path: string): void {
  // The root itself stays when it is the unit's bind mount (install made it, uninstall goes).
  const root = pinRoot();
  const last = root === PIN_ROOT ? root : root + "/";
  for (let p = path; p.startsWith(last); p = p.slice(0, p.lastIndexOf("/"))) {
    try {
      Deno.removeSync(p);
    } catch {
      return;
    }
  }
}

function list(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

function readMountinfo(): string {
  try {
    return Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return "";
  }
}

/**
 * Mounts a bpffs at /sys/fs/bpf when the host has none (systemd mounts one at boot; a
 * minimal host or container may not), so pins have a place. Throws with the fix.
 */
export async function ensureBpffs(): Promise<void> {
  if (pinRoot() !== PIN_ROOT || mountedAt(BPFFS)) return;
  await mountBpffs(BPFFS);
}

/**
 * What is pinned of ours, for status, doctor and uninstall: the state directories, in
 * PIN_ROOT (foreground runs) and in the service's own bpffs.
 */
export function keptStateDirs(): string[] {
  const roots = [PIN_ROOT, ...(mountedAt(SERVICE_PIN_ROOT) ? [SERVICE_PIN_ROOT] : [])];
  return roots.flatMap((root) => {
    try {
      return list(root).map((n) => `${root}/${n}`);
    } catch {
      return [];
    }
  });
}

/** Removes every pin of ours (links unpinned and held by nobody detach); returns the roots. */
export async function removeAllPins(): Promise<string[]> {
  const removed: string[] = [];
  if (keptStateDirs().some((d) => d.startsWith(PIN_ROOT + "/"))) removed.push(PIN_ROOT);
  removeTree(PIN_ROOT);
  if (await unmountServicePins(SERVICE_PIN_ROOT)) removed.push(SERVICE_PIN_ROOT);
  try {
    Deno.removeSync(SERVICE_PIN_ROOT); // the mount point, once empty
  } catch { /* absent */ }
  return removed;
}

/**
 * Before the installed service starts (the unit's privileged ExecStartPre): a bpffs of its
 * own mounted at `root` (kept across restarts of the service; gone with a reboot or
 * `uninstall`), given to the service's dynamic user, which owns the state directory
 * `stateDirPath` by then (its uid may change between starts).
 */
export async function prepareForService(root: string, stateDirPath: string): Promise<void> {
  const { uid, gid } = Deno.statSync(stateDirPath);
  if (uid === null || gid === null) throw new BackendError(`Cannot stat "${stateDirPath}"`);
  // systemd may run even a "+" command in a mount namespace of its own (seen with 252), where
  // a mount would die with it: mount and chown where systemd (PID 1) lives.
  const init = initMountNamespace();
  await tool([...init, "mkdir", "-p", "-m", "0700", root]);
  if (init.length > 0 || !mountedAt(root)) {
    const check = await tool(
      [...init, "grep", "-q", ` ${root} .* - bpf `, "/proc/self/mountinfo"],
      {
        allowFail: true,
      },
    );
    if (!check) await tool([...init, "mount", "-t", "bpf", "-o", "mode=0700", "stb-netacct", root]);
  }
  await tool([...init, "chown", "-R", `${uid}:${gid}`, root]);
}

/** `nsenter` into PID 1's mount namespace when this process is in another one, else none. */
function initMountNamespace(): string[] {
  try {
    if (Deno.readLinkSync("/proc/1/ns/mnt") !== Deno.readLinkSync("/proc/self/ns/mnt")) {
      return ["nsenter", "--mount=/proc/1/ns/mnt", "--"];
    }
  } catch { /* no /proc/1 to look at: stay here */ }
  return [];
}

/** Runs a tool (no shell); throws with its stderr, or returns false with allowFail. */
async function tool(argv: string[], o: { allowFail?: boolean } = {}): Promise<boolean> {
  const [cmd, ...args] = argv;
  const out = await new Deno.Command(cmd!, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success && !o.allowFail) {
    throw new BackendError(
      `Preparing the service's pins: \`${argv.join(" ")}\` failed: ` +
        new TextDecoder().decode(out.stderr).trim(),
    );
  }
  return out.success;
}

/** Whether a bpffs is mounted at `path`. */
export function mountedAt(path: string, mountinfo = readMountinfo()): boolean {
  return mountinfo.split("\n").some((l) => {
    const f = l.split(" ");
    const sep = f.indexOf("-");
    return f[4] === path && sep > 0 && f[sep + 1] === "bpf";
  });
}

async function mountBpffs(at: string, options: string[] = []): Promise<void> {
  const out = await new Deno.Command("mount", {
    args: ["-t", "bpf", ...options, "stb-netacct", at],
    stdout: "null",
    stderr: "piped",
  }).output().catch((cause) => {
    throw new BackendError(`Cannot run mount for a bpffs at ${at}: ${cause}`, { cause });
  });
  if (!out.success) {
    throw new BackendError(
      `No bpffs at ${at}, and mounting one failed (${
        new TextDecoder().decode(out.stderr).trim()
      }): run \`mount -t bpf bpf ${at}\` as root`,
    );
  }
}

/** Unmounts the service's own bpffs (its pins go with it, and links held by nobody detach). */
export async function unmountServicePins(root: string): Promise<boolean> {
  if (!mountedAt(root)) return false;
  const out = await new Deno.Command("umount", { args: [root], stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new BackendError(
      `Cannot unmount ${root}: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return true;
}
