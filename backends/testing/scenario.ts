/**
 * The real-kernel scenario every firewall backend must pass (nft_test.ts, iptables_test.ts):
 * known TCP bytes from a process in a service cgroup are counted within 2% per service and
 * direction, IPv4 and IPv6; internal peers and processes outside the cgroups add nothing;
 * a late cgroup and a deleted-and-recreated one are counted after retarget with monotonic
 * totals; conntrack mark bits outside our mask survive; stop twice leaves nothing.
 */

import { Lab, MSS, PEER, PORT } from "./lab.ts";
import type { CounterSample } from "../backend.ts";
import { DEFAULT_EXCLUDE } from "../../lib/cidr.ts";

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
}

function assert(cond: boolean, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** L3 header bytes per counted skb with TCP timestamps: IPv4 20+32, IPv6 40+32. */
const HDR4 = 52, HDR6 = 72;

/**
 * Kernel counters hold L3 bytes: the payload plus one IP+TCP header per skb (a GSO
 * aggregate counts its header once), plus every retransmitted segment once more. How many
 * skbs and retransmits a transfer takes varies with load (MSS-sized skbs and veth backlog
 * drops when the 2-core VM is busy), so the payload is recovered as
 * bytes - packets * header and must be at least 98% of what the test moved and at most
 * 102% plus the retransmitted segments (RetransSegs of the sending netns, at most MSS each).
 */
function near(
  what: string,
  [bytes, packets]: [number, number],
  payload: number,
  header: number,
  retransSegs: number,
  tolerance = 0.02,
): void {
  const recovered = bytes - packets * header;
  const high = payload * (1 + tolerance) + retransSegs * MSS;
  assert(
    bytes >= payload && recovered >= payload * (1 - tolerance) && recovered <= high,
    `${what}: counted ${bytes} bytes in ${packets} packets (payload ~${recovered}), expected ` +
      `payload ${payload} - ${tolerance * 100}% .. ${Math.round(high)} ` +
      `(+${tolerance * 100}% and ${retransSegs} retransmitted segments)`,
  );
}

type Dir = "tx" | "rx";
function delta(a: CounterSample, b: CounterSample, svc: string, dir: Dir): [number, number] {
  const [bytes, packets] = dir === "tx"
    ? ["txBytes", "txPackets"] as const
    : ["rxBytes", "rxPackets"] as const;
  return [b[svc][bytes] - (a[svc]?.[bytes] ?? 0), b[svc][packets] - (a[svc]?.[packets] ?? 0)];
}

const up = (addr: string, n: number) => `up,${addr},${PORT},${n}`;
const down = (addr: string, n: number) => `down,${addr},${PORT},${n}`;

export async function runScenario(backend: string, hooks: ScenarioHooks): Promise<ScenarioResult> {
  const lab = new Lab();
  const samples: CounterSample[] = [];
  try {
    await lab.setup();
    // Shaped like systemd's: a "\x2d"-escaped slice name, the service one level below.
    const slice = `${lab.cgroupRoot}/app-stb\\x2dnext.slice`;
    const web = `${slice}/web.service`;
    const late = `${slice}/late.service`;
    await lab.mkdirCgroup(slice);
    await lab.mkdirCgroup(web);
    await lab.mkdirCgroup(`${web}/child`);

    // Another program's ct mark bit, set before our hook runs; it must survive.
    await lab.inNs(
      lab.clientNs,
      "nft",
      ["-f", "-"],
      `table inet stb_test_foreign {
  chain output { type filter hook output priority -160; ct mark set ct mark | ${FOREIGN_BIT}; }
}
`,
    );

    const driver = lab.startDriver(backend);
    await driver.request({
      op: "start",
      services: { web, late },
      exclude: [...DEFAULT_EXCLUDE],
      ctMark: CT_MARK,
      ctMask: CT_MASK,
    });
    const read = async () => {
      const s = await driver.request<CounterSample>({ op: "read" });
      const prev = samples.at(-1);
      if (prev) {
        for (const [svc, c] of Object.entries(s)) {
          for (const k of ["rxBytes", "txBytes", "rxPackets", "txPackets"] as const) {
            assert(c[k] >= prev[svc][k], `${svc}.${k} went backwards: ${prev[svc][k]} -> ${c[k]}`);
          }
        }
      }
      samples.push(s);
      return s;
    };
    let s0 = await read();
    assert(
      s0.web.txBytes === 0 && s0.late.txBytes === 0,
      `counters not 0 at start: ${JSON.stringify(s0)}`,
    );

    // Retransmitted segments of each step: by the client (tx) and the peer (rx).
    const retrans = { web: { tx: 0, rx: 0 }, late: { tx: 0, rx: 0 } };
    const step = async (svc: "web" | "late", rel: string, ops: string[]) => {
      const r0 = await lab.retransmits();
      await lab.transfer(rel, ops);
      const r1 = await lab.retransmits();
      const r = { tx: r1.client - r0.client, rx: r1.peer - r0.peer };
      retrans[svc].tx += r.tx;
      retrans[svc].rx += r.rx;
      return { sample: await read(), r };
    };

    // External traffic from a child cgroup of "web", each family on its own, sizes that
    // differ per direction so a swapped rx/tx shows.
    let t = await step("web", `${web}/child`, [up(PEER.ext4, 6 * MiB), down(PEER.ext4, 9 * MiB)]);
    near("web tx (IPv4)", delta(s0, t.sample, "web", "tx"), 6 * MiB, HDR4, t.r.tx);
    near("web rx (IPv4)", delta(s0, t.sample, "web", "rx"), 9 * MiB, HDR4, t.r.rx);
    const s1a = t.sample;
    t = await step("web", `${web}/child`, [up(PEER.ext6, 3 * MiB), down(PEER.ext6, 4 * MiB)]);
    near("web tx (IPv6)", delta(s1a, t.sample, "web", "tx"), 3 * MiB, HDR6, t.r.tx);
    near("web rx (IPv6)", delta(s1a, t.sample, "web", "rx"), 4 * MiB, HDR6, t.r.rx);
    let s1 = t.sample;
    assert(s1.late.txBytes === 0 && s1.late.rxBytes === 0, "late counted before it existed");

    const conntrack = await lab.inNs(lab.clientNs, "conntrack", ["-L", "-p", "tcp"]).catch(() =>
      ""
    );
    const marks = [...conntrack.matchAll(/dst=192\.0\.2\.2 .*?mark=(\d+)/g)].map((m) =>
      Number(m[1])
    );
    assert(
      marks.length > 0 && marks.every((m) => m === (CT_MARK | FOREIGN_BIT)),
      `conntrack marks of web's flows should be ${CT_MARK | FOREIGN_BIT}, saw ${marks.join(",")}`,
    );
    if (hooks.capture) await hooks.capture(lab);

    // Internal peers from inside the cgroup, and an external peer from outside it: nothing.
    await lab.transfer(`${web}/child`, [
      up(PEER.int4, 2 * MiB),
      down(PEER.int4, 2 * MiB),
      up(PEER.int6, 2 * MiB),
      down(PEER.int6, 2 * MiB),
    ]);
    await lab.transfer(null, [up(PEER.ext4, 2 * MiB), down(PEER.ext6, 2 * MiB)]);
    const s2 = await read();
    assert(
      s2.web.txBytes === s1.web.txBytes && s2.web.rxBytes === s1.web.rxBytes,
      `internal or outside traffic was counted: ${JSON.stringify(s1.web)} -> ${
        JSON.stringify(s2.web)
      }`,
    );

    // A service that starts after the backend.
    await lab.mkdirCgroup(late);
    await driver.request({ op: "retarget" });
    t = await step("late", late, [up(PEER.ext4, 5 * MiB), down(PEER.ext4, 7 * MiB)]);
    const s3 = t.sample;
    near("late tx", delta(s2, s3, "late", "tx"), 5 * MiB, HDR4, t.r.tx);
    near("late rx", delta(s2, s3, "late", "rx"), 7 * MiB, HDR4, t.r.rx);
    assert(s3.web.txBytes === s2.web.txBytes, "late's traffic was counted as web's");

    // Restart of "web": its cgroup is deleted and recreated (new id).
    await lab.rmdirCgroup(`${web}/child`);
    await lab.rmdirCgroup(web);
    await driver.request({ op: "retarget" });
    s0 = await read();
    await lab.mkdirCgroup(web);
    await lab.mkdirCgroup(`${web}/child`);
    await driver.request({ op: "retarget" });
    t = await step("web", `${web}/child`, [up(PEER.ext6, 4 * MiB), down(PEER.ext6, 3 * MiB)]);
    s1 = t.sample;
    near("web tx after restart", delta(s0, s1, "web", "tx"), 4 * MiB, HDR6, t.r.tx);
    near("web rx after restart", delta(s0, s1, "web", "rx"), 3 * MiB, HDR6, t.r.rx);
    // Totals mix both families: the mean header is within 10 bytes of either.
    const mixed = (HDR4 + HDR6) / 2;
    near(
      "web tx total across restart",
      delta({}, s1, "web", "tx"),
      13 * MiB,
      mixed,
      retrans.web.tx,
    );
    near(
      "web rx total across restart",
      delta({}, s1, "web", "rx"),
      16 * MiB,
      mixed,
      retrans.web.rx,
    );

    const { msPerRead } = await driver.request<{ msPerRead: number }>({ op: "bench", n: 100 });
    await read();

    await driver.request({ op: "stop" });
    await driver.request({ op: "stop" });
    await hooks.assertClean(lab);
    const tables = await lab.inNs(lab.clientNs, "nft", ["list", "tables"]);
    assert(tables.includes("stb_test_foreign"), "stop removed a table that was not ours");
    return { msPerRead, samples };
  } finally {
    await lab.cleanup();
  }
}

/**
 * The same scenario on the pure cgroup v2 layout of the user's host, in a private mount
 * namespace (pure_v2.ts). Throws with the child's output when it fails.
 */
export async function runScenarioPureV2(backend: string): Promise<{ msPerRead: number }> {
  const out = await new Deno.Command("unshare", {
    args: [
      "--mount",
      "--propagation",
      "private",
      Deno.execPath(),
      "run",
      "-A",
      new URL("./pure_v2.ts", import.meta.url).pathname,
      backend,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const [stdout, stderr] = [out.stdout, out.stderr].map((b) => new TextDecoder().decode(b));
  if (!out.success) throw new Error(`pure cgroup v2 scenario failed:\n${stdout}${stderr}`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}
