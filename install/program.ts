/**
 * What `install` copies so a root service can run the program without the build tree:
 * the `deno compile` binary as is, or (fallback build) deno + bundle + BPF object in
 * /usr/local/lib/stb-netacct with a launcher in /usr/local/bin.
 *
 * The fallback keeps the build tree's shape (`dist/` beside `bpf/`) because the bundle
 * finds the BPF object relative to itself (`../bpf/netacct.bpf.o`), exactly as it does in
 * the build tree.
 */

import {
  BUNDLE_NAME,
  DENO_NAME,
  ENV_LAUNCHER,
  ENV_LIBDIR,
  permissionsFromLauncher,
  renderLauncher,
} from "./launcher.ts";

export const BIN_PATH = "/usr/local/bin/stb-netacct";
export const LIB_ROOT = "/usr/local/lib/stb-netacct";
const LIB_DIST = `${LIB_ROOT}/dist`;
const BPF_OBJECT = "bpf/netacct.bpf.o";

export interface ProgramFile {
  path: string;
  mode: number;
  /** Copied from this file... */
  from?: string;
  /** ...or written with this content. */
  text?: string;
}

export interface Program {
  kind: "compiled" | "fallback";
  files: ProgramFile[];
}

export class ProgramError extends Error {
  override name = "ProgramError";
}

function mustExist(path: string, what: string): string {
  try {
    if (Deno.statSync(path).isFile) return path;
  } catch { /* reported below */ }
  throw new ProgramError(
    `The ${what} ${JSON.stringify(path)} is missing: rebuild with \`make build\``,
  );
}

/** Works out the files to install from how this process was started. */
export function currentProgram(): Program {
  if (Deno.build.standalone) {
    return { kind: "compiled", files: [{ path: BIN_PATH, mode: 0o755, from: Deno.execPath() }] };
  }
  const libDir = Deno.env.get(ENV_LIBDIR);
  const launcher = Deno.env.get(ENV_LAUNCHER);
  if (!libDir || !launcher) {
    throw new ProgramError(
      "This is stb-netacct run from source, which cannot be installed: run `make build`, " +
        "then `sudo ./stb-netacct install`",
    );
  }
  const bundle = mustExist(`${libDir}/${BUNDLE_NAME}`, "bundle");
  const deno = mustExist(`${libDir}/${DENO_NAME}`, "deno binary");
  const object = mustExist(`${libDir}/../${BPF_OBJECT}`, "BPF object");
  const perms = permissionsFromLauncher(Deno.readTextFileSync(mustExist(launcher, "launcher")));
  return {
    kind: "fallback",
    files: [
      { path: `${LIB_DIST}/${DENO_NAME}`, mode: 0o755, from: deno },
      { path: `${LIB_DIST}/${BUNDLE_NAME}`, mode: 0o644, from: bundle },
      { path: `${LIB_ROOT}/${BPF_OBJECT}`, mode: 0o644, from: object },
      { path: BIN_PATH, mode: 0o755, text: renderLauncher({ absolute: LIB_DIST }, perms) },
    ],
  };
}
