/**
 * The lines of events.jsonl that are not connections: whether this run's eBPF programs were
 * attached, or why they could not be. `run` writes them once per start, before any connect
 * event: one for the counting programs (when ebpf counts, or when `auto` tried it and fell
 * back) and one for the connect-event programs. A service cgroup that appears or is
 * recreated later is linked without a new line (the log says so): these lines answer "is
 * the file complete, and if not, why", and that is decided at start.
 *
 * `kind` tells them from connect events ("connect", "sendmsg"); a reader that knows only
 * those skips these lines as not valid events and says so on stderr, it never misreads them.
 */

import type { ConnectEvent } from "./collector.ts";

/** Which programs a lifecycle line is about. */
export type EbpfPrograms = "counting" | "events";
export const EBPF_PROGRAMS: readonly EbpfPrograms[] = ["counting", "events"];

/** The programs are linked at the service cgroups present now (`services`). */
export interface EbpfAttachedEvent {
  ts_unix: number;
  ts_monotonic: number;
  kind: "ebpf_attached";
  programs: EbpfPrograms;
  /** The services whose cgroups exist at start (others are linked when they appear). */
  services: string[];
}

/** The programs could not be used: `reason` says why, `backend` what counts instead. */
export interface EbpfUnavailableEvent {
  ts_unix: number;
  ts_monotonic: number;
  kind: "ebpf_unavailable";
  programs: EbpfPrograms;
  /** The backend that counts in this run. */
  backend: string;
  reason: string;
}

export type LifecycleEvent = EbpfAttachedEvent | EbpfUnavailableEvent;
/** One line of events.jsonl. */
export type EventLine = ConnectEvent | LifecycleEvent;

/** A reason is cut here (a verifier's log can be long; the run's log has all of it). */
export const MAX_REASON_CHARS = 2000;

export function isLifecycle(e: EventLine): e is LifecycleEvent {
  return e.kind === "ebpf_attached" || e.kind === "ebpf_unavailable";
}

/** When a line is written: Unix time in ms, CLOCK_MONOTONIC in µs, as connect events. */
export interface LineTime {
  unixS: number;
  monotonicS: number;
}

function stamp(t: LineTime): { ts_unix: number; ts_monotonic: number } {
  return {
    ts_unix: Math.round(t.unixS * 1e3) / 1e3,
    ts_monotonic: Math.round(t.monotonicS * 1e6) / 1e6,
  };
}

export function attachedEvent(
  t: LineTime,
  programs: EbpfPrograms,
  services: string[],
): EbpfAttachedEvent {
  return { ...stamp(t), kind: "ebpf_attached", programs, services };
}

export function unavailableEvent(
  t: LineTime,
  what: { programs: EbpfPrograms; backend: string; reason: string },
): EbpfUnavailableEvent {
  const reason = what.reason.length > MAX_REASON_CHARS
    ? `${what.reason.slice(0, MAX_REASON_CHARS - 1)}…`
    : what.reason;
  return {
    ...stamp(t),
    kind: "ebpf_unavailable",
    programs: what.programs,
    backend: what.backend,
    reason,
  };
}

/** What a run start did with eBPF, for `attachFailures`. */
export interface EbpfStart {
  /** Why `auto` could not count with ebpf (it tried); null when it did not try or ebpf counts. */
  ebpfSkipped: string | null;
  /** The backend that counts. */
  backend: string;
  eventsEnabled: boolean;
  /** Whether the connect-event programs were attached. */
  eventsStarted: boolean;
}

/**
 * eBPF program sets a run start tried and could not attach: auto's ebpf that fell back, and
 * event programs refused while ebpf counts. A backend chosen by name, or events turned off,
 * tried nothing, and events that need a backend that fell back are that one failure.
 */
export function attachFailures(s: EbpfStart): number {
  const events = s.eventsEnabled && s.backend === "ebpf" && !s.eventsStarted;
  return (s.ebpfSkipped === null ? 0 : 1) + (events ? 1 : 0);
}
