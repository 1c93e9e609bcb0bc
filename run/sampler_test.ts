/**
 * The sampling loop without root or a kernel: the in-memory backend (backends/stub.ts), a
 * fake clock whose sleeps jump to the next scripted event, and in-memory state, output
 * and sink. Each test names the behaviour it pins.
 */

import { assert, assertEquals, assertRejects } from "../lib/test_assert.ts";
import { BackendError, type ServiceTarget } from "../backends/mod.ts";
import { StubBackend } from "../backends/stub.ts";
import type { CountersV1 } from "../lib/contract.ts";
import type { WakeReason } from "../lib/sleeper.ts";
import { RESET_POLL_MS, Sampler, TARGETS_POLL_MS } from "./sampler.ts";
import { STATE_SAVE_MS } from "./state.ts";
import type { HistorySink, RunHealth, Sink } from "./sinks.ts";
import type { NamesRuntime, NamesStatus } from "../names/run.ts";

const SERVER = "/user.slice/app.slice/server.service";
const SHELL = "/user.slice/app.slice/shell.service";

/** Monotonic milliseconds that move only when the sampler sleeps; scripted events on it. */
class FakeTime {
  ms = 0;
  readonly #events: { at: number; action: () => void }[] = [];
  #woken = false;
  /** A sleep longer than this much simulated time is a loop that never stops. */
  limitMs = 3_600_000;

  /** Runs `action` at `at` ms; a sleep ends there ("ready") when the action wakes it. */
  at(at: number, action: () => void): void {
    this.#events.push({ at, action });
    this.#events.sort((a, b) => a.at - b.at);
  }

  clock = {
    now: () => this.ms,
    monotonicSeconds: () => 5000 + this.ms / 1000,
    unixSeconds: () => 1_795_000_000 + this.ms / 1000,
  };

  sleeper = {
    wake: () => {
      this.#woken = true;
    },
    sleep: (ms: number): Promise<WakeReason> => {
      if (this.#woken) {
        this.#woken = false;
        return Promise.resolve("ready");
      }
      const until = this.ms + ms;
      for (let next = this.#events[0]; next && next.at <= until; next = this.#events[0]) {
        this.#events.shift();
        this.ms = Math.max(this.ms, next.at);
        next.action();
        if (this.#woken) {
          this.#woken = false;
          return Promise.resolve("ready");
        }
      }
      this.ms = Math.max(this.ms, until); // an action may have moved time on (a suspend)
      if (this.ms > this.limitMs) throw new Error(`still sleeping at ${this.ms} ms`);
      return Promise.resolve("timeout");
    },
  };
}

interface Published {
  at: number;
  counters: CountersV1;
}

/** Everything a test drives and inspects, around one Sampler. */
function setup(
  options: {
    intervalS?: number;
    watchFails?: boolean;
    history?: HistorySink;
    names?: NamesRuntime;
  } = {},
) {
  const time = new FakeTime();
  const backend = new StubBackend();
  let targets: ServiceTarget[] = [
    { name: "server", path: SERVER, id: 41n },
    { name: "shell", path: SHELL, id: null },
  ];
  const watch = {
    changed: false,
    fd: options.watchFails ? null : 7,
    takeChanged() {
      const c = this.changed || this.fd === null;
      this.changed = false;
      return c;
    },
  };
  const published: Published[] = [];
  /** "save" and "publish", in the order they happened. */
  const order: string[] = [];
  const output = {
    path: "/run/test/counters.json",
    vanished: false,
    recovered: 0,
    publish(counters: CountersV1) {
      if (this.vanished) throw new Deno.errors.NotFound("No such file or directory");
      published.push({ at: time.ms, counters });
      order.push("publish");
    },
    recover() {
      this.recovered++;
      this.vanished = false;
    },
  };
  const sum = (services: Record<string, { rxBytes: bigint }>) =>
    Object.values(services).reduce((n, s) => n + s.rxBytes, 0n);
  const state = {
    saves: [] as { at: number; rx: bigint }[],
    kept: [] as { at: number; rx: bigint }[],
    request: false,
    /** Thrown by the next saves of the disk copy, while set. */
    saveFailure: null as Error | null,
    discarded: 0,
    keep(services: Record<string, { rxBytes: bigint }>) {
      this.kept.push({ at: time.ms, rx: sum(services) });
      order.push("keep");
    },
    save(services: Record<string, { rxBytes: bigint }>) {
      if (this.saveFailure) throw this.saveFailure;
      this.saves.push({ at: time.ms, rx: sum(services) });
      order.push("save");
    },
    discardRuntime() {
      this.discarded++;
    },
    resetRequested() {
      return this.request;
    },
    clearResetRequest() {
      this.request = false;
    },
  };
  const sunk: number[] = [];
  /** The health each sample carried to the sinks. */
  const healths: RunHealth[] = [];
  const sink: Sink = {
    name: "test sink",
    publish: ({ health }) => {
      sunk.push(time.ms);
      if (health) healths.push({ ...health });
    },
    close() {},
  };
  const notes: string[] = [];
  const logs: string[] = [];
  const retargetedAt: number[] = [];
  const sampler = new Sampler({
    backend,
    lookupTargets: () => targets.map((t) => ({ ...t })),
    watch,
    clock: time.clock,
    sleeper: time.sleeper,
    state,
    output,
    sinks: [sink],
    events: null,
    names: options.names ?? null,
    history: options.history ?? null,
    notify: (s) => void notes.push(s.split("\n")[0] ?? ""),
    log: (m) => void logs.push(m),
  }, {
    targets: targets.map((t) => ({ ...t })),
    intervalS: options.intervalS ?? 0.5,
    fallbackReason: null,
    startedAt: 1_795_000_000,
    bootId: "boot",
  });
  const retarget = backend.retarget.bind(backend);
  backend.retarget = (t) => {
    retargetedAt.push(time.ms);
    return retarget(t);
  };
  /** The cgroups change; a working watch sees it and wakes the sleeper, as inotify does. */
  const cgroupsChange = (t: ServiceTarget[], seen = true) => {
    targets = t;
    if (seen && watch.fd !== null) {
      watch.changed = true;
      time.sleeper.wake();
    }
  };
  return {
    initialTargets: targets.map((t) => ({ ...t })),
    time,
    backend,
    watch,
    output,
    state,
    sampler,
    published,
    order,
    sunk,
    healths,
    notes,
    logs,
    retargetedAt,
    cgroupsChange,
  };
}

/** Starts the stub the way run/mod.ts starts a real backend, before the loop. */
async function started(t: ReturnType<typeof setup>) {
  await t.backend.start(t.initialTargets, {} as never);
  return t;
}

const rx = (p: Published | undefined) => p?.counters.rx_bytes_total;
const times = (ps: Published[]) => ps.map((p) => p.at);

Deno.test("sampler: publishes every interval, READY after the first sample, stops on a signal", async () => {
  const t = await started(setup());
  t.time.at(1200, () => t.sampler.stop());
  t.backend.count("server", { rxBytes: 100n });
  await t.sampler.run();
  // 0, 500 and 1000 ms, then the final sample at once, not at the next interval (1500).
  assertEquals(times(t.published), [0, 500, 1000, 1200]);
  assertEquals(t.sunk, [0, 500, 1000, 1200]);
  assertEquals(t.notes, ["READY=1", "STOPPING=1"]);
  assertEquals(t.logs.at(-1), "stopped; final totals written");
  const last = t.published.at(-1)!.counters;
  assertEquals([last.rx_bytes_total, last.services.server?.rx_bytes_total], [100n, 100n]);
  assertEquals([last.services.server?.present, last.services.shell?.present], [true, false]);
  assertEquals([last.ts_unix, last.ts_monotonic, last.interval_s], [1795000001.2, 5001.2, 0.5]);
});

Deno.test("sampler: a stop before the loop runs gives one final sample", async () => {
  const t = await started(setup());
  t.sampler.stop();
  await t.sampler.run();
  assertEquals(times(t.published), [0]);
  assertEquals(t.notes, ["STOPPING=1"]);
});

Deno.test("sampler: after an oversleep it samples on from the wake, without a burst to catch up", async () => {
  const t = await started(setup());
  t.time.at(700, () => t.time.ms += 10_000); // a suspend: the sleep ends at 10700, not 1000
  t.time.at(11_500, () => t.sampler.stop());
  await t.sampler.run();
  const late = times(t.published).filter((at) => at > 500 && at < 11_500);
  // At the wake, then one interval on from it: not the twenty samples missed since 1000.
  assertEquals(late.filter((at) => at !== 10_700), [11_200], `samples after the wake: ${late}`);
  assert(late.length <= 3, `samples after the wake: ${late}`);
});

Deno.test("sampler: retargets the moment the watch reports a recreated cgroup, totals kept", async () => {
  const t = await started(setup());
  t.backend.count("server", { rxBytes: 1000n });
  t.time.at(700, () =>
    t.cgroupsChange([{ name: "server", path: SERVER, id: 42n }, {
      name: "shell",
      path: SHELL,
      id: 9n,
    }]));
  t.time.at(800, () => t.backend.count("server", { rxBytes: 10n }));
  t.time.at(1600, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.retargetedAt, [700], "at the change, not at the next sample (1000)");
  assertEquals(t.backend.targetHistory.at(-1)?.map((x) => x.id), [42n, 9n]);
  assertEquals(t.logs.filter((l) => l.startsWith("service ")), [
    "service server: cgroup was recreated (id 42)",
    "service shell: cgroup appeared (id 9)",
  ]);
  assertEquals(rx(t.published.at(-1)), 1010n, "counting goes on across the retarget");
  assertEquals(t.published.at(-1)?.counters.services.shell?.present, true);
});

Deno.test("sampler: a change the watch missed is found by the slow poll", async () => {
  const t = await started(setup());
  const recreated = [{ name: "server", path: SERVER, id: 42n }, {
    name: "shell",
    path: SHELL,
    id: null,
  }];
  t.time.at(700, () => t.cgroupsChange(recreated, false));
  t.time.at(TARGETS_POLL_MS + 600, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.retargetedAt, [TARGETS_POLL_MS]);
});

Deno.test("sampler: without a working watch the cgroups are looked up every sample", async () => {
  const t = await started(setup({ watchFails: true }));
  const recreated = [{ name: "server", path: SERVER, id: 42n }, {
    name: "shell",
    path: SHELL,
    id: null,
  }];
  t.time.at(700, () => t.cgroupsChange(recreated));
  t.time.at(1600, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.retargetedAt, [1000], "with the next sample: nothing woke the sampler");
});

Deno.test("sampler: a backend read error ends the run with that error", async () => {
  const t = await started(setup());
  const failure = new BackendError("Reading the counters map failed with EPERM");
  t.time.at(1200, () => t.backend.failNextRead(failure));
  const e = await assertRejects(() => t.sampler.run(), BackendError, "EPERM");
  assert(e === failure, "the backend's own error, cause and all");
  assertEquals(times(t.published), [0, 500, 1000], "nothing published after the failed read");
  assertEquals(t.output.recovered, 0, "a backend failure is not a publishing problem");
});

Deno.test("sampler: a vanished output directory is recreated and the sample published at once", async () => {
  const t = await started(setup());
  t.backend.count("server", { rxBytes: 5n });
  t.time.at(1200, () => t.output.vanished = true);
  t.time.at(2200, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.output.recovered, 1);
  assert(
    t.logs.some((l) => /^cannot publish \/run\/test\/counters.json: .*recreating/.test(l)),
    t.logs.join("\n"),
  );
  assertEquals(times(t.published), [0, 500, 1000, 1500, 2000, 2200], "1500 is not skipped");
  // The state file may have gone with the directory: saved again before the republish.
  assertEquals(t.state.saves.map((s) => s.at), [0, 1500]);
});

Deno.test("sampler: state is saved at the first sample, at most once a minute while totals move, and at stop", async () => {
  const t = await started(setup());
  const read = t.backend.read.bind(t.backend);
  t.backend.read = () => {
    t.backend.count("server", { rxBytes: 1n });
    return read();
  };
  t.time.at(2.5 * STATE_SAVE_MS, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.state.saves.map((s) => s.at), [
    0,
    STATE_SAVE_MS,
    2 * STATE_SAVE_MS,
    2.5 * STATE_SAVE_MS,
  ]);
  assertEquals(t.state.saves.at(-1)?.rx, rx(t.published.at(-1)), "the final totals");
  assert(t.published.length > 250, "counters.json every interval meanwhile");
});

Deno.test("sampler: idle totals are not saved again, not even at stop", async () => {
  const t = await started(setup());
  t.backend.count("server", { rxBytes: 7n });
  t.time.at(2.5 * STATE_SAVE_MS, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.state.saves.map((s) => s.at), [0]);
});

Deno.test("sampler: a signalled reset request zeroes the totals with the next sample, saved first", async () => {
  const t = await started(setup());
  t.backend.count("server", { rxBytes: 300n });
  t.time.at(1200, () => {
    t.state.request = true;
    t.sampler.requestReset();
  });
  t.time.at(1300, () => t.backend.count("server", { rxBytes: 20n }));
  t.time.at(2200, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.published.map(rx), [300n, 300n, 300n, 0n, 0n, 0n]);
  assertEquals(t.state.request, false, "the request is consumed");
  assertEquals(t.state.saves.map((s) => [s.at, s.rx]), [[0, 300n], [1500, 0n]]);
  // Saved before the zeroed sample is published: a crash in between must not undo the reset.
  assertEquals(t.order.filter((o) => o !== "keep").slice(0, 6), [
    "save",
    "publish",
    "publish",
    "publish",
    "save",
    "publish",
  ]);
  assert(t.logs.includes("totals reset on request"), t.logs.join("\n"));
});

Deno.test("sampler: an unsignalled reset request is still found within the reset poll", async () => {
  const t = await started(setup());
  t.backend.count("server", { rxBytes: 300n });
  t.time.at(1200, () => t.state.request = true);
  t.time.at(RESET_POLL_MS + 700, () => t.sampler.stop());
  await t.sampler.run();
  const firstZero = t.published.find((p) => rx(p) === 0n)?.at;
  assertEquals(firstZero, RESET_POLL_MS, "at the poll, not with the sample at 1500");
});

Deno.test("sampler: destinations are read while the totals move, once after, and after a retarget", async () => {
  const t = await started(setup());
  t.backend.setDestinations([{
    service: "server",
    direction: "tx",
    address: "198.51.100.2",
    port: 443,
    protocol: "tcp",
    bytes: 10n,
    packets: 1n,
  }]);
  t.backend.count("server", { txBytes: 10n });
  t.time.at(1200, () => t.backend.count("server", { txBytes: 10n }));
  t.time.at(3200, () =>
    t.cgroupsChange([{ name: "server", path: SERVER, id: 42n }, {
      name: "shell",
      path: SHELL,
      id: null,
    }]));
  t.time.at(4200, () => t.sampler.stop());
  await t.sampler.run();
  const readsAt: number[] = [];
  let sample = -1;
  for (const c of t.backend.calls) {
    if (c === "read") sample++;
    if (c === "readDestinations") readsAt.push(times(t.published)[sample] ?? -1);
  }
  // 0 and 500: the first and once after; 1500: the totals moved, 2000: once after;
  // 3500: the retarget made them stale.
  assertEquals(readsAt, [0, 500, 1500, 2000, 3500]);
  assertEquals(t.published.at(-1)?.counters.destinations?.[0]?.port, 443);
});

Deno.test("sampler: a failing destinations read keeps the last list, is counted and logged once", async () => {
  const t = await started(setup());
  const dest = {
    service: "server",
    direction: "tx" as const,
    address: "198.51.100.7",
    port: 8443,
    protocol: "tcp" as const,
    bytes: 10n,
    packets: 1n,
  };
  t.backend.setDestinations([dest]);
  // Totals move every sample, so destinations are read every sample.
  const read = t.backend.read.bind(t.backend);
  t.backend.read = () => {
    t.backend.count("server", { txBytes: 1n });
    return read();
  };
  const enospc = new Error("bpf_map_lookup_batch: No space left on device (os error 28)");
  t.time.at(1200, () => t.backend.failDestinations(enospc));
  t.time.at(2200, () => t.backend.failDestinations(new BackendError("map fd closed")));
  t.time.at(3200, () => t.backend.failDestinations(null));
  t.time.at(4200, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(times(t.published), [0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4200]);
  for (const p of t.published) {
    assertEquals(p.counters.destinations?.[0]?.port, 8443, "the last list stands");
  }
  // Failed at 1500, 2000 (ENOSPC), 2500, 3000 (the other error).
  assertEquals(t.healths.map((h) => h.destinationsErrors), [0, 0, 0, 1, 2, 3, 4, 4, 4, 4]);
  const failures = t.logs.filter((l) => l.startsWith("cannot read the top destinations"));
  assertEquals(failures.length, 2, "each distinct failure once: " + t.logs.join("\n"));
  assert(failures[0]?.includes("No space left on device"), failures[0]);
  assert(t.logs.includes("destinations: reading again"), t.logs.join("\n"));
});

Deno.test("sampler: the runtime copy is written whenever the totals moved, before counters.json", async () => {
  const t = await started(setup());
  t.backend.count("server", { rxBytes: 5n });
  t.time.at(1200, () => t.backend.count("server", { rxBytes: 7n }));
  t.time.at(3200, () => t.sampler.stop());
  await t.sampler.run();
  // 0: the first sample; 1500: the totals moved. Idle samples write nothing.
  assertEquals(t.state.kept.map((k) => [k.at, k.rx]), [[0, 5n], [1500, 12n]]);
  // 0: kept, saved, published; 1500: kept before it is published; 3200: the final save.
  assertEquals(
    t.order.join(" "),
    "keep save publish publish publish keep publish publish publish publish save publish",
  );
  assertEquals(
    t.state.discarded,
    1,
    "a clean stop with the disk copy saved drops the runtime copy",
  );
});

Deno.test("sampler: a failed save of the disk copy never stops counting; logged once, retried", async () => {
  const t = await started(setup());
  t.state.saveFailure = new Error("No space left on device (os error 28): fsync 'state.json'");
  const read = t.backend.read.bind(t.backend);
  t.backend.read = () => {
    t.backend.count("server", { rxBytes: 1n });
    return read();
  };
  t.time.at(25_000, () => t.state.saveFailure = null);
  t.time.at(40_000, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(times(t.published).length, 81, "counters.json every interval throughout");
  assertEquals(
    t.logs.filter((l) => l.startsWith("cannot save the totals")).length,
    1,
    t.logs.join("\n"),
  );
  assert(t.logs.includes("saving the totals again"), t.logs.join("\n"));
  // Retried every STATE_RETRY_MS: saved at 30000 (the first retry after the disk recovered),
  // and at the stop. Each retry holds the directories anew.
  assertEquals(t.state.saves.map((s) => s.at), [30_000, 40_000]);
  assertEquals(t.output.recovered, 3, "before the retries at 10000, 20000 and 30000");
  assertEquals(t.state.kept.length, 81, "the runtime copy kept the totals meanwhile");
});

Deno.test("sampler: when the final save fails the runtime copy stays", async () => {
  const t = await started(setup());
  t.backend.count("server", { rxBytes: 5n });
  t.time.at(700, () => {
    t.backend.count("server", { rxBytes: 1n });
    t.state.saveFailure = new Error("Input/output error (os error 5)");
  });
  t.time.at(1200, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(t.state.discarded, 0);
  assertEquals(t.state.kept.at(-1)?.rx, 6n, "the runtime copy has the final totals");
});

/** A history that notes what the sampler tells it, and can be made to throw. */
function fakeHistory(order: string[] = []) {
  const h = {
    recorded: [] as bigint[],
    resets: 0,
    broken: false,
    order,
    record(c: CountersV1) {
      if (h.broken) throw new Error("disk on fire");
      h.recorded.push(c.rx_bytes_total);
      h.order.push("history");
    },
    totalsReset() {
      h.resets++;
      h.order.push("history reset");
    },
    status: () => ({
      state: "recording" as const,
      databases_replaced_total: 2,
      write_failures_total: 0,
    }),
    close() {},
  };
  return h;
}

Deno.test("sampler: history gets every sample before it is published, its status goes along", async () => {
  const history = fakeHistory();
  const t = await started(setup({ history }));
  history.order = t.order;
  t.backend.count("server", { rxBytes: 100n });
  t.time.at(1200, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(history.recorded, [100n, 100n, 100n, 100n], "every sample, the final one too");
  assertEquals(
    t.order.filter((o) => o === "history" || o === "publish").slice(0, 2),
    ["history", "publish"],
  );
  assertEquals(t.published.at(-1)?.counters.history?.databases_replaced_total, 2);
});

Deno.test("sampler: a history that throws never stops a sample; it is logged once", async () => {
  const history = fakeHistory();
  history.broken = true;
  const t = await started(setup({ history }));
  t.time.at(1200, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(times(t.published), [0, 500, 1000, 1200]);
  assertEquals(t.logs.filter((l) => l === "history: disk on fire").length, 1);
});

Deno.test("sampler: a reset tells history before the request is cleared", async () => {
  const history = fakeHistory();
  const t = await started(setup({ history }));
  const cleared: number[] = [];
  const clear = t.state.clearResetRequest.bind(t.state);
  t.state.clearResetRequest = () => {
    cleared.push(history.resets);
    clear();
  };
  t.time.at(600, () => {
    t.state.request = true;
    t.sampler.requestReset();
  });
  t.time.at(1200, () => t.sampler.stop());
  await t.sampler.run();
  assertEquals(cleared, [1], "history was told first");
});

Deno.test("sampler: names are taken in before each sample; destinations get theirs", async () => {
  const calls: string[] = [];
  const status = { entries: 1, max_entries: 4096 } as NamesStatus;
  const names: NamesRuntime = {
    refresh: () => void calls.push("refresh"),
    nameOf: (a) => a === "198.51.100.2" ? "api.example.com" : undefined,
    retarget: () => void calls.push("retarget"),
    status: () => status,
    stop() {},
  };
  const t = await started(setup({ names }));
  const d = { service: "server", direction: "tx" as const, port: 443, protocol: "tcp" };
  t.backend.setDestinations([
    { ...d, address: "198.51.100.2", bytes: 10n, packets: 1n },
    { ...d, address: "198.51.100.3", bytes: 5n, packets: 1n },
  ]);
  t.backend.count("server", { txBytes: 15n });
  t.time.at(1200, () => t.sampler.stop());
  await t.sampler.run();
  const last = t.published.at(-1)!.counters;
  assertEquals(last.destinations?.map((x) => x.name), ["api.example.com", undefined]);
  assertEquals(last.names, status);
  assertEquals(calls.filter((c) => c === "refresh").length, t.published.length, "one a sample");
});
