/**
 * The real-kernel check of a firewall backend's `probe` (nft_test.ts, iptables_test.ts), in
 * the test lab's client netns: probe passes on a good config and fails naming the fix on a
 * ct mask too small for the services, and the netns' whole ruleset (nftables and both
 * iptables families) is byte-identical before and after every probe, also while a running
 * backend owns its rules there.
 */

import { DEFAULT_EXCLUDE } from "../../lib/cidr.ts";
import { Lab } from "../harness/mod.ts";

function assert(cond: boolean, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** Everything nftables and iptables hold in the netns, without counters or timestamps. */
async function snapshot(lab: Lab): Promise<string> {
  const nft = await lab.inClient(["nft", "-s", "list", "ruleset"]);
  const saves = await Promise.all(
    ["iptables-save", "ip6tables-save"].map((t) => lab.inClient([t])),
  );
  const noComments = (s: string) => s.split("\n").filter((l) => !l.startsWith("#")).join("\n");
  return [nft, ...saves.map(noComments)].join("\n----\n");
}

function firstDifference(a: string, b: string): string {
  const [la, lb] = [a.split("\n"), b.split("\n")];
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) {
      return `line ${i + 1}: ${JSON.stringify(la[i])} vs ${JSON.stringify(lb[i])}`;
    }
  }
  return "none";
}

export async function runProbeScenario(backend: string): Promise<void> {
  const lab = await Lab.open("hybrid");
  try {
    const slice = "/app-stb\\x2dnext.slice";
    lab.cgroups.make(`${slice}/web.service`);
    const config = {
      services: {
        web: lab.cgroups.path(`${slice}/web.service`),
        late: lab.cgroups.path(`${slice}/late.service`),
      },
      exclude: [...DEFAULT_EXCLUDE],
      ctMark: 0x00510000,
      ctMask: 0x00ff0000,
    };
    const unchanged = async (before: string, what: string) => {
      const after = await snapshot(lab);
      assert(
        after === before,
        `${what} changed the netns ruleset; first difference ${firstDifference(before, after)}`,
      );
    };

    const empty = await snapshot(lab);
    const prober = lab.startDriver(backend);
    await prober.request({ op: "probe", ...config });
    await unchanged(empty, "probe");

    // Two services, one mark bit: no room for the second service's mark.
    let error = "";
    try {
      await prober.request({ op: "probe", ...config, ctMark: 0x00010000, ctMask: 0x00010000 });
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
    }
    assert(
      /room for only 1 service mark.*widen "ct_mask"/.test(error),
      `probe with a too small ct mask should fail naming the fix, got: ${error || "success"}`,
    );
    await unchanged(empty, "a failed probe");

    // Probing while a backend is running must not touch what it installed.
    const runner = lab.startDriver(backend);
    await runner.request({ op: "start", ...config });
    const running = await snapshot(lab);
    assert(running !== empty, "start installed nothing visible");
    await prober.request({ op: "probe", ...config });
    await unchanged(running, "probe next to a running backend");
    await runner.request({ op: "read" });
    await runner.request({ op: "stop" });
    // iptables-nft leaves the (empty) mangle tables it created; probing must not add more.
    const stopped = await snapshot(lab);
    await prober.request({ op: "probe", ...config });
    await unchanged(stopped, "probe after stop");
  } finally {
    await lab.close();
  }
}
