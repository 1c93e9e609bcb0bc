/**
 * The BPF links of a loaded object's programs at the service cgroups, kept equal to the
 * cgroups that exist: a program linked at a cgroup runs for that cgroup's sockets and its
 * descendants' only, so packets and connects of every other cgroup run none of ours.
 *
 * One link per program per attach point (attachPoints: each present service cgroup that no
 * other present one contains, since a packet runs the programs of every ancestor it is
 * linked at and would count twice). `sync` links the points that are new (a service that
 * appeared, a recreated cgroup: a new id) and destroys the links of cgroups that went away
 * (a link on a removed cgroup is defunct). The programs still find the service by ancestor
 * id (bpf/targets.h), so counters stay per service whatever is linked where.
 *
 * With a pin directory the links are pinned there as `<cgroup id>-<program>` and outlive
 * the process; `adopt` takes over what an earlier run pinned, switching each link to this
 * object's program atomically (BPF_LINK_UPDATE: each packet runs the old program or the new,
 * never both, never neither) so nothing is attached twice.
 */

import { type Cgroup2Mount, cgroupDir, type ServiceTarget } from "../lib/cgroup.ts";
import { statAt } from "../lib/libc.ts";
import {
  cgroupLinkInfo,
  check,
  closeFd,
  errnoName,
  lib,
  LibbpfError,
  openDirectory,
  openPinned,
  pinObject,
} from "./libbpf.ts";

/** A loaded program to link: its name (also in pin names), fd and attach type. */
export interface LinkedProgram {
  name: string;
  fd: number;
  attachType: number;
}

/** A cgroup to link at: its id now and its path under the cgroup2 mount. */
export interface AttachPoint {
  id: bigint;
  path: string;
}

/**
 * Where the programs must be linked: each present target cgroup once, except one that
 * lies below another present target (the ancestor's links already run for it, and the
 * programs attribute its packets to the deepest target).
 */
export function attachPoints(targets: readonly ServiceTarget[]): AttachPoint[] {
  const present = new Map<bigint, string>();
  for (const t of targets) if (t.id !== null) present.set(t.id, t.path);
  const paths = [...present.values()];
  const out: AttachPoint[] = [];
  for (const [id, path] of present) {
    if (!paths.some((p) => p !== path && path.startsWith(p + "/"))) out.push({ id, path });
  }
  return out;
}

interface Link {
  fd: number;
  cgroupId: bigint;
  program: string;
  /** Its pin, when it has one. */
  pin: string | null;
}

export interface CgroupLinksOptions {
  mount: Cgroup2Mount;
  programs: LinkedProgram[];
  /** The object in errors, e.g. "the BPF object". */
  what: string;
  /** Where links are pinned (a directory in a bpffs); null: links die with this process. */
  pinDir: string | null;
  log: (message: string) => void;
}

export class CgroupLinks {
  readonly #o: CgroupLinksOptions;
  /** By `<cgroup id>/<program>`. */
  readonly #links = new Map<string, Link>();
  #pinFailureLogged = false;

  constructor(options: CgroupLinksOptions) {
    this.#o = options;
  }

  /** The cgroups linked now, by id. */
  get cgroups(): bigint[] {
    return [...new Set([...this.#links.values()].map((l) => l.cgroupId))];
  }

  /**
   * Takes over the links pinned in the pin directory: a live link of one of our programs
   * is switched to this object's program; a defunct one (its cgroup is gone) or a stranger
   * is unpinned. Returns how many links were taken over.
   */
  adopt(): number {
    const dir = this.#o.pinDir;
    if (dir === null) return 0;
    let adopted = 0;
    for (const name of pinNames(dir)) {
      const pin = `${dir}/${name}`;
      const fd = openPinned(pin);
      if (fd === null) continue;
      const program = this.#o.programs.find((p) => name.endsWith(`-${p.name}`));
      const info = cgroupLinkInfo(fd);
      if (!program || info.cgroupId === 0n || name !== `${info.cgroupId}-${program.name}`) {
        this.#destroy({ fd, cgroupId: info.cgroupId, program: program?.name ?? name, pin });
        continue;
      }
      const link = { fd, cgroupId: info.cgroupId, program: program.name, pin };
      const rc = lib().bpf_link_update(fd, program.fd, null);
      if (rc < 0) {
        this.#destroy(link);
        throw new LibbpfError(
          `Switching the pinned link "${pin}" to ${this.#o.what} failed with ` +
            `${errnoName(-rc)}: remove it (\`stb-netacct uninstall\`, or \`rm ${pin}\`)`,
          { errno: -rc, log: [] },
        );
      }
      this.#links.set(`${info.cgroupId}/${program.name}`, link);
      adopted++;
    }
    return adopted;
  }

  /**
   * Links every program at each point not linked yet, then destroys the links of cgroups
   * no longer among the points: a new ancestor is linked before its descendant's links go,
   * so no packet goes uncounted in between.
   */
  sync(points: readonly AttachPoint[]): void {
    const wanted = new Set<bigint>();
    for (const point of points) {
      const linked = this.#linkAt(point);
      if (linked !== null) wanted.add(linked);
    }
    for (const [key, link] of this.#links) {
      if (wanted.has(link.cgroupId)) continue;
      this.#links.delete(key);
      this.#destroy(link);
    }
  }

  /**
   * Links the programs at one cgroup; returns the id of the cgroup linked (the one the
   * directory holds now: recreated since its id was read, the new one), or null when it is
   * gone already (the cgroup watch reports that, and the next sync follows).
   */
  #linkAt(point: AttachPoint): bigint | null {
    const dir = cgroupDir(this.#o.mount, point.path);
    const fd = openDirectory(dir, { missingOk: true });
    if (fd === null) return null;
    try {
      const id = statAt(fd, "", dir)?.ino;
      if (id === undefined) return null;
      for (const program of this.#o.programs) {
        const key = `${id}/${program.name}`;
        if (this.#links.has(key)) continue;
        const linkFd = check(
          `Linking "${program.name}" of ${this.#o.what} to cgroup "${dir}"`,
          lib().bpf_link_create(program.fd, fd, program.attachType, null),
        );
        const link: Link = { fd: linkFd, cgroupId: id, program: program.name, pin: null };
        this.#links.set(key, link);
        this.#pin(link);
      }
      return id;
    } finally {
      closeFd(fd);
    }
  }

  /** Pins a new link; a failure is logged once and the link lives unpinned. */
  #pin(link: Link): void {
    if (this.#o.pinDir === null) return;
    const path = `${this.#o.pinDir}/${link.cgroupId}-${link.program}`;
    try {
      pinObject(link.fd, path);
      link.pin = path;
    } catch (e) {
      if (this.#pinFailureLogged) return;
      this.#pinFailureLogged = true;
      this.#o.log(
        `cannot pin the link of "${link.program}" at "${path}" (${(e as Error).message}): ` +
          "it stays linked while this run lives, and traffic while no run lives is not counted",
      );
    }
  }

  /** Unpins and detaches a link now, then closes it. */
  #destroy(link: Link): void {
    if (link.pin !== null) removePin(link.pin);
    // Detached even if another process holds the link; a defunct link has nothing to detach.
    lib().bpf_link_detach(link.fd);
    closeFd(link.fd);
  }

  /**
   * Ends every link: `keep` closes only this process's fds (pinned links stay linked, the
   * next run adopts them), else they are unpinned and detached. Safe to call twice.
   */
  close(keep: boolean): unknown[] {
    const errors: unknown[] = [];
    for (const link of [...this.#links.values()].reverse()) {
      try {
        if (keep && link.pin !== null) closeFd(link.fd);
        else this.#destroy(link);
      } catch (e) {
        errors.push(e);
      }
    }
    this.#links.clear();
    return errors;
  }
}

/** The names in a pin directory; none when it does not exist. */
function pinNames(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** Removes a pin (the object lives on while an fd holds it); gone already is fine. */
export function removePin(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
