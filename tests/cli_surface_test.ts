/**
 * The CLI's surface as a user meets it across subcommands: help that wraps to the
 * terminal (seen in a real one, at 80 and 120 columns), one meaning per short option, and
 * one key style (snake_case) in every --json output.
 */

import { assert, assertEquals } from "../lib/test_assert.ts";
import { cliArgv, run } from "./harness/mod.ts";
import { Tty } from "./harness/tty.ts";

const COMMANDS = [
  "",
  "run",
  "graph",
  "events",
  "doctor",
  "install",
  "uninstall",
  "status",
  "reset",
  "verify",
];

async function helpIn(columns: number, command: string): Promise<string[]> {
  const tty = await Tty.start({
    columns,
    rows: 120,
    argv: cliArgv([...(command ? [command] : []), "--help"]),
  });
  try {
    await tty.waitExit();
    // -J: a line the terminal had to wrap comes back whole, so it shows as too long.
    const lines = await tty.screen({ join: true });
    return lines.slice(0, lines.findIndex((l) => /^\[exited \d+\]$/.test(l)));
  } finally {
    await tty.close();
  }
}

/**
 * Paragraphs of wrapped prose: the description under "Usage:", and each option's
 * description with its continuation lines (indented to where the description starts).
 */
function paragraphs(lines: string[]): string[][] {
  const out: string[][] = [];
  const blank = lines.findIndex((l, i) => i > 0 && l === "");
  const next = lines.findIndex((l, i) => i > blank && l === "");
  if (blank > 0 && !lines[blank + 1]?.endsWith(":")) out.push(lines.slice(blank + 1, next));
  let item: string[] | null = null;
  let indent = 0;
  for (const line of lines) {
    const m = /^( {2}\S.*? {2,})(\S.*)$/.exec(line);
    if (/^ {2}-/.test(line) && m) {
      item = [line];
      indent = m[1]!.length;
      out.push(item);
    } else if (item && line.length > indent && line.slice(0, indent).trim() === "") {
      item.push(line);
    } else {
      item = null;
    }
  }
  return out;
}

Deno.test("help wraps to the terminal: nothing past its width, no line broken early", async () => {
  for (const columns of [80, 120]) {
    let widest = 0;
    for (const command of COMMANDS) {
      const lines = await helpIn(columns, command);
      const where = `${command || "stb-netacct"} --help at ${columns} columns`;
      assert(
        lines.some((l) => l.startsWith("Usage: stb-netacct")),
        `${where}:\n${lines.join("\n")}`,
      );
      for (const l of lines) {
        assert([...l].length <= columns, `${where}: a line past the edge:\n${l}`);
        widest = Math.max(widest, [...l].length);
      }
      for (const p of paragraphs(lines)) {
        for (let i = 0; i + 1 < p.length; i++) {
          // Greedy wrapping: the next line's first word did not fit on this one.
          const word = p[i + 1]!.trim().split(" ")[0]!;
          assert(
            [...p[i]!].length + 1 + [...word].length > columns,
            `${where}: "${word}" would have fitted after\n${p[i]}\n(a hard line break?)`,
          );
        }
      }
    }
    // At 120 columns the text uses the room: it is wrapped to the terminal, not to 80.
    if (columns === 120) assert(widest > 100, `help never wider than ${widest} at 120 columns`);
  }
});

Deno.test("one meaning per short option across every subcommand", async () => {
  const meanings = new Map<string, Set<string>>();
  for (const command of COMMANDS) {
    const r = await run(cliArgv([...(command ? [command] : []), "--help"]), { allowFail: true });
    assertEquals(r.code, 0, `${command} --help: ${r.stderr}`);
    for (const m of r.stdout.matchAll(/^ {2}(-[A-Za-z]), (--[a-z-]+)/gm)) {
      const set = meanings.get(m[1]!) ?? new Set<string>();
      set.add(m[2]!);
      meanings.set(m[1]!, set);
    }
  }
  assert(meanings.size > 8, `too few short options found: ${[...meanings.keys()]}`);
  for (const [short, longs] of meanings) {
    assertEquals(longs.size, 1, `${short} means ${[...longs].join(" and ")}`);
  }
});

/** Object keys of `value`, with their paths, except inside maps keyed by names. */
function keys(value: unknown, path: string, out: string[]): string[] {
  if (Array.isArray(value)) value.forEach((v) => keys(v, `${path}[]`, out));
  else if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      // Keyed by names the user or the host chose: services, cgroups, tools, backends.
      const map = /(^|\.)(services|cgroups|tools|missing_for)$/.test(path);
      if (!map) out.push(`${path}.${k}`);
      keys(v, map ? `${path}.*` : `${path}.${k}`, out);
    }
  }
  return out;
}

function assertSnakeCase(what: string, json: unknown): void {
  const all = keys(json, what, []);
  assert(all.length > 5, `${what}: too few keys to judge: ${all}`);
  const bad = all.filter((k) => !/^[a-z][a-z0-9_]*$/.test(k.split(".").at(-1)!));
  assertEquals(bad, [], `${what}: keys not in snake_case`);
}

Deno.test("every --json output uses snake_case keys", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-json-" });
  try {
    const counters = `${dir}/counters.json`;
    await Deno.writeTextFile(
      counters,
      JSON.stringify({
        schema: 1,
        backend: "ebpf",
        rx_bytes_total: 5,
        tx_bytes_total: 6,
        ts_monotonic: 1,
        ts_unix: Date.now() / 1000,
        interval_s: 0.5,
        services: { "host-agent": { rx_bytes_total: 1, tx_bytes_total: 2, present: true } },
      }),
    );
    const status = await run(cliArgv(["status", "--input", counters, "--json"]), {
      allowFail: true,
    });
    assertSnakeCase("status", JSON.parse(status.stdout));
    const events = `${dir}/events.jsonl`;
    await Deno.copyFile(new URL("./testdata/event_connect.json", import.meta.url), events);
    const ev = await run(cliArgv(["events", "--input", events, "--json"]));
    assertSnakeCase("events", JSON.parse(ev.stdout));
    // Unprivileged, doctor loads nothing: it reports what it could not check.
    const doctor = await run(
      [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        ...cliArgv(["doctor", "--json"]),
      ],
      { allowFail: true },
    );
    const report = JSON.parse(doctor.stdout);
    assertSnakeCase("doctor", report);
    assert("mount_point" in report.cgroup2, JSON.stringify(report.cgroup2));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
