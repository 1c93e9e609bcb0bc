/**
 * Where and how `run` publishes. A root daemon writing into a directory someone else
 * controls could be tricked into clobbering any file, so the directory must be root's
 * and closed to others; the file itself is created exclusively and renamed into place.
 */

import { writeFileAtomic } from "../lib/atomic_write.ts";
import type { CountersV1, ServiceCountersV1 } from "../lib/contract.ts";
import { outputLockPath, serializeCounters } from "../lib/contract.ts";
import type { DestinationCounters, ServiceCounters } from "../backends/backend.ts";
import { BackendError } from "../lib/errors.ts";
import { acquireLock, type Lock, LockHeldError } from "../lib/lock.ts";
import type { UserIds } from "../lib/users.ts";

export class OutputError extends Error {
  override name = "OutputError";
}

/**
 * Creates the output directory (0755, or `mode`: 0700 for a state directory only root
 * reads) if needed and refuses one others could write.
 */
export function prepareOutputDir(dir: string, mode = 0o755): void {
  try {
    Deno.mkdirSync(dir, { recursive: true, mode });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) {
      throw new OutputError(`Cannot create output directory "${dir}": ${(e as Error).message}`, {
        cause: e,
      });
    }
  }
  const st = Deno.lstatSync(dir);
  if (st.isSymlink || !st.isDirectory) {
    throw new OutputError(
      `Output directory "${dir}" is a symlink or not a directory: point --output at a real directory`,
    );
  }
  if (st.uid !== Deno.uid()) {
    throw new OutputError(
      `Output directory "${dir}" is owned by uid ${st.uid}, not by the user running stb-netacct ` +
        `(uid ${Deno.uid()}): a root daemon must not write into someone else's directory; ` +
        `use /run/stb-netacct or chown it`,
    );
  }
  if (st.mode !== null && (st.mode & 0o022) !== 0) {
    throw new OutputError(
      `Output directory "${dir}" is writable by group or others (mode ${
        (st.mode & 0o7777).toString(8)
      }): run \`chmod go-w ${dir}\``,
    );
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
    counters.destinations = destinations.map((d) => ({
      service: d.service,
      direction: d.direction,
      address: d.address,
      port: d.port,
      protocol: d.protocol,
      bytes: d.bytes,
      packets: d.packets,
    }));
  }
  return counters;
}

export function publish(path: string, counters: CountersV1, owner: UserIds | null): void {
  writeFileAtomic(path, serializeCounters(counters), {
    mode: 0o644,
    uid: owner?.uid ?? null,
    gid: owner?.gid ?? null,
  });
}

export interface OutputPaths {
  /** counters.json. */
  output: string;
  /** The saved totals (state.ts). */
  statePath: string;
  /** Who counters.json is given to; null keeps it the process's own. */
  owner: UserIds | null;
}

/**
 * counters.json and the state file as `run` holds them: their directories (made and
 * checked), a lock on each so one `run` publishes per output and per state file, and the
 * atomic publish. A removed directory takes its lock file along, and a new run could lock
 * a fresh one while this one still counts: `recover` makes the directories again and
 * takes the locks again wherever the file is gone.
 */
export class OutputFiles {
  readonly path: string;
  readonly #outDir: string;
  readonly #stateDir: string;
  /** Saved totals are root's alone; beside counters.json the directory stays readable. */
  readonly #stateDirMode: number;
  readonly #lockPaths: string[];
  readonly #owner: UserIds | null;
  #locks: Lock[] = [];

  constructor(paths: OutputPaths) {
    this.path = paths.output;
    this.#owner = paths.owner;
    this.#outDir = dirOf(paths.output);
    this.#stateDir = dirOf(paths.statePath);
    this.#stateDirMode = this.#stateDir === this.#outDir ? 0o755 : 0o700;
    this.#lockPaths = [
      outputLockPath(paths.output),
      `${paths.statePath}.lock`,
    ];
  }

  /** Where counters.json (and events.jsonl beside it) go. */
  get dir(): string {
    return this.#outDir;
  }

  /** Makes and checks both directories. */
  prepare(): void {
    prepareOutputDir(this.#outDir);
    prepareOutputDir(this.#stateDir, this.#stateDirMode);
  }

  /** Takes both locks; LockHeldError when another run holds one. */
  lock(): void {
    for (const p of this.#lockPaths) this.#locks.push(acquireLock(p));
  }

  publish(counters: CountersV1): void {
    publish(this.path, counters, this.#owner);
  }

  /** Another run took a recreated lock: two samplers must never both publish. */
  recover(): void {
    this.prepare();
    try {
      this.#lockPaths.forEach((p, i) => {
        const lock = this.#locks[i];
        if (lock?.intact()) return;
        lock?.release();
        this.#locks[i] = acquireLock(p);
      });
    } catch (e) {
      if (e instanceof LockHeldError) throw new BackendError(e.message, { cause: e });
      throw e;
    }
  }

  unlock(): void {
    for (const l of this.#locks.reverse()) l.release();
    this.#locks = [];
  }
}
