/**
 * A backend that counts nothing in the kernel: what it reports is what the test told it.
 * It stands in for ebpf, nft or iptables where the code under test is the one that drives
 * a backend (run/sampler.ts), so that code runs without root or a kernel. Not in the
 * registry (backends/mod.ts): `--backend` never offers it.
 */

import {
  type Backend,
  BackendError,
  type BackendOptions,
  type CounterSample,
  type DestinationCounters,
  type ServiceCounters,
  type ServiceTarget,
} from "./backend.ts";

export class StubBackend implements Backend {
  readonly name: string;
  /** Every call, in order: "start", "read", "retarget", "stop", ... */
  readonly calls: string[] = [];
  /** The targets of each start and retarget, in order. */
  readonly targetHistory: ServiceTarget[][] = [];
  #counters = new Map<string, ServiceCounters>();
  #destinations: DestinationCounters[] = [];
  #readFailure: Error | null = null;
  #destinationsFailure: Error | null = null;
  #started = false;

  constructor(name = "stub") {
    this.name = name;
  }

  /** Adds to a service's cumulative counters, as traffic would. */
  count(service: string, add: Partial<ServiceCounters>): void {
    const c = this.#counters.get(service) ?? zero();
    c.rxBytes += add.rxBytes ?? 0n;
    c.txBytes += add.txBytes ?? 0n;
    c.rxPackets += add.rxPackets ?? 0n;
    c.txPackets += add.txPackets ?? 0n;
    this.#counters.set(service, c);
  }

  /** What readDestinations reports from now on. */
  setDestinations(list: DestinationCounters[]): void {
    this.#destinations = list;
  }

  /** The next `read` throws this. */
  failNextRead(error: Error): void {
    this.#readFailure = error;
  }

  /** Every readDestinations throws this while set (null: they succeed again). */
  failDestinations(error: Error | null): void {
    this.#destinationsFailure = error;
  }

  get started(): boolean {
    return this.#started;
  }

  async start(targets: ServiceTarget[], _options: BackendOptions): Promise<void> {
    this.calls.push("start");
    this.targetHistory.push(targets);
    this.#started = true;
    await Promise.resolve();
  }

  async probe(_targets: ServiceTarget[], _options: BackendOptions): Promise<void> {
    this.calls.push("probe");
    await Promise.resolve();
  }

  async read(): Promise<CounterSample> {
    this.calls.push("read");
    if (!this.#started) throw new BackendError("The stub backend is not started");
    const failure = this.#readFailure;
    this.#readFailure = null;
    if (failure) throw failure;
    const sample: CounterSample = {};
    for (const t of this.targetHistory.at(-1) ?? []) {
      sample[t.name] = { ...(this.#counters.get(t.name) ?? zero()) };
    }
    return await Promise.resolve(sample);
  }

  /** The destinations the test set, as ebpf reports them (most bytes first). */
  async readDestinations(limit: number): Promise<DestinationCounters[]> {
    this.calls.push("readDestinations");
    if (this.#destinationsFailure) throw this.#destinationsFailure;
    return await Promise.resolve(this.#destinations.slice(0, limit));
  }

  async retarget(targets: ServiceTarget[]): Promise<void> {
    this.calls.push("retarget");
    if (!this.#started) throw new BackendError("The stub backend is not started");
    this.targetHistory.push(targets);
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.calls.push("stop");
    this.#started = false;
    await Promise.resolve();
  }
}

function zero(): ServiceCounters {
  return { rxBytes: 0n, txBytes: 0n, rxPackets: 0n, txPackets: 0n };
}
