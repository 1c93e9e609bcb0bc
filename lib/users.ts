/**
 * User lookup without libc's getpwnam (Deno has none): /etc/passwd is enough for the
 * local accounts that own counters.json. A name service user (LDAP) can be given by uid.
 */

export interface UserIds {
  uid: number;
  gid: number;
}

/** Finds `nameOrUid` in passwd text; a numeric uid not listed keeps gid = uid. */
export function parsePasswdUser(passwd: string, nameOrUid: string): UserIds | null {
  const numeric = /^[0-9]+$/.test(nameOrUid) ? Number(nameOrUid) : null;
  for (const line of passwd.split("\n")) {
    const f = line.split(":");
    if (f.length < 7) continue;
    const uid = Number(f[2]), gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    if (f[0] === nameOrUid || uid === numeric) return { uid, gid };
  }
  return numeric !== null ? { uid: numeric, gid: numeric } : null;
}

export function lookupUser(nameOrUid: string, passwdPath = "/etc/passwd"): UserIds | null {
  return parsePasswdUser(Deno.readTextFileSync(passwdPath), nameOrUid);
}
