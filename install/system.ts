/**
 * The host side of install/uninstall/status: is systemd the service manager, systemctl and
 * journalctl calls, and files written so that a crash never leaves half a unit or binary.
 */

import { UsageError } from "../lib/errors.ts";

export class SystemError extends Error {
  override name = "SystemError";
}

/** install and uninstall change system files: root only (a usage error otherwise). */
export function requireRoot(what: string): void {
  if (Deno.uid() !== 0) {
    throw new UsageError(
      `${what} changes system files and services: run it as root (sudo stb-netacct ${what})`,
    );
  }
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool to completion; a missing tool becomes a SystemError naming it. */
export async function runCommand(argv: [string, ...string[]]): Promise<CommandResult> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    throw new SystemError(`Cannot run \`${argv[0]}\`: ${(e as Error).message}`, { cause: e });
  }
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs `systemctl ARGS`, throwing with systemctl's own words on failure. */
export async function systemctl(...args: string[]): Promise<string> {
  const r = await runCommand(["systemctl", ...args]);
  if (r.code !== 0) {
    throw new SystemError(
      `\`systemctl ${args.join(" ")}\` failed: ${r.stderr.trim() || `exit ${r.code}`}`,
    );
  }
  return r.stdout;
}

/** sd_booted(3): /run/systemd/system exists only when systemd is the running init. */
export function systemdBooted(root = ""): boolean {
  try {
    return Deno.statSync(`${root}/run/systemd/system`).isDirectory;
  } catch {
    return false;
  }
}

/** `systemctl show` output (KEY=VALUE lines) as a map. */
export function parseShow(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

export const SHOW_PROPERTIES = [
  "LoadState",
  "ActiveState",
  "SubState",
  "UnitFileState",
  "Result",
  "NRestarts",
  "ActiveEnterTimestamp",
  "MainPID",
  "NeedDaemonReload",
];

export async function showUnit(unit: string): Promise<Map<string, string>> {
  return parseShow(await systemctl("show", unit, `--property=${SHOW_PROPERTIES.join(",")}`));
}

/** The last journal lines of a unit, for messages that explain a failure. */
export async function journalTail(unit: string, lines = 20): Promise<string[]> {
  const r = await runCommand([
    "journalctl",
    "-u",
    unit,
    "-n",
    String(lines),
    "--no-pager",
    "-o",
    "short-precise",
  ]).catch(() => null);
  if (!r || r.code !== 0) return [];
  return r.stdout.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("-- "));
}

export function readBytesOrNull(path: string): Uint8Array | null {
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

export function modeOf(path: string): number | null {
  try {
    return (Deno.statSync(path).mode ?? 0) & 0o7777;
  } catch {
    return null;
  }
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Whether two files hold the same bytes, compared by cmp(1): the program is ~90 MB, and
 * a byte loop in the program's V8 lite mode takes seconds.
 */
export function sameFiles(a: string, b: string): boolean {
  try {
    return new Deno.Command("cmp", { args: ["-s", "--", a, b], stdout: "null", stderr: "null" })
      .outputSync().code === 0;
  } catch {
    return sameBytes(Deno.readFileSync(a), Deno.readFileSync(b));
  }
}

export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes `data` to `path` via a temp file in the same directory and rename, so a running
 * service or a crash never sees half a file. Parents are created 0755.
 */
export function installFile(path: string, data: Uint8Array, mode: number): void {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const tmp = `${dir}/.${path.slice(dir.length + 1)}.stb-netacct-${Deno.pid}.tmp`;
  try {
    Deno.writeFileSync(tmp, data, { mode, createNew: true });
    Deno.chmodSync(tmp, mode);
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* never created */ }
    throw new SystemError(`Cannot write ${JSON.stringify(path)}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}
