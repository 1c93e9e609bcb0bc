import { assertEquals } from "./test_assert.ts";
import { parseFlockHolder } from "./lock.ts";

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
