import { assert, assertEquals } from "./test_assert.ts";
import { osError, pathInfo } from "./libc.ts";

Deno.test("pathInfo: type and inode as lstat/stat see them, null when nothing is there", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/file`, "x");
    Deno.symlinkSync(`${dir}/file`, `${dir}/link`);
    const file = pathInfo(`${dir}/file`)!;
    assertEquals([file.isFile, file.isDirectory], [true, false]);
    assertEquals(file.ino, BigInt(Deno.statSync(`${dir}/file`).ino!));
    assertEquals(pathInfo(dir)?.isDirectory, true);
    // Followed, the link is the file; not followed, it is neither a file nor a directory.
    assertEquals(pathInfo(`${dir}/link`)?.ino, file.ino);
    const link = pathInfo(`${dir}/link`, false)!;
    assertEquals([link.isFile, link.isDirectory], [false, false]);
    assertEquals(link.ino, BigInt(Deno.lstatSync(`${dir}/link`).ino!));
    assertEquals(pathInfo(`${dir}/missing`), null);
    assertEquals(pathInfo(`${dir}/file/below`), null); // ENOTDIR
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("osError: Deno's error classes and wording, with the failed call named", () => {
  const e = osError(2, "open '/x'");
  assert(e instanceof Deno.errors.NotFound);
  assertEquals(e.message, "No such file or directory (os error 2): open '/x'");
  assert(osError(17, "x") instanceof Deno.errors.AlreadyExists);
  assert(osError(13, "x") instanceof Deno.errors.PermissionDenied);
  assert(osError(1, "x") instanceof Deno.errors.PermissionDenied);
  assert(osError(20, "x") instanceof Deno.errors.NotADirectory);
  assertEquals(
    osError(28, "write '/t'").message,
    "No space left on device (os error 28): write '/t'",
  );
});
