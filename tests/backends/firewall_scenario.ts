import { stringifyExact } from "../../lib/exact_json.ts";
/**
 * The real-kernel scenario every firewall backend must pass (nft_test.ts, iptables_test.ts),
 * in the test lab on either cgroup layout: known TCP bytes from a process in a service
 * cgroup are counted within 2% per service and direction, IPv4 and IPv6; internal peers and
 * processes outside the cgroups add nothing; a late cgroup and a deleted-and-recreated one
 * are counted after retarget with monotonic totals; conntrack mark bits outside our mask
 * survive; stop twice leaves nothing.
 */

import type { CounterSample } from "../../backends/mod.ts";
import { DEFAULT_EXCLUDE } from "../../lib/cidr.ts";
import { Lab, type LayoutName, MSS, REMOTES, TCP_PORT } from "../harness/mod.ts";

const MiB = 1024 * 1024;
const CT_MARK = 0x00510000;
const CT_MASK = 0x00ff0000;
/** A bit another program (tailscale, firewalld) keeps in the conntrack mark. */
const FOREIGN_BIT = 0x00000001;

export interface ScenarioResult {
  msPerRead: number;
  /** Everything that was read, for a report. */
  samples: CounterSample[];
}

export interface ScenarioHooks {
  /** Called with the lab while the backend is running and has counted traffic. */
  capture?: (lab: Lab) => Promise<void>;
  /** Asserts that nothing of the backend is left in the client netns after stop. */
  assertClean: (lab: Lab) => Promise<void>;
  /** The cgroup layout (default hybrid, this testbed's; v2 is the user's Debian 12). */
  layout?: LayoutName;
}

function assert(cond: boolean, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** L3 header bytes per counted skb with TCP timestamps: IPv4 20+32, IPv6 40+32. */
const HDR4 = 52, HDR6 = 72;

/** One check of counted bytes: the counter pair and what it should hold. */
interface Expected {
  /** Payload bytes the test moved that way. */
  payload: number;
  /** L3+L4 header bytes per counted skb. */
  header: number;
  /** Segments retransmitted that way meanwhile. */
  retransSegs: number;
}

/**
 * Kernel counters hold L3 bytes: the payload plus one IP+TCP header per skb (a GSO
 * aggregate counts its header once), plus every retransmitted segment once more. How many
 * skbs and retransmits a transfer takes varies with load (MSS-sized skbs and veth backlog
 * drops when the 2-core VM is busy), so the payload is recovered as
 * bytes - packets * header and must be at least 98% of what the test moved and at most
 * 102% plus the retransmitted segments (RetransSegs of the sending netns, at most MSS each).
 */
function near(what: string, [bytes, packets]: [number, number], e: Expected): void {
  const tolerance = 0.02;
  const recovered = bytes - packets * e.header;
  const high = e.payload * (1 + tolerance) + e.retransSegs * MSS;
  assert(
    bytes >= e.payload && recovered >= e.payload * (1 - tolerance) && recovered <= high,
    `${what}: counted ${bytes} bytes in ${packets} packets (payload ~${recovered}), expected ` +
      `payload ${e.payload} - ${tolerance * 100}% .. ${Math.round(high)} ` +
      `(+${tolerance * 100}% and ${e.retransSegs} retransmitted segments)`,
  );
}

type Dir = "tx" | "rx";
/** What `svc` counted in `dir` from sample `a` to `b`: [bytes, packets]. */
function delta(a: CounterSample, b: CounterSample, at: { svc: string; dir: Dir }) {
  const [bytes, packets] = at.dir === "tx"
    ? ["txBytes", "txPackets"] as const
    : ["rxBytes", "rxPackets"] as const;
  const before = a[at.svc], after = b[at.svc];
  if (!after) throw new Error(`no counters for ${at.svc}`);
  return [
    Number(after[bytes] - (before?.[bytes] ?? 0n)),
    Number(after[packets] - (before?.[packets] ?? 0n)),
  ] as [number, number];
}

/** traffic.ts flows: an upload to, or a download from, the peer at `addr`. */
const up = (addr: string, n: number) => `tcp,${addr},${TCP_PORT},${n},0`;
const down = (addr: string, n: number) => `tcp,${addr},${TCP_PORT},0,${n}`;
const PEER = {
  ext4: REMOTES.internet4,
  ext6: REMOTES.internet6,
  int4: REMOTES.lan,
  int6: REMOTES.ula,
};

/** The service cgroups, as the lab's tree holds them: "web" and its child, "late" later. */
const SLICE = "/app-stb\\x2dnext.slice"; // shaped like systemd's: "\x2d" escapes
const WEB = `${SLICE}/web.service`;
const LATE = `${SLICE}/late.service`;
const WEB_CHILD = `${WEB}/child`;

/** Another program's ct mark bit, set before our hook runs; it must survive. */
const FOREIGN_TABLE = `table inet stb_test_foreign {
  chain output { type filter hook output priority -160; ct mark set ct mark | ${FOREIGN_BIT}; }
}
`;

/** The backend under test, driven in the lab, with every reading checked to never go back. */
class Counted {
  readonly samples: CounterSample[] = [];
  /** Retransmitted segments per service: by the client (tx) and the peer (rx). */
  readonly retrans = { web: { tx: 0, rx: 0 }, late: { tx: 0, rx: 0 } };

  constructor(readonly lab: Lab, readonly driver: ReturnType<Lab["startDriver"]>) {}

  async read(): Promise<CounterSample> {
    const s = await this.driver.request<CounterSample>({ op: "read" });
    const prev = this.samples.at(-1);
    for (const [svc, c] of Object.entries(prev ? s : {})) {
      for (const k of ["rxBytes", "txBytes", "rxPackets", "txPackets"] as const) {
        const was = prev?.[svc]?.[k] ?? 0;
        assert(c[k] >= was, `${svc}.${k} went backwards: ${was} -> ${c[k]}`);
      }
    }
    this.samples.push(s);
    return s;
  }

  /** Flows from cgroup `rel` on behalf of `svc`; the sample after, and its retransmits. */
  async step(svc: "web" | "late", rel: string, flows: string[]) {
    const r0 = await this.lab.topology.retransmits();
    await this.lab.trafficIn(rel, flows);
    const r1 = await this.lab.topology.retransmits();
    const r = { tx: r1.client - r0.client, rx: r1.peer - r0.peer };
    this.retrans[svc].tx += r.tx;
    this.retrans[svc].rx += r.rx;
    return { sample: await this.read(), r };
  }
}

export async function runScenario(backend: string, hooks: ScenarioHooks): Promise<ScenarioResult> {
  const lab = await Lab.open(hooks.layout ?? "hybrid");
  try {
    for (const rel of [SLICE, WEB, WEB_CHILD]) lab.cgroups.make(rel);
    await lab.inClient(["nft", "-f", "-"], FOREIGN_TABLE);
    const driver = lab.startDriver(backend);
    await driver.request({
      op: "start",
      services: { web: lab.cgroups.path(WEB), late: lab.cgroups.path(LATE) },
      exclude: [...DEFAULT_EXCLUDE],
      ctMark: CT_MARK,
      ctMask: CT_MASK,
    });
    const c = new Counted(lab, driver);
    const s0 = await c.read();
    assert(
      s0.web?.txBytes === 0n && s0.late?.txBytes === 0n,
      `counters not 0 at start: ${stringifyExact(s0)}`,
    );
    const s1 = await countsExternalOnly(c, s0);
    if (hooks.capture) await hooks.capture(lab);
    const s2 = await ignoresInternalAndOutside(c, s1);
    await followsLateAndRestarted(c, s2);
    const { msPerRead } = await driver.request<{ msPerRead: number }>({ op: "bench", n: 100 });
    await c.read();
    await driver.request({ op: "stop" });
    await driver.request({ op: "stop" });
    await hooks.assertClean(lab);
    const tables = await lab.inClient(["nft", "list", "tables"]);
    assert(tables.includes("stb_test_foreign"), "stop removed a table that was not ours");
    return { msPerRead, samples: c.samples };
  } finally {
    await lab.close();
  }
}

/**
 * External traffic from a child cgroup of "web", each family on its own, sizes that differ
 * per direction so a swapped rx/tx shows; the flows' conntrack entries carry our mark and
 * the foreign bit.
 */
async function countsExternalOnly(c: Counted, s0: CounterSample): Promise<CounterSample> {
  const web = (dir: Dir) => ({ svc: "web", dir });
  let t = await c.step("web", WEB_CHILD, [up(PEER.ext4, 6 * MiB), down(PEER.ext4, 9 * MiB)]);
  near("web tx (IPv4)", delta(s0, t.sample, web("tx")), {
    payload: 6 * MiB,
    header: HDR4,
    retransSegs: t.r.tx,
  });
  near("web rx (IPv4)", delta(s0, t.sample, web("rx")), {
    payload: 9 * MiB,
    header: HDR4,
    retransSegs: t.r.rx,
  });
  const s1a = t.sample;
  t = await c.step("web", WEB_CHILD, [up(PEER.ext6, 3 * MiB), down(PEER.ext6, 4 * MiB)]);
  near("web tx (IPv6)", delta(s1a, t.sample, web("tx")), {
    payload: 3 * MiB,
    header: HDR6,
    retransSegs: t.r.tx,
  });
  near("web rx (IPv6)", delta(s1a, t.sample, web("rx")), {
    payload: 4 * MiB,
    header: HDR6,
    retransSegs: t.r.rx,
  });
  const s1 = t.sample;
  assert(s1.late?.txBytes === 0n && s1.late?.rxBytes === 0n, "late counted before it existed");
  const conntrack = await c.lab.inClient(["conntrack", "-L", "-p", "tcp"]).catch(() => "");
  const dst = PEER.ext4.replaceAll(".", "\\.");
  const marks = [...conntrack.matchAll(new RegExp(`dst=${dst} .*?mark=(\\d+)`, "g"))].map((m) =>
    Number(m[1])
  );
  assert(
    marks.length > 0 && marks.every((m) => m === (CT_MARK | FOREIGN_BIT)),
    `conntrack marks of web's flows should be ${CT_MARK | FOREIGN_BIT}, saw ${marks.join(",")}`,
  );
  return s1;
}

/** Internal peers from inside the cgroup, and an external peer from outside it: nothing. */
async function ignoresInternalAndOutside(c: Counted, s1: CounterSample): Promise<CounterSample> {
  await c.lab.trafficIn(WEB_CHILD, [
    up(PEER.int4, 2 * MiB),
    down(PEER.int4, 2 * MiB),
    up(PEER.int6, 2 * MiB),
    down(PEER.int6, 2 * MiB),
  ]);
  await c.lab.trafficIn(null, [up(PEER.ext4, 2 * MiB), down(PEER.ext6, 2 * MiB)]);
  const s2 = await c.read();
  assert(
    s2.web?.txBytes === s1.web?.txBytes && s2.web?.rxBytes === s1.web?.rxBytes,
    `internal or outside traffic was counted: ${stringifyExact(s1.web)} -> ${
      stringifyExact(s2.web)
    }`,
  );
  return s2;
}

/** A service that starts after the backend, then a restart of "web" (a new cgroup id). */
async function followsLateAndRestarted(c: Counted, s2: CounterSample): Promise<void> {
  const { lab, driver } = c;
  lab.cgroups.make(LATE);
  await driver.request({ op: "retarget" });
  let t = await c.step("late", LATE, [up(PEER.ext4, 5 * MiB), down(PEER.ext4, 7 * MiB)]);
  const s3 = t.sample;
  const late = (dir: Dir) => ({ svc: "late", dir }), web = (dir: Dir) => ({ svc: "web", dir });
  near("late tx", delta(s2, s3, late("tx")), {
    payload: 5 * MiB,
    header: HDR4,
    retransSegs: t.r.tx,
  });
  near("late rx", delta(s2, s3, late("rx")), {
    payload: 7 * MiB,
    header: HDR4,
    retransSegs: t.r.rx,
  });
  assert(s3.web?.txBytes === s2.web?.txBytes, "late's traffic was counted as web's");

  await lab.cgroups.removeAt(WEB);
  await driver.request({ op: "retarget" });
  const s0 = await c.read();
  lab.cgroups.make(WEB_CHILD);
  await driver.request({ op: "retarget" });
  t = await c.step("web", WEB_CHILD, [up(PEER.ext6, 4 * MiB), down(PEER.ext6, 3 * MiB)]);
  const s1 = t.sample;
  near("web tx after restart", delta(s0, s1, web("tx")), {
    payload: 4 * MiB,
    header: HDR6,
    retransSegs: t.r.tx,
  });
  near("web rx after restart", delta(s0, s1, web("rx")), {
    payload: 3 * MiB,
    header: HDR6,
    retransSegs: t.r.rx,
  });
  // Totals mix both families: the mean header is within 10 bytes of either.
  const mixed = (HDR4 + HDR6) / 2;
  near("web tx total across restart", delta({}, s1, web("tx")), {
    payload: 13 * MiB,
    header: mixed,
    retransSegs: c.retrans.web.tx,
  });
  near("web rx total across restart", delta({}, s1, web("rx")), {
    payload: 16 * MiB,
    header: mixed,
    retransSegs: c.retrans.web.rx,
  });
}

/** Nothing of either firewall backend is left in the lab's client netns. */
export async function noneLeft(lab: Lab): Promise<void> {
  const tables = await lab.inClient(["nft", "list", "tables"]);
  const v4 = await lab.inClient(["iptables-save"]);
  const v6 = await lab.inClient(["ip6tables-save"]);
  if (/stb_netacct|STB_NETACCT/.test(tables + v4 + v6)) throw new Error("rules left after stop");
}
