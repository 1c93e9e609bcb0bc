/**
 * How `run` waits between samples, and the signals that end a wait. It sleeps in one
 * epoll_wait (lib/sleeper.ts) on the cgroup watch's descriptor rather than in Deno's event
 * loop, which is cheaper per wake; Deno runs signal listeners only when its event loop
 * turns, so the loop is turned after a sleep a signal interrupted, and now and then anyway
 * for a signal that came while `run` was busy. docs/design.md has the measurements.
 */

import type { Sleeper, WakeReason } from "../lib/sleeper.ts";
import type { SamplerSleeper } from "./sampler.ts";

/** How `reset` tells a running sampler to look for its request file. */
export const RESET_SIGNAL: Deno.Signal = "SIGUSR1";
const STOP_SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * The longest a signal that lands mid-sample waits for its listener: well under the
 * unit's TimeoutStopSec (10 s); a reset request is also polled for.
 */
const EVENT_LOOP_TURN_MS = 5_000;

/** What the signals act on: the sampler, once there is one. */
export interface SignalTarget {
  stop(): void;
  requestReset(): void;
}

/**
 * SIGINT, SIGTERM and SIGHUP stop `run`; RESET_SIGNAL asks it to look for a reset request.
 * Heard from the start (a stop before the sampler exists still stops it) and passed on
 * once `attach` names the sampler.
 */
export class RunSignals {
  /** Signals whose listeners have run: a wait for a listener can tell when one has. */
  heard = 0;
  #target: SignalTarget | null = null;
  #stop = false;
  #reset = false;
  /** The first stop signal heard, if any: SIGINT is a person at a terminal (Ctrl-C). */
  stoppedBy: Deno.Signal | null = null;
  readonly #listeners = STOP_SIGNALS.map((s) => [s, () => this.#onStop(s)] as const);
  readonly #onStop = (signal: Deno.Signal) => {
    this.heard++;
    this.stoppedBy ??= signal;
    this.#stop = true;
    this.#target?.stop();
  };
  readonly #onReset = () => {
    this.heard++;
    this.#reset = true;
    this.#target?.requestReset();
  };

  constructor() {
    for (const [s, listener] of this.#listeners) Deno.addSignalListener(s, listener);
    Deno.addSignalListener(RESET_SIGNAL, this.#onReset);
  }

  attach(target: SignalTarget): void {
    this.#target = target;
    if (this.#stop) target.stop();
    if (this.#reset) target.requestReset();
  }

  close(): void {
    Deno.removeSignalListener(RESET_SIGNAL, this.#onReset);
    for (const [s, listener] of this.#listeners) Deno.removeSignalListener(s, listener);
  }
}

/** The real SamplerSleeper: epoll, plus the event-loop turns signals need. */
export class EpollSleep implements SamplerSleeper {
  #nextTurn = performance.now() + EVENT_LOOP_TURN_MS;

  /**
   * `servesBetweenSamples`: a sink answers requests between samples (the metrics
   * listener), so the event loop must run while `run` sleeps: the costlier async wait.
   */
  constructor(
    readonly sleeper: Sleeper,
    readonly signals: RunSignals,
    readonly servesBetweenSamples: boolean,
  ) {}

  wake(): void {
    this.sleeper.wake();
  }

  async sleep(ms: number): Promise<WakeReason> {
    if (this.servesBetweenSamples) return await this.sleeper.sleepAsync(ms);
    const woke = this.sleeper.sleep(ms);
    const interrupted = woke === "interrupted";
    if (interrupted || performance.now() >= this.#nextTurn) {
      this.#nextTurn = performance.now() + EVENT_LOOP_TURN_MS;
      // One turn runs any listener whose signal Deno has taken in. Just after an
      // interruption Deno's signal thread may still be passing it on: a few more turns.
      const heard = this.signals.heard;
      for (let i = 0; i < (interrupted ? 4 : 1) && this.signals.heard === heard; i++) {
        await new Promise((r) => setTimeout(r, i === 0 ? 0 : 5));
      }
    }
    return woke;
  }
}
