/**
 * Cgroup level calibration against the real kernel (root: `deno test -A
 * bpf/levels_test.ts`). Counting inside a cgroup namespace end to end is in
 * backends/ebpf_test.ts; here: the measurement on the host, and each way it refuses to guess.
 */

import { calibrateLevels, kernelAncestors } from "./levels.ts";
import { BackendError } from "../lib/errors.ts";
import {
  cgroupDir,
  cgroupId,
  cgroupLevel,
  findCgroup2Mount,
  removeCgroupDir,
} from "../lib/cgroup.ts";
import { assert, assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import { joinCgroup, ownCgroupPath } from "./packet_run.ts";

const isRoot = Deno.uid() === 0;
const DENO = Deno.execPath();

function throws(fn: () => unknown): BackendError {
  try {
    fn();
  } catch (e) {
    assert(e instanceof BackendError, `a BackendError, not ${e}`);
    return e;
  }
  throw new Error("did not throw");
}

Deno.test({
  name: "calibration on the host: offset 0, the kernel lists this cgroup's ancestors",
  ignore: !isRoot,
  sanitizeResources: false,
  fn() {
    const mount = findCgroup2Mount();
    const base = `/stb-netacct-test-${crypto.randomUUID().slice(0, 8)}`;
    const home = ownCgroupPath();
    const made = [base, `${base}/a`, `${base}/a/b`];
    for (const p of made) Deno.mkdirSync(cgroupDir(mount, p));
    try {
      joinCgroup(cgroupDir(mount, `${base}/a/b`));
      const ms: number[] = [];
      let c = null;
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        c = calibrateLevels(mount);
        ms.push(performance.now() - t0);
      }
      const ids = kernelAncestors();
      joinCgroup(cgroupDir(mount, home));
      // The first call includes opening libbpf (once per process, needed by start anyway).
      console.log(
        `calibration: first ${ms[0]?.toFixed(2)} ms, then ` +
          `${ms.slice(1).map((m) => m.toFixed(2)).join(", ")} ms`,
      );
      const depth = cgroupLevel(`${base}/a/b`);
      assertEquals(
        { offset: c!.offset, relative: c!.relative, absolute: c!.absolute, path: c!.path },
        { offset: 0, relative: depth, absolute: depth, path: `${base}/a/b` },
      );
      assertEquals(c!.id, cgroupId(mount, `${base}/a/b`));
      assertEquals(ids.slice(-3), made.map((p) => cgroupId(mount, p)), "ancestors by level");
      assertEquals(ids[0], cgroupId(mount, "/"), "level 0 is the root");
    } finally {
      joinCgroup(cgroupDir(mount, home));
      for (const p of made.reverse()) Deno.removeSync(cgroupDir(mount, p));
    }
  },
});

Deno.test({
  name: "calibration refuses a mount that does not show this process's cgroup",
  ignore: !isRoot,
  sanitizeResources: false,
  fn() {
    const missing = { mountPoint: "/nonexistent-stb-netacct-cgroup2", layout: "unified" as const };
    const e1 = throws(() => calibrateLevels(missing));
    assertStringIncludes(e1.message, `the cgroup2 mount "/nonexistent-stb-netacct-cgroup2"`);
    assertStringIncludes(e1.message, "mount cgroup2 from inside this namespace");
    // A directory that exists but is no cgroup: its inode is no ancestor of this process.
    const dir = Deno.makeTempDirSync({ prefix: "stb-netacct-notcg-" });
    try {
      const own = ownCgroupPath();
      if (own !== "/") Deno.mkdirSync(`${dir}${own}`, { recursive: true });
      const e2 = throws(() => calibrateLevels({ mountPoint: dir, layout: "hybrid" }));
      assertStringIncludes(e2.message, "is not among the ancestors the kernel reports");
      assertStringIncludes(e2.message, `the cgroup2 mount "${dir}" is not this process's`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "calibration refuses a process whose cgroup lies outside its cgroup namespace",
  ignore: !isRoot,
  async fn() {
    const mount = findCgroup2Mount();
    const base = `/stb-netacct-test-${crypto.randomUUID().slice(0, 8)}`;
    const made = [base, `${base}/ns`, `${base}/elsewhere`];
    for (const p of made) Deno.mkdirSync(cgroupDir(mount, p));
    try {
      // Unshare in <base>/ns, then move (by the old mount) to <base>/elsewhere, outside the
      // namespace's root: /proc/self/cgroup says "/../elsewhere".
      const code = `
        import { calibrateLevels } from ${
        JSON.stringify(new URL("./levels.ts", import.meta.url).href)
      };
        import { findCgroup2Mount } from ${
        JSON.stringify(new URL("../lib/cgroup.ts", import.meta.url).href)
      };
        try {
          calibrateLevels(findCgroup2Mount());
          console.log("calibrated");
        } catch (e) { console.log(e.name + ": " + e.message); }`;
      const out = await new Deno.Command("sh", {
        args: [
          "-c",
          'echo $$ > "$1/ns/cgroup.procs" && exec unshare --cgroup --mount --propagation ' +
          'private sh -c \'echo $$ > "$1/elsewhere/cgroup.procs" && umount "$2" && ' +
          'mount -t cgroup2 none "$2" && exec "$3" eval "$4"\' sh "$@"',
          "sh",
          cgroupDir(mount, base),
          mount.mountPoint,
          DENO,
          code,
        ],
        env: { DENO_NO_UPDATE_CHECK: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assertStringIncludes(text, "BackendError", new TextDecoder().decode(out.stderr));
      assertStringIncludes(text, `cgroup "/../elsewhere" lies outside its own cgroup namespace`);
    } finally {
      for (const p of made.reverse()) await removeCgroupDir(cgroupDir(mount, p));
    }
  },
});
