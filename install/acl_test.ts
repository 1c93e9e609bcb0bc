import {
  ACL_GROUP,
  ACL_GROUP_OBJ,
  ACL_MASK,
  ACL_OTHER,
  ACL_USER,
  ACL_USER_OBJ,
  AclError,
  aclFromMode,
  decodeAcl,
  encodeAcl,
  groupMay,
  HeldDirectory,
  withGroup,
  withoutGroup,
} from "./acl.ts";
import { grantDirectory, grantState, parseGroupId, revokeDirectory } from "./textfile_access.ts";
import { assert, assertEquals, assertThrows } from "../lib/test_assert.ts";

const U = 0xffffffff;

Deno.test("acl: the kernel's xattr bytes round-trip", () => {
  // setfacl -m g:4242:rwx on a 0755 directory, as getfattr -e hex shows it.
  const hex = "02000000" + "01000700ffffffff" + "04000500ffffffff" + "08000700" + "92100000" +
    "10000700ffffffff" + "20000500ffffffff";
  const bytes = new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));
  const entries = decodeAcl(bytes);
  assertEquals(entries, [
    { tag: ACL_USER_OBJ, perm: 7, id: U },
    { tag: ACL_GROUP_OBJ, perm: 5, id: U },
    { tag: ACL_GROUP, perm: 7, id: 4242 },
    { tag: ACL_MASK, perm: 7, id: U },
    { tag: ACL_OTHER, perm: 5, id: U },
  ]);
  assertEquals(encodeAcl(entries), bytes);
  assertEquals(withGroup(aclFromMode(0o755), 4242, 7), entries);
  assertThrows(() => decodeAcl(new Uint8Array([1, 0, 0, 0])), AclError, "version 2");
});

Deno.test("acl: grant keeps others' entries in order, revoke leaves the plain mode", () => {
  const base = withGroup(
    [...aclFromMode(0o750), { tag: ACL_USER, perm: 4, id: 1000 }],
    100,
    5,
  );
  const granted = withGroup(base, 50, 7);
  assertEquals(granted.map((e) => [e.tag, e.id === U ? -1 : e.id, e.perm]), [
    [ACL_USER_OBJ, -1, 7],
    [ACL_USER, 1000, 4],
    [ACL_GROUP_OBJ, -1, 5],
    [ACL_GROUP, 50, 7],
    [ACL_GROUP, 100, 5],
    [ACL_MASK, -1, 7],
    [ACL_OTHER, -1, 0],
  ]);
  assert(groupMay(granted, 50, 7));
  assert(!groupMay(granted, 100, 7));
  assert(
    !groupMay([...granted.filter((e) => e.tag !== ACL_MASK), { ...granted[5]!, perm: 5 }], 50, 7),
  );
  assertEquals(withoutGroup(granted, 50), base);
  assertEquals(withoutGroup(withGroup(aclFromMode(0o755), 9, 7), 9), aclFromMode(0o755));
});

Deno.test("groups: the gid of a name in group(5)", () => {
  const text = "root:x:0:\nstb-netacct-textfile:x:997:\nprometheus:x:106:\n";
  assertEquals(parseGroupId(text, "stb-netacct-textfile"), 997);
  assertEquals(parseGroupId(text, "stb-netacct"), null);
});

/** Whether uid 65534 in `groups` may create a file in `dir` (a real write, as the service). */
async function mayCreate(dir: string, groups: number[]): Promise<boolean> {
  const o = await new Deno.Command("setpriv", {
    args: [
      "--reuid=65534",
      "--regid=65534",
      groups.length ? `--groups=${groups.join(",")}` : "--clear-groups",
      "--inh-caps=-all",
      "touch",
      `${dir}/probe`,
    ],
    stderr: "null",
  }).output();
  await Deno.remove(`${dir}/probe`).catch(() => {});
  return o.success;
}

Deno.test({
  name: "textfile access: the group may write exactly while granted, the mode comes back",
  ignore: Deno.uid() !== 0,
  async fn() {
    const top = await Deno.makeTempDir({ prefix: "stb-acl-" });
    const gid = 4000 + Math.floor(Math.random() * 1000);
    try {
      await Deno.chmod(top, 0o755);
      const dir = `${top}/node-exporter`;
      await Deno.mkdir(dir, { mode: 0o755 });
      await Deno.chmod(dir, 0o755);
      assertEquals(grantState(dir, gid), "missing");
      assert(!(await mayCreate(dir, [gid])), "no write before the grant");
      assert(grantDirectory(dir, gid));
      assertEquals(grantState(dir, gid), "granted");
      assert(await mayCreate(dir, [gid]), "the group writes once granted");
      assert(!(await mayCreate(dir, [])), "nobody else does");
      assertEquals((await Deno.stat(dir)).uid, 0, "the owner stays");
      assert(revokeDirectory(dir, gid));
      assert(!revokeDirectory(dir, gid), "a second revoke finds nothing");
      assert(!(await mayCreate(dir, [gid])), "no write after the revoke");
      assertEquals((await Deno.stat(dir)).mode! & 0o7777, 0o755);
      assertEquals(grantState(`${top}/absent`, gid), "absent");
      assert(!grantDirectory(`${top}/absent`, gid));
    } finally {
      await Deno.remove(top, { recursive: true });
    }
  },
});

Deno.test({
  name: "textfile access: a symlink anywhere on the path is refused, not followed",
  ignore: Deno.uid() !== 0,
  async fn() {
    const top = await Deno.makeTempDir({ prefix: "stb-acl-link-" });
    try {
      await Deno.mkdir(`${top}/target/sub`, { recursive: true, mode: 0o755 });
      await Deno.chmod(`${top}/target/sub`, 0o755);
      await Deno.symlink(`${top}/target`, `${top}/swapped`);
      await Deno.symlink(`${top}/target/sub`, `${top}/last`);
      for (const p of [`${top}/swapped/sub`, `${top}/last`]) {
        assertThrows(() => grantDirectory(p, 4242), AclError, "symlink");
      }
      assertEquals((await Deno.stat(`${top}/target/sub`)).mode! & 0o7777, 0o755, "untouched");
      const held = HeldDirectory.open(`${top}/target/sub`);
      assert(held !== null);
      assertEquals(held.acl(), aclFromMode(0o755));
      held.close();
    } finally {
      await Deno.remove(top, { recursive: true });
    }
  },
});
