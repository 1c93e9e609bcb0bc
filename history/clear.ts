/**
 * `reset --history`: empty the history as well as the totals. A sampler writing the
 * database clears it itself (the one writer), asked by a request file beside its state
 * that it consumes with the reset; a database nobody writes is removed.
 */

import { lockHolder } from "../lib/lock.ts";
import { clearRequestPath } from "./db.ts";

/** The pid of the `run` writing this history, or null when none does. */
export function historyWriter(historyPath: string): number | null {
  return lockHolder(`${historyPath}.lock`);
}

/** Leaves the request for the sampler; created exclusively, so a planted link is never followed. */
export function requestClear(statePath: string): void {
  try {
    Deno.writeTextFileSync(clearRequestPath(statePath), `${Date.now()}\n`, {
      createNew: true,
      mode: 0o600,
    });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  }
}

/** Whether the request is still there (the sampler did not clear the history); removes it. */
export function withdrawClear(statePath: string): boolean {
  try {
    Deno.removeSync(clearRequestPath(statePath));
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Removes a database no sampler writes; false when there was none. */
export function removeHistory(historyPath: string): boolean {
  let removed = false;
  for (const p of [historyPath, `${historyPath}-journal`]) {
    try {
      Deno.removeSync(p);
      removed = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return removed;
}
