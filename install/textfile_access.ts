/**
 * Write access to the Prometheus textfile directory for the installed service. The service
 * is a dynamic user without CAP_DAC_OVERRIDE, and node-exporter's directory is root's
 * (0755), so ReadWritePaths= alone is not enough: install creates the system group
 * TEXTFILE_GROUP, the unit adds it to the service (SupplementaryGroups=), and the
 * directory gets one ACL entry for that group (acl.ts). uninstall takes both away again.
 */

import { runCommand, SystemError } from "./system.ts";
import { ACL_GROUP, groupMay, HeldDirectory, withGroup, withoutGroup } from "./acl.ts";
import { TEXTFILE_GROUP } from "./unit.ts";

const RWX = 7;

/** The gid of `name` in group(5) text, or null. */
export function parseGroupId(groupText: string, name: string): number | null {
  for (const line of groupText.split("\n")) {
    const f = line.split(":");
    if (f.length >= 3 && f[0] === name && /^[0-9]+$/.test(f[2] ?? "")) return Number(f[2]);
  }
  return null;
}

export function textfileGroupId(groupPath = "/etc/group"): number | null {
  return parseGroupId(Deno.readTextFileSync(groupPath), TEXTFILE_GROUP);
}

/** Creates the system group (groupadd, Debian's passwd package); returns its gid. */
export async function createTextfileGroup(): Promise<number> {
  const r = await runCommand(["groupadd", "--system", TEXTFILE_GROUP]);
  const gid = textfileGroupId();
  if (gid === null) {
    throw new SystemError(
      `Cannot create the group ${TEXTFILE_GROUP} (groupadd: ${r.stderr.trim() || r.code}): ` +
        `create it with \`groupadd --system ${TEXTFILE_GROUP}\`, then install again`,
    );
  }
  return gid;
}

export async function removeTextfileGroup(): Promise<boolean> {
  if (textfileGroupId() === null) return false;
  const r = await runCommand(["groupdel", TEXTFILE_GROUP]);
  if (r.code !== 0) {
    throw new SystemError(`Cannot remove the group ${TEXTFILE_GROUP}: ${r.stderr.trim()}`);
  }
  return true;
}

/** `fn` on `dir` held open (acl.ts), or `absent` when there is no such directory. */
function withDirectory<T>(dir: string, absent: T, fn: (held: HeldDirectory) => T): T {
  const held = HeldDirectory.open(dir);
  if (!held) return absent;
  try {
    return fn(held);
  } finally {
    held.close();
  }
}

/** "absent": no such directory (yet); else whether the group may write it. */
export function grantState(dir: string, gid: number | null): "absent" | "granted" | "missing" {
  return withDirectory(
    dir,
    "absent",
    (held) => gid !== null && groupMay(held.acl(), gid, RWX) ? "granted" : "missing",
  );
}

/** Gives group `gid` rwx on `dir`; false when the directory does not exist. */
export function grantDirectory(dir: string, gid: number): boolean {
  return withDirectory(dir, false, (held) => {
    held.setAcl(withGroup(held.acl(), gid, RWX));
    return true;
  });
}

/** Takes group `gid`'s entry away from `dir`'s ACL; false when there was none. */
export function revokeDirectory(dir: string, gid: number): boolean {
  return withDirectory(dir, false, (held) => {
    const acl = held.acl();
    if (!acl.some((e) => e.tag === ACL_GROUP && e.id === gid)) return false;
    held.setAcl(withoutGroup(acl, gid));
    return true;
  });
}
