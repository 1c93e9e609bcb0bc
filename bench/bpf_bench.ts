/**
 * ns per packet of netacct's cgroup_skb programs, by BPF_PROG_TEST_RUN with a large repeat
 * count, next to two floors from bench/trivial.bpf.o measured the same way: `floor` (a
 * return-1 cgroup_skb program) and `floor_ancestor` (one bpf_skb_ancestor_cgroup_id call,
 * the least any cgroup-matching program attached at the root pays). Root only:
 *
 *   deno run -A bench/bpf_bench.ts [OUT.json] [--repeat N] [--rounds N] [--services N]
 *
 * The programs are loaded by the real EbpfBackend (--services services at one cgroup depth:
 * one real target cgroup, the rest made-up ids, 3 by default as in the user's config), with
 * the default exclusions plus two longer than /16 (EXTRA_EXCLUDE), since the defaults leave
 * no IPv4 address and only 0000::/16 to the trie. Test runs tag the packet with the calling
 * process's cgroup (see bpf/packet_run.ts), so this process moves itself between
 * cgroups of the same depth:
 *   counted   — in the target cgroup, external remote address whose first 16 bits no
 *               excluded prefix longer than /16 starts with (198.51.100.7, 3fff::7; all
 *               public addresses with the defaults): judged by the verdict table, counted;
 *   counted_trie — the same with an external address whose first 16 bits such a prefix
 *               shares (203.0.5.7 beside 203.0.113.0/24, 2001:dead::7 beside
 *               2001:db8::/32): pays the LPM trie lookup too, the slowest counted packet;
 *   excluded  — in the target cgroup, internal remote address the table settles (192.168.x,
 *               fd00::): not counted;
 *   excluded_trie — internal only by the trie's answer (203.0.113.7, 2001:db8::7);
 *   uncounted — in a sibling cgroup whose id's bucket holds no target (with the
 *               programs linked at the service cgroups only a cgroup below one that
 *               is no target, for a moment, meets this; other cgroups run nothing);
 *   uncounted_bucket_hit — in a sibling whose id shares the target's bucket (1 in
 *               ID_BUCKETS non-StB cgroups per target): pays one id comparison that misses.
 *   counted_skip_ifs — `counted` with a full excluded-interface set (exclude_interfaces:
 *               MAX_SKIP_IFS ifindexes, none the packet's): the most the interface check
 *               adds to a packet; without exclude_interfaces (`counted`) it is one load.
 *   excluded_interface — the packet's own ifindex last in a full set: not counted.
 * Every case checks the counters moved exactly as the path implies, and that the verdict
 * table holds for its remote address the verdict its path needs (bpf/netacct_abi.ts prefixVerdicts,
 * what the backend writes), so a figure can not come from a path other than the one its row
 * names. Cases are interleaved round by round and the median is reported; "over floor" is
 * the median over rounds of the case minus the floor run right before it (paired, so the
 * VM's drift between cases cancels), and the targets are judged on it in the same run:
 * counted <= floor + 25 ns (verdict table), counted_trie <= floor + 35 ns (LPM trie).
 */

import { median } from "./stats.ts";
import { EbpfBackend } from "../backends/ebpf.ts";
import {
  craftPacket,
  joinCgroup,
  nonLoopbackIfindex,
  ownCgroupPath,
  testRun,
} from "../bpf/packet_run.ts";
import { check, checkPointer, cString, lib } from "../bpf/libbpf.ts";
import {
  ASK_TRIE,
  bucketOf as bucketUnder,
  chooseBucketMul,
  EXTERNAL,
  FIRST_BUCKET_MUL,
  ID_BUCKETS,
  INTERNAL,
  MAX_SERVICES,
  MAX_SKIP_IFS,
  prefixVerdicts,
  verdictKey,
} from "../bpf/netacct_abi.ts";
import { type Cgroup2Mount, cgroupDir, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { DEFAULT_EXCLUDE, parseCidr, parseIpv4, parseIpv6 } from "../lib/cidr.ts";

/**
 * The targets, restated against the floor measured in the same run (the VM's floor moves
 * between 19 and 37 ns from day to day, so absolute ns are not comparable between runs): a
 * counted packet may add this much over a return-1 program, judged by the 16-bit verdict
 * table (every address with the default exclusions but 0000::/16), or also by the LPM trie
 * (an address a user exclusion longer than /16 starts near). A packet of another cgroup
 * runs none of the programs (bench/outsider_cost.ts), so it has no ns target here.
 */
export const TARGET_TABLE_OVER_FLOOR_NS = 25;
export const TARGET_TRIE_OVER_FLOOR_NS = 35;

/** Slices of each case's repetitions, each paired with a slice of the floor. */
const CHUNKS = 10;

/** Longer than /16, so that some addresses (and only those) ask the trie. */
const EXTRA_EXCLUDE = ["203.0.113.0/24", "2001:db8::/32"];

type Path =
  | "floor"
  | "floor_ancestor"
  | "counted"
  | "counted_trie"
  | "excluded"
  | "excluded_trie"
  | "uncounted"
  | "uncounted_bucket_hit"
  | "counted_skip_ifs"
  | "excluded_interface";
type Family = "ipv4" | "ipv6";

interface Case {
  program: "trivial" | "trivial_ancestor" | "ingress" | "egress";
  family: Family;
  path: Path;
  kernelNs: number[];
  wallNs: number[];
  /** The floor measured right before each of this case's rounds (same family and frame). */
  floorNs: number[];
}

function parseArgs(args: string[]) {
  let out: string | null = null, repeat = 5_000_000, rounds = 5, services = 3;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!; // i < args.length
    if (a === "--repeat") repeat = Number(args[++i]);
    else if (a === "--rounds") rounds = Number(args[++i]);
    else if (a === "--services") services = Number(args[++i]);
    else if (a === "--help" || a === "-h") {
      console.log(
        "usage: deno run -A bench/bpf_bench.ts [OUT.json] [--repeat N] [--rounds N] " +
          `[--services N]\n  defaults: --repeat 5000000 --rounds 5 --services 3 (1 to ${MAX_SERVICES})`,
      );
      Deno.exit(0);
    } else if (!a.startsWith("-") && out === null) out = a;
    else {
      console.error(`bpf_bench: unknown argument "${a}": see --help`);
      Deno.exit(2);
    }
  }
  if (!(Number.isInteger(repeat) && repeat > 0 && repeat <= 2 ** 31 - 1)) {
    console.error(`bpf_bench: --repeat "${repeat}" must be a whole number from 1 to 2^31-1`);
    Deno.exit(2);
  }
  if (!(Number.isInteger(rounds) && rounds > 0)) {
    console.error(`bpf_bench: --rounds "${rounds}" must be a whole number above 0`);
    Deno.exit(2);
  }
  if (!(Number.isInteger(services) && services >= 1 && services <= MAX_SERVICES)) {
    console.error(
      `bpf_bench: --services "${services}" must be a whole number from 1 to ${MAX_SERVICES}`,
    );
    Deno.exit(2);
  }
  return { out, repeat, rounds, services };
}

interface Floors {
  trivial: number;
  trivial_ancestor: number;
  close: () => void;
}

/** The floor programs, loaded on their own (never attached). */
async function loadFloors(): Promise<Floors> {
  const b = lib();
  const bytes = await Deno.readFile(new URL("./trivial.bpf.o", import.meta.url));
  const obj = checkPointer(
    "Opening bench/trivial.bpf.o",
    b.bpf_object__open_mem(bytes, BigInt(bytes.length), null),
  );
  try {
    check("Loading bench/trivial.bpf.o", b.bpf_object__load(obj));
    const fd = (name: string) => {
      const prog = checkPointer(
        `Finding program "${name}"`,
        b.bpf_object__find_program_by_name(obj, cString(name)),
      );
      return check(`Getting the fd of "${name}"`, b.bpf_program__fd(prog));
    };
    return {
      trivial: fd("trivial"),
      trivial_ancestor: fd("trivial_ancestor"),
      close: () => b.bpf_object__close(obj),
    };
  } catch (e) {
    b.bpf_object__close(obj);
    throw e;
  }
}

/**
 * The bucket of an id as the backend lays out these targets: every bucket ends up with at
 * most two ids here, so the backend keeps its first multiplier (main checks it does).
 */
const bucketOf = (id: bigint) => bucketUnder(id, FIRST_BUCKET_MUL);

/** A sibling cgroup whose id is in the target's bucket; kept in `made`. */
function findCollider(mount: Cgroup2Mount, base: string, target: bigint, made: string[]): string {
  const tries = 4 * ID_BUCKETS;
  for (let i = 0; i < tries; i++) {
    const path = `${base}/collide-${i}`;
    Deno.mkdirSync(cgroupDir(mount, path));
    if (bucketOf(cgroupId(mount, path)!) === bucketOf(target)) {
      made.push(path);
      return path;
    }
    Deno.removeSync(cgroupDir(mount, path));
  }
  throw new Error(`No sibling cgroup with a colliding id after ${tries} tries`);
}

/**
 * `n` made-up target ids, one per bucket and none in the buckets of `avoid` (the real
 * target's and the uncounted sibling's), so `uncounted` finds an empty bucket and
 * `uncounted_bucket_hit` compares exactly one id at any number of services.
 */
function madeUpIds(n: number, near: bigint, avoid: bigint[]): bigint[] {
  const taken = new Set(avoid.map(bucketOf));
  const out: bigint[] = [];
  for (let id = near + BigInt(ID_BUCKETS) * 1000n; out.length < n; id++) {
    if (taken.has(bucketOf(id))) continue;
    taken.add(bucketOf(id));
    out.push(id);
  }
  return out;
}

async function main(): Promise<void> {
  const { out, repeat, rounds, services } = parseArgs(Deno.args);
  if (Deno.uid() !== 0) {
    console.error("bpf_bench: run as root (BPF_PROG_TEST_RUN and cgroup moves need it)");
    Deno.exit(1);
  }
  const mount = findCgroup2Mount();
  const base = `/stb-netacct-bench-${crypto.randomUUID().slice(0, 8)}`;
  const made: string[] = [];
  const home = ownCgroupPath();
  const backend = new EbpfBackend();
  let floors: Floors | null = null;
  try {
    for (const p of [base, `${base}/svc`, `${base}/other`]) {
      Deno.mkdirSync(cgroupDir(mount, p));
      made.push(p);
    }
    const svc = `${base}/svc`, other = `${base}/other`;
    const collider = findCollider(mount, base, cgroupId(mount, svc)!, made);
    const svcId = cgroupId(mount, svc)!;
    const fakeIds = madeUpIds(services - 1, svcId, [svcId, cgroupId(mount, other)!]);
    if (chooseBucketMul([svcId, ...fakeIds]) !== FIRST_BUCKET_MUL) {
      throw new Error("the made-up ids overflow a bucket: the bucket cases would be wrong");
    }
    const exclude = [...DEFAULT_EXCLUDE, ...EXTRA_EXCLUDE].map(parseCidr);
    await backend.start([
      { name: "svc", path: svc, id: svcId },
      // More services at the same depth, as in the real config: made-up ids.
      ...fakeIds.map((id, i) => ({ name: `other-${i}`, path: `${base}/other-${i}`, id })),
    ], {
      mount,
      exclude,
      ctMark: 0,
      ctMask: 0,
      log: () => {},
    });
    floors = await loadFloors();
    const ifindex = nonLoopbackIfindex();
    const local = { ipv4: parseIpv4("192.0.2.1")!, ipv6: parseIpv6("2001:db8::1")! };
    // The remote address of each path, and the table verdict that path needs.
    const remote = (ipv4: string, ipv6: string, verdict: number) => ({
      ipv4: parseIpv4(ipv4)!,
      ipv6: parseIpv6(ipv6)!,
      verdict,
    });
    const counted = remote("198.51.100.7", "3fff::7", EXTERNAL);
    const remotes: Record<Path, ReturnType<typeof remote>> = {
      floor: counted,
      floor_ancestor: counted,
      uncounted: counted,
      uncounted_bucket_hit: counted,
      counted,
      counted_skip_ifs: counted,
      excluded_interface: counted,
      counted_trie: remote("203.0.5.7", "2001:dead::7", ASK_TRIE),
      excluded: remote("192.168.1.7", "fd00::7", INTERNAL),
      excluded_trie: remote("203.0.113.7", "2001:db8::7", ASK_TRIE),
    };
    const table = prefixVerdicts(exclude);
    for (const [path, r] of Object.entries(remotes)) {
      for (const family of ["ipv4", "ipv6"] as const) {
        const got = (family === "ipv4" ? table.v4 : table.v6)[verdictKey(r[family])];
        if (got !== r.verdict) {
          throw new Error(
            `${family} ${path}: the verdict table says ${got} for its remote address, the ` +
              `path needs ${r.verdict}: pick another address`,
          );
        }
      }
    }

    const cases: Case[] = [];
    for (const family of ["ipv4", "ipv6"] as const) {
      cases.push({
        program: "trivial",
        family,
        path: "floor",
        kernelNs: [],
        wallNs: [],
        floorNs: [],
      });
      cases.push({
        program: "trivial_ancestor",
        family,
        path: "floor_ancestor",
        kernelNs: [],
        wallNs: [],
        floorNs: [],
      });
      for (
        const path of [
          "uncounted",
          "uncounted_bucket_hit",
          "excluded",
          "excluded_trie",
          "counted",
          "counted_trie",
          "counted_skip_ifs",
          "excluded_interface",
        ] as const
      ) {
        for (const program of ["ingress", "egress"] as const) {
          cases.push({ program, family, path, kernelNs: [], wallNs: [], floorNs: [] });
        }
      }
    }
    const fds = {
      trivial: floors.trivial,
      trivial_ancestor: floors.trivial_ancestor,
      ingress: backend.programFd("ingress"),
      egress: backend.programFd("egress"),
    };
    const total = (s: Awaited<ReturnType<typeof backend.read>>) =>
      Number((s.svc?.rxPackets ?? 0n) + (s.svc?.txPackets ?? 0n));

    for (let round = 0; round < rounds; round++) {
      for (const c of cases) {
        const remote = remotes[c.path][c.family];
        const frame = craftPacket(
          c.program === "ingress"
            ? { src: remote, dst: local[c.family] }
            : { src: local[c.family], dst: remote },
        );
        // The floor runs from the target cgroup too: the trivial program ignores it.
        const where = c.path === "uncounted"
          ? other
          : c.path === "uncounted_bucket_hit"
          ? collider
          : svc;
        // Ifindexes no interface here has (the list is compared, never resolved).
        const others = Array.from({ length: MAX_SKIP_IFS - 1 }, (_, i) => 1_000_000 + i);
        backend.writeSkipIfindexes(
          c.path === "counted_skip_ifs"
            ? [...others, 1_000_100]
            : c.path === "excluded_interface"
            ? [...others, ifindex]
            : [],
        );
        joinCgroup(cgroupDir(mount, where));
        // Paired: the case's repetitions in CHUNKS slices, each right after a slice of
        // the floor on the same frame, so bursts of other sessions' load (which move a
        // whole case by 10+ ns here) fall on both sides of the difference alike.
        const chunk = Math.ceil(repeat / CHUNKS);
        let caseNs = 0, floorNs = 0, wallNs = 0, retval = 1;
        const before = total(await backend.read());
        for (let k = 0; k < CHUNKS; k++) {
          if (c.program !== "trivial") {
            floorNs += testRun(fds.trivial, { frame, ifindex, repeat: chunk }).durationNs;
          }
          const r = testRun(fds[c.program], { frame, ifindex, repeat: chunk });
          caseNs += r.durationNs;
          wallNs += r.wallNsPerRun;
          if (r.retval !== 1) retval = r.retval;
        }
        joinCgroup(cgroupDir(mount, home));
        const counted = total(await backend.read()) - before;
        const want = c.path.startsWith("counted") ? chunk * CHUNKS : 0;
        if (retval !== 1 || counted !== want) {
          throw new Error(
            `${c.program} ${c.family} ${c.path}: retval ${retval}, counted ${counted} ` +
              `packets, expected retval 1 and ${want}: the measured path is not the named one`,
          );
        }
        c.kernelNs.push(caseNs / CHUNKS);
        c.wallNs.push(wallNs / CHUNKS);
        if (c.program !== "trivial") c.floorNs.push(floorNs / CHUNKS);
      }
    }

    const floorOf = (p: Path, f: Family) =>
      Number(median(cases.find((c) => c.path === p && c.family === f)!.kernelNs).toFixed(1));
    const floor = (f: Family) => floorOf("floor", f);
    /** Median over rounds of (case - the floor slices measured between its slices). */
    const pairedOver = (c: Case) =>
      c.program === "trivial" ? 0 : median(c.kernelNs.map((ns, i) => ns - c.floorNs[i]!));
    const ancestorCase = (f: Family) =>
      cases.find((c) => c.path === "floor_ancestor" && c.family === f)!;
    const rows = cases.map((c) => ({
      program: c.program,
      family: c.family,
      path: c.path,
      ns_per_packet: Number(median(c.kernelNs).toFixed(1)),
      ns_per_packet_wall: Number(median(c.wallNs).toFixed(2)),
      over_floor_ns: Number(pairedOver(c).toFixed(1)),
      // Beyond what the one unavoidable helper call costs on this machine.
      over_floor_ancestor_ns: Number(
        (pairedOver(c) - pairedOver(ancestorCase(c.family))).toFixed(1),
      ),
      target_over_floor_ns: c.path === "counted"
        ? TARGET_TABLE_OVER_FLOOR_NS
        : c.path === "counted_trie"
        ? TARGET_TRIE_OVER_FLOOR_NS
        : null,
    }));
    // "counted" covers both counted paths: the worst counted packet is the trie one.
    const of = (p: Path) => rows.filter((r) => r.path === p || r.path === `${p}_trie`);
    const worstOver = (p: Path) => Math.max(...of(p).map((r) => r.over_floor_ns));
    const worst = (p: Path) => Math.max(...of(p).map((r) => r.ns_per_packet));
    const worstOverPath = (p: Path) =>
      Math.max(...rows.filter((r) => r.path === p).map((r) => r.over_floor_ns));
    const result = {
      bpf_prog_test_run: {
        method: "BPF_PROG_TEST_RUN (bpf_prog_test_run_opts), median of rounds; " +
          "ns_per_packet is the kernel's per-repetition figure (whole ns), " +
          "ns_per_packet_wall the call's wall time / repeat",
        kernel: Deno.osRelease(),
        cpus: navigator.hardwareConcurrency,
        repeat,
        rounds,
        packet_bytes: { ipv4: 1460, ipv6: 1480 },
        services,
        floor_ns: { ipv4: floor("ipv4"), ipv6: floor("ipv6") },
        // What one bpf_skb_ancestor_cgroup_id call costs here, included in every netacct row.
        ancestor_helper_ns: {
          ipv4: Number(pairedOver(ancestorCase("ipv4")).toFixed(1)),
          ipv6: Number(pairedOver(ancestorCase("ipv6")).toFixed(1)),
        },
        worst_counted_ns: worst("counted"),
        // The default exclusions leave every counted IPv4 packet to the table: no trie.
        worst_counted_table_ns: Math.max(
          ...rows.filter((r) => r.path === "counted").map((r) => r.ns_per_packet),
        ),
        worst_uncounted_ns: worst("uncounted"),
        // What a full exclude_interfaces set adds to a counted packet (none is one load).
        interface_check_ns: Math.max(
          ...rows.filter((r) => r.path === "counted_skip_ifs").map((r) =>
            r.ns_per_packet -
            rows.find((o) =>
              o.path === "counted" && o.program === r.program && o.family === r.family
            )!.ns_per_packet
          ),
        ),
        worst_counted_over_floor_ns: worstOver("counted"),
        worst_uncounted_over_floor_ns: worstOver("uncounted"),
        worst_uncounted_over_floor_ancestor_ns: Math.max(
          ...of("uncounted").map((r) => r.over_floor_ancestor_ns),
        ),
        // Judged in this run, each against this run's floor of its own family.
        worst_counted_table_over_floor_ns: worstOverPath("counted"),
        worst_counted_trie_over_floor_ns: worstOverPath("counted_trie"),
        targets: {
          table_over_floor_ns: TARGET_TABLE_OVER_FLOOR_NS,
          trie_over_floor_ns: TARGET_TRIE_OVER_FLOOR_NS,
        },
        table_target_met: worstOverPath("counted") <= TARGET_TABLE_OVER_FLOOR_NS,
        trie_target_met: worstOverPath("counted_trie") <= TARGET_TRIE_OVER_FLOOR_NS,
        rows,
      },
    };

    console.log(
      `BPF_PROG_TEST_RUN, ${repeat} repetitions x ${rounds} rounds (median), kernel ${Deno.osRelease()}`,
    );
    console.log(
      "program          family  path                 ns/packet  wall ns/packet  over floor  target",
    );
    for (const r of rows) {
      console.log(
        [
          r.program.padEnd(16),
          r.family.padEnd(6),
          r.path.padEnd(20),
          r.ns_per_packet.toFixed(1).padStart(9),
          r.ns_per_packet_wall.toFixed(2).padStart(15),
          r.over_floor_ns.toFixed(1).padStart(11),
          r.target_over_floor_ns === null
            ? ""
            : `  floor + ${r.target_over_floor_ns} ${
              r.over_floor_ns <= r.target_over_floor_ns ? "PASS" : "MISS"
            }`,
        ].join(" "),
      );
    }
    const t = result.bpf_prog_test_run;
    console.log(
      `floor ${t.floor_ns.ipv4}/${t.floor_ns.ipv6} ns (IPv4/IPv6); counted, table: worst ` +
        `+${t.worst_counted_table_over_floor_ns} ns (target +${TARGET_TABLE_OVER_FLOOR_NS}) ` +
        `${t.table_target_met ? "PASS" : "MISS"}; counted, trie: worst ` +
        `+${t.worst_counted_trie_over_floor_ns} ns (target +${TARGET_TRIE_OVER_FLOOR_NS}) ` +
        `${t.trie_target_met ? "PASS" : "MISS"}`,
    );
    if (out) {
      await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
      console.log(`wrote ${out}`);
    }
  } finally {
    try {
      joinCgroup(cgroupDir(mount, home));
    } catch (e) {
      console.error(`bpf_bench: could not move back to "${home}": ${e}`);
    }
    floors?.close();
    await backend.stop();
    for (const p of made.reverse()) {
      try {
        Deno.removeSync(cgroupDir(mount, p));
      } catch (e) {
        console.error(`bpf_bench: could not remove cgroup "${p}": ${e}`);
      }
    }
  }
}

if (import.meta.main) await main();
