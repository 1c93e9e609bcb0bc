/**
 * Where a sample goes besides counters.json: each sink gets every published sample and is
 * closed when `run` stops. A failing sink is logged and retried next interval; it never
 * stops counting, because counters.json is the contract and the rest are conveniences.
 */

import type { CountersV1 } from "../lib/contract.ts";
import type { Config } from "../lib/config.ts";
import { VERSION } from "../lib/version.ts";
import { listenSink, textfileSink } from "./metrics.ts";

export interface SampleContext {
  counters: CountersV1;
  /** Seconds spent reading the backend and building the sample this interval. */
  sampleDurationS: number;
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

export interface SinkOptions {
  config: Config;
  log: (message: string) => void;
}

/** The sinks this configuration asks for, in publish order. */
export function createSinks(options: SinkOptions): Promise<Sink[]> {
  const { config, log } = options;
  const sinks: Sink[] = [];
  try {
    if (config.prometheus.textfile !== null) {
      sinks.push(textfileSink(config.prometheus.textfile, VERSION, log));
    }
    if (config.prometheus.listen !== null) {
      sinks.push(listenSink(config.prometheus.listen, VERSION, log));
    }
  } catch (e) {
    // Those made before the failure are closed by nobody else.
    return Promise.all(sinks.map((s) => s.close())).then(() => Promise.reject(e));
  }
  return Promise.resolve(sinks);
}
