import { assert, assertEquals, assertStringIncludes, assertThrows } from "./test_assert.ts";
import { DirError, distrust, HeldDir } from "./held_dir.ts";

const NOBODY = 65534;

function withDir(fn: (path: string) => void) {
  const path = Deno.makeTempDirSync();
  try {
    fn(path);
  } finally {
    Deno.removeSync(path, { recursive: true });
  }
}

Deno.test("writeAtomic publishes whole files with the mode asked, leaves no temp, ignores symlink traps", () => {
  withDir((path) => {
    const dir = HeldDir.hold(path, { what: "test" });
    try {
      const target = `${path}/counters.json`;
      dir.writeAtomic("counters.json", "one\n", { mode: 0o644, uid: NOBODY, gid: NOBODY });
      dir.writeAtomic("counters.json", "two\n", { mode: 0o644, uid: NOBODY, gid: NOBODY });
      assertEquals(Deno.readTextFileSync(target), "two\n");
      const st = Deno.statSync(target);
      assertEquals([st.mode! & 0o777, st.uid, st.gid], [0o644, NOBODY, NOBODY]);
      assertEquals([...Deno.readDirSync(path)].map((e) => e.name), ["counters.json"]);
      // A symlink planted at the final name is replaced, never written through.
      Deno.writeTextFileSync(`${path}/victim`, "keep");
      Deno.removeSync(target);
      Deno.symlinkSync(`${path}/victim`, target);
      dir.writeAtomic("counters.json", "three\n", { mode: 0o644, uid: null, gid: null });
      assertEquals(Deno.readTextFileSync(`${path}/victim`), "keep");
      assertEquals(Deno.lstatSync(target).isFile, true);
      // What a writer that died mid-write left at the temp name (a symlink, say) is removed,
      // never written through.
      Deno.symlinkSync(`${path}/victim`, `${path}/.counters.json.${Deno.pid}.tmp`);
      dir.writeAtomic("counters.json", "four\n", { mode: 0o600, uid: null, gid: null });
      assertEquals(Deno.readTextFileSync(`${path}/victim`), "keep");
      assertEquals(Deno.readTextFileSync(target), "four\n");
      assertEquals(Deno.statSync(target).mode! & 0o777, 0o600);
      // Larger than one page, so a short write would show; durable takes the same path.
      const big = "y".repeat(200_000);
      dir.writeAtomic("big", big, { mode: 0o600, uid: null, gid: null, durable: true });
      assertEquals(Deno.readTextFileSync(`${path}/big`), big);
      assertEquals([...Deno.readDirSync(path)].map((e) => e.name).sort(), [
        "big",
        "counters.json",
        "victim",
      ]);
    } finally {
      dir.close();
    }
  });
});

Deno.test("writeAtomic gives the mode asked under a umask that would trim it", async () => {
  const path = Deno.makeTempDirSync();
  try {
    const module = new URL("./held_dir.ts", import.meta.url).href;
    const code = `const { HeldDir } = await import(${JSON.stringify(module)});\n` +
      `HeldDir.hold(${JSON.stringify(path)}, { what: "t" })` +
      `.writeAtomic("c.json", "x", { mode: 0o644, uid: null, gid: null });`;
    const out = await new Deno.Command("sh", {
      args: ["-c", 'umask 077 && exec "$0" eval "$1"', Deno.execPath(), code],
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertEquals(Deno.statSync(`${path}/c.json`).mode! & 0o777, 0o644);
  } finally {
    Deno.removeSync(path, { recursive: true });
  }
});

Deno.test("hold: every directory on the way is checked, none may be a symlink", () => {
  withDir((base) => {
    Deno.chmodSync(base, 0o755);
    // Made when missing: the directory with its mode, parents 0755.
    HeldDir.hold(`${base}/a/b/c`, { what: "Output directory", create: 0o700 }).close();
    assertEquals(Deno.statSync(`${base}/a/b/c`).mode! & 0o777, 0o700);
    assertEquals(Deno.statSync(`${base}/a/b`).mode! & 0o777, 0o755);
    const refused = (path: string, want: RegExp, opts = {}) => {
      const e = assertThrows(() => HeldDir.hold(path, { what: "Output directory", ...opts }));
      assert(e instanceof DirError, String(e));
      assert(want.test((e as Error).message), (e as Error).message);
    };
    // A symlink anywhere on the way, not only at the end.
    Deno.symlinkSync(`${base}/a`, `${base}/link`);
    refused(`${base}/link/b/c`, /"[^"]*\/link" is a symlink.*real path "[^"]*\/a\/b\/c"/);
    refused(`${base}/link`, /is a symlink/);
    // An ancestor another user owns, or others may write (no sticky bit).
    Deno.chownSync(`${base}/a`, NOBODY, NOBODY);
    refused(`${base}/a/b/c`, /"[^"]*\/a" on its way is owned by uid 65534/);
    Deno.chownSync(`${base}/a`, 0, 0);
    Deno.chmodSync(`${base}/a`, 0o777);
    refused(`${base}/a/b/c`, /"[^"]*\/a" on its way is writable by others/);
    // /tmp's sticky bit is fine for an ancestor, never for the directory itself.
    Deno.chmodSync(`${base}/a`, 0o1777);
    HeldDir.hold(`${base}/a/b/c`, { what: "Output directory" }).close();
    refused(`${base}/a`, /it is writable by others/);
    // A group-writable ancestor is fine when the group is root's, not otherwise.
    Deno.chmodSync(`${base}/a`, 0o775);
    HeldDir.hold(`${base}/a/b/c`, { what: "Output directory" }).close();
    Deno.chownSync(`${base}/a`, 0, NOBODY);
    refused(`${base}/a/b/c`, /writable by group 65534/);
    // The textfile's directory may sit below a directory another user owns.
    Deno.chmodSync(`${base}/a`, 0o755);
    Deno.chownSync(`${base}/a`, NOBODY, NOBODY);
    HeldDir.hold(`${base}/a/b/c`, { what: "t", owner: "root", othersOwnAncestors: true }).close();
    // A file on the way is not a directory; nothing there is NotFound (without create).
    Deno.writeTextFileSync(`${base}/file`, "");
    refused(`${base}/file/x`, /"[^"]*\/file" is not a directory/);
    assertThrows(() => HeldDir.hold(`${base}/none`, { what: "t" }), Deno.errors.NotFound);
  });
});

Deno.test("a held directory keeps its identity when its path is swapped for a symlink", () => {
  withDir((base) => {
    Deno.mkdirSync(`${base}/pub/out`, { recursive: true });
    Deno.mkdirSync(`${base}/victim`);
    Deno.writeTextFileSync(`${base}/victim/counters.json`, "precious");
    const dir = HeldDir.hold(`${base}/pub/out`, { what: "test" });
    try {
      Deno.renameSync(`${base}/pub/out`, `${base}/pub/out.old`);
      Deno.symlinkSync(`${base}/victim`, `${base}/pub/out`);
      dir.writeAtomic("counters.json", "new", { mode: 0o644, uid: null, gid: null });
      dir.createExclusive("req", "1", 0o600);
      assertEquals(dir.remove("req"), true);
      assertEquals(Deno.readTextFileSync(`${base}/victim/counters.json`), "precious");
      assertEquals(Deno.readTextFileSync(`${base}/pub/out.old/counters.json`), "new");
      assertEquals(dir.readText("counters.json", 100), "new");
      assertEquals(dir.readText("missing", 100), null);
    } finally {
      dir.close();
    }
  });
});

Deno.test("distrust: a group-writable directory is refused unless it may be (the textfile ACL)", () => {
  const dir = { type: "directory" as const, uid: 0, gid: 0, mode: 0o775, ino: 1n, dev: 1, size: 0 };
  const final = { uid: 0, final: true, owner: "root" as const };
  assertStringIncludes(distrust(dir, final) ?? "", "writable by group 0");
  assertEquals(distrust(dir, { ...final, groupWritable: true }), null);
  // Never for others, whatever the option says.
  assertStringIncludes(
    distrust({ ...dir, mode: 0o777 }, { ...final, groupWritable: true }) ?? "",
    "writable by others",
  );
});
