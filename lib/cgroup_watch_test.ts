import { assertEquals } from "./test_assert.ts";
import { cgroupDir, findCgroup2Mount } from "./cgroup.ts";
import { ancestorPaths, CgroupWatch } from "./cgroup_watch.ts";

Deno.test("ancestorPaths: every directory whose children decide the path's existence", () => {
  assertEquals(ancestorPaths("/a"), ["/"]);
  assertEquals(ancestorPaths("/a/b/c"), ["/", "/a", "/a/b"]);
  assertEquals(ancestorPaths("/user.slice/x\\x2dy.service"), ["/", "/user.slice"]);
});

/** Resolves on the next onChange, or fails after `ms`. */
function changeSignal() {
  let fire: () => void = () => {};
  let count = 0;
  return {
    onChange: () => {
      count++;
      fire();
    },
    get count() {
      return count;
    },
    next(what: string, ms = 2000): Promise<void> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no change reported after ${what}`)), ms);
        fire = () => {
          clearTimeout(timer);
          fire = () => {};
          resolve();
        };
      });
    },
  };
}

Deno.test("CgroupWatch reports a service cgroup and its ancestors appearing, going and coming back", async () => {
  const mount = findCgroup2Mount();
  const top = `/stb-netacct-watch-${crypto.randomUUID().slice(0, 8)}`;
  const service = `${top}/app.slice/svc.service`;
  const dir = (p: string) => cgroupDir(mount, p);
  const errors: string[] = [];
  const signal = changeSignal();
  let watch: CgroupWatch | null = null;
  try {
    watch = new CgroupWatch(mount, [service], signal.onChange, (m) => errors.push(m));
    assertEquals(watch.takeChanged(), true, "the first call always says look");
    assertEquals(watch.takeChanged(), false);

    // Only the mount root exists yet: the top appears in it.
    let next = signal.next("mkdir top");
    Deno.mkdirSync(dir(top));
    await next;
    assertEquals(watch.takeChanged(), true);

    // The new directory is watched now (rebuilt): its child is seen.
    next = signal.next("mkdir app.slice");
    Deno.mkdirSync(dir(`${top}/app.slice`));
    await next;
    next = signal.next("mkdir the service");
    Deno.mkdirSync(dir(service));
    await next;
    assertEquals(watch.takeChanged(), true);

    // A service restart: rmdir and mkdir of its own cgroup.
    next = signal.next("rmdir the service");
    Deno.removeSync(dir(service));
    await next;
    next = signal.next("mkdir the service again");
    Deno.mkdirSync(dir(service));
    await next;

    // An ancestor recreated is a new inode: the watch must follow it, or this goes unseen.
    Deno.removeSync(dir(service));
    Deno.removeSync(dir(`${top}/app.slice`));
    next = signal.next("mkdir a recreated app.slice");
    Deno.mkdirSync(dir(`${top}/app.slice`));
    await next;
    watch.takeChanged();
    next = signal.next("mkdir the service in the recreated app.slice");
    Deno.mkdirSync(dir(service));
    await next;
    assertEquals(watch.takeChanged(), true);

    // Writes to the cgroup's files are not changes of the tree.
    await new Promise((r) => setTimeout(r, 100));
    watch.takeChanged();
    const before = signal.count;
    Deno.writeTextFileSync(`${dir(`${top}/app.slice`)}/cgroup.procs`, "");
    await new Promise((r) => setTimeout(r, 200));
    assertEquals(signal.count, before, "a write to cgroup.procs is not a tree change");
    assertEquals(watch.takeChanged(), false);
    assertEquals(errors, []);
  } finally {
    watch?.close();
    watch?.close();
    for (const p of [service, `${top}/app.slice`, top]) {
      try {
        Deno.removeSync(dir(p));
      } catch { /* not created */ }
    }
  }
});
