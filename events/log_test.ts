import { EVENTS_FILE_MODE, EventsLog, rotatedPath } from "./log.ts";
import { runEvents } from "./mod.ts";
import type { ConnectEvent } from "./collector.ts";
import { assertEquals } from "../lib/test_assert.ts";
import { HeldDir } from "../lib/held_dir.ts";

function event(i: number, external = true): ConnectEvent {
  return {
    ts_unix: 1795000000 + i,
    ts_monotonic: 100 + i,
    kind: "connect",
    service: "server",
    pid: 10,
    tgid: 10,
    comm: "stb",
    family: 4,
    protocol: "tcp",
    address: external ? "198.51.100.2" : "192.168.1.2",
    port: 443,
    external,
  };
}

async function collect(input: string, externalOnly = false): Promise<string[]> {
  const out: string[] = [];
  await runEvents({ input, follow: false, json: true, externalOnly }, {
    write: (l) => out.push(l),
  });
  return out;
}

/** The lines in one file (the reader would add the old generation). */
async function lines(path: string): Promise<number> {
  return (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "").length;
}

Deno.test("events log: appends lines, rotates past the limit, keeps one old generation", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-events-log-" });
  const held = HeldDir.hold(dir, { what: "test" });
  try {
    const path = `${dir}/events.jsonl`;
    const one = JSON.stringify(event(0)).length + 1;
    const log = new EventsLog(() => held, { owner: null, maxBytes: 3 * one });
    log.append([event(0), event(1)]);
    log.append([]);
    log.append([event(2)]);
    assertEquals((await Deno.stat(path)).size, 3 * one);
    log.append([event(3)]); // would pass the limit: rotate first
    log.append([event(4), event(5, false)]);
    log.append([event(6)]); // rotate again: 0..2 are gone
    assertEquals((await collect(path)).map((l) => JSON.parse(l).ts_unix - 1795000000), [
      3,
      4,
      5,
      6,
    ]);
    assertEquals((await collect(path, true)).length, 3, "--external-only");
    assertEquals((await Deno.stat(path)).mode! & 0o777, EVENTS_FILE_MODE);
    assertEquals((await Deno.stat(rotatedPath(path))).mode! & 0o777, EVENTS_FILE_MODE);
    // Removed by hand: a new file, not appends into the removed one.
    await Deno.remove(path);
    log.append([event(7)]);
    assertEquals(await lines(path), 1);
    log.close();
  } finally {
    held.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("events log: what stands at its name is never followed or appended to unless it is its own", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-events-log-" });
  const held = HeldDir.hold(dir, { what: "test" });
  try {
    const path = `${dir}/events.jsonl`;
    await Deno.writeTextFile(`${dir}/victim`, "precious\n", { mode: 0o600 });
    await Deno.symlink(`${dir}/victim`, path);
    const log = new EventsLog(() => held, { owner: { uid: 65534, gid: 65534 } });
    log.append([event(0)]);
    assertEquals(await Deno.readTextFile(`${dir}/victim`), "precious\n");
    assertEquals(Deno.statSync(`${dir}/victim`).uid, 0, "the link's target is not chowned");
    assertEquals(Deno.lstatSync(rotatedPath(path)).isSymlink, true, "the link was set aside");
    const st = Deno.lstatSync(path);
    assertEquals([st.isFile, st.uid, st.gid, st.mode! & 0o777], [true, 65534, 0, 0o640]);
    log.close();
    // A file of another owner or mode (an earlier config) is set aside too, not taken over.
    await Deno.chmod(path, 0o644);
    const again = new EventsLog(() => held, { owner: { uid: 65534, gid: 65534 } });
    again.append([event(1)]);
    assertEquals([await lines(path), await lines(rotatedPath(path))], [1, 1]);
    again.close();
  } finally {
    held.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("events --follow: holds a half-written line, follows across a rotation", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-events-follow-" });
  try {
    const path = `${dir}/events.jsonl`;
    const half = JSON.stringify(event(1));
    await Deno.writeTextFile(path, JSON.stringify(event(0)) + "\n" + half.slice(0, 10));
    const seen: number[] = [];
    let stop = false;
    const following = runEvents(
      { input: path, follow: true, json: true, externalOnly: false },
      {
        write: (l) => seen.push(JSON.parse(l).ts_unix - 1795000000),
        stopped: () => stop,
        pollMs: 20,
      },
    );
    const until = async (n: number) => {
      for (let i = 0; i < 200 && seen.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    };
    await until(1);
    assertEquals(seen, [0], "the unfinished line is not printed yet");
    // The writer finishes the line... then rotates and writes into a new file.
    await Deno.writeTextFile(path, half.slice(10) + "\n", { append: true });
    await until(2);
    await Deno.rename(path, rotatedPath(path));
    await Deno.writeTextFile(path, JSON.stringify(event(2)) + "\n");
    await until(3);
    stop = true;
    await following;
    assertEquals(seen, [0, 1, 2]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The installed service writes events.jsonl as a dynamic user with CAP_CHOWN and no
 * CAP_DAC_OVERRIDE, and gives the file to the owner: every later batch must still land.
 */
Deno.test({
  name: "events log: an unprivileged writer that gives the file away keeps appending",
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "stb-events-owner-" });
    try {
      await Deno.chmod(dir, 0o755);
      const out = `${dir}/out`;
      await Deno.mkdir(out);
      await Deno.chown(out, 65534, 65534);
      await Deno.mkdir(`${dir}/deno`);
      await Deno.chown(`${dir}/deno`, 65534, 65534);
      const driver = `${dir}/driver.ts`;
      await Deno.writeTextFile(
        driver,
        `import { EventsLog } from ${JSON.stringify(new URL("./log.ts", import.meta.url).href)};
import { HeldDir } from ${JSON.stringify(new URL("../lib/held_dir.ts", import.meta.url).href)};
const e = (i: number) => (${event.toString()})(i);
const dir = HeldDir.hold(Deno.args[0], { what: "Output directory", owner: "any" });
const log = new EventsLog(() => dir, { owner: { uid: 1, gid: 1 } });
for (let i = 0; i < 3; i++) log.append([e(i)]);
log.close();
// A restart: the file is the owner's now and cannot be opened again by this writer.
const again = new EventsLog(() => dir, { owner: { uid: 1, gid: 1 } });
again.append([e(3)]);
again.close();
dir.close();
`,
        { mode: 0o644 },
      );
      const o = await new Deno.Command("setpriv", {
        args: [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          "--inh-caps=-all,+chown",
          "--ambient-caps=+chown",
          Deno.execPath(),
          "run",
          "--no-config",
          "--no-lock",
          "--allow-read",
          "--allow-write",
          "--allow-ffi",
          "--allow-sys",
          driver,
          out,
        ],
        env: { DENO_DIR: `${dir}/deno` },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(o.stderr);
      assertEquals(o.code, 0, err);
      const st = await Deno.stat(`${out}/events.jsonl`);
      assertEquals(st.uid, 1, "given to the owner");
      const lines = async (p: string) => (await Deno.readTextFile(p)).trimEnd().split("\n");
      assertEquals((await lines(`${out}/events.jsonl.1`)).length, 3, "every batch is there");
      assertEquals((await lines(`${out}/events.jsonl`)).length, 1, "a restart starts anew");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
