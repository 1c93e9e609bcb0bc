/**
 * Runs the firewall tools (nft, iptables-restore, iptables-save) for the nft and iptables
 * backends. Always an argument vector, never a shell string: cgroup paths contain
 * backslashes ("\x2d") and must reach the tool byte for byte.
 */

import { BackendError } from "./backend.ts";

/** What to tell the user when a tool is not installed (Debian 12 package names). */
const INSTALL_HINT: Record<string, string> = {
  "nft": "apt install nftables",
  "iptables": "apt install iptables",
  "ip6tables": "apt install iptables",
  "iptables-save": "apt install iptables",
  "ip6tables-save": "apt install iptables",
  "iptables-restore": "apt install iptables",
  "ip6tables-restore": "apt install iptables",
};

export interface RunToolOptions {
  /** Text fed to the tool's stdin (e.g. an nft ruleset for `nft -f -`). */
  stdin?: string;
  /** Kill the tool after this long; a wedged nft must not stall the sampler. Default 10 s. */
  timeoutMs?: number;
}

/** A tool ran and failed; `stderr` keeps its own words for callers that recognise them. */
export interface ToolFailure {
  tool: string;
  stderr: string;
  /** Exit status; null when it was stopped (a timeout). */
  code: number | null;
}

export class ToolError extends BackendError {
  override name = "ToolError";
  readonly tool: string;
  readonly stderr: string;
  readonly code: number | null;
  constructor(message: string, failure: ToolFailure) {
    super(message);
    this.tool = failure.tool;
    this.stderr = failure.stderr;
    this.code = failure.code;
  }
}

/** The first few non-empty lines of a tool's stderr, enough to quote in one message. */
export function summariseStderr(stderr: string, maxLines = 4): string {
  const lines = stderr.split("\n").map((l) => l.trimEnd()).filter((l) => l.trim() !== "");
  const head = lines.slice(0, maxLines).join(" | ");
  return lines.length > maxLines ? `${head} | ...` : head;
}

function privilegeHint(stderr: string): string {
  return /Operation not permitted|Permission denied|must be root/i.test(stderr)
    ? "; run stb-netacct as root (sudo)"
    : "";
}

/**
 * Runs `tool args...`, returns its stdout. Throws a BackendError when the tool is missing
 * (naming the package to install), times out, or exits non-zero (quoting its stderr).
 */
export async function runTool(
  tool: string,
  args: string[],
  options: RunToolOptions = {},
): Promise<string> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const shown = [tool, ...args].join(" ");
  try {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(tool, {
        args,
        stdin: options.stdin === undefined ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
        signal: controller.signal,
        clearEnv: false,
        // Tool messages are matched in English ("No such file or directory").
        env: { LC_ALL: "C" },
      }).spawn();
    } catch (cause) {
      if (cause instanceof Deno.errors.NotFound) {
        const hint = INSTALL_HINT[tool] ?? `install "${tool}"`;
        throw new BackendError(`"${tool}" not found: ${hint}`, { cause });
      }
      if (
        cause instanceof Deno.errors.NotCapable || cause instanceof Deno.errors.PermissionDenied
      ) {
        throw new BackendError(
          `Not allowed to run "${tool}": grant --allow-run and run stb-netacct as root`,
          { cause },
        );
      }
      throw new BackendError(`Cannot run "${tool}": ${String(cause)}`, { cause });
    }
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      try {
        await writer.write(new TextEncoder().encode(options.stdin));
        await writer.close();
      } catch {
        // The tool exited early (bad option); its stderr below says why.
      }
    }
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    if (controller.signal.aborted) {
      throw new ToolError(
        `"${shown}" did not finish within ${timeoutMs} ms: check for a stuck ${tool} or xtables lock`,
        { tool, stderr, code: null },
      );
    }
    if (!out.success) {
      const said = summariseStderr(stderr) || "no message";
      throw new ToolError(
        `"${shown}" failed with exit status ${out.code}: ${said}${privilegeHint(stderr)}`,
        { tool, stderr, code: out.code },
      );
    }
    return stdout;
  } finally {
    clearTimeout(timer);
  }
}
