/**
 * Tools the benchmarks drive that a fresh machine may lack. The bench installs the Debian
 * package of a missing one (apt-get, as `make deps` would) and says so, so a figure is never
 * silently missing because a comparison tool was absent. `make deps` should list them:
 * iperf3 nethogs iftop ethtool bpftool.
 */

/** Command -> Debian 12 package that provides it. */
const PACKAGES: Record<string, string> = {
  iperf3: "iperf3",
  nethogs: "nethogs",
  iftop: "iftop",
  ethtool: "ethtool",
  bpftool: "bpftool",
  perf: "linux-perf",
};

async function have(command: string): Promise<boolean> {
  const out = await new Deno.Command("sh", {
    args: ["-c", 'command -v "$1" >/dev/null 2>&1', "sh", command],
    env: { PATH: `${Deno.env.get("PATH") ?? ""}:/usr/sbin:/sbin` },
  }).output();
  return out.success;
}

/** Installs the packages of the missing `commands`; returns the packages it installed. */
export async function ensurePackages(commands: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const c of commands) {
    const pkg = PACKAGES[c];
    if (pkg === undefined) throw new Error(`No Debian package known for command "${c}"`);
    if (!(await have(c))) missing.push(pkg);
  }
  if (missing.length === 0) return [];
  console.error(`bench: installing missing Debian packages: ${missing.join(" ")}`);
  const out = await new Deno.Command("apt-get", {
    args: ["install", "-y", "-qq", "--no-install-recommends", ...missing],
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `apt-get install ${missing.join(" ")} failed: ${
        new TextDecoder().decode(out.stderr).trim()
      }; install them (sudo apt-get install ${missing.join(" ")}) and run the bench again`,
    );
  }
  return missing;
}
