/**
 * How cost grows with the number of services (3, 30, 300 cgroups) and of exclusion prefixes
 * (15, 1,000, 100,000). Root only:
 *
 *   deno run -A bench/scale.ts [OUT.json] [--quick]
 *
 * Services: bench/bpf_bench.ts --services N (ns per packet, BPF_PROG_TEST_RUN, its own
 * floor) and bench/read_cost.ts --services N (ms per read: ebpf, nft, iptables), each as a
 * subprocess; a count the program or a backend refuses is reported with its own message.
 * Exclusions: the real EbpfBackend loaded with the 15 defaults plus generated prefixes no
 * default covers (bench/read_cost.ts generatedExclusions: IPv4 /24s from 11.0.0.0, IPv6 /48s
 * in 2001:db8::/32, half each), egress test runs from inside a target cgroup on four
 * packets: counted and excluded by the 16-bit verdict table alone (198.51.100.7,
 * 192.168.1.7), and counted and excluded after the LPM trie (an address beside and one
 * inside the last generated IPv4 /24: the table leaves its /16 to the trie). The 15
 * defaults leave no IPv4 address to the trie, so those two are null there, with a note.
 * Each packet's counters must move as its path says (counted: every run; excluded: none);
 * and read_cost --exclude-count N. A list a backend cannot hold is reported with the error
 * it gives (the limit it hit), never skipped silently.
 */

import { EbpfBackend } from "../backends/ebpf.ts";
import {
  craftPacket,
  joinCgroup,
  nonLoopbackIfindex,
  ownCgroupPath,
  testRun,
} from "../bpf/packet_run.ts";
import { cgroupDir, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { type Cidr, formatAddress, isExcluded, parseCidr, parseIpv4 } from "../lib/cidr.ts";
import { ASK_TRIE, EXTERNAL, INTERNAL, prefixVerdicts, verdictKey } from "../bpf/netacct_abi.ts";
import { generatedExclusions } from "./read_cost.ts";
import { median } from "./stats.ts";

const SERVICES = [3, 30, 300];
const EXCLUSIONS = [15, 1000, 100_000];

async function subprocess(args: string[]): Promise<{ json: unknown; error: string | null }> {
  const tmp = await Deno.makeTempFile({ prefix: "stb-netacct-scale-", suffix: ".json" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...args.map((a) => a === "OUT" ? tmp : a)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" ");
      return { json: null, error: err || `exit ${out.code}` };
    }
    return { json: JSON.parse(await Deno.readTextFile(tmp)), error: null };
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

interface ReadRow {
  backend: string;
  ms_median: number | null;
  note?: string;
}

const readRows = (json: unknown) =>
  (json as { read_cost: { rows: ReadRow[] } }).read_cost.rows.map((r) => ({
    backend: r.backend,
    ms_median: r.ms_median,
    ...(r.note ? { note: r.note } : {}),
  }));

/**
 * Two IPv4 addresses whose verdict only the trie gives: inside and beside the last prefix
 * longer than /16 that the table leaves to the trie; null when there is none.
 */
function trieAddresses(exclude: Cidr[]): { inside: Uint8Array; beside: Uint8Array } | null {
  const { v4 } = prefixVerdicts(exclude);
  const long = exclude.filter((c) =>
    c.family === 4 && c.prefixLen > 16 && v4[verdictKey(c.bytes)] === ASK_TRIE
  ).at(-1);
  if (!long) return null;
  const inside = long.bytes.slice(); // IPv4: four bytes
  if (long.prefixLen <= 29) inside[3]! |= 7;
  const [first = 0, second = 0] = long.bytes;
  for (let third = 255; third >= 0; third--) {
    const beside = new Uint8Array([first, second, third, 7]);
    if (!isExcluded(beside, exclude)) return { inside, beside };
  }
  return null;
}

async function exclusionPacketCost(count: number, repeat: number, rounds: number) {
  const mount = findCgroup2Mount();
  const base = `/stb-netacct-scale-${crypto.randomUUID().slice(0, 8)}`;
  const svc = `${base}/svc`;
  const home = ownCgroupPath();
  const backend = new EbpfBackend();
  const made: string[] = [];
  try {
    for (const p of [base, svc]) {
      Deno.mkdirSync(cgroupDir(mount, p));
      made.push(p);
    }
    const exclude = generatedExclusions(count).map(parseCidr);
    try {
      await backend.start([{ name: "svc", path: svc, id: cgroupId(mount, svc) }], {
        mount,
        exclude,
        ctMark: 0,
        ctMask: 0,
        log: () => {},
      });
    } catch (e) {
      return { exclusions: count, error: (e as Error).message };
    }
    const ifindex = nonLoopbackIfindex();
    const local = parseIpv4("192.0.2.1")!;
    const trie = trieAddresses(exclude);
    const table = prefixVerdicts(exclude).v4;
    // name -> remote address, and whether the path counts it.
    const cases: Record<string, { remote: Uint8Array; counts: boolean } | null> = {
      counted: { remote: parseIpv4("198.51.100.7")!, counts: true },
      excluded: { remote: parseIpv4("192.168.1.7")!, counts: false },
      counted_trie: trie && { remote: trie.beside, counts: true },
      excluded_trie: trie && { remote: trie.inside, counts: false },
    };
    for (const [name, c] of Object.entries(cases)) {
      if (!c) continue;
      const want = name.endsWith("_trie") ? ASK_TRIE : c.counts ? EXTERNAL : INTERNAL;
      const got = table[verdictKey(c.remote)];
      if (got !== want || isExcluded(c.remote, exclude) === c.counts) {
        throw new Error(`${name}: ${formatAddress(c.remote)} does not take the ${name} path`);
      }
    }
    const ns: Record<string, number[]> = {};
    const fd = backend.programFd("egress");
    const sent = async () => Number((await backend.read()).svc?.txPackets ?? 0n);
    for (let r = 0; r < rounds; r++) {
      for (const [name, c] of Object.entries(cases)) {
        if (!c) continue;
        const before = await sent();
        joinCgroup(cgroupDir(mount, svc));
        let res;
        try {
          const frame = craftPacket({ src: local, dst: c.remote });
          res = testRun(fd, { frame, ifindex, repeat });
        } finally {
          joinCgroup(cgroupDir(mount, home));
        }
        const counted = await sent() - before;
        if (res.retval !== 1 || counted !== (c.counts ? repeat : 0)) {
          throw new Error(
            `${name}: retval ${res.retval}, ${counted} packets counted of ${repeat}: ` +
              "the measured path is not the named one",
          );
        }
        (ns[name] ??= []).push(res.durationNs);
      }
    }
    return {
      exclusions: count,
      egress_ipv4_ns: Object.fromEntries(
        Object.keys(cases).map((k) => [k, ns[k] ? median(ns[k]) : null]),
      ),
      addresses: Object.fromEntries(
        Object.entries(cases).map(([k, c]) => [k, c ? formatAddress(c.remote) : null]),
      ),
      ...(trie ? {} : {
        note: "no IPv4 prefix longer than /16 the table leaves to the trie: " +
          "every IPv4 address is judged by the table",
      }),
    };
  } finally {
    await backend.stop();
    for (const p of made.reverse()) Deno.removeSync(cgroupDir(mount, p));
  }
}

async function main(): Promise<void> {
  const quick = Deno.args.includes("--quick");
  const out = Deno.args.find((a) => !a.startsWith("-")) ?? null;
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log("usage: deno run -A bench/scale.ts [OUT.json] [--quick]");
    Deno.exit(0);
  }
  if (Deno.uid() !== 0) {
    console.error("scale: run as root (BPF, netns and cgroups need it)");
    Deno.exit(1);
  }
  const bench = new URL("./", import.meta.url).pathname;
  const repeat = quick ? 200_000 : 2_000_000, rounds = quick ? 3 : 5;
  const readArgs = quick
    ? ["--reads", "20", "--min-ms", "300"]
    : ["--reads", "100", "--min-ms", "1000"];
  const services = [];
  for (const n of SERVICES) {
    console.error(`scale: ${n} services`);
    const pkt = await subprocess([
      `${bench}bpf_bench.ts`,
      "OUT",
      "--services",
      String(n),
      "--repeat",
      String(repeat),
      "--rounds",
      String(rounds),
    ]);
    const read = await subprocess([
      `${bench}read_cost.ts`,
      "OUT",
      "--services",
      String(n),
      "--variants",
      "ebpf,nft,iptables",
      ...readArgs,
    ]);
    const b = (pkt.json as { bpf_prog_test_run?: Record<string, unknown> } | null)
      ?.bpf_prog_test_run;
    services.push({
      services: n,
      per_packet: b
        ? {
          floor_ns: b.floor_ns,
          worst_counted_ns: b.worst_counted_ns,
          worst_uncounted_ns: b.worst_uncounted_ns,
          worst_counted_over_floor_ns: b.worst_counted_over_floor_ns,
          worst_uncounted_over_floor_ns: b.worst_uncounted_over_floor_ns,
        }
        : { error: pkt.error },
      read: read.json ? readRows(read.json) : { error: read.error },
    });
  }
  const exclusions = [];
  for (const n of EXCLUSIONS) {
    console.error(`scale: ${n} exclusion prefixes`);
    const pkt = await exclusionPacketCost(n, repeat, rounds);
    const read = await subprocess([
      `${bench}read_cost.ts`,
      "OUT",
      "--exclude-count",
      String(n),
      "--variants",
      "ebpf,nft,iptables",
      ...readArgs,
    ]);
    exclusions.push({ ...pkt, read: read.json ? readRows(read.json) : { error: read.error } });
  }
  const cell = (v: unknown) => v === undefined || v === null ? "-" : String(v);
  const readCell = (r: unknown, b: string) => {
    if (!Array.isArray(r)) return "error";
    const row = (r as { backend: string; ms_median: number | null }[]).find((x) => x.backend === b);
    return row?.ms_median === null || row === undefined ? "n/a" : row.ms_median.toFixed(3);
  };
  console.log("Scale: services (bpf_bench --services N; read_cost --services N)");
  console.log(
    "services  counted ns  uncounted ns  (over floor)   read ms ebpf    nft  iptables  note",
  );
  for (const s of services) {
    const p = s.per_packet as Record<string, unknown>;
    console.log(
      [
        String(s.services).padEnd(9),
        cell(p.worst_counted_ns).padStart(10),
        cell(p.worst_uncounted_ns).padStart(13),
        `(+${cell(p.worst_counted_over_floor_ns)}/+${cell(p.worst_uncounted_over_floor_ns)})`
          .padStart(14),
        readCell(s.read, "ebpf").padStart(14),
        readCell(s.read, "nft").padStart(6),
        readCell(s.read, "iptables").padStart(9),
        p.error ? `  ${String(p.error).slice(0, 120)}` : "",
      ].join(" "),
    );
  }
  console.log(
    "Scale: exclusion prefixes (ebpf egress IPv4 test runs; read_cost --exclude-count N)",
  );
  console.log(
    "prefixes  counted ns  excluded ns  counted+trie ns  excluded+trie ns   read ms ebpf    nft  iptables  note",
  );
  for (const e of exclusions) {
    const ns = (e as { egress_ipv4_ns?: Record<string, number> }).egress_ipv4_ns;
    const err = (e as { error?: string }).error;
    const notes = [
      err,
      (e as { note?: string }).note,
      ...(Array.isArray(e.read)
        ? e.read.filter((r) => r.note).map((r) => `${r.backend}: ${r.note}`)
        : []),
    ].filter((x) => x);
    console.log(
      [
        String(e.exclusions).padEnd(9),
        cell(ns?.counted).padStart(10),
        cell(ns?.excluded).padStart(12),
        cell(ns?.counted_trie).padStart(16),
        cell(ns?.excluded_trie).padStart(17),
        readCell(e.read, "ebpf").padStart(14),
        readCell(e.read, "nft").padStart(6),
        readCell(e.read, "iptables").padStart(9),
        notes.length ? `  ${notes.join("; ").slice(0, 200)}` : "",
      ].join(" "),
    );
  }
  if (out) {
    const result = {
      scale: {
        method: "services: bpf_bench.ts and read_cost.ts subprocesses with --services N; " +
          "exclusions: EbpfBackend with N prefixes, egress IPv4 BPF_PROG_TEST_RUN medians, " +
          "read_cost.ts --exclude-count N",
        repeat,
        rounds,
        services,
        exclusions,
      },
    };
    await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
    console.log(`wrote ${out}`);
  }
}

if (import.meta.main) await main();
