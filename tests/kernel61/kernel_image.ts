/**
 * What the lane needs to know about the files it boots, read from their bytes: where the xz
 * stream sits inside Debian's bzImage (cut out and decompressed, it is a vmlinux qemu can boot
 * through its PVH entry, which skips ~4.5 s of in-guest decompression under TCG), whether an
 * ELF file has that PVH entry, and whether it is statically linked (busybox as init).
 */

const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] as const;

/** Offset of the first xz stream in `bytes` (a bzImage), or -1. */
export function xzStreamOffset(bytes: Uint8Array): number {
  outer: for (let i = bytes.indexOf(XZ_MAGIC[0]); i >= 0; i = bytes.indexOf(XZ_MAGIC[0], i + 1)) {
    for (let j = 1; j < XZ_MAGIC.length; j++) if (bytes[i + j] !== XZ_MAGIC[j]) continue outer;
    return i;
  }
  return -1;
}

export interface ElfFacts {
  /** A PT_INTERP segment: dynamically linked. */
  interpreter: boolean;
  /** A Xen note of type XEN_ELFNOTE_PHYS32_ENTRY (18): qemu -kernel boots it via PVH. */
  pvhEntry: boolean;
}

const PT_INTERP = 3;
const PT_NOTE = 4;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Facts about a 64-bit little-endian ELF file; null when `bytes` is not one. */
export function elfFacts(bytes: Uint8Array): ElfFacts | null {
  if (
    bytes.length < 64 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c ||
    bytes[3] !== 0x46 || bytes[4] !== 2 || bytes[5] !== 1
  ) {
    return null;
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const phoff = Number(v.getBigUint64(0x20, true));
  const phentsize = v.getUint16(0x36, true);
  const phnum = v.getUint16(0x38, true);
  const facts: ElfFacts = { interpreter: false, pvhEntry: false };
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > bytes.length) return null;
    const type = v.getUint32(ph, true);
    if (type === PT_INTERP) facts.interpreter = true;
    if (type !== PT_NOTE) continue;
    const start = Number(v.getBigUint64(ph + 8, true));
    const end = Math.min(start + Number(v.getBigUint64(ph + 32, true)), bytes.length);
    for (let n = start; n + 12 <= end;) {
      const namesz = v.getUint32(n, true), descsz = v.getUint32(n + 4, true);
      const noteType = v.getUint32(n + 8, true);
      const name = new TextDecoder().decode(bytes.subarray(n + 12, n + 12 + namesz));
      if (name === "Xen\0" && noteType === XEN_ELFNOTE_PHYS32_ENTRY) facts.pvhEntry = true;
      n += 12 + align4(namesz) + align4(descsz);
    }
  }
  return facts;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
