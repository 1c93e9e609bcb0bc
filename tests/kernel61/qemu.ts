/**
 * Debian 12's own kernel 6.1 under qemu, for the lane in lane.ts: `prepareKernel` gets it and
 * builds what boots it (cached), `bootGuest` runs one command inside it and hands back what
 * the command wrote. Facts behind the choices: /work/shared/kernel61-notes.md.
 *
 * - The kernel is the linux-image-6.1.0-*-amd64 package `linux-image-amd64` depends on,
 *   fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the cache, never
 *   installed (its postinst would run initramfs and grub hooks on this machine).
 * - qemu TCG, not KVM: /dev/kvm here is kvm_pvm, which a stock kernel cannot use.
 * - The guest's root is this machine's `/` over read-only 9p under an overlay on tmpfs, so the
 *   guest sees the repo, deno and the built ./stb-netacct as they are and writes nothing here
 *   but the results export (a temp directory removed afterwards).
 */

import { newcArchive, S_IFCHR, S_IFDIR, S_IFREG } from "./cpio.ts";
import type { CpioEntry } from "./cpio.ts";
import { elfFacts, xzStreamOffset } from "./kernel_image.ts";

/**
 * Not under /var/cache/stb-netacct: that is the installed unit's CacheDirectory, and a
 * directory already there makes systemd refuse to start the service.
 */
export const CACHE_ROOT = Deno.env.get("STB_NETACCT_KERNEL61_CACHE") ??
  "/var/cache/stb-netacct-tests/kernel61";
const GUEST_INIT = new URL("./guest_init.sh", import.meta.url).pathname;
/** What stage 1 of guest_init.sh needs to mount its root; dependencies come from modprobe. */
const INITRAMFS_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];
const BUSYBOX_PATHS = ["/bin/busybox", "/usr/bin/busybox"];

/** The lane cannot run on this machine at all; the message says why (a skip, not a failure). */
export class LaneSkip extends Error {
  override name = "LaneSkip";
}

export interface Kernel61 {
  /** uname -r in the guest, e.g. "6.1.0-57-amd64". */
  kver: string;
  /** e.g. "linux-image-6.1.0-57-amd64". */
  package: string;
  /** The package's version, e.g. "6.1.192-3". */
  version: string;
  /** The cache directory of this version. */
  dir: string;
  /** What qemu -kernel boots: the uncompressed vmlinux (PVH entry) or the bzImage. */
  kernel: string;
  pvh: boolean;
  initramfs: string;
  /** The unpacked /lib/modules/<kver> (with modules.dep from depmod). */
  modules: string;
  /** The unpacked /boot/config-<kver>. */
  config: string;
  /** Whether this run downloaded and built it (false: all from the cache). */
  built: boolean;
}

interface Stamp {
  kver: string;
  package: string;
  version: string;
  kernel: string;
  pvh: boolean;
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function exec(argv: string[], cwd?: string): Promise<Result> {
  const [program, ...args] = argv;
  if (program === undefined) throw new Error("exec: an empty command line");
  let out;
  try {
    out = await new Deno.Command(program, {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { LC_ALL: "C" },
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return { code: 127, stdout: "", stderr: `${argv[0]}: not found` };
    }
    throw e;
  }
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

async function mustExec(argv: string[], cwd?: string): Promise<string> {
  const r = await exec(argv, cwd);
  if (r.code !== 0) {
    throw new Error(`\`${argv.join(" ")}\` exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout;
}

/** apt's words when no mirror could be reached (as opposed to a package that is not there). */
const UNREACHABLE =
  /Could not resolve|Temporary failure resolving|Unable to connect|Could not connect|Connection timed out|Connection failed|Network is unreachable|No route to host|Connection refused/i;

/** When this lane last refreshed apt's lists (apt keeps the mirror's dates on the files). */
const APT_STAMP = `${CACHE_ROOT}/.apt-updated`;
const APT_MAX_AGE_MS = 24 * 3600 * 1000;

let aptUpdated = false;
async function aptUpdate(log: (line: string) => void, why: string): Promise<Result> {
  log(`apt-get update (${why})`);
  aptUpdated = true;
  const r = await exec(["apt-get", "update", "-qq"]);
  if (r.code === 0) await Deno.writeTextFile(APT_STAMP, `${new Date().toISOString()}\n`);
  return r;
}

/**
 * The linux-image-6.1.0-*-amd64 package the candidate `linux-image-amd64` depends on: the
 * newest, as of apt's lists, which are refreshed when this lane has not done so for a day.
 */
async function kernelPackage(log: (line: string) => void): Promise<Stamp> {
  let stampAge = Infinity;
  try {
    stampAge = Date.now() - Deno.statSync(APT_STAMP).mtime!.getTime();
  } catch { /* never refreshed here */ }
  if (stampAge > APT_MAX_AGE_MS) {
    const u = await aptUpdate(log, "for the newest kernel package; once a day");
    if (u.code !== 0) {
      log(`apt-get update failed, going on with apt's lists: ${firstLine(u.stderr)}`);
    }
  }
  const depends = async () => {
    const r = await exec(["apt-cache", "depends", "linux-image-amd64"]);
    return /Depends: (linux-image-(\S+))/.exec(r.stdout);
  };
  let dep = await depends();
  if (!dep && !aptUpdated) {
    const u = await aptUpdate(log, "apt knows no linux-image-amd64");
    dep = await depends();
    if (!dep && UNREACHABLE.test(u.stderr)) {
      throw new LaneSkip(`no Debian mirror reachable: ${firstLine(u.stderr)}`);
    }
  }
  if (!dep) throw new Error("apt knows no linux-image-amd64, even after apt-get update");
  const [, pkg, kver] = dep;
  if (pkg === undefined || kver === undefined || !/^6\.1\.0-\d+-amd64$/.test(kver)) {
    throw new Error(
      `linux-image-amd64 depends on ${pkg}, not Debian 12's 6.1.0-*-amd64: ` +
        "are this machine's apt sources Debian 12 (bookworm)?",
    );
  }
  const show = await mustExec(["apt-cache", "show", "--no-all-versions", pkg]);
  const version = /^Version: (\S+)/m.exec(show)?.[1];
  if (!version) throw new Error(`apt-cache show ${pkg} names no version`);
  return { kver, package: pkg, version, kernel: "", pvh: false };
}

function firstLine(text: string): string {
  return text.trim().split("\n").find((l) => l.trim() !== "")?.trim() ?? "(no output)";
}

async function download(stamp: Stamp, dir: string, log: (line: string) => void): Promise<string> {
  const argv = [
    "apt-get",
    "download",
    // The cache is root's: apt's _apt sandbox user could not write there.
    "-o",
    "APT::Sandbox::User=root",
    `${stamp.package}=${stamp.version}`,
  ];
  let r = await exec(argv, dir);
  if (r.code !== 0 && !aptUpdated) {
    // Stale lists name a version the mirror no longer has, or none could be reached.
    const u = await aptUpdate(log, "the download failed");
    if (u.code !== 0 && UNREACHABLE.test(u.stderr)) {
      throw new LaneSkip(`no Debian mirror reachable: ${firstLine(u.stderr)}`);
    }
    r = await exec(argv, dir);
  }
  if (r.code !== 0) {
    const why = firstLine(r.stderr || r.stdout);
    if (UNREACHABLE.test(r.stderr)) throw new LaneSkip(`no Debian mirror reachable: ${why}`);
    throw new Error(`apt-get download ${stamp.package}=${stamp.version} failed: ${why}`);
  }
  const deb = [...Deno.readDirSync(dir)].find((e) => e.name.endsWith(".deb"));
  if (!deb) throw new Error(`apt-get download left no .deb in ${dir}`);
  return `${dir}/${deb.name}`;
}

/** The bzImage's xz stream, decompressed: a vmlinux with a PVH entry, or null (and why). */
async function extractVmlinux(
  vmlinuz: string,
  out: string,
): Promise<{ ok: true } | { ok: false; why: string }> {
  const bytes = await Deno.readFile(vmlinuz);
  const at = xzStreamOffset(bytes);
  if (at < 0) return { ok: false, why: "no xz stream in the bzImage" };
  let child;
  try {
    // busybox's unxz lacks the x86 BCJ filter the kernel's stream uses: xz-utils it is.
    child = new Deno.Command("xz", {
      args: ["-dc", "--single-stream"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch {
    return { ok: false, why: "xz is missing (apt-get install xz-utils)" };
  }
  const writer = child.stdin.getWriter();
  const feeding = writer.write(bytes.subarray(at)).then(() => writer.close()).catch(() => {});
  const result = await child.output();
  await feeding;
  if (!result.success) {
    return { ok: false, why: `xz failed: ${new TextDecoder().decode(result.stderr).trim()}` };
  }
  const facts = elfFacts(result.stdout);
  if (!facts) return { ok: false, why: "the xz stream is not an ELF vmlinux" };
  if (!facts.pvhEntry) return { ok: false, why: "the vmlinux has no PVH entry note" };
  await Deno.writeFile(out, result.stdout);
  return { ok: true };
}

/** The initramfs modules in load order, as paths relative to the unpacked root. */
async function initramfsModules(root: string, kver: string): Promise<string[]> {
  const text = await mustExec([
    "modprobe",
    "-S",
    kver,
    "-d",
    root,
    "-a",
    "--show-depends",
    ...INITRAMFS_MODULES,
  ]);
  const seen = new Set<string>();
  for (const line of text.split("\n")) {
    const m = /^insmod (\S+)/.exec(line);
    if (m?.[1] !== undefined) seen.add(m[1]);
  }
  if (seen.size === 0) throw new Error(`modprobe --show-depends listed no modules:\n${text}`);
  return [...seen].map((p) => {
    if (!p.startsWith(`${root}/`)) throw new Error(`module ${p} is outside ${root}`);
    return p.slice(root.length + 1);
  });
}

function findBusybox(): { path: string; bytes: Uint8Array } {
  for (const path of BUSYBOX_PATHS) {
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(path);
    } catch {
      continue;
    }
    const facts = elfFacts(bytes);
    if (facts && !facts.interpreter) return { path, bytes };
  }
  throw new Error(
    "no static busybox for the guest's init: apt-get install busybox-static (`make deps` does)",
  );
}

async function sha256Hex(parts: Uint8Array[]): Promise<string> {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The initramfs for `dir`: busybox, the modules, their load order and guest_init.sh as /init.
 * Named by a hash of its inputs, so an edited init script gets a new one and an unchanged one
 * is reused.
 */
async function initramfs(dir: string, kver: string, log: (line: string) => void) {
  const root = `${dir}/root`;
  const busybox = findBusybox();
  const init = await Deno.readFile(GUEST_INIT);
  const modules = await initramfsModules(root, kver);
  const list = new TextEncoder().encode(modules.join("\n") + "\n");
  const hash = (await sha256Hex([init, list, busybox.bytes])).slice(0, 16);
  const path = `${dir}/initramfs-${hash}.cpio`;
  try {
    Deno.statSync(path);
    return path;
  } catch { /* build it */ }
  log(`building the initramfs (${busybox.path}, ${modules.length} modules)`);
  const entries: CpioEntry[] = [
    { path: "bin", mode: S_IFDIR | 0o755 },
    { path: "bin/busybox", mode: S_IFREG | 0o755, data: busybox.bytes },
    { path: "dev", mode: S_IFDIR | 0o755 },
    { path: "dev/console", mode: S_IFCHR | 0o600, rdev: { major: 5, minor: 1 } },
    { path: "proc", mode: S_IFDIR | 0o755 },
    { path: "init", mode: S_IFREG | 0o755, data: init },
    { path: "modules.list", mode: S_IFREG | 0o644, data: list },
  ];
  const dirs = new Set<string>();
  for (const m of modules) {
    const parts = m.split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ path: d, mode: S_IFDIR | 0o755 });
      }
    }
    entries.push({ path: m, mode: S_IFREG | 0o644, data: await Deno.readFile(`${root}/${m}`) });
  }
  for (const e of Deno.readDirSync(dir)) {
    if (/^initramfs-.*\.cpio$/.test(e.name)) Deno.removeSync(`${dir}/${e.name}`);
  }
  await Deno.writeFile(`${path}.tmp`, newcArchive(entries));
  await Deno.rename(`${path}.tmp`, path);
  return path;
}

/**
 * Gets the kernel and builds what boots it, or reuses the cache: a second run downloads
 * nothing. One lane at a time prepares (a lock in the cache); older versions are removed
 * once a new one is ready.
 */
export async function prepareKernel(log: (line: string) => void): Promise<Kernel61> {
  await Deno.mkdir(CACHE_ROOT, { recursive: true });
  const wanted = await kernelPackage(log);
  const lock = await Deno.open(`${CACHE_ROOT}/.lock`, { create: true, write: true });
  try {
    await lock.lock(true);
    const dir = `${CACHE_ROOT}/${wanted.version}`;
    let stamp: Stamp | null = null;
    try {
      stamp = JSON.parse(await Deno.readTextFile(`${dir}/kernel.json`));
    } catch { /* not cached yet */ }
    const built = stamp === null;
    if (stamp === null) stamp = await build(wanted, dir, log);
    for (const e of Deno.readDirSync(CACHE_ROOT)) {
      if (!e.name.startsWith(".") && e.name !== wanted.version) {
        log(`removing the cached ${e.name} (superseded by ${wanted.version})`);
        await Deno.remove(`${CACHE_ROOT}/${e.name}`, { recursive: true });
      }
    }
    const root = `${dir}/root`;
    return {
      ...stamp,
      dir,
      kernel: `${dir}/${stamp.kernel}`,
      initramfs: await initramfs(dir, stamp.kver, log),
      modules: `${root}/lib/modules/${stamp.kver}`,
      config: `${root}/boot/config-${stamp.kver}`,
      built,
    };
  } finally {
    lock.close();
  }
}

async function build(wanted: Stamp, dir: string, log: (line: string) => void): Promise<Stamp> {
  // Built beside its final place and renamed when complete: an interrupted build is never
  // mistaken for a cached one.
  const partial = `${dir}.partial`;
  await Deno.remove(partial, { recursive: true }).catch(() => {});
  await Deno.mkdir(partial, { recursive: true });
  log(`downloading ${wanted.package} ${wanted.version} (~70 MB, once; cached in ${CACHE_ROOT})`);
  const deb = await download(wanted, partial, log);
  log(`unpacking ${deb.slice(partial.length + 1)} (dpkg-deb -x, not installed)`);
  await mustExec(["dpkg-deb", "-x", deb, `${partial}/root`]);
  await Deno.remove(deb);
  log(`depmod -b for ${wanted.kver}`);
  await mustExec(["depmod", "-b", `${partial}/root`, wanted.kver]);
  const vmlinuz = `root/boot/vmlinuz-${wanted.kver}`;
  const extracted = await extractVmlinux(`${partial}/${vmlinuz}`, `${partial}/vmlinux`);
  const stamp: Stamp = extracted.ok
    ? { ...wanted, kernel: "vmlinux", pvh: true }
    : { ...wanted, kernel: vmlinuz, pvh: false };
  log(
    extracted.ok
      ? "extracted the uncompressed vmlinux (PVH boot)"
      : `booting the bzImage (slower): ${extracted.why}`,
  );
  await Deno.writeTextFile(`${partial}/kernel.json`, JSON.stringify(stamp, null, 2) + "\n");
  await Deno.rename(partial, dir);
  return stamp;
}

export interface GuestRun {
  /** The command's exit code; null when it never finished (boot failure, timeout, kill). */
  exitCode: number | null;
  timedOut: boolean;
  /** The command's stdout and stderr, interleaved. */
  output: string;
  /** The serial console: the kernel's messages and guest_init.sh's. */
  console: string;
  /** Every other file the command left in the results directory, by name. */
  files: Record<string, string>;
  /** qemu's own stderr. */
  qemuStderr: string;
  wallMs: number;
}

export interface BootOptions {
  /** argv, run with /bin/sh in `cwd`; the results directory is RESULTS_DIR in the guest. */
  command: string[];
  cwd: string;
  env?: Record<string, string>;
  timeoutMs: number;
  /** Aborting kills qemu (Ctrl-C). */
  signal?: AbortSignal;
  /** Each new line of the command's output as it arrives. */
  onLine?: (line: string) => void;
}

/** Where the command finds the writable results export inside the guest. */
export const RESULTS_DIR = "/.k61/results";

const GUEST_MEMORY_MIB = 1024;
const GUEST_CPUS = 2;

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * Boots the kernel and runs one command in the guest. qemu is always reaped and the temp
 * directory always removed, whether the command finished, the timeout hit or `signal` fired.
 */
export async function bootGuest(k: Kernel61, o: BootOptions): Promise<GuestRun> {
  const tmp = await Deno.makeTempDir({ prefix: "stb-kernel61-" });
  const results = `${tmp}/results`;
  const consoleLog = `${tmp}/console.log`;
  const started = performance.now();
  let child: Deno.ChildProcess | null = null;
  let timedOut = false;
  const kill = () => {
    try {
      child?.kill("SIGKILL");
    } catch { /* exited */ }
  };
  try {
    if (/[,\s]/.test(tmp + k.kernel + k.initramfs)) {
      throw new Error(`qemu's -fsdev/-kernel paths may not hold commas or spaces: ${tmp}`);
    }
    await Deno.mkdir(results);
    const job = {
      K61_KVER: k.kver,
      K61_MODULES: k.modules,
      K61_CONFIG: k.config,
      K61_CWD: o.cwd,
    };
    await Deno.writeTextFile(
      `${results}/job.sh`,
      Object.entries(job).map(([key, v]) => `${key}=${shellQuote(v)}\n`).join(""),
    );
    const env = {
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      HOME: "/root",
      LANG: "C.UTF-8",
      TERM: "dumb",
      NO_COLOR: "1",
      DENO_NO_UPDATE_CHECK: "1",
      ...o.env,
    };
    await Deno.writeTextFile(
      `${results}/command.sh`,
      Object.entries(env).map(([key, v]) => `export ${key}=${shellQuote(v)}\n`).join("") +
        `exec ${o.command.map(shellQuote).join(" ")}\n`,
    );
    const argv = [
      "-nodefaults",
      "-no-user-config",
      "-machine",
      "pc",
      "-accel",
      "tcg,thread=multi,tb-size=256",
      "-cpu",
      "max",
      "-smp",
      String(GUEST_CPUS),
      "-m",
      String(GUEST_MEMORY_MIB),
      "-display",
      "none",
      "-serial",
      `file:${consoleLog}`,
      "-no-reboot",
      "-kernel",
      k.kernel,
      "-initrd",
      k.initramfs,
      // panic=-1: a dead init reboots at once, which -no-reboot turns into qemu exiting.
      // No mitigations=off: it would relax the verifier's Spectre checks.
      "-append",
      "console=ttyS0 panic=-1 loglevel=4 cryptomgr.notests rdinit=/init",
      "-fsdev",
      "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
      "-device",
      "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
      "-fsdev",
      `local,id=results,path=${results},security_model=none`,
      "-device",
      "virtio-9p-pci,fsdev=results,mount_tag=results",
    ];
    child = new Deno.Command("qemu-system-x86_64", {
      args: argv,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, o.timeoutMs);
    o.signal?.addEventListener("abort", kill);
    const follow = followLines(`${results}/output.log`, o.onLine ?? (() => {}));
    let qemuOut;
    try {
      qemuOut = await child.output();
    } finally {
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", kill);
      await follow.stop();
    }
    const read = (p: string) => Deno.readTextFile(p).catch(() => "");
    const codeText = (await read(`${results}/exit_code`)).trim();
    const files: Record<string, string> = {};
    for (const e of Deno.readDirSync(results)) {
      if (e.isFile && !["job.sh", "command.sh", "output.log", "exit_code"].includes(e.name)) {
        files[e.name] = await read(`${results}/${e.name}`);
      }
    }
    return {
      exitCode: codeText === "" ? null : Number(codeText),
      timedOut,
      output: await read(`${results}/output.log`),
      console: await read(consoleLog),
      files,
      qemuStderr: new TextDecoder().decode(qemuOut.stderr),
      wallMs: performance.now() - started,
    };
  } finally {
    kill();
    await child?.status.catch(() => {});
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Calls `onLine` for each complete line appended to `path` while the guest writes it. */
function followLines(path: string, onLine: (line: string) => void) {
  let offset = 0, partial = "", stopped = false;
  const decoder = new TextDecoder();
  const poll = async () => {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path);
    } catch {
      return;
    }
    try {
      await file.seek(offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(65536);
      for (let n; (n = await file.read(buf)) !== null;) {
        offset += n;
        partial += decoder.decode(buf.subarray(0, n), { stream: true });
      }
    } finally {
      file.close();
    }
    const lines = partial.split("\n");
    partial = lines.pop()!;
    for (const l of lines) onLine(l);
  };
  const loop = (async () => {
    while (!stopped) {
      await poll();
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      await poll();
      if (partial) onLine(partial);
    },
  };
}
