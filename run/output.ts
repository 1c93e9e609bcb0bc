/**
 * Where and how `run` publishes. A root daemon writing into a directory someone else
 * controls could be tricked into clobbering any file, so the directory (and every one on
 * the way to it) must be root's and closed to others; it is held open by descriptor and
 * every file in it is created exclusively and renamed into place (lib/held_dir.ts).
 */

import { DirError, HeldDir } from "../lib/held_dir.ts";
import type { CountersV1, DestinationV1, ServiceCountersV1 } from "../lib/contract.ts";
import {
  DEFAULT_COUNTERS_PATH,
  MAX_COUNTERS_BYTES,
  outputLockPath,
  parseCounters,
  serializeCounters,
} from "../lib/contract.ts";
import type { DestinationCounters, ServiceCounters } from "../backends/backend.ts";
import { BackendError, UsageError } from "../lib/errors.ts";
import { acquireLock, type Lock, LockHeldError } from "../lib/lock.ts";
import type { UserIds } from "../lib/users.ts";
import { RUNTIME_STATE_DIR, stateNames, type StatePlaces } from "./state.ts";

export class OutputError extends Error {
  override name = "OutputError";
}

/**
 * Holds the directory `dir` (made 0755, or `mode`: 0700 for a state directory only root
 * reads), refusing one that others could change, or a way to it that they could.
 */
export function holdOutputDir(dir: string, mode = 0o755, what = "Output directory"): HeldDir {
  try {
    return HeldDir.hold(dir, { what, create: mode });
  } catch (e) {
    if (e instanceof DirError) throw new OutputError(e.message, { cause: e });
    if (e instanceof Error) {
      throw new OutputError(`Cannot create ${what.toLowerCase()} "${dir}": ${e.message}`, {
        cause: e,
      });
    }
    throw e;
  }
}

export function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i) : "/";
}

export interface ServiceState {
  path: string;
  present: boolean;
  counters: ServiceCounters;
}

/** Everything one sample of counters.json says. */
export interface SampleFacts {
  backend: string;
  fallbackReason: string | null;
  services: Record<string, ServiceState>;
  total: ServiceCounters;
  /** CLOCK_MONOTONIC and Unix seconds at the sample. */
  tsMonotonic: number;
  tsUnix: number;
  intervalS: number;
  bootId: string;
  /** Unix seconds this run started. */
  startedAt: number;
  /** From Backend.readDestinations, where the backend offers it (ebpf). */
  destinations?: DestinationCounters[];
  /** The DNS name StB resolved for an address, where known (names/). */
  nameOf?: (address: string) => string | undefined;
}

export function buildCounters(sample: SampleFacts): CountersV1 {
  const { services, total, destinations } = sample;
  // Plain loops and literals, no spreads or entries/fromEntries: this runs every interval,
  // in V8's interpreter (see scripts/deno_flags.txt), where each of those is a builtin call.
  const published: Record<string, ServiceCountersV1> = {};
  for (const name in services) {
    const s = services[name]!; // an own key of `services`
    published[name] = {
      rx_bytes_total: s.counters.rxBytes,
      tx_bytes_total: s.counters.txBytes,
      rx_packets_total: s.counters.rxPackets,
      tx_packets_total: s.counters.txPackets,
      cgroup: s.path,
      present: s.present,
    };
  }
  const counters: CountersV1 = {
    schema: 1,
    backend: sample.backend,
    boot_id: sample.bootId,
    started_at: sample.startedAt,
    rx_bytes_total: total.rxBytes,
    tx_bytes_total: total.txBytes,
    rx_packets_total: total.rxPackets,
    tx_packets_total: total.txPackets,
    ts_monotonic: Math.round(sample.tsMonotonic * 1e6) / 1e6,
    ts_unix: Math.round(sample.tsUnix * 1e3) / 1e3,
    interval_s: sample.intervalS,
    services: published,
  };
  if (sample.fallbackReason) counters.backend_fallback_reason = sample.fallbackReason;
  if (destinations) {
    const nameOf = sample.nameOf;
    counters.destinations = destinations.map((d) => {
      const out: DestinationV1 = {
        service: d.service,
        direction: d.direction,
        address: d.address,
        port: d.port,
        protocol: d.protocol,
        bytes: d.bytes,
        packets: d.packets,
      };
      const name = nameOf?.(d.address);
      if (name !== undefined) out.name = name;
      return out;
    });
  }
  return counters;
}

export interface OutputPaths {
  /** counters.json. */
  output: string;
  /** The saved totals (state.ts). */
  statePath: string;
  /** Who counters.json is given to; null keeps it the process's own. */
  owner: UserIds | null;
}

interface Held {
  out: HeldDir;
  state: HeldDir;
  /** The runtime copies of the totals (0700, inside the output directory). */
  runtime: HeldDir;
}

/**
 * counters.json and the copies of the totals as `run` holds them: their directories (made,
 * checked and held open), a lock on each so one `run` publishes per output and per state
 * file, and the atomic publish. A removed directory takes its lock file along, and a new
 * run could lock a fresh one while this one still counts: `recover` holds the directories
 * anew and takes the locks again wherever the file is gone.
 */
export class OutputFiles {
  readonly path: string;
  readonly #outName: string;
  readonly #outDir: string;
  readonly #stateDir: string;
  /** Saved totals are root's alone; beside counters.json the directory stays readable. */
  readonly #stateDirMode: number;
  readonly #lockNames: { state: boolean; name: string }[];
  readonly #owner: UserIds | null;
  readonly places: StatePlaces;
  #held: Held | null = null;
  #locks: Lock[] = [];
  /** Directories replaced while a lock in them was held; closed once the lock is retaken. */
  #staleDirs: HeldDir[] = [];

  constructor(paths: OutputPaths) {
    this.path = paths.output;
    this.#owner = paths.owner;
    this.#outDir = dirOf(paths.output);
    this.#outName = paths.output.slice(paths.output.lastIndexOf("/") + 1);
    this.#stateDir = dirOf(paths.statePath);
    this.#stateDirMode = this.#stateDir === this.#outDir ? 0o755 : 0o700;
    this.#lockNames = [
      { state: false, name: outputLockPath(this.#outName) },
      { state: true, name: stateNames(paths.statePath, this.#outName).lock },
    ];
    this.places = {
      statePath: paths.statePath,
      outputName: this.#outName,
      dirs: () => {
        const h = this.#current();
        return { state: h.state, runtime: h.runtime };
      },
    };
  }

  #current(): Held {
    if (!this.#held) throw new Error(`${this.#outDir} is not held: call prepare() first`);
    return this.#held;
  }

  /** The output directory as held now: events.jsonl goes beside counters.json. */
  get dir(): HeldDir {
    return this.#current().out;
  }

  /** Makes, checks and holds the directories (again, after `recover`). */
  prepare(): void {
    const out = holdOutputDir(this.#outDir);
    try {
      const state = holdOutputDir(this.#stateDir, this.#stateDirMode, "State directory");
      let runtime: HeldDir;
      try {
        runtime = out.sub(RUNTIME_STATE_DIR, { mode: 0o700, what: "Runtime state directory" });
      } catch (e) {
        state.close();
        throw e;
      }
      this.#replace({ out, state, runtime });
    } catch (e) {
      out.close();
      throw e;
    }
  }

  /** Keeps the held directories that are still the ones at their paths. */
  #replace(fresh: Held): void {
    const old = this.#held;
    if (old) {
      for (const k of ["out", "state", "runtime"] as const) {
        if (old[k].same(fresh[k])) {
          fresh[k].close();
          fresh[k] = old[k];
        } else {
          // Locks held in a replaced directory are taken again by `recover`.
          if (k !== "runtime") this.#staleDirs.push(old[k]);
          else old[k].close();
        }
      }
    }
    this.#held = fresh;
  }

  /** Takes both locks; LockHeldError when another run holds one. */
  lock(): void {
    const h = this.#current();
    for (const l of this.#lockNames) {
      this.#locks.push(acquireLock(l.state ? h.state : h.out, l.name));
    }
  }

  /**
   * Refuses an `output` that names a file stb-netacct did not write: `run` replaces it
   * every interval, so "output": "/etc/shadow" would destroy that file. Absent is fine;
   * so is a regular file holding a counters sample (schema 1), an empty one (what a power
   * loss can leave; nothing to lose) or one the configured owner owns (run gave it to
   * them, and what they write there must not stop counting).
   */
  checkExisting(): void {
    const out = this.#current().out;
    const st = out.stat(this.#outName);
    if (st === null) return;
    let why: string | null = null;
    if (st.type !== "file") why = `is a ${st.type === "other" ? "special file" : st.type}`;
    else if (
      st.size === 0 || (this.#owner && this.#owner.uid !== 0 && st.uid === this.#owner.uid)
    ) {
      return;
    } else {
      try {
        const text = out.readText(this.#outName, MAX_COUNTERS_BYTES) ?? "";
        parseCounters(text);
        // run always writes the schema; parseCounters lets readers go without it.
        if (JSON.parse(text).schema !== 1) throw new Error("no schema");
      } catch {
        why = "is not a counters file stb-netacct wrote";
      }
    }
    if (why === null) return;
    throw new UsageError(
      `The output "${this.path}" exists and ${why}, and run would replace it: point ` +
        `"output" (or --output) at a new file, like "${DEFAULT_COUNTERS_PATH}", or remove ` +
        `the file if it is a stale one of yours`,
    );
  }

  publish(counters: CountersV1): void {
    this.#current().out.writeAtomic(this.#outName, serializeCounters(counters), {
      mode: 0o644,
      uid: this.#owner?.uid ?? null,
      gid: this.#owner?.gid ?? null,
    });
  }

  /** Another run took a recreated lock: two samplers must never both publish. */
  recover(): void {
    this.prepare();
    const h = this.#current();
    try {
      this.#lockNames.forEach((l, i) => {
        const lock = this.#locks[i];
        const dir = l.state ? h.state : h.out;
        if (lock?.intactIn(dir)) return;
        lock?.release();
        this.#locks[i] = acquireLock(dir, l.name);
      });
    } catch (e) {
      if (e instanceof LockHeldError) throw new BackendError(e.message, { cause: e });
      throw e;
    } finally {
      for (const d of this.#staleDirs.splice(0)) d.close();
    }
  }

  /**
   * Releases the locks and the directories; the runtime copies' directory goes too when
   * it is empty (after a clean stop).
   */
  close(): void {
    for (const l of this.#locks.reverse()) l.release();
    this.#locks = [];
    for (const d of this.#staleDirs.splice(0)) d.close();
    const h = this.#held;
    this.#held = null;
    if (!h) return;
    h.runtime.close();
    try {
      h.out.removeDir(RUNTIME_STATE_DIR);
    } catch { /* the directory is gone */ }
    h.state.close();
    h.out.close();
  }
}
