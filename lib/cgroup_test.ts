import { assertEquals, assertThrows } from "./test_assert.ts";
import {
  cgroupDir,
  CgroupError,
  cgroupId,
  cgroupLevel,
  findCgroup2Mount,
  parseCgroup2Mount,
  validateCgroupPath,
} from "./cgroup.ts";

const data = (name: string) =>
  Deno.readTextFileSync(new URL(`./testdata/${name}`, import.meta.url));

Deno.test("parseCgroup2Mount: hybrid (this testbed), simulated pure v2, Debian 12", () => {
  assertEquals(parseCgroup2Mount(data("mountinfo_hybrid.txt")), {
    mountPoint: "/sys/fs/cgroup/unified",
    layout: "hybrid",
  });
  // The pure-v2 namespace still lists the shadowed hybrid mount: the shortest path wins.
  assertEquals(parseCgroup2Mount(data("mountinfo_unified.txt")), {
    mountPoint: "/sys/fs/cgroup",
    layout: "unified",
  });
  assertEquals(parseCgroup2Mount(data("mountinfo_debian12.txt")), {
    mountPoint: "/sys/fs/cgroup",
    layout: "unified",
  });
  assertEquals(parseCgroup2Mount("29 1 259:2 / / rw - ext4 /dev/sda rw\n"), null);
  // A container's view of a sub-cgroup is not the hierarchy root.
  assertEquals(
    parseCgroup2Mount("9 1 0:25 /machine.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
    null,
  );
  assertEquals(
    parseCgroup2Mount("9 1 0:25 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n")?.mountPoint,
    "/mnt/my cg",
  );
});

Deno.test("validateCgroupPath keeps systemd escapes and refuses traversal", () => {
  const p = "/user.slice/app-stb\\x2dnext.slice/x@split.service";
  assertEquals(validateCgroupPath(p), p);
  assertEquals(validateCgroupPath("/a/b/"), "/a/b");
  for (const bad of ["a/b", "/a//b", "/a/./b", "/a/../b", "/"]) {
    assertThrows(() => validateCgroupPath(bad), CgroupError, `"${bad}"`);
  }
  assertEquals(cgroupLevel("/a/b/c"), 3);
});

Deno.test("cgroupId is the inode of the live cgroup directory, null when absent", () => {
  const mount = findCgroup2Mount();
  const name = `/stb-netacct-unit-${crypto.randomUUID().slice(0, 8)}`;
  const dir = cgroupDir(mount, name);
  assertEquals(cgroupId(mount, name), null);
  Deno.mkdirSync(dir);
  try {
    const id = cgroupId(mount, name);
    assertEquals(id, BigInt(Deno.statSync(dir).ino!));
    Deno.removeSync(dir);
    Deno.mkdirSync(dir);
    // Recreated: a new id, which is why backends must retarget.
    assertEquals(cgroupId(mount, name) !== id, true);
  } finally {
    Deno.removeSync(dir);
  }
});
