/**
 * Totals that outlive the process. `run` saves them (atomically, root-only) when it starts,
 * stops or resets, and otherwise at most once a minute: the state lives on disk
 * (/var/lib), and rewriting it every interval would write to disk twice a second for as
 * long as traffic flows. What a run published in between is in counters.json (on /run, a
 * tmpfs): a new run continues from whichever of the two is newer — after a SIGTERM, a
 * SIGKILL, a reboot or a backend change. Kernel counters of a new run start at zero, so
 * this loses at most the traffic of one interval after a SIGKILL (of up to a minute after a
 * power loss, which takes /run along) and can never count twice.
 */

import { writeFileAtomic } from "../lib/atomic_write.ts";
import { pathInfo } from "../lib/libc.ts";
import type { ServiceCounters } from "../backends/backend.ts";
import type { CountersV1 } from "../lib/contract.ts";
import { asCount, parseExact, stringifyExact } from "../lib/exact_json.ts";

export const DEFAULT_STATE_PATH = "/var/lib/stb-netacct/state.json";
/** A running sampler saves changed totals at most this often (and at start, stop and reset). */
export const STATE_SAVE_MS = 60_000;

export interface SavedState {
  schema: 1;
  boot_id: string;
  saved_unix: number;
  /** CLOCK_MONOTONIC seconds at the save, comparable with counters.json's ts_monotonic. */
  saved_monotonic?: number;
  /** `started_at` of the run that saved it: that run's counters.json carries the same. */
  started_at?: number;
  services: Record<string, ServiceCounters>;
}

/** Which run saved the state, and when by CLOCK_MONOTONIC. */
export interface SavedRun {
  startedAt: number;
  monotonicNow: number;
}

export class StateError extends Error {
  override name = "StateError";
}

/** Parses a state file; anything malformed is an error naming the file (never silently zero). */
export function parseState(text: string, path: string): SavedState {
  let raw: unknown;
  try {
    raw = parseExact(text);
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
    const s = (typeof v === "object" && v !== null ? v : {}) as Record<string, unknown>;
    const rxBytes = asCount(s.rxBytes), txBytes = asCount(s.txBytes);
    const rxPackets = asCount(s.rxPackets), txPackets = asCount(s.txPackets);
    if (rxBytes === null || txBytes === null || rxPackets === null || txPackets === null) {
      throw new StateError(`State file "${path}" has bad counters for service "${name}"`);
    }
    services[name] = { rxBytes, txBytes, rxPackets, txPackets };
  }
  return {
    schema: 1,
    boot_id: typeof o.boot_id === "string" ? o.boot_id : "",
    saved_unix: typeof o.saved_unix === "number" ? o.saved_unix : 0,
    ...(typeof o.saved_monotonic === "number" ? { saved_monotonic: o.saved_monotonic } : {}),
    ...(typeof o.started_at === "number" ? { started_at: o.started_at } : {}),
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

export function saveState(
  path: string,
  services: Record<string, ServiceCounters>,
  run: SavedRun,
): void {
  const state: SavedState = {
    schema: 1,
    boot_id: bootId(),
    saved_unix: Date.now() / 1000,
    saved_monotonic: run.monotonicNow,
    started_at: run.startedAt,
    services,
  };
  writeFileAtomic(path, stringifyExact(state) + "\n", { mode: 0o600, uid: null, gid: null });
}

/**
 * The totals a new run starts from: none without a saved state (a first run, or `reset`
 * removed it), else the saved ones, unless counters.json was published later by the very
 * run that saved them (same boot, same start): that run died between two saves, and what
 * it published last is newer. Both only ever grow between resets, and a reset is saved at
 * once, so the later of the two is the right one.
 */
export function startingTotals(
  saved: SavedState | null,
  published: CountersV1 | null,
): { services: Record<string, ServiceCounters>; from: "state" | "counters" } | null {
  if (!saved) return null;
  const sameRun = published !== null && saved.saved_monotonic !== undefined &&
    published.boot_id === saved.boot_id && published.started_at === saved.started_at &&
    published.ts_monotonic > saved.saved_monotonic;
  if (!sameRun) return { services: saved.services, from: "state" };
  const services = { ...saved.services };
  for (const [name, s] of Object.entries(published.services)) {
    services[name] = {
      rxBytes: s.rx_bytes_total,
      txBytes: s.tx_bytes_total,
      rxPackets: s.rx_packets_total,
      txPackets: s.tx_packets_total,
    };
  }
  return { services, from: "counters" };
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

/** The state file, and the reset request `reset` drops beside it. */
export class FileStateStore {
  readonly #resetRequest: string;

  constructor(readonly path: string) {
    this.#resetRequest = resetRequestPath(path);
  }

  save(services: Record<string, ServiceCounters>, run: SavedRun): void {
    saveState(this.path, services, run);
  }

  resetRequested(): boolean {
    return pathInfo(this.#resetRequest, false)?.isFile ?? false;
  }

  clearResetRequest(): void {
    Deno.removeSync(this.#resetRequest);
  }
}
