/**
 * Totals that outlive the process, in copies only the sampler's user can read or write
 * (0600 files in directories others cannot write). counters.json, which belongs to the
 * config's owner, is never read back: nothing the owner can write decides the totals.
 *
 * - the runtime copy, `.runtime-state/<output name>.state` beside counters.json (on /run,
 *   a tmpfs: the unit's RuntimeDirectory), rewritten whenever the totals moved, every
 *   interval, without fsync: cheap, and gone with a reboot. After a SIGKILL it holds the
 *   totals of the last sample, so a restart loses at most one interval.
 * - the disk copy, the state file (/var/lib/...), fsynced (file and directory) when the
 *   run starts, at most once a minute while the totals move, at reset and at stop; the
 *   previous good disk copy is kept beside it as `<state>.bak`. After a power loss it
 *   holds the totals of at most a minute ago.
 *
 * Every write takes the next sequence number, and a new run continues from the good copy
 * with the highest one (docs/design.md, "Saved totals"). A copy that is empty, garbage or
 * unreadable is reported (log and metric) and passed over: the run starts from the next
 * good copy, or from zero, and never refuses to count.
 */

import type { ServiceCounters } from "../backends/backend.ts";
import type { KernelRecord } from "./totals.ts";
import { type HeldDir } from "../lib/held_dir.ts";
import { asCount, parseExact, stringifyExact } from "../lib/exact_json.ts";

export const DEFAULT_STATE_PATH = "/var/lib/stb-netacct/state.json";
/** A running sampler saves changed totals to disk at most this often (and at start, stop, reset). */
export const STATE_SAVE_MS = 60_000;
/** The subdirectory of the output directory that holds the runtime copies (0700). */
export const RUNTIME_STATE_DIR = ".runtime-state";
/** A state file is a few hundred bytes per service; anything far larger is not one. */
const MAX_STATE_BYTES = 1 << 20;

export interface SavedState {
  schema: 1;
  boot_id: string;
  saved_unix: number;
  /** CLOCK_MONOTONIC seconds at the save. */
  saved_monotonic?: number;
  /** `started_at` of the run that saved it. */
  started_at?: number;
  /** Orders the copies: every write of either copy takes the next number (absent: 0). */
  seq: number;
  /** Runtime copies: the state file they stand for (a copy of another one is not used). */
  state_path?: string;
  services: Record<string, ServiceCounters>;
  /**
   * The readings of kernel state that outlives runs (a pinned set, an nft table) that
   * `services` already include, per state id: a new run adds only what lies beyond them.
   */
  kernel?: KernelRecord[];
}

/** Which run saved the state, and when by CLOCK_MONOTONIC. */
export interface SavedRun {
  startedAt: number;
  monotonicNow: number;
  /** What the totals include of kernel state that outlives runs (Totals.kernelRecords). */
  kernel?: KernelRecord[];
}

export class StateError extends Error {
  override name = "StateError";
}

/** The copies, in the order they are named when they tie. */
export type CopyName = "state" | "backup" | "runtime";
export const COPY_NAMES: readonly CopyName[] = ["state", "backup", "runtime"];

/** Parses a copy; anything malformed is a StateError saying what is wrong with it. */
export function parseState(text: string): SavedState {
  if (text.trim() === "") throw new StateError("it is empty");
  let raw: unknown;
  try {
    raw = parseExact(text);
  } catch (cause) {
    throw new StateError(`it is not valid JSON (${(cause as Error).message})`, { cause });
  }
  const o = raw as Record<string, unknown>;
  if (typeof o !== "object" || o === null || o.schema !== 1 || typeof o.services !== "object") {
    throw new StateError("it is not a stb-netacct state (schema 1)");
  }
  const services = parseServices(o.services, "");
  const kernel: KernelRecord[] = [];
  if (o.kernel !== undefined) {
    if (!Array.isArray(o.kernel)) throw new StateError(`its "kernel" is not a list`);
    for (const k of o.kernel as Record<string, unknown>[]) {
      if (typeof k?.id !== "string" || typeof k.services !== "object" || k.services === null) {
        throw new StateError(`its "kernel" has an entry without id or services`);
      }
      kernel.push({ id: k.id, services: parseServices(k.services, ` in kernel state "${k.id}"`) });
    }
  }
  const seq = o.seq === undefined ? 0 : o.seq;
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
    throw new StateError(`its sequence number ${JSON.stringify(seq)} is not a count`);
  }
  return {
    schema: 1,
    boot_id: typeof o.boot_id === "string" ? o.boot_id : "",
    saved_unix: typeof o.saved_unix === "number" ? o.saved_unix : 0,
    ...(typeof o.saved_monotonic === "number" ? { saved_monotonic: o.saved_monotonic } : {}),
    ...(typeof o.started_at === "number" ? { started_at: o.started_at } : {}),
    seq,
    ...(typeof o.state_path === "string" ? { state_path: o.state_path } : {}),
    services,
    ...(o.kernel !== undefined ? { kernel } : {}),
  };
}

function parseServices(raw: unknown, where: string): Record<string, ServiceCounters> {
  const services: Record<string, ServiceCounters> = {};
  for (const [name, v] of Object.entries(raw as Record<string, unknown>)) {
    const s = (typeof v === "object" && v !== null ? v : {}) as Record<string, unknown>;
    const rxBytes = asCount(s.rxBytes), txBytes = asCount(s.txBytes);
    const rxPackets = asCount(s.rxPackets), txPackets = asCount(s.txPackets);
    if (rxBytes === null || txBytes === null || rxPackets === null || txPackets === null) {
      throw new StateError(`it has bad counters for service "${name}"${where}`);
    }
    services[name] = { rxBytes, txBytes, rxPackets, txPackets };
  }
  return services;
}

/** One copy as found: its text, null when absent, or why it could not be read. */
export interface FoundCopy {
  copy: CopyName;
  path: string;
  text: string | null | Error;
}

/** A copy that was there but could not be used, and why. */
export interface RejectedCopy {
  copy: CopyName;
  path: string;
  reason: string;
}

/** What a new run starts from. */
export interface StartingState {
  /** The copy chosen; null: none was good (or there was none), the run starts from zero. */
  chosen: { copy: CopyName; path: string; state: SavedState } | null;
  rejected: RejectedCopy[];
  /** Runtime copies of another state file: passed over without alarm. */
  foreign: string[];
  /** Whether the disk copy was good: only a good one is kept as the backup. */
  diskGood: boolean;
}

/**
 * The good copy with the highest sequence number (ties: the disk copy, then the backup).
 * A runtime copy counts only for the state file it names (`statePath`).
 */
export function chooseState(found: FoundCopy[], statePath: string): StartingState {
  const out: StartingState = { chosen: null, rejected: [], foreign: [], diskGood: false };
  for (const f of found) {
    if (f.text === null) continue;
    if (f.text instanceof Error) {
      out.rejected.push({ copy: f.copy, path: f.path, reason: f.text.message });
      continue;
    }
    let state: SavedState;
    try {
      state = parseState(f.text);
    } catch (e) {
      out.rejected.push({ copy: f.copy, path: f.path, reason: (e as Error).message });
      continue;
    }
    if (f.copy === "runtime" && state.state_path !== statePath) {
      out.foreign.push(f.path);
      continue;
    }
    if (f.copy === "state") out.diskGood = true;
    const best = out.chosen;
    const rank = (c: CopyName) => COPY_NAMES.indexOf(c);
    if (
      !best || state.seq > best.state.seq ||
      (state.seq === best.state.seq && rank(f.copy) < rank(best.copy))
    ) {
      out.chosen = { copy: f.copy, path: f.path, state };
    }
  }
  return out;
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

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Where the copies of one state file live, by name within their held directories. */
export interface StatePlaces {
  /** The state file's path (its identity, in messages and in runtime copies). */
  statePath: string;
  /** The output file's name: its runtime copy is `<name>.state`. */
  outputName: string;
  /** The state file's directory and the runtime copies' directory, as held now. */
  dirs(): { state: HeldDir; runtime: HeldDir };
}

/** The file names of a state's copies and of the reset request. */
export function stateNames(statePath: string, outputName: string) {
  const state = baseName(statePath);
  return {
    state,
    backup: `${state}.bak`,
    runtime: `${outputName}.state`,
    resetRequest: `${state}.reset`,
    lock: `${state}.lock`,
  };
}

/**
 * The copies of one run's totals (see the header) and the reset request `reset` drops
 * beside the disk copy.
 */
export class StateFiles {
  readonly path: string;
  readonly #places: StatePlaces;
  readonly #names: ReturnType<typeof stateNames>;
  #seq = 0;
  /** The disk copy is known good (loaded, or written by this run): it may become the backup. */
  #diskGood = false;

  constructor(places: StatePlaces) {
    this.#places = places;
    this.path = places.statePath;
    this.#names = stateNames(places.statePath, places.outputName);
  }

  /** Reads every copy and picks the one to continue from; never throws for a bad copy. */
  load(): StartingState {
    const { state, runtime } = this.#places.dirs();
    const read = (dir: HeldDir, name: string): string | null | Error => {
      try {
        return dir.readText(name, MAX_STATE_BYTES);
      } catch (e) {
        return e as Error;
      }
    };
    const n = this.#names;
    const start = chooseState([
      { copy: "state", path: state.pathOf(n.state), text: read(state, n.state) },
      { copy: "backup", path: state.pathOf(n.backup), text: read(state, n.backup) },
      { copy: "runtime", path: runtime.pathOf(n.runtime), text: read(runtime, n.runtime) },
    ], this.path);
    this.#diskGood = start.diskGood;
    this.#seq = start.chosen?.state.seq ?? 0;
    return start;
  }

  #render(services: Record<string, ServiceCounters>, run: SavedRun, runtime: boolean): string {
    const kernel = run.kernel ?? [];
    const state: SavedState = {
      schema: 1,
      boot_id: bootId(),
      saved_unix: Date.now() / 1000,
      saved_monotonic: run.monotonicNow,
      started_at: run.startedAt,
      seq: ++this.#seq,
      ...(runtime ? { state_path: this.path } : {}),
      services,
      ...(kernel.length > 0 ? { kernel } : {}),
    };
    return stringifyExact(state) + "\n";
  }

  /** The runtime copy: every sample whose totals moved. Cheap: no fsync. */
  keep(services: Record<string, ServiceCounters>, run: SavedRun): void {
    this.#places.dirs().runtime.writeAtomic(
      this.#names.runtime,
      this.#render(services, run, true),
      {
        mode: 0o600,
        uid: null,
        gid: null,
      },
    );
  }

  /**
   * The disk copy, durably: the new file is fsynced, the previous good one becomes the
   * backup, both renames are made durable by one fsync of the directory.
   */
  save(services: Record<string, ServiceCounters>, run: SavedRun): void {
    const dir = this.#places.dirs().state;
    const n = this.#names;
    const text = this.#render(services, run, false);
    // A disk copy found bad stays out of the backup slot: the backup is the last good one.
    if (this.#diskGood) dir.rename(n.state, n.backup);
    dir.writeAtomic(n.state, text, { mode: 0o600, uid: null, gid: null, durable: true });
    this.#diskGood = true;
  }

  /** After a clean stop the disk copy is current: the runtime copy has nothing to add. */
  discardRuntime(): void {
    const runtime = this.#places.dirs().runtime;
    runtime.remove(this.#names.runtime);
  }

  resetRequested(): boolean {
    return this.#places.dirs().state.stat(this.#names.resetRequest)?.type === "file";
  }

  clearResetRequest(): void {
    this.#places.dirs().state.remove(this.#names.resetRequest);
  }
}
