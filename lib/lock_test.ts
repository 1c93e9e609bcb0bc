import { assertEquals } from "./test_assert.ts";
import { acquireLock, parseFlockHolder } from "./lock.ts";
import { HeldDir } from "./held_dir.ts";

// Captured from this testbed with util-linux flock(1): a holder, a blocked waiter, a POSIX
// lock on the same inode, plus an NVMe-style device (major 259 = 0x103).
const PROC_LOCKS = Deno.readTextFileSync(new URL("./testdata/proc_locks.txt", import.meta.url));

Deno.test("parseFlockHolder: the flock holder of that device and inode, never a waiter", () => {
  // st_dev 65024 = 0xfe00: major 0xfe, minor 0.
  assertEquals(parseFlockHolder(PROC_LOCKS, 65024, 2146505), 30616);
  // Same inode on another device: (259 << 8) | 1.
  assertEquals(parseFlockHolder(PROC_LOCKS, (259 << 8) | 1, 2146505), 777);
  assertEquals(parseFlockHolder(PROC_LOCKS, 65024, 16041019), null, "POSIX locks are not ours");
  assertEquals(parseFlockHolder(PROC_LOCKS, 65024, 1), null);
  assertEquals(parseFlockHolder("", 65024, 2146505), null);
});

/**
 * Flips `name` in `dir` between a regular file and a symlink to `victim` as fast as it can,
 * until killed: what a hostile owner of a lock directory would do.
 */
function startFlipper(dir: string, name: string, victim: string): Deno.ChildProcess {
  const script = `
import os, sys
d, name, victim = sys.argv[1:4]
link, plain = os.path.join(d, ".flip-link"), os.path.join(d, ".flip-file")
target = os.path.join(d, name)
while True:
    try:
        os.symlink(victim, link); os.rename(link, target)
        open(plain, "w").close(); os.rename(plain, target)
    except OSError:
        pass
`;
  return new Deno.Command("/usr/bin/python3", {
    args: ["-c", script, dir, name, victim],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

Deno.test("acquireLock: a lock file flipped to a symlink never redirects the pid it writes", async () => {
  const path = Deno.makeTempDirSync();
  const victim = `${path}/victim`;
  Deno.writeTextFileSync(victim, "precious\n");
  const dir = HeldDir.hold(path, { what: "test" });
  const flipper = startFlipper(path, ".lock", victim);
  let taken = 0, refused = 0;
  try {
    // Until both races have run often (the flipper is a process of its own: on a busy host
    // it may get the CPU late), at least 3000 tries, at most 20 s.
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 3000 || ((taken < 200 || refused < 200) && Date.now() < deadline); i++) {
      try {
        acquireLock(dir, ".lock").release();
        taken++;
      } catch {
        refused++; // the link was there at open: O_NOFOLLOW says no
      }
      if (i % 100 === 0) await new Promise((r) => setTimeout(r, 0));
    }
  } finally {
    flipper.kill("SIGKILL");
    await flipper.status;
    dir.close();
  }
  try {
    assertEquals(Deno.readTextFileSync(victim), "precious\n", `${taken} taken, ${refused} refused`);
    assertEquals(
      taken > 100 && refused > 100,
      true,
      `both races ran: ${taken} taken, ${refused} refused`,
    );
  } finally {
    Deno.removeSync(path, { recursive: true });
  }
});
