/**
 * A real systemd 252 (system manager + user@1000.service for `cad`) booted in
 * systemd-nspawn, for testing `install` the way a user's machine runs it. See
 * /work/shared/testbed-notes.md "A real systemd for tests".
 *
 *   root filesystem   overlay lowerdir=/ with its upper layer on a tmpfs: the machine's
 *                     own files are never written
 *   mounts            all made inside `unshare --mount --propagation private`, so they
 *                     vanish with that namespace whatever happens to the test
 *   cgroup            a cgroup2 directory of its own, so teardown can cgroup.kill it
 *   network           a netns the test created (joined by veth to its peers)
 *
 * Teardown (`stop`) is safe to call at any point and twice: poweroff, cgroup.kill when
 * the container hangs, rmdir of its cgroups (on a hybrid host also the copy nspawn makes in
 * the v1 name=systemd hierarchy), removal of the work directory.
 */

import { findCgroup2Mount } from "../../lib/cgroup.ts";
import { run, RUN_SCOPE, type RunResult, sleep } from "../harness/exec.ts";

/** Prefix of the container's cgroups; the run scope in the name lets a later suite sweep a killed one. */
export const CONTAINER_CGROUP_PREFIX = "stbsd-";

export const NSPAWN_PACKAGE = "systemd-container=252.38-1~deb12u1";
export const USER = "cad";
export const UID = 1000;

/** Installs systemd-nspawn (pinned: the newer candidate would upgrade the host's systemd). */
export async function ensureNspawn(): Promise<string | null> {
  const have = await run(["sh", "-c", "command -v systemd-nspawn"], { allowFail: true });
  if (have.code === 0) return null;
  const apt = await run(["sh", "-c", "command -v apt-get"], { allowFail: true });
  if (apt.code !== 0) return "systemd-nspawn is missing and there is no apt-get to install it";
  const r = await run(
    ["apt-get", "install", "-y", "-q", "--no-install-recommends", NSPAWN_PACKAGE],
    { allowFail: true, env: { DEBIAN_FRONTEND: "noninteractive" } },
  );
  if (r.code !== 0) {
    return `cannot install ${NSPAWN_PACKAGE}: ${r.stderr.trim().split("\n").slice(-2).join(" ")}`;
  }
  return null;
}

/**
 * The shell that builds the root and execs nspawn, run as `unshare -m` so every mount
 * is private. "$1" work dir, "$2" cgroup dir, "$3" nspawn network flag, "$4" staging dir whose
 * tree is copied over the root, then more nspawn flags (bind mounts).
 */
const BOOT_SCRIPT = String.raw`set -eu
work=$1 cg=$2 netns=$3 stage=$4
shift 4
echo $$ > "$cg/cgroup.procs"
mount -t tmpfs -o mode=0755,size=4g stbsd-upper "$work"
mkdir "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
mount -t tmpfs -o mode=0755,size=1m stbsd-nspawn /run/systemd/nspawn
r=$work/root
old=$(getent passwd 1000 | cut -d: -f1)
if [ -n "$old" ] && [ "$old" != cad ]; then
  for f in passwd shadow group gshadow subuid subgid; do
    [ -f "$r/etc/$f" ] || continue
    sed -i -e "s/^$old:/cad:/" -e "s/\([:,]\)$old\(,\|\$\)/\1cad\2/g" "$r/etc/$f"
  done
fi
home=$(grep '^cad:' "$r/etc/passwd" | cut -d: -f6)
mkdir -p "$r$home" && chown 1000:1000 "$r$home"
for u in postgresql.service getty@.service serial-getty@.service console-getty.service \
    container-getty@.service systemd-timesyncd.service e2scrub_reap.service; do
  ln -sf /dev/null "$r/etc/systemd/system/$u"
done
for t in "$r"/etc/systemd/system/timers.target.wants/*.timer; do
  [ -e "$t" ] || [ -L "$t" ] || continue
  ln -sf /dev/null "$r/etc/systemd/system/$(basename "$t")"
done
ln -sf /lib/systemd/system/multi-user.target "$r/etc/systemd/system/default.target"
mkdir -p "$r/var/lib/systemd/linger" && touch "$r/var/lib/systemd/linger/cad"
rm -f "$r/etc/machine-id" && : > "$r/etc/machine-id"
cp -a "$stage/." "$r/"
# nspawn keeps CAP_NET_ADMIN only with --private-network and never CAP_BPF/CAP_PERFMON:
# grant them, and bpf(2), which its seccomp filter denies: the container must be able to
# run what a real host runs.
exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q -D "$r" -b --register=no \
  --keep-unit $netns --console=passive --capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN \
  --system-call-filter=bpf "$@"
`;

export interface BootOptions {
  /** Network namespace the container uses (`/run/netns/NAME`). */
  netnsPath: string;
  /** Files to put into the root before boot: absolute path inside -> content + mode. */
  files: Record<string, { text: string; mode: number }>;
  /** Directories (created 0755 owned by cad) before boot. */
  userDirs?: string[];
  /**
   * Host directories visible read-only at the same path inside. The overlay root shows the
   * host's files, but nspawn mounts its own /tmp (and a clone may live anywhere), so the
   * program under test is bound in explicitly.
   */
  bindReadOnly?: string[];
}

/**
 * The v1 `name=systemd` hierarchy's mount point on a hybrid host (the testbed's
 * /sys/fs/cgroup/systemd), or null on pure cgroup2 (the user's Debian 12).
 */
export function parseNameSystemdMount(mountinfo: string): string | null {
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    const fields = left?.split(" ") ?? [];
    const [fstype, , options] = right?.split(" ") ?? [];
    if (fstype === "cgroup" && (options ?? "").split(",").includes("name=systemd")) {
      return fields[4] ?? null;
    }
  }
  return null;
}

export class Container {
  readonly work: string;
  readonly cgroup: string;
  /**
   * Where nspawn mirrors the container's cgroup in the v1 name=systemd hierarchy (payload/,
   * supervisor/) on a hybrid host; null on pure cgroup2.
   */
  readonly v1Cgroup: string | null;
  #nspawn: Deno.ChildProcess | null = null;
  #stage: string | null = null;
  #createdNspawnDir = false;
  #log: string[] = [];
  pid1 = 0;

  constructor(readonly tag: string) {
    this.work = `/tmp/stbsd-${tag}`;
    this.cgroup = `${findCgroup2Mount().mountPoint}/${CONTAINER_CGROUP_PREFIX}${RUN_SCOPE}${tag}`;
    const v1 = parseNameSystemdMount(Deno.readTextFileSync("/proc/self/mountinfo"));
    this.v1Cgroup = v1 === null ? null : `${v1}/${CONTAINER_CGROUP_PREFIX}${RUN_SCOPE}${tag}`;
  }

  /** Boots and waits until the system and cad's user manager run. */
  async boot(opts: BootOptions, timeoutMs = 30000): Promise<void> {
    Deno.mkdirSync(this.work, { mode: 0o700 });
    Deno.mkdirSync(this.cgroup);
    try {
      Deno.statSync("/run/systemd/nspawn");
    } catch {
      Deno.mkdirSync("/run/systemd/nspawn", { recursive: true });
      this.#createdNspawnDir = true;
    }
    this.#stage = Deno.makeTempDirSync({ prefix: "stbsd-stage-" });
    // `cp -a stage/. root/` gives the root the stage's mode: keep it 0755.
    Deno.chmodSync(this.#stage, 0o755);
    for (const [path, f] of Object.entries(opts.files)) {
      const p = `${this.#stage}${path}`;
      Deno.mkdirSync(p.slice(0, p.lastIndexOf("/")), { recursive: true });
      Deno.writeTextFileSync(p, f.text, { mode: f.mode });
      Deno.chmodSync(p, f.mode);
    }
    for (const d of opts.userDirs ?? []) {
      Deno.mkdirSync(`${this.#stage}${d}`, { recursive: true });
      Deno.chownSync(`${this.#stage}${d}`, UID, UID);
    }
    this.#nspawn = new Deno.Command("unshare", {
      args: [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        BOOT_SCRIPT,
        "stbsd-boot",
        this.work,
        this.cgroup,
        `--network-namespace-path=${opts.netnsPath}`,
        this.#stage,
        ...(opts.bindReadOnly ?? []).map((d) => `--bind-ro=${d}`),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#collect(this.#nspawn.stdout);
    this.#collect(this.#nspawn.stderr);
    const deadline = Date.now() + timeoutMs;
    while (this.pid1 === 0) {
      if (Date.now() > deadline) throw new Error(`container did not start: ${this.log()}`);
      this.pid1 = this.#findInit();
      if (this.pid1 === 0) await sleep(100);
    }
    // Until the manager's private socket exists systemctl cannot connect; poll instead
    // of `--wait`, which gives up at once then.
    let state = "";
    while (!/^(running|degraded)$/.test(state)) {
      if (Date.now() > deadline) {
        const failed = await this.exec([
          "sh",
          "-c",
          "systemctl --failed --no-legend; systemctl list-jobs --no-legend | head -20; journalctl -b --no-pager -n 40 -o cat",
        ], {
          allowFail: true,
        });
        throw new Error(`container system state "${state}"; failed units: ${failed.stdout}`);
      }
      await sleep(100);
      state = (await this.exec(["systemctl", "is-system-running"], { allowFail: true })).stdout
        .trim();
    }
    while (
      (await this.exec(["systemctl", "is-active", `user@${UID}.service`], {
        allowFail: true,
      })).stdout.trim() !== "active"
    ) {
      if (Date.now() > deadline) throw new Error(`user@${UID}.service did not start`);
      await sleep(100);
    }
  }

  async #collect(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) {
        this.#log.push(dec.decode(chunk));
        if (this.#log.length > 400) this.#log.splice(0, 100);
      }
    } catch { /* closed */ }
  }

  log(): string {
    return this.#log.join("").slice(-3000);
  }

  /** The container's systemd: the process in our cgroup tree whose comm is systemd. */
  #findInit(): number {
    const pid = this.#nspawn?.pid;
    if (!pid) return 0;
    try {
      for (const tid of Deno.readDirSync(`/proc/${pid}/task`)) {
        const kids = Deno.readTextFileSync(`/proc/${pid}/task/${tid.name}/children`).trim();
        for (const k of kids.split(/\s+/).filter(Boolean)) {
          if (Deno.readTextFileSync(`/proc/${k}/comm`).trim() === "systemd") return Number(k);
        }
      }
    } catch { /* not there yet */ }
    return 0;
  }

  /** Runs a command inside the container as root. */
  exec(
    argv: string[],
    options: { allowFail?: boolean; stdin?: string; env?: Record<string, string> } = {},
  ): Promise<RunResult> {
    const env = Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`);
    return run([
      "nsenter",
      "-t",
      String(this.pid1),
      "-a",
      "env",
      "-i",
      ...ROOT_ENV,
      ...env,
      ...argv,
    ], {
      allowFail: options.allowFail,
      stdin: options.stdin,
    });
  }

  /** Runs a command inside the container as cad, with cad's user manager reachable. */
  execUser(argv: string[], options: { allowFail?: boolean } = {}): Promise<RunResult> {
    return this.exec([
      "setpriv",
      `--reuid=${UID}`,
      `--regid=${UID}`,
      "--init-groups",
      "env",
      `XDG_RUNTIME_DIR=/run/user/${UID}`,
      `DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/${UID}/bus`,
      `HOME=/home/${USER}`,
      `USER=${USER}`,
      ...argv,
    ], options);
  }

  /** Poweroff, then kill what is left, then remove the cgroups and the work dir. */
  async stop(): Promise<void> {
    const child = this.#nspawn;
    this.#nspawn = null;
    if (child) {
      if (this.pid1) {
        await run(
          ["nsenter", "-t", String(this.pid1), "-a", "systemctl", "poweroff", "--no-block"],
          {
            allowFail: true,
          },
        );
      }
      const done = child.status.then(() => true);
      const ok = await Promise.race([done, sleep(15000).then(() => false)]);
      if (!ok) {
        try {
          Deno.writeTextFileSync(`${this.cgroup}/cgroup.kill`, "1");
        } catch { /* gone */ }
        await Promise.race([done, sleep(5000)]);
      }
    }
    this.#removeCgroups(this.cgroup, killV2);
    if (this.v1Cgroup) this.#removeCgroups(this.v1Cgroup, killV1);
    for (const path of [this.work, this.#stage]) {
      if (!path) continue;
      try {
        Deno.removeSync(path, { recursive: true });
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    this.#stage = null;
    if (this.#createdNspawnDir) {
      try {
        Deno.removeSync("/run/systemd/nspawn");
      } catch { /* busy or gone */ }
      this.#createdNspawnDir = false;
    }
  }

  /**
   * Removes a cgroup tree, leaves first. `kill` empties one cgroup: cgroup.kill in v2; v1
   * has none, so what is left there is killed by pid.
   */
  #removeCgroups(dir: string, kill: (dir: string) => void): void {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return;
    }
    kill(dir);
    for (const e of entries) if (e.isDirectory) this.#removeCgroups(`${dir}/${e.name}`, kill);
    for (let i = 0; i < 50; i++) {
      try {
        Deno.removeSync(dir);
        return;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
      }
      kill(dir);
      // Killed processes take a moment to leave the cgroup.
      const until = Date.now() + 100;
      while (Date.now() < until) { /* short busy wait: sync teardown */ }
    }
    throw new Error(`cannot remove cgroup ${dir}: processes remain`);
  }
}

function killV2(dir: string): void {
  try {
    Deno.writeTextFileSync(`${dir}/cgroup.kill`, "1");
  } catch { /* empty or gone */ }
}

function killV1(dir: string): void {
  try {
    for (const pid of Deno.readTextFileSync(`${dir}/cgroup.procs`).split("\n")) {
      if (pid) Deno.kill(Number(pid), "SIGKILL");
    }
  } catch { /* empty or gone */ }
}

const ROOT_ENV = [
  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  "HOME=/root",
  "LANG=C.UTF-8",
];
