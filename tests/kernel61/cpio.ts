/**
 * A cpio "newc" archive, the format the kernel unpacks as an initramfs. Written here rather
 * than with a cpio tool because the archive needs a /dev/console node (the kernel opens it for
 * init's stdio before anything mounts devtmpfs), which a tool copies only from a real node.
 */

export interface CpioEntry {
  /** Path inside the archive, without a leading slash, parents listed before children. */
  path: string;
  /** st_mode: type bits and permissions, e.g. 0o100755 for an executable file. */
  mode: number;
  data?: Uint8Array;
  /** Device number of a character or block device node. */
  rdev?: { major: number; minor: number };
}

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFCHR = 0o020000;

const encoder = new TextEncoder();

export function newcArchive(entries: CpioEntry[]): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (p: Uint8Array) => {
    parts.push(p);
    size += p.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      size += pad;
    }
  };
  const all = [...entries, { path: "TRAILER!!!", mode: 0 }];
  all.forEach((e, i) => {
    const data = e.data ?? new Uint8Array(0);
    const name = encoder.encode(`${e.path}\0`);
    const fields = [
      e.path === "TRAILER!!!" ? 0 : i + 1, // ino
      e.mode,
      0, // uid
      0, // gid
      (e.mode & 0o170000) === S_IFDIR ? 2 : 1, // nlink
      0, // mtime: the same inputs give the same bytes
      data.length,
      0, // devmajor
      0, // devminor
      e.rdev?.major ?? 0,
      e.rdev?.minor ?? 0,
      name.length,
      0, // check
    ];
    const header = "070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join("");
    // The name starts right after the 110-byte header; header + name are padded together.
    push(concat([encoder.encode(header), name]));
    if (data.length) push(data);
  });
  return concat(parts);
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
