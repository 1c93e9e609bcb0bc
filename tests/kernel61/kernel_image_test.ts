/**
 * kernel_image.ts on hand-made ELF files (program headers and notes laid out as in a vmlinux)
 * and, when present, on this machine's static busybox and a dynamic binary.
 */

import { assertEquals } from "../../lib/test_assert.ts";
import { elfFacts, xzStreamOffset } from "./kernel_image.ts";

/** An ELF64 LE file with the given program headers: [p_type, segment bytes]. */
function elf(segments: [number, Uint8Array][]): Uint8Array {
  const phoff = 64, phentsize = 56;
  let at = phoff + phentsize * segments.length;
  const size = at + segments.reduce((n, [, d]) => n + d.length, 0);
  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setBigUint64(0x20, BigInt(phoff), true);
  v.setUint16(0x36, phentsize, true);
  v.setUint16(0x38, segments.length, true);
  segments.forEach(([type, data], i) => {
    const ph = phoff + i * phentsize;
    v.setUint32(ph, type, true);
    v.setBigUint64(ph + 8, BigInt(at), true);
    v.setBigUint64(ph + 32, BigInt(data.length), true);
    bytes.set(data, at);
    at += data.length;
  });
  return bytes;
}

/** One ELF note: namesz, descsz, type, name and desc each padded to 4 bytes. */
function note(name: string, type: number, desc: number[]): Uint8Array {
  const n = new TextEncoder().encode(`${name}\0`);
  const pad = (x: number) => (x + 3) & ~3;
  const out = new Uint8Array(12 + pad(n.length) + pad(desc.length));
  const v = new DataView(out.buffer);
  v.setUint32(0, n.length, true);
  v.setUint32(4, desc.length, true);
  v.setUint32(8, type, true);
  out.set(n, 12);
  out.set(desc, 12 + pad(n.length));
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("elfFacts finds the Xen PHYS32_ENTRY note among others (PVH boot)", () => {
  const notes = concat(
    note("Xen", 6, [0x6c, 0x69, 0x6e, 0x75, 0x78, 0]), // GUEST_OS "linux"
    note("GNU", 18, [1, 2, 3, 4]), // type 18 under another name is not it
    note("Xen", 18, [0x50, 0x08, 0, 1, 0, 0, 0, 0]),
  );
  assertEquals(elfFacts(elf([[1, new Uint8Array(16)], [4, notes]])), {
    interpreter: false,
    pvhEntry: true,
  });
  assertEquals(elfFacts(elf([[4, note("GNU", 18, [1, 2, 3, 4])]])), {
    interpreter: false,
    pvhEntry: false,
  });
});

Deno.test("elfFacts tells a dynamic binary (PT_INTERP) and refuses what is no ELF64", () => {
  const interp = new TextEncoder().encode("/lib64/ld-linux-x86-64.so.2\0");
  assertEquals(elfFacts(elf([[3, interp]]))?.interpreter, true);
  assertEquals(elfFacts(new TextEncoder().encode("#!/bin/sh\n".padEnd(80))), null);
  const elf32 = elf([]);
  elf32[4] = 1;
  assertEquals(elfFacts(elf32), null);
  // Program headers past the end: not a file to trust.
  const cut = elf([[4, note("Xen", 18, [0, 0, 0, 0])]]).subarray(0, 80);
  assertEquals(elfFacts(cut), null);
});

Deno.test("elfFacts on this machine: static busybox, dynamic sh", () => {
  const read = (p: string) => {
    try {
      return Deno.readFileSync(p);
    } catch {
      return null;
    }
  };
  const busybox = read("/bin/busybox");
  if (busybox) assertEquals(elfFacts(busybox)?.interpreter, false, "busybox-static");
  const sh = read(Deno.execPath());
  if (sh) assertEquals(elfFacts(sh)?.interpreter, true, "deno is dynamically linked");
});

Deno.test("xzStreamOffset finds the xz magic after false starts", () => {
  const magic = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
  const bytes = new Uint8Array(100);
  bytes.set([0xfd, 0x37, 0x7a], 10); // a partial magic
  bytes.set(magic, 40);
  assertEquals(xzStreamOffset(bytes), 40);
  assertEquals(xzStreamOffset(new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a])), -1);
});
