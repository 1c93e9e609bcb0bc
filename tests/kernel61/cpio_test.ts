/**
 * newcArchive: byte layout checked by hand, then read back by busybox cpio (the same reader
 * family as the kernel's unpacker) when busybox is installed.
 */

import { assertEquals } from "../../lib/test_assert.ts";
import { newcArchive, S_IFCHR, S_IFDIR, S_IFREG } from "./cpio.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("newcArchive: headers, 4-byte alignment, device numbers, trailer", () => {
  const archive = newcArchive([
    { path: "dev", mode: S_IFDIR | 0o755 },
    { path: "dev/console", mode: S_IFCHR | 0o600, rdev: { major: 5, minor: 1 } },
    { path: "init", mode: S_IFREG | 0o755, data: new TextEncoder().encode("#!/bin/sh\n") },
  ]);
  assertEquals(archive.length % 4, 0);
  const s = text(archive);
  // dev: header (110) + "dev\0" = 114, padded to 116.
  assertEquals(s.slice(0, 6), "070701");
  assertEquals(s.slice(110, 113), "dev");
  const console = s.slice(116, 116 + 110);
  const field = (h: string, i: number) => parseInt(h.slice(6 + 8 * i, 14 + 8 * i), 16);
  assertEquals(field(console, 1), S_IFCHR | 0o600, "mode");
  assertEquals([field(console, 9), field(console, 10)], [5, 1], "rdevmajor, rdevminor");
  assertEquals(field(console, 11), "dev/console\0".length, "namesize");
  const init = s.indexOf("070701", 116 + 110);
  assertEquals(field(s.slice(init), 6), 10, "filesize");
  assertEquals(init % 4, 0);
  assertEquals(s.includes("TRAILER!!!\0"), true);
});

Deno.test("newcArchive is read back by busybox cpio", async () => {
  const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  if (!busybox) return; // test-only package; the layout test above still ran
  const data = new Uint8Array(1001).map((_, i) => i % 251);
  const archive = newcArchive([
    { path: "lib", mode: S_IFDIR | 0o755 },
    { path: "lib/a.ko", mode: S_IFREG | 0o644, data },
    { path: "init", mode: S_IFREG | 0o755, data: new TextEncoder().encode("x") },
  ]);
  const dir = await Deno.makeTempDir({ prefix: "stb-cpio-test-" });
  try {
    const child = new Deno.Command(busybox, {
      args: ["cpio", "-i", "-d"],
      cwd: dir,
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(archive);
    await w.close();
    const out = await child.output();
    assertEquals(out.code, 0, text(out.stderr));
    assertEquals(await Deno.readFile(`${dir}/lib/a.ko`), data);
    assertEquals((await Deno.stat(`${dir}/init`)).mode! & 0o777, 0o755);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
