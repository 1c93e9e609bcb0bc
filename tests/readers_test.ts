/**
 * The unprivileged readers (graph, status, events) on real files in every state, through
 * the real CLI: `graph --once` and `status` give the same exit status for the same file,
 * status's verdict table on this host (no systemd here: no fix may need it), and file
 * content that tries to reach the terminal (escape sequences in a service name or a
 * process's comm) or to break a reader (ts_unix 1e300) is shown harmlessly, never obeyed.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../lib/test_assert.ts";
import { outputLockPath } from "../lib/contract.ts";
import { hasControl } from "../lib/text.ts";
import { cliArgv, run, type RunResult, sleep } from "./harness/mod.ts";
import { Tty } from "./harness/tty.ts";

const NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
/** An escape sequence that retitles the window, one that clears it, a C1 CSI, a bidi flip. */
const EVIL = "\x1b]0;pwned\x07\x1b[2J\u009b31m\u202e";

function sample(t: number, o: { tsUnix?: number; present?: boolean; name?: string } = {}) {
  const svc = { rx_bytes_total: Math.round(t * 1000), tx_bytes_total: 5, cgroup: "/x" };
  return JSON.stringify({
    schema: 1,
    backend: "ebpf",
    boot_id: "b",
    rx_bytes_total: Math.round(t * 1000) + 10,
    tx_bytes_total: 20,
    ts_monotonic: t,
    ts_unix: o.tsUnix ?? Date.now() / 1000,
    interval_s: 0.5,
    services: { [o.name ?? "server"]: { ...svc, present: o.present ?? true } },
  }) + "\n";
}

async function publish(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

/** A sampler stand-in writing every 0.2 s until stopped. */
function writer(path: string, o: { tsUnix?: () => number; present?: boolean } = {}) {
  let stop = false, t = 100;
  const done = (async () => {
    while (!stop) {
      t += 0.2;
      await publish(path, sample(t, { tsUnix: o.tsUnix?.(), present: o.present }));
      await sleep(200);
    }
  })();
  return async () => {
    stop = true;
    await done;
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-readers-" });
  await Deno.chmod(dir, 0o755);
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const graphOnce = (path: string, asNobody = false) =>
  run([...(asNobody ? NOBODY : []), ...cliArgv(["graph", "--once", "-n", "--input", path])], {
    allowFail: true,
  });
const status = (path: string, asNobody = false, extra: string[] = []) =>
  run([...(asNobody ? NOBODY : []), ...cliArgv(["status", "--input", path, ...extra])], {
    allowFail: true,
    env: { NO_COLOR: "1" },
  });

function verdictLine(r: RunResult): string {
  return r.stdout.split("\n").find((l) => l.startsWith("verdict")) ?? `(none) ${r.stderr}`;
}

Deno.test("graph --once and status give the same exit status for each file state", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/counters.json`;
    type Stop = () => Promise<void>;
    const none: Stop = () => Promise.resolve();
    /** A file written once and left; a live writer; nothing. */
    const once = (text: string) => async (): Promise<Stop> => (await publish(path, text), none);
    const live = (tsUnix?: () => number) => (): Promise<Stop> =>
      Promise.resolve(writer(path, { tsUnix }));
    /** The states, from the file alone (no sampler holds its lock in any of them). */
    const states: [string, () => Promise<Stop>, number, number, RegExp][] = [
      ["fresh", live(), 0, 0, /^verdict {3}healthy$/],
      [
        "stale",
        once(sample(1, { tsUnix: Date.now() / 1000 - 90 })),
        4,
        4,
        /^verdict {3}not running: .* is not being updated \(last written \d+ s ago\)/,
      ],
      ["missing", () => Promise.resolve(none), 4, 4, /^verdict {3}not running: .* does not exist/],
      ["malformed", once("{ nope"), 6, 6, /^verdict {3}malformed: it is not valid JSON/],
      [
        "future, changing",
        live(() => Date.now() / 1000 + 7200),
        0,
        0,
        /^verdict {3}healthy: its ts_unix is 2\.0 h in the future.*it is live$/,
      ],
      [
        "future, not changing",
        once(sample(1, { tsUnix: 1e300 })),
        4,
        4,
        /^verdict {3}not running: .*ts_unix is over 100 years in the future, and it did not change/,
      ],
    ];
    for (const [name, make, graphCode, statusCode, verdict] of states) {
      assertEquals(graphCode, statusCode, `${name}: the table itself disagrees`);
      await Deno.remove(path).catch(() => {});
      const stop = await make();
      try {
        await sleep(300);
        const g = await graphOnce(path);
        assertEquals(g.code, graphCode, `${name}: graph --once exit ${g.code}: ${g.stderr}`);
        assertStringIncludes(g.stdout, "status: ", `${name}: no frame on stdout`);
        if (graphCode === 0) assertEquals(g.stderr, "", `${name}: stderr on success`);
        else assertMatch(g.stderr, /^stb-netacct graph: \S/, `${name}: no reason on stderr`);
        const s = await status(path);
        assertEquals(s.code, statusCode, `${name}: status exit ${s.code}: ${s.stdout}`);
        assertMatch(verdictLine(s), verdict, name);
        // No systemd here: no fix may send the user to it.
        assert(!/systemctl|journalctl|stb-netacct install`/.test(s.stdout), `${name}: ${s.stdout}`);
      } finally {
        await stop();
      }
    }
  });
});

Deno.test("status: unreadable, stale with a sampler holding the lock, no StB service, --input", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/counters.json`;
    await publish(path, sample(1));
    await Deno.chmod(path, 0o600);
    const g = await graphOnce(path, true);
    const s = await status(path, true);
    assertEquals([g.code, s.code], [7, 7], `${g.stderr}\n${s.stdout}`);
    assertMatch(verdictLine(s), /^verdict {3}unreadable: permission denied .*ls -ld /);
    await Deno.chmod(path, 0o644);

    // A sampler that holds the lock but writes nothing is stuck: "stale", not "not running".
    await publish(path, sample(1, { tsUnix: Date.now() / 1000 - 60 }));
    const holder = new Deno.Command("flock", {
      args: ["--no-fork", "-x", outputLockPath(path), "sleep", "30"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await sleep(300);
      const stuck = await status(path);
      assertEquals(stuck.code, 3, stuck.stdout);
      const g = await graphOnce(path);
      assertEquals(g.code, 3, g.stderr);
      assertStringIncludes(
        g.stderr,
        `a sampler (pid ${holder.pid}) holds its lock but does not write`,
      );
      assertMatch(
        verdictLine(stuck),
        new RegExp(`but a sampler runs \\(pid ${holder.pid}\\): stop it`),
      );
      assertMatch(stuck.stdout, new RegExp(`^counters .*, by pid ${holder.pid}$`, "m"));
    } finally {
      holder.kill("SIGKILL");
      await holder.status;
    }

    const stop = writer(path, { present: false });
    try {
      await sleep(300);
      const idle = await status(path);
      assertEquals(idle.code, 0, idle.stdout);
      assertMatch(
        verdictLine(idle),
        /^verdict {3}healthy, but no StB service is running: no StB service is running \(server absent\): start StB/,
      );
      const json = JSON.parse((await status(path, false, ["--json"])).stdout);
      assertEquals([json.verdict, json.exit_code, json.counters.path], ["healthy", 0, path]);
      assertMatch(json.note, /^no StB service is running/);
    } finally {
      await stop();
    }
    const empty = await run(cliArgv(["status", "--input", " "]), { allowFail: true });
    assertEquals(empty.code, 2, empty.stderr);
    assertStringIncludes(empty.stderr, "--input must name a counters file");
  });
});

/** A counters file whose every string tries to reach the terminal. */
function evilCounters(): string {
  const s = JSON.parse(sample(5, { name: `agent${EVIL}` }));
  s.backend = `ebpf${EVIL}`;
  s.backend_fallback_reason = `reason${EVIL}`;
  s.destinations = [{
    service: `svc${EVIL}`,
    direction: "rx",
    address: "198.51.100.7",
    port: 443,
    protocol: `tcp${EVIL}`,
    bytes: 1000,
    packets: 1,
  }];
  return JSON.stringify(s) + "\n";
}

/** Control characters in output, besides colour codes (SGR) a reader adds itself. */
function stray(text: string): boolean {
  const sgr = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");
  return hasControl(text.replace(sgr, "").replaceAll("\n", ""));
}

Deno.test("file text cannot reach the terminal: graph, status and events show it escaped", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/counters.json`;
    await publish(path, evilCounters());
    const g = await graphOnce(path);
    const s = await status(path);
    const sj = await status(path, false, ["--json"]);
    for (const [what, r] of [["graph", g], ["status", s], ["status --json", sj]] as const) {
      assert(!stray(r.stdout + r.stderr), `${what}: raw control characters:\n${r.stdout}`);
      const shown = what.endsWith("--json") ? "\\u001b]0;pwned\\u0007" : "\\x1b]0;pwned\\x07";
      assertStringIncludes(r.stdout, shown, `${what}: the name is not shown`);
    }
    // The JSON still says what the file says, to a JSON reader.
    assertEquals(JSON.parse(sj.stdout).counters.counters.backend, `ebpf${EVIL}`);

    // In a terminal, with colour: the sequences are text on the screen, not obeyed.
    const tty = await Tty.start({
      columns: 120,
      rows: 40,
      cwd: dir,
      argv: cliArgv(["graph", "--input", "counters.json", "-n"]),
    });
    try {
      const screen = await tty.waitFor("the frame", (l) => l.some((x) => x.startsWith("─ all")));
      assert(
        screen.some((l) => l.includes("agent\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202e")),
        screen.join("\n"),
      );
    } finally {
      await tty.close();
    }
  });
});

/** One connect event as `run` writes it (tests/testdata/event_connect.json). */
const EVENT = JSON.parse(
  Deno.readTextFileSync(new URL("./testdata/event_connect.json", import.meta.url)),
);

Deno.test("events: local time with its offset, --utc, bad lines counted and never printed", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/events.jsonl`;
    const { tgid: _, ...noTgid } = EVENT;
    await Deno.writeTextFile(
      path,
      [
        JSON.stringify(EVENT),
        JSON.stringify({ ...EVENT, comm: `x${EVIL}` }),
        JSON.stringify(noTgid),
        JSON.stringify({ ...EVENT, ts_unix: 1e300 }),
        "not json",
        JSON.stringify({ ...EVENT, port: 70000 }),
        "",
      ].join("\n"),
    );
    const local = await run(cliArgv(["events", "--input", path, "-n"]), {
      env: { TZ: "Asia/Kolkata" },
    });
    const lines = local.stdout.trim().split("\n");
    assertEquals(lines.length, 2, local.stdout);
    assertEquals(
      lines[0],
      "2026-11-18T16:36:40.250+05:30 server tcp connect 198.51.100.2:443 external pid 7/8 (stb)",
    );
    assertStringIncludes(lines[1]!, "(x\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202e)");
    assert(!stray(local.stdout + local.stderr), local.stdout);
    assert(!local.stdout.includes("undefined"), local.stdout);
    assertEquals(
      local.stderr.trim(),
      `stb-netacct events: skipped 4 lines that are not a valid event (first: ${path} line 3: ` +
        '"tgid" is missing, not a process id); the file may be damaged or not written by ' +
        "`stb-netacct run`",
    );
    const utc = await run(cliArgv(["events", "--input", path, "--utc", "-n"]), {
      env: { TZ: "America/New_York" },
    });
    assert(utc.stdout.startsWith("2026-11-18T11:06:40.250Z server"), utc.stdout);
    const json = await run(cliArgv(["events", "--input", path, "--json"]));
    const objects = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(objects[0], EVENT);
    assertEquals(objects[1].comm, `x${EVIL}`);
    assert(!stray(json.stdout), json.stdout);
  });
});
