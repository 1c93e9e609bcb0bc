/**
 * The verdict table: every verdict `status` gives, from a real file in a real state (a
 * live writer, a stale file, garbage, nothing, a sampler holding the lock), judged as this
 * host and as a systemd host would, with a fix that can work there.
 */

import { assert, assertEquals, assertMatch } from "../lib/test_assert.ts";
import { outputLockPath } from "../lib/contract.ts";
import { counterFacts, judge, NO_SERVICE, type ServiceFacts, VERDICT_EXIT } from "./status.ts";

const NO_SYSTEMD: ServiceFacts = NO_SERVICE;
const NOT_INSTALLED: ServiceFacts = { ...NO_SYSTEMD, systemd: true, load_state: "not-found" };
const ACTIVE: ServiceFacts = {
  ...NO_SYSTEMD,
  systemd: true,
  unit_file: true,
  load_state: "loaded",
  active_state: "active",
  sub_state: "running",
};
const FAILED: ServiceFacts = {
  ...ACTIVE,
  active_state: "failed",
  sub_state: "failed",
  result: "exit-code",
};

function sample(t: number, o: { tsUnix?: number; present?: boolean } = {}): string {
  const svc = (present: boolean) => ({
    rx_bytes_total: 1,
    tx_bytes_total: 2,
    cgroup: "/x",
    present,
  });
  return JSON.stringify({
    schema: 1,
    backend: "ebpf",
    boot_id: "b",
    rx_bytes_total: Math.round(10 + t * 1000),
    tx_bytes_total: 20,
    ts_monotonic: t,
    ts_unix: o.tsUnix ?? Date.now() / 1000,
    interval_s: 0.5,
    services: { "host-agent": svc(o.present ?? true), server: svc(o.present ?? true) },
  });
}

async function publish(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

/** Publishes a new sample every 0.2 s until stopped, as a running sampler would. */
function liveWriter(path: string, o: { tsUnix?: () => number; present?: boolean } = {}) {
  let t = 100, stop = false;
  const done = (async () => {
    while (!stop) {
      t += 0.2;
      await publish(path, sample(t, { tsUnix: o.tsUnix?.(), present: o.present }));
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return async () => {
    stop = true;
    await done;
  };
}

/** A process holding the output's lock, as a running (stuck) sampler does. */
async function holdLock(path: string): Promise<() => Promise<void>> {
  const child = new Deno.Command("flock", {
    // --no-fork: the lock dies with the process killed below, not with a child of it.
    args: ["--no-fork", "-x", outputLockPath(path), "sleep", "60"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 100 && !Deno.readTextFileSync("/proc/locks").includes("FLOCK"); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 100));
  return async () => {
    child.kill("SIGKILL");
    await child.status;
  };
}

async function withDir(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-status-" });
  try {
    await fn(`${dir}/counters.json`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("healthy: a live file; with every service absent it says StB is not running", async () => {
  await withDir(async (path) => {
    let stop = liveWriter(path);
    await new Promise((r) => setTimeout(r, 300));
    let facts = await counterFacts(path);
    await stop();
    assertEquals(judge(NO_SYSTEMD, facts), { verdict: "healthy", fix: null, note: null });
    assert(facts.rates !== null && facts.rates.rx > 0, JSON.stringify(facts.rates));
    stop = liveWriter(path, { present: false });
    await new Promise((r) => setTimeout(r, 300));
    facts = await counterFacts(path);
    await stop();
    const j = judge(ACTIVE, facts);
    assertEquals(j.verdict, "healthy");
    assertMatch(
      j.note ?? "",
      /^no StB service is running \(host-agent, server absent\): start StB/,
    );
  });
});

Deno.test("a ts_unix in the future or none: healthy only when the file changes", async () => {
  await withDir(async (path) => {
    const stop = liveWriter(path, { tsUnix: () => Date.now() / 1000 + 3600 });
    await new Promise((r) => setTimeout(r, 300));
    const live = await counterFacts(path);
    await stop();
    const j = judge(NO_SYSTEMD, live);
    assertEquals([j.verdict, live.clock], ["healthy", "future"]);
    assertMatch(j.note ?? "", /ts_unix is 1\.0 h in the future.*it changed while status watched/);
    // The same file, no longer written: its date cannot vouch for it.
    const dead = await counterFacts(path);
    assertEquals([dead.changed, dead.freshness], [false, "stale"]);
    assert(dead.watched_s > 2, `watched only ${dead.watched_s} s`);
    const d = judge(NO_SYSTEMD, dead);
    assertEquals(d.verdict, "not running");
    assertMatch(d.fix ?? "", /in the future, and it did not change in the 2\.\d s status watched/);
    await publish(path, sample(5, { tsUnix: 0 }));
    const undated = await counterFacts(path);
    assertEquals([undated.clock, judge(NO_SYSTEMD, undated).verdict], ["undated", "not running"]);
  });
});

Deno.test("stale, not running, not installed: told apart by the lock and the service", async () => {
  await withDir(async (path) => {
    await publish(path, sample(5, { tsUnix: Date.now() / 1000 - 600 }));
    const old = await counterFacts(path);
    assertEquals([old.freshness, old.sampler_pid], ["stale", null]);
    // No sampler, no systemd: start one by hand; never `install` or `systemctl` here.
    let j = judge(NO_SYSTEMD, old);
    assertEquals(j.verdict, "not running");
    assertMatch(
      j.fix ?? "",
      /last written 10 min ago.*start it with `sudo stb-netacct run --output /,
    );
    assert(
      !/install|systemctl|journalctl/.test(
        j.fix!.replace("systemd is not the service manager here", ""),
      ),
      j.fix!,
    );
    // Installed and failed: the journal and a restart.
    j = judge(FAILED, old);
    assertEquals(j.verdict, "not running");
    assertMatch(
      j.fix ?? "",
      /the service failed \(exit-code\); `journalctl -u stb-netacct -n 20`.*systemctl restart/,
    );
    // A sampler holds the lock but writes nothing: stale, and it is the one to restart.
    const release = await holdLock(path);
    try {
      const held = await counterFacts(path);
      assert(held.sampler_pid !== null, "the lock holder was not seen");
      j = judge(NO_SYSTEMD, held);
      assertEquals(j.verdict, "stale");
      assertMatch(j.fix ?? "", new RegExp(`a sampler runs \\(pid ${held.sampler_pid}\\): stop it`));
      assertEquals(judge(ACTIVE, held).verdict, "stale");
      assertMatch(judge(ACTIVE, held).fix ?? "", /journalctl.*systemctl restart stb-netacct/);
    } finally {
      await release();
    }
    // Nothing at all: "not installed" where systemd could run it, "not running" elsewhere.
    await Deno.remove(path);
    const none = await counterFacts(path);
    j = judge(NOT_INSTALLED, none);
    assertEquals(j.verdict, "not installed");
    assertMatch(
      j.fix ?? "",
      /does not exist and no service is installed: run `sudo stb-netacct install`/,
    );
    j = judge(NO_SYSTEMD, none);
    assertEquals(j.verdict, "not running");
    assert(!j.fix!.includes("stb-netacct install`"), j.fix!);
    assertEquals(judge(FAILED, none).verdict, "not running");
  });
});

Deno.test("malformed is its own verdict, with a fix for where it came from", async () => {
  await withDir(async (path) => {
    await publish(path, "{ not json");
    const facts = await counterFacts(path);
    let j = judge(NO_SYSTEMD, facts);
    assertEquals(j.verdict, "malformed");
    assertMatch(j.fix ?? "", /not valid JSON.*not written by `stb-netacct run`.*sudo rm /);
    j = judge(ACTIVE, facts);
    assertMatch(j.fix ?? "", /a sampler runs but .* holds something else/);
    await publish(path, sample(1).replace('"interval_s":0.5', '"interval_s":1e300'));
    assertEquals(judge(NO_SYSTEMD, await counterFacts(path)).verdict, "malformed");
  });
});

Deno.test("every verdict has its own exit status, shared with graph --once", () => {
  assertEquals(VERDICT_EXIT, {
    "healthy": 0,
    "stale": 3,
    "not running": 4,
    "not installed": 5,
    "malformed": 6,
    "unreadable": 7,
  });
});
