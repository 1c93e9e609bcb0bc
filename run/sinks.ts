/**
 * Where a sample goes besides counters.json: each sink gets every published sample and is
 * closed when `run` stops. A failing sink is logged and retried next interval; it never
 * stops counting, because counters.json is the contract and the rest are conveniences.
 */

import type { CountersV1, HistoryStatusV1 } from "../lib/contract.ts";

/** How the run itself fares, beside the counts: what Prometheus alerts on. */
export interface RunHealth {
  /** Copies of the saved totals found unusable (empty, garbage) when this run started. */
  stateCopiesRejected: number;
  /** Reads of the top destinations that failed since this run started. */
  destinationsErrors: number;
}

export const HEALTHY: Readonly<RunHealth> = { stateCopiesRejected: 0, destinationsErrors: 0 };

export interface SampleContext {
  counters: CountersV1;
  /** Seconds spent reading the backend and building the sample this interval. */
  sampleDurationS: number;
  health?: RunHealth;
}

export interface Sink {
  readonly name: string;
  /**
   * True when the sink does work between samples (answers scrapes), which needs Deno's
   * event loop running while `run` sleeps; `run` then sleeps the costlier way.
   */
  readonly servesBetweenSamples?: boolean;
  /** Publishes one sample; should take well under an interval. */
  publish(sample: SampleContext): Promise<void> | void;
  /** Releases what the sink holds (sockets, files it owns). Safe twice. */
  close(): Promise<void> | void;
}

/**
 * History (history/): sees every sample's totals and writes them to disk in batches, at
 * most one a minute. Optional like a Sink, and stricter: it contains its own failures.
 */
export interface HistorySink {
  /** Takes one published sample (before it is published, so its status goes along). */
  record(counters: CountersV1): void;
  /** The totals were just zeroed on request; clears history too when that was asked. */
  totalsReset(): void;
  /** What counters.json and Prometheus say about history. */
  status(): HistoryStatusV1;
  /** Writes what is pending (the one transaction at stop) and lets the database go. */
  close(): void;
}
