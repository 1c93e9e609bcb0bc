import { assert, assertEquals } from "./test_assert.ts";
import { Sleeper } from "./sleeper.ts";
import { cgroupDir, findCgroup2Mount } from "./cgroup.ts";
import { ancestorPaths, CgroupWatch } from "./cgroup_watch.ts";

Deno.test("ancestorPaths: every directory whose children decide the path's existence", () => {
  assertEquals(ancestorPaths("/a"), ["/"]);
  assertEquals(ancestorPaths("/a/b/c"), ["/", "/a", "/a/b"]);
  assertEquals(ancestorPaths("/user.slice/x\\x2dy.service"), ["/", "/user.slice"]);
});

/**
 * The watch's descriptor wakes a sleeper when the tree changes (what `run` relies on), and
 * `takeChanged` then says so; both are checked after every step.
 */
function expectChange(watch: CgroupWatch, sleeper: Sleeper, what: string): void {
  assertEquals(sleeper.sleep(2000), "ready", `the watch woke the sleeper after ${what}`);
  assertEquals(watch.takeChanged(), true, `a change reported after ${what}`);
}

Deno.test("CgroupWatch reports a service cgroup and its ancestors appearing, going and coming back", () => {
  const mount = findCgroup2Mount();
  const top = `/stb-netacct-watch-${crypto.randomUUID().slice(0, 8)}`;
  const service = `${top}/app.slice/svc.service`;
  const dir = (p: string) => cgroupDir(mount, p);
  const errors: string[] = [];
  let watch: CgroupWatch | null = null;
  const sleeper = new Sleeper();
  try {
    watch = new CgroupWatch(mount, [service], (m) => errors.push(m));
    assert(watch.fd !== null, "watching");
    sleeper.watch(watch.fd);
    assertEquals(watch.takeChanged(), true, "the first call always says look");
    assertEquals(watch.takeChanged(), false);
    assertEquals(sleeper.sleep(50), "timeout", "nothing to report yet");

    // Only the mount root exists yet: the top appears in it.
    Deno.mkdirSync(dir(top));
    expectChange(watch, sleeper, "mkdir top");

    // The new directory is watched now (rebuilt): its child is seen.
    Deno.mkdirSync(dir(`${top}/app.slice`));
    expectChange(watch, sleeper, "mkdir app.slice");
    Deno.mkdirSync(dir(service));
    expectChange(watch, sleeper, "mkdir the service");

    // A service restart: rmdir and mkdir of its own cgroup.
    Deno.removeSync(dir(service));
    expectChange(watch, sleeper, "rmdir the service");
    Deno.mkdirSync(dir(service));
    expectChange(watch, sleeper, "mkdir the service again");

    // An ancestor recreated is a new inode: the watch must follow it, or this goes unseen.
    Deno.removeSync(dir(service));
    Deno.removeSync(dir(`${top}/app.slice`));
    expectChange(watch, sleeper, "rmdir the service and app.slice");
    Deno.mkdirSync(dir(`${top}/app.slice`));
    expectChange(watch, sleeper, "mkdir a recreated app.slice");
    Deno.mkdirSync(dir(service));
    expectChange(watch, sleeper, "mkdir the service in the recreated app.slice");

    // Writes to the cgroup's files are not changes of the tree.
    Deno.writeTextFileSync(`${dir(`${top}/app.slice`)}/cgroup.procs`, "");
    assertEquals(sleeper.sleep(200), "timeout", "a write to cgroup.procs wakes nobody");
    assertEquals(watch.takeChanged(), false, "a write to cgroup.procs is not a tree change");
    assertEquals(errors, []);
  } finally {
    watch?.close();
    watch?.close();
    sleeper.close();
    for (const p of [service, `${top}/app.slice`, top]) {
      try {
        Deno.removeSync(dir(p));
      } catch { /* not created */ }
    }
  }
});
