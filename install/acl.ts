/**
 * One POSIX ACL entry on a directory: how install lets the service's static group write
 * the Prometheus textfile directory (root's, mode 0755, on Debian) without giving the
 * service CAP_DAC_OVERRIDE or changing the directory's owner or mode.
 *
 * The directory is reached by openat(O_NOFOLLOW) one component at a time and changed
 * through that descriptor, so a user who owns a parent (prometheus owns
 * /var/lib/prometheus) cannot swap in a symlink and steer the grant elsewhere.
 *
 * The ACL is the kernel's xattr format (linux/posix_acl_xattr.h): version 2, then
 * entries {u16 tag, u16 perm, u32 id}, sorted by tag and, within named entries, by id.
 */

import { cString, errno, libc, O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, osError } from "../lib/libc.ts";

const SYMBOLS = {
  // int openat(int dirfd /* i32 */, const char *path /* buffer */, int flags /* i32 */,
  //            mode_t mode /* u32 */)
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  // ssize_t fgetxattr(int fd /* i32 */, const char *name /* buffer */, void *value /* buffer */,
  //                   size_t size /* usize */)
  fgetxattr: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  // int fsetxattr(int fd /* i32 */, const char *name /* buffer */, const void *value /* buffer */,
  //               size_t size /* usize */, int flags /* i32 */)
  fsetxattr: { parameters: ["i32", "buffer", "buffer", "usize", "i32"], result: "i32" },
} as const;

let library: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;
function calls(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  library ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return library.symbols;
}

export const ACL_USER_OBJ = 0x01, ACL_USER = 0x02, ACL_GROUP_OBJ = 0x04, ACL_GROUP = 0x08;
export const ACL_MASK = 0x10, ACL_OTHER = 0x20;
const ACL_UNDEFINED_ID = 0xffffffff;
const XATTR_VERSION = 2;
const XATTR_NAME = "system.posix_acl_access";
const ENODATA = 61;
const O_RDONLY = 0;

export interface AclEntry {
  tag: number;
  perm: number;
  /** uid or gid of a named entry; ACL_UNDEFINED_ID for the others. */
  id: number;
}

export class AclError extends Error {
  override name = "AclError";
}

export function decodeAcl(bytes: Uint8Array): AclEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 || (bytes.length - 4) % 8 !== 0 || view.getUint32(0, true) !== 2) {
    throw new AclError(`Not a version 2 POSIX ACL (${bytes.length} bytes)`);
  }
  const entries: AclEntry[] = [];
  for (let off = 4; off < bytes.length; off += 8) {
    entries.push({
      tag: view.getUint16(off, true),
      perm: view.getUint16(off + 2, true),
      id: view.getUint32(off + 4, true),
    });
  }
  return entries;
}

export function encodeAcl(entries: AclEntry[]): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(4 + 8 * entries.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, XATTR_VERSION, true);
  entries.forEach((e, i) => {
    view.setUint16(4 + 8 * i, e.tag, true);
    view.setUint16(6 + 8 * i, e.perm, true);
    view.setUint32(8 + 8 * i, e.id, true);
  });
  return bytes;
}

/** The ACL a plain mode stands for: owner, group and others. */
export function aclFromMode(mode: number): AclEntry[] {
  return [
    { tag: ACL_USER_OBJ, perm: (mode >> 6) & 7, id: ACL_UNDEFINED_ID },
    { tag: ACL_GROUP_OBJ, perm: (mode >> 3) & 7, id: ACL_UNDEFINED_ID },
    { tag: ACL_OTHER, perm: mode & 7, id: ACL_UNDEFINED_ID },
  ];
}

/**
 * In the kernel's order, with the mask setfacl would compute (the union of the group
 * class), or none when no named entry needs one: then the kernel keeps only the mode.
 */
function normalise(entries: AclEntry[]): AclEntry[] {
  const rest = entries.filter((e) => e.tag !== ACL_MASK);
  const named = rest.some((e) => e.tag === ACL_USER || e.tag === ACL_GROUP);
  const groupClass = rest.filter((e) => e.tag & (ACL_USER | ACL_GROUP_OBJ | ACL_GROUP));
  const mask = groupClass.reduce((m, e) => m | e.perm, 0);
  const all = named ? [...rest, { tag: ACL_MASK, perm: mask, id: ACL_UNDEFINED_ID }] : rest;
  return all.sort((a, b) => a.tag - b.tag || a.id - b.id);
}

/** `entries` with group `gid` given `perm` (rwx = 7), replacing an entry it had. */
export function withGroup(entries: AclEntry[], gid: number, perm: number): AclEntry[] {
  const others = entries.filter((e) => !(e.tag === ACL_GROUP && e.id === gid));
  return normalise([...others, { tag: ACL_GROUP, perm, id: gid }]);
}

/** `entries` without group `gid`'s entry. */
export function withoutGroup(entries: AclEntry[], gid: number): AclEntry[] {
  return normalise(entries.filter((e) => !(e.tag === ACL_GROUP && e.id === gid)));
}

/** Whether group `gid` may do all of `perm` through the ACL (its entry, within the mask). */
export function groupMay(entries: AclEntry[], gid: number, perm: number): boolean {
  const own = entries.find((e) => e.tag === ACL_GROUP && e.id === gid);
  const mask = entries.find((e) => e.tag === ACL_MASK);
  return own !== undefined && (own.perm & perm) === perm &&
    (mask === undefined || (mask.perm & perm) === perm);
}

/** A directory held open, reached without following any symlink. */
export class HeldDirectory {
  private constructor(readonly path: string, readonly fd: number) {}

  /** Null when the directory (or a component) does not exist; throws on a symlink. */
  static open(path: string): HeldDirectory | null {
    if (!path.startsWith("/")) throw new AclError(`${JSON.stringify(path)} is not absolute`);
    const flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    let fd = libc().open(cString("/"), flags, 0);
    if (fd < 0) throw osError(errno(), "open '/'");
    for (const part of path.split("/").filter((p) => p !== "")) {
      const next = calls().openat(fd, cString(part), flags, 0);
      const err = next < 0 ? errno() : 0;
      libc().close(fd);
      if (next >= 0) {
        fd = next;
        continue;
      }
      if (err === 2) return null; // ENOENT
      if (err === 40 || err === 20) { // ELOOP, ENOTDIR: a symlink or a file on the way
        throw new AclError(
          `${JSON.stringify(path)} goes through ${JSON.stringify(part)}, which is a symlink ` +
            `or not a directory: make it a real directory (install never follows links there)`,
        );
      }
      throw osError(err, `open '${path}'`);
    }
    return new HeldDirectory(path, fd);
  }

  /** The access ACL, or the one its mode stands for when it has none. */
  acl(): AclEntry[] {
    const buf = new Uint8Array(4 + 8 * 64);
    const n = Number(calls().fgetxattr(this.fd, cString(XATTR_NAME), buf, BigInt(buf.length)));
    if (n >= 0) return decodeAcl(buf.subarray(0, n));
    const err = errno();
    if (err !== ENODATA) throw osError(err, `read the ACL of '${this.path}'`);
    // The descriptor's own inode, whatever its path names now.
    return aclFromMode(Deno.statSync(`/proc/self/fd/${this.fd}`).mode ?? 0);
  }

  setAcl(entries: AclEntry[]): void {
    const bytes = encodeAcl(entries);
    if (calls().fsetxattr(this.fd, cString(XATTR_NAME), bytes, BigInt(bytes.length), 0) < 0) {
      throw osError(errno(), `set the ACL of '${this.path}'`);
    }
  }

  close(): void {
    libc().close(this.fd);
  }
}
