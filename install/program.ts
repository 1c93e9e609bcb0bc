/**
 * What `install` copies so a root service can run the program without the build tree:
 * the `deno compile` binary as is, or (fallback build) deno + bundle in
 * /usr/local/lib/stb-netacct with a launcher in /usr/local/bin. The BPF object is embedded
 * in the code (bpf/netacct_object.ts), so nothing else is needed.
 */

import {
  BUNDLE_NAME,
  DENO_NAME,
  denoFlagsFromLauncher,
  ENV_LAUNCHER,
  ENV_LIBDIR,
  renderLauncher,
} from "./launcher.ts";

export const BIN_PATH = "/usr/local/bin/stb-netacct";
export const LIB_ROOT = "/usr/local/lib/stb-netacct";

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
  const flags = denoFlagsFromLauncher(Deno.readTextFileSync(mustExist(launcher, "launcher")));
  return {
    kind: "fallback",
    files: [
      { path: `${LIB_ROOT}/${DENO_NAME}`, mode: 0o755, from: deno },
      { path: `${LIB_ROOT}/${BUNDLE_NAME}`, mode: 0o644, from: bundle },
      { path: BIN_PATH, mode: 0o755, text: renderLauncher({ absolute: LIB_ROOT }, flags) },
    ],
  };
}
