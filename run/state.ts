/**
 * Totals that outlive the process: `run` saves them every interval (atomically, root-only)
 * and a new `run` continues from them — after a SIGTERM, a SIGKILL, a reboot or a backend
 * change. Kernel counters of a new run start at zero, so continuing from the saved totals
 * can lose at most the traffic of the last unsaved interval and can never count twice.
 */

import { writeFileAtomic } from "../lib/atomic_write.ts";
import type { ServiceCounters } from "../backends/backend.ts";

export const DEFAULT_STATE_PATH = "/var/lib/stb-netacct/state.json";

export interface SavedState {
  schema: 1;
  boot_id: string;
  saved_unix: number;
  services: Record<string, ServiceCounters>;
}

export class StateError extends Error {
  override name = "StateError";
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Parses a state file; anything malformed is an error naming the file (never silently zero). */
export function parseState(text: string, path: string): SavedState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new StateError(
      `State file "${path}" is not valid JSON: move it away to start from zero, or restore it`,
      { cause },
    );
  }
  const o = raw as Record<string, unknown>;
  if (typeof o !== "object" || o === null || o.schema !== 1 || typeof o.services !== "object") {
    throw new StateError(
      `State file "${path}" is not a stb-netacct state (schema 1): move it away to start from zero`,
    );
  }
  const services: Record<string, ServiceCounters> = {};
  for (const [name, v] of Object.entries(o.services as Record<string, unknown>)) {
    const s = v as Record<string, unknown>;
    if (
      typeof s !== "object" || s === null || !isCount(s.rxBytes) || !isCount(s.txBytes) ||
      !isCount(s.rxPackets) || !isCount(s.txPackets)
    ) {
      throw new StateError(`State file "${path}" has bad counters for service "${name}"`);
    }
    services[name] = {
      rxBytes: s.rxBytes,
      txBytes: s.txBytes,
      rxPackets: s.rxPackets,
      txPackets: s.txPackets,
    };
  }
  return {
    schema: 1,
    boot_id: typeof o.boot_id === "string" ? o.boot_id : "",
    saved_unix: typeof o.saved_unix === "number" ? o.saved_unix : 0,
    services,
  };
}

export function loadState(path: string): SavedState | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new StateError(`Cannot read state file "${path}": ${(e as Error).message}`, { cause: e });
  }
  return parseState(text, path);
}

export function saveState(path: string, services: Record<string, ServiceCounters>): void {
  const state: SavedState = {
    schema: 1,
    boot_id: bootId(),
    saved_unix: Date.now() / 1000,
    services,
  };
  writeFileAtomic(path, JSON.stringify(state) + "\n", { mode: 0o600, uid: null, gid: null });
}

let cachedBootId: string | null = null;

/** The kernel's per-boot random id: readers compare it to tell a reboot from a restart. */
export function bootId(): string {
  if (cachedBootId === null) {
    try {
      cachedBootId = Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim();
    } catch {
      cachedBootId = "";
    }
  }
  return cachedBootId;
}

/** Where a reset request is dropped for a running sampler to pick up. */
export function resetRequestPath(statePath: string): string {
  return `${statePath}.reset`;
}
