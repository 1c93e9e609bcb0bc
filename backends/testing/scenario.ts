/**
 * The real-kernel scenario every firewall backend must pass (nft_test.ts, iptables_test.ts):
 * known TCP bytes from a process in a service cgroup are counted within 2% per service and
 * direction, IPv4 and IPv6; internal peers and processes outside the cgroups add nothing;
 * a late cgroup and a deleted-and-recreated one are counted after retarget with monotonic
 * totals; conntrack mark bits outside our mask survive; stop twice leaves nothing.
 */

import { Lab, PEER, PORT } from "./lab.ts";
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

function near(actual: number, expected: number, what: string, tolerance = 0.02): void {
  const ratio = actual / expected;
  assert(
    Math.abs(ratio - 1) <= tolerance,
    `${what}: counted ${actual} bytes, expected ${expected} within ${tolerance * 100}% ` +
      `(ratio ${ratio.toFixed(4)})`,
  );
}

const up = (addr: string, n: number) => `up,${addr},${PORT},${n}`;
const down = (addr: string, n: number) => `down,${addr},${PORT},${n}`;

export async function runScenario(backend: string, hooks: ScenarioHooks): Promise<ScenarioResult> {
  const lab = new Lab();
  const samples: CounterSample[] = [];
  try {
    await lab.setup();
    const web = `${lab.cgroupRoot}/web`;
    const late = `${lab.cgroupRoot}/late`;
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

    // External traffic from a child cgroup of "web", both families, sizes that differ per
    // direction so a swapped rx/tx shows.
    await lab.transfer(`${web}/child`, [
      up(PEER.ext4, 6 * MiB),
      down(PEER.ext4, 9 * MiB),
      up(PEER.ext6, 3 * MiB),
      down(PEER.ext6, 4 * MiB),
    ]);
    let s1 = await read();
    near(s1.web.txBytes - s0.web.txBytes, 9 * MiB, "web tx (v4+v6)");
    near(s1.web.rxBytes - s0.web.rxBytes, 13 * MiB, "web rx (v4+v6)");
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
    await lab.transfer(late, [up(PEER.ext4, 5 * MiB), down(PEER.ext6, 7 * MiB)]);
    const s3 = await read();
    near(s3.late.txBytes - s2.late.txBytes, 5 * MiB, "late tx");
    near(s3.late.rxBytes - s2.late.rxBytes, 7 * MiB, "late rx");
    assert(s3.web.txBytes === s2.web.txBytes, "late's traffic was counted as web's");

    // Restart of "web": its cgroup is deleted and recreated (new id).
    await lab.rmdirCgroup(`${web}/child`);
    await lab.rmdirCgroup(web);
    await driver.request({ op: "retarget" });
    s0 = await read();
    await lab.mkdirCgroup(web);
    await lab.mkdirCgroup(`${web}/child`);
    await driver.request({ op: "retarget" });
    await lab.transfer(`${web}/child`, [up(PEER.ext6, 4 * MiB), down(PEER.ext4, 3 * MiB)]);
    s1 = await read();
    near(s1.web.txBytes - s0.web.txBytes, 4 * MiB, "web tx after restart");
    near(s1.web.rxBytes - s0.web.rxBytes, 3 * MiB, "web rx after restart");
    near(s1.web.txBytes, 13 * MiB, "web tx total across restart");
    near(s1.web.rxBytes, 16 * MiB, "web rx total across restart");

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
