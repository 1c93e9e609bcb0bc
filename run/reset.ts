/**
 * `stb-netacct reset`: zero the totals on purpose. A running sampler owns the totals in
 * memory, so it is asked: a request file, and SIGUSR1 to the lock's holder so the request
 * is consumed on the very next sample (unsignalled, within 2 s); with no sampler
 * running, the saved state is removed directly.
 */

import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { DEFAULT_COUNTERS_PATH } from "../lib/contract.ts";
import { HeldDir } from "../lib/held_dir.ts";
import { acquireLock, LockHeldError, lockHolderIn } from "../lib/lock.ts";
import { PRIVATE_STATE_DIR, STATE_DIR } from "../install/unit.ts";
import { RUNTIME_STATE_DIR, stateNames } from "./state.ts";
import { dirOf } from "./output.ts";
import { defaultStatePath } from "./mod.ts";

import { RESET_SIGNAL } from "./sleep.ts";
import { defaultHistoryPath } from "../history/paths.ts";
import { historyWriter, removeHistory, requestClear, withdrawClear } from "../history/clear.ts";

type StateNames = ReturnType<typeof stateNames>;

/** A commander argument parser, so a bad value gets the usage line like every flag. */
function parseTimeout(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new InvalidArgumentError("use a positive number of seconds, e.g. 5");
  }
  return n;
}

export function resetCommand() {
  return new Command("reset")
    .summary("zero the saved and published totals (root)")
    .description(
      "Zero rx/tx totals on purpose. If `run` is running it zeroes them on its next sample\n" +
        "(readers see a counter reset); otherwise the saved state is removed. The traffic\n" +
        "history (`report`) is kept unless --history is given.",
    )
    .option("-o, --output <path>", "the counters file of the run to reset", DEFAULT_COUNTERS_PATH)
    .option("-s, --state <path>", "its state file (default: as `run` derives it from --output)")
    .option("--timeout <seconds>", "how long to wait for a running sampler", parseTimeout, 5)
    .option("--history", "also clear the traffic history that `report` shows", false)
    .option("--history-db <path>", "its history (default: as `run` derives it from --output)")
    .addHelpText(
      "after",
      "\nExamples:\n  sudo stb-netacct reset              # totals only; history kept\n" +
        "  sudo stb-netacct reset --history    # totals and history\n",
    )
    .action(async (opts) => {
      const statePath = opts.state ?? defaultStatePath(opts.output);
      const historyPath = opts.history ? opts.historyDb ?? defaultHistoryPath(opts.output) : null;
      await resetTotals(
        { statePath, output: opts.output, historyPath },
        opts.timeout,
        (m) => console.log(m),
      );
    });
}

/**
 * Tells the sampler holding the lock to look for the request now. Best effort: a sampler
 * that misses the signal still finds the request within seconds.
 */
function signalHolder(dir: HeldDir, lockName: string): void {
  const pid = lockHolderIn(dir, lockName);
  if (pid === null || pid === Deno.pid) return;
  try {
    Deno.kill(pid, RESET_SIGNAL);
  } catch { /* gone meanwhile */ }
}

/**
 * Under the unit (DynamicUser=) /var/lib/stb-netacct is systemd's symlink to the private
 * directory the service really uses; `reset` follows that one link, which only root made.
 */
function realStateDir(dir: string): string {
  try {
    if (dir === STATE_DIR && Deno.readLinkSync(dir) === "private/stb-netacct") {
      return PRIVATE_STATE_DIR;
    }
  } catch { /* not a link */ }
  return dir;
}

/**
 * The directory, held, or null when it does not exist. Its owner is not judged: it may be
 * the sampler's (a dynamic user's), which is why everything `reset` does in it is
 * exclusive and no-follow; the way to it must be root's.
 */
function holdIfThere(dir: string, what: string): HeldDir | null {
  try {
    return HeldDir.hold(dir, { what, owner: "any" });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Drops the request for the running sampler: created exclusively and never through a
 * symlink, so nothing planted at its name (by a compromised sampler, say) makes root
 * write or truncate another file. A leftover request is reused; anything else there is
 * removed (the entry itself, not what it points to) and the request made again.
 */
function dropRequest(dir: HeldDir, name: string): void {
  for (let attempt = 0;; attempt++) {
    try {
      dir.createExclusive(name, `${Date.now()}\n`, 0o600);
      return;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists) || attempt > 2) throw e;
      if (dir.stat(name)?.type === "file") return;
      dir.remove(name);
    }
  }
}

/** Asks the running sampler to zero its totals and waits until it has. */
async function resetRunning(dir: HeldDir, names: StateNames, timeoutS: number) {
  dropRequest(dir, names.resetRequest);
  signalHolder(dir, names.lock);
  const deadline = Date.now() + timeoutS * 1000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    if (dir.stat(names.resetRequest) === null) return true;
  }
  dir.remove(names.resetRequest);
  return false;
}

/** No sampler runs: every copy of the totals goes, the runtime copy first. */
function removeCopies(dir: HeldDir, names: StateNames, outputDir: string): string[] {
  const removed: string[] = [];
  const out = holdIfThere(outputDir, "Output directory");
  try {
    const runtime = out?.stat(RUNTIME_STATE_DIR)?.type === "directory"
      ? out.sub(RUNTIME_STATE_DIR, { mode: 0o700, what: "Runtime state directory", owner: "any" })
      : null;
    try {
      if (runtime?.remove(names.runtime)) removed.push(runtime.pathOf(names.runtime));
    } finally {
      runtime?.close();
    }
  } finally {
    out?.close();
  }
  for (const name of [names.backup, names.state]) {
    if (dir.remove(name)) removed.push(dir.pathOf(name));
  }
  dir.sync();
  return removed;
}

/** What to reset: the totals of the run saving `statePath`, and the history when not null. */
export interface ResetTarget {
  statePath: string;
  /** The counters file of that run: its runtime copy of the totals is beside it. */
  output: string;
  historyPath: string | null;
}

export async function resetTotals(
  target: ResetTarget,
  timeoutS: number,
  say: (m: string) => void,
): Promise<void> {
  if (Deno.uid() !== 0) {
    throw new Error("Resetting the totals needs root: run `sudo stb-netacct reset`");
  }
  const { statePath, historyPath } = target;
  // A running sampler writing the history clears it itself, with the totals.
  const sampler = historyPath === null ? null : historyWriter(historyPath);
  if (sampler !== null) requestClear(statePath);
  try {
    await resetState(target, timeoutS, say);
  } catch (e) {
    // Not left for a later plain `reset` to find.
    if (sampler !== null) withdrawClear(statePath);
    throw e;
  }
  if (historyPath === null) {
    say("History kept (`stb-netacct reset --history` clears it too).");
  } else if (sampler !== null) {
    if (withdrawClear(statePath)) {
      throw new Error(
        `The totals were reset, but the running sampler (pid ${sampler}) did not clear the ` +
          `history ${historyPath}: its log says why (\`journalctl -u stb-netacct\`)`,
      );
    }
    say(`History cleared: the running sampler emptied ${historyPath}.`);
  } else {
    say(
      removeHistory(historyPath)
        ? `History cleared: removed ${historyPath}.`
        : `No history to clear at ${historyPath}.`,
    );
  }
}

async function resetState(
  paths: { statePath: string; output: string },
  timeoutS: number,
  say: (m: string) => void,
): Promise<void> {
  const stateDir = realStateDir(dirOf(paths.statePath));
  const outputName = paths.output.slice(paths.output.lastIndexOf("/") + 1);
  const names = stateNames(paths.statePath, outputName);
  const dir = holdIfThere(stateDir, "State directory");
  if (!dir) {
    say(`Nothing to reset: ${stateDir} does not exist (no run has saved totals here).`);
    return;
  }
  try {
    let lock;
    try {
      lock = acquireLock(dir, names.lock);
    } catch (e) {
      if (!(e instanceof LockHeldError)) throw e;
      if (await resetRunning(dir, names, timeoutS)) {
        return say("Totals reset: the running sampler zeroed them.");
      }
      throw new Error(
        `The running sampler did not pick up the reset within ${timeoutS} s: ` +
          "check `stb-netacct status` and the journal (`journalctl -u stb-netacct`)",
      );
    }
    try {
      const removed = removeCopies(dir, names, dirOf(paths.output));
      say(
        removed.length > 0
          ? `Totals reset: removed ${removed.join(", ")}; the next run starts from zero.`
          : "Nothing to reset: no saved totals.",
      );
    } finally {
      lock.release();
    }
  } finally {
    dir.close();
  }
}
