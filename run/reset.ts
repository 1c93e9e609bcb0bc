/**
 * `stb-netacct reset`: zero the totals on purpose. A running sampler owns the totals in
 * memory, so it is asked: a request file, and SIGUSR1 to the lock's holder so the request
 * is consumed on the very next sample (unsignalled, within 2 s); with no sampler
 * running, the saved state is removed directly.
 */

import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { DEFAULT_COUNTERS_PATH } from "../lib/contract.ts";
import { acquireLock, LockHeldError, lockHolder } from "../lib/lock.ts";
import { resetRequestPath } from "./state.ts";
import { defaultStatePath } from "./mod.ts";
import { RESET_SIGNAL } from "./sleep.ts";
import { defaultHistoryPath } from "../history/paths.ts";
import { historyWriter, removeHistory, requestClear, withdrawClear } from "../history/clear.ts";

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
      await resetTotals({ statePath, historyPath }, opts.timeout, (m) => console.log(m));
    });
}

/**
 * Tells the sampler holding the lock to look for the request now. Best effort: a sampler
 * that misses the signal still finds the request within seconds.
 */
function signalHolder(lockPath: string): void {
  const pid = lockHolder(lockPath);
  if (pid === null || pid === Deno.pid) return;
  try {
    Deno.kill(pid, RESET_SIGNAL);
  } catch { /* gone meanwhile */ }
}

/** What to reset: the totals of the run saving `statePath`, and the history when not null. */
export interface ResetTarget {
  statePath: string;
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
    await resetState(statePath, timeoutS, say);
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
  statePath: string,
  timeoutS: number,
  say: (m: string) => void,
): Promise<void> {
  const stateDir = statePath.slice(0, statePath.lastIndexOf("/")) || "/";
  try {
    Deno.statSync(stateDir);
  } catch {
    say(`Nothing to reset: ${stateDir} does not exist (no run has saved totals here).`);
    return;
  }
  let lock;
  try {
    lock = acquireLock(`${statePath}.lock`);
  } catch (e) {
    if (!(e instanceof LockHeldError)) throw e;
    const request = resetRequestPath(statePath);
    Deno.writeTextFileSync(request, `${Date.now()}\n`, { mode: 0o600 });
    signalHolder(`${statePath}.lock`);
    const deadline = Date.now() + timeoutS * 1000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      try {
        Deno.lstatSync(request);
      } catch {
        say("Totals reset: the running sampler zeroed them.");
        return;
      }
    }
    Deno.removeSync(request);
    throw new Error(
      `The running sampler did not pick up the reset within ${timeoutS} s: ` +
        "check `stb-netacct status` and the journal (`journalctl -u stb-netacct`)",
    );
  }
  try {
    Deno.removeSync(statePath);
    say(`Totals reset: removed ${statePath}; the next run starts from zero.`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    say("Nothing to reset: no saved totals.");
  } finally {
    lock.release();
  }
}
