/**
 * Running helper commands (ip, nft, iptables, bpftool, nsenter) from tests. Failures throw
 * with the command line and its stderr, because a test that dies on "exit 1" alone costs
 * the reader a rerun.
 */

export const DENO = Deno.execPath();

/**
 * STB_NETACCT_SLOW=1 is set by the kernel-6.1 lane (tests/kernel61/lane.ts), whose qemu TCG
 * guest runs programs 30-40x slower than a host: deadlines that wait for something to happen
 * are this many times longer there, and stay strict everywhere else.
 */
export const SLOW_FACTOR = Deno.env.get("STB_NETACCT_SLOW") === "1" ? 4 : 1;

/** A Deno.Command for `argv` (program first); an empty argv is a caller's bug. */
export function command(
  argv: readonly string[],
  options: Omit<Deno.CommandOptions, "args"> = {},
): Deno.Command {
  const [program, ...args] = argv;
  if (program === undefined) throw new Error("empty command line");
  return new Deno.Command(program, { ...options, args });
}

export class CommandError extends Error {
  override name = "CommandError";
  constructor(message: string, readonly code: number, readonly stderr: string) {
    super(message);
  }
}

export interface RunOptions {
  /** Text written to the command's stdin. */
  stdin?: string;
  /** Don't throw on a non-zero exit; the caller reads `code`. */
  allowFail?: boolean;
  env?: Record<string, string>;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(argv: string[], options: RunOptions = {}): Promise<RunResult> {
  const cmd = command(argv, {
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  });
  const child = cmd.spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.stdin));
    await w.close();
  }
  const out = await child.output();
  const result = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if (result.code !== 0 && !options.allowFail) {
    throw new CommandError(
      `\`${argv.join(" ")}\` exited ${result.code}: ${
        result.stderr.trim() || result.stdout.trim()
      }`,
      result.code,
      result.stderr,
    );
  }
  return result;
}

/** Runs and returns stdout; throws on failure. */
export async function output(argv: string[], options: RunOptions = {}): Promise<string> {
  return (await run(argv, options)).stdout;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Short random suffix for names that must not collide between concurrent test runs. */
export function randomTag(length = 6): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

/**
 * Put between a name prefix and a test's random tag in every netns and cgroup name: the pid
 * of this test run. Several suites run at once on a shared machine (engineers, CI, other
 * test files using this harness); the pid lets the leftover check tell this run's
 * leftovers (and those of runs that died) from another live run's.
 */
export const RUN_SCOPE = `${Deno.pid}x`;

/**
 * Whether a name made as prefix + RUN_SCOPE + tag is this run's business: made by this
 * process, or by one that is gone (a crashed run's leftover). Another live run's is not,
 * nor is a name without a run scope (not made by this harness).
 */
export function oursOrStale(name: string, prefix: string): boolean {
  if (!name.startsWith(prefix)) return false;
  const m = /^(\d+)x/.exec(name.slice(prefix.length));
  if (!m) return false;
  const pid = Number(m[1]);
  return pid === Deno.pid || !processExists(pid);
}

/** True when a process with this pid exists (zombies included). */
export function processExists(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Ends a child: sends `signal` (none when the caller already asked it to stop, e.g. by
 * closing its stdin), waits for the exit, and SIGKILLs it if that takes over `graceMs`.
 */
export async function endProcess(
  child: Deno.ChildProcess,
  graceMs: number,
  signal: Deno.Signal | null = "SIGTERM",
): Promise<Deno.CommandStatus> {
  if (signal) {
    try {
      child.kill(signal);
    } catch { /* already exited */ }
  }
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
