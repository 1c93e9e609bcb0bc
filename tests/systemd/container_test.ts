import { parseNameSystemdMount } from "./container.ts";
import { assertEquals } from "../../lib/test_assert.ts";

Deno.test("container: the v1 name=systemd mount of a hybrid host, none on pure cgroup2", () => {
  const hybrid = Deno.readTextFileSync(new URL("testdata/mountinfo_hybrid.txt", import.meta.url));
  assertEquals(parseNameSystemdMount(hybrid), "/sys/fs/cgroup/systemd");
  const pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - " +
    "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
  assertEquals(parseNameSystemdMount(pure), null);
});
