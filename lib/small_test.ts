import { assertEquals, assertThrows } from "./test_assert.ts";
import { parsePasswdUser } from "./users.ts";
import {
  CAP_BPF,
  CAP_NET_ADMIN,
  CAP_PERFMON,
  missingCaps,
  parseEffectiveCaps,
} from "./capabilities.ts";
import { writeFileAtomic } from "./atomic_write.ts";
import { acquireLock, LockHeldError } from "./lock.ts";
import { HeldDir } from "./held_dir.ts";
import { describeError } from "./errors.ts";

Deno.test("parsePasswdUser finds by name or uid", () => {
  const passwd = "root:x:0:0:root:/root:/bin/bash\ncad:x:1000:1000:,,,:/home/cad:/bin/bash\n";
  assertEquals(parsePasswdUser(passwd, "cad"), { uid: 1000, gid: 1000 });
  assertEquals(parsePasswdUser(passwd, "0"), { uid: 0, gid: 0 });
  assertEquals(parsePasswdUser(passwd, "4242"), { uid: 4242, gid: 4242 });
  assertEquals(parsePasswdUser(passwd, "nobody"), null);
});

Deno.test("capabilities from /proc status", () => {
  const full = parseEffectiveCaps("Name:\tx\nCapEff:\t000001ffffffffff\n");
  assertEquals(missingCaps(full, [CAP_BPF, CAP_NET_ADMIN]), []);
  const netAdminOnly = parseEffectiveCaps("CapEff:\t0000000000001000\n");
  assertEquals(missingCaps(netAdminOnly, [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]), [
    CAP_BPF,
    CAP_PERFMON,
  ]);
  // CAP_SYS_ADMIN (21) covers BPF and PERFMON on kernels that predate them.
  const sysAdmin = parseEffectiveCaps("CapEff:\t0000000000201000\n");
  assertEquals(missingCaps(sysAdmin, [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]), []);
  assertEquals(parseEffectiveCaps("garbage"), 0n);
});

Deno.test("writeFileAtomic publishes whole files with the mode asked, leaves no temp, ignores symlink traps", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const target = `${dir}/counters.json`;
    writeFileAtomic(target, "one\n", { mode: 0o644, uid: 65534, gid: 65534 });
    writeFileAtomic(target, "two\n", { mode: 0o644, uid: 65534, gid: 65534 });
    assertEquals(Deno.readTextFileSync(target), "two\n");
    const st = Deno.statSync(target);
    assertEquals([st.mode! & 0o777, st.uid, st.gid], [0o644, 65534, 65534]);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["counters.json"]);
    // A symlink planted at the final path is replaced, never written through.
    Deno.writeTextFileSync(`${dir}/victim`, "keep");
    Deno.removeSync(target);
    Deno.symlinkSync(`${dir}/victim`, target);
    writeFileAtomic(target, "three\n", { mode: 0o644, uid: null, gid: null });
    assertEquals(Deno.readTextFileSync(`${dir}/victim`), "keep");
    assertEquals(Deno.lstatSync(target).isFile, true);
    // What a writer that died mid-write left at the temp name (a symlink, say) is removed,
    // never written through.
    Deno.symlinkSync(`${dir}/victim`, `${dir}/.counters.json.${Deno.pid}.tmp`);
    writeFileAtomic(target, "four\n", { mode: 0o600, uid: null, gid: null });
    assertEquals(Deno.readTextFileSync(`${dir}/victim`), "keep");
    assertEquals(Deno.readTextFileSync(target), "four\n");
    assertEquals(Deno.statSync(target).mode! & 0o777, 0o600);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["counters.json", "victim"]);
    // A missing directory fails loudly and leaves nothing.
    assertThrows(() =>
      writeFileAtomic(`${dir}/nope/x.json`, "x", { mode: 0o644, uid: null, gid: null })
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic gives the mode asked under a umask that would trim it", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const target = `${dir}/counters.json`;
    const module = new URL("./atomic_write.ts", import.meta.url).href;
    const code = `const { writeFileAtomic } = await import(${JSON.stringify(module)});\n` +
      `writeFileAtomic(${JSON.stringify(target)}, "x", { mode: 0o644, uid: null, gid: null });`;
    const out = await new Deno.Command("sh", {
      args: ["-c", 'umask 077 && exec "$0" eval "$1"', Deno.execPath(), code],
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertEquals(Deno.statSync(target).mode! & 0o777, 0o644);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Code for a child process that takes the lock `.lock` in `dir`. */
function lockIn(dir: string, then: string): string {
  const url = (f: string) => JSON.stringify(new URL(f, import.meta.url).href);
  return `import { acquireLock } from ${url("./lock.ts")};\n` +
    `import { HeldDir } from ${url("./held_dir.ts")};\n` +
    `const dir = HeldDir.hold(${JSON.stringify(dir)}, { what: "test" });\n${then}`;
}

Deno.test("acquireLock: one holder at a time, released on release and on process death", async () => {
  const path = Deno.makeTempDirSync();
  const dir = HeldDir.hold(path, { what: "test" });
  try {
    const held = acquireLock(dir, ".lock");
    assertEquals(Deno.readTextFileSync(`${path}/.lock`), `${Deno.pid}\n`);
    // Another process must be refused (flock is per open file description).
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        lockIn(
          path,
          `try { acquireLock(dir, ".lock"); Deno.exit(0) } catch (e) { console.log(e.message); Deno.exit(3) }`,
        ),
      ],
      stdout: "piped",
    });
    const out = await child.output();
    assertEquals(out.code, 3);
    assertEquals(new TextDecoder().decode(out.stdout).includes(`pid ${Deno.pid}`), true);
    held.release();
    held.release();
    acquireLock(dir, ".lock").release();
    // A SIGKILLed holder leaves no stale lock.
    const holder = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        lockIn(path, `acquireLock(dir, ".lock"); console.log("held"); await new Promise(() => {})`),
      ],
      stdout: "piped",
    }).spawn();
    const reader = holder.stdout.getReader();
    await reader.read();
    assertThrows(() => acquireLock(dir, ".lock"), LockHeldError, "already writing");
    holder.kill("SIGKILL");
    await holder.status;
    reader.releaseLock();
    await holder.stdout.cancel();
    acquireLock(dir, ".lock").release();
  } finally {
    dir.close();
    Deno.removeSync(path, { recursive: true });
  }
});

Deno.test("describeError joins the cause chain without repeats", () => {
  const inner = new Error("Operation not permitted");
  assertEquals(
    describeError(new Error("attach failed", { cause: inner })),
    "attach failed: Operation not permitted",
  );
  assertEquals(describeError(new Error("a: b", { cause: new Error("b") })), "a: b");
});
