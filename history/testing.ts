/**
 * A fake sampler for history's tests and benchmark: counters.json samples whose wall
 * clock and monotonic clock the caller moves (a step, a suspend, a DST night), fed to a
 * real HistoryRecorder writing a real database.
 */

import type { CountersV1 } from "../lib/contract.ts";
import { HistoryRecorder, type RecorderOptions, type WriterLike } from "./recorder.ts";
import type { Batch, HistoryWriter } from "./writer.ts";
import { defaultRetention } from "./retention.ts";

export type Totals = Record<string, { rx: bigint; tx: bigint; rxp?: bigint; txp?: bigint }>;

/** One sample as `run` publishes it. */
export function sample(unix: number, mono: number, totals: Totals): CountersV1 {
  const services: CountersV1["services"] = {};
  let rx = 0n, tx = 0n, rxp = 0n, txp = 0n;
  for (const [name, t] of Object.entries(totals)) {
    services[name] = {
      rx_bytes_total: t.rx,
      tx_bytes_total: t.tx,
      rx_packets_total: t.rxp ?? t.rx / 1000n,
      tx_packets_total: t.txp ?? t.tx / 1000n,
      cgroup: `/test/${name}`,
      present: true,
    };
    rx += t.rx;
    tx += t.tx;
    rxp += t.rxp ?? t.rx / 1000n;
    txp += t.txp ?? t.tx / 1000n;
  }
  return {
    schema: 1,
    backend: "stub",
    boot_id: "test",
    started_at: unix,
    rx_bytes_total: rx,
    tx_bytes_total: tx,
    rx_packets_total: rxp,
    tx_packets_total: txp,
    ts_monotonic: mono,
    ts_unix: unix,
    interval_s: 0.5,
    services,
  };
}

/**
 * A sampler's clocks and totals: `step` moves both clocks by `s` seconds and adds traffic;
 * `jump` moves only the wall clock (an NTP step), `suspend` only it as well (monotonic
 * time stops in suspend) but without traffic.
 */
export class FakeSampler {
  mono = 10_000;
  /** Every service is there from the first sample on, as in `run`. */
  readonly totals: Totals = {
    "host-agent": { rx: 0n, tx: 0n },
    server: { rx: 0n, tx: 0n },
    shell: { rx: 0n, tx: 0n },
  };
  readonly logs: string[] = [];
  zoneName: string;
  recorder: HistoryRecorder;

  constructor(
    public unix: number,
    readonly path: string,
    options: Partial<Omit<RecorderOptions, "zone">> & { zone?: string } = {},
  ) {
    const { zone, ...recorder } = options;
    this.zoneName = zone ?? "Europe/Berlin";
    this.recorder = this.start(recorder);
  }

  /** A new recorder on the same database (a restart); the old one must be closed or dropped. */
  start(options: Partial<RecorderOptions> = {}): HistoryRecorder {
    this.recorder = new HistoryRecorder({
      path: this.path,
      retention: defaultRetention(),
      ownerGid: null,
      zone: () => this.zoneName,
      clearRequest: `${this.path}.clear-request`,
      log: (m) => void this.logs.push(m),
      ...options,
    });
    return this.recorder;
  }

  /** Adds bytes to a service's totals (and a packet per 1000 bytes). */
  add(service: string, rx: bigint, tx = 0n): void {
    const t = this.totals[service] ??= { rx: 0n, tx: 0n };
    t.rx += rx;
    t.tx += tx;
  }

  /** Records one sample now. */
  record(): void {
    this.recorder.record(sample(this.unix, this.mono, structuredClone(this.totals)));
  }

  /** `count` samples `every` seconds apart, `rx`/`tx` bytes of `service` before each. */
  run(count: number, every: number, traffic: { service: string; rx: bigint; tx?: bigint }[]) {
    for (let i = 0; i < count; i++) {
      this.unix += every;
      this.mono += every;
      for (const t of traffic) this.add(t.service, t.rx, t.tx ?? 0n);
      this.record();
    }
  }

  /** Sum of every service's totals. */
  sum(): { rx: bigint; tx: bigint } {
    let rx = 0n, tx = 0n;
    for (const t of Object.values(this.totals)) {
      rx += t.rx;
      tx += t.tx;
    }
    return { rx, tx };
  }
}

/** A writer that hands each batch to `write` (which may throw, or call the real one). */
export function wrapWriter(
  real: HistoryWriter,
  write: (batch: Batch, real: HistoryWriter) => void,
): WriterLike {
  return {
    path: real.path,
    get isOpen() {
      return real.isOpen;
    },
    open: (now) => real.open(now),
    stillAtPath: () => real.stillAtPath(),
    checkpoint: () => real.checkpoint(),
    write: (batch) => write(batch, real),
    clear: () => real.clear(),
    close: () => real.close(),
  };
}
