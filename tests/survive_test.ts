/**
 * Counting survives the sampler: under steady traffic from a service, `run` is SIGKILLed,
 * traffic flows on with no sampler, and a new `run` adopts what the kernel kept counting
 * (ebpf: pinned maps and links; nft: its table; iptables: its chains in both families). The
 * totals then equal the bytes on the
 * wire (the client veth's counters) within header overhead, per backend and both layouts.
 * Kernel state of another shape (a config with one more service) is taken over once and
 * replaced (iptables and nft: rebuilt keeping their counts); a stop outside systemd (SIGTERM,
 * Ctrl-C) leaves no pins, links, tables or chains.
 *
 * Bytes lost per SIGKILL + restart are printed ("lost per fault") for the benchmarks page.
 */

import { findCgroup2Mount } from "../lib/cgroup.ts";
import { pinnedSets, stateDir } from "../bpf/pins.ts";
import {
  assert,
  assertBytesWithin,
  assertEquals,
  type BpfAttachment,
  bpfAttachments,
  cliArgv,
  countedDelta,
  iptablesLines,
  kernelStateLeft,
  Lab,
  LAYOUT_NAMES,
  type LayoutName,
  measureFlows,
  nftTables,
  output,
  REMOTES,
  run,
  type RunningCli,
  type Sample,
  SERVICE_NAMES,
  sleep,
  SLOW_FACTOR,
  startRun,
  TCP_PORT,
} from "./harness/mod.ts";

const MOUNT = findCgroup2Mount().mountPoint;
const BPF_BASELINE: BpfAttachment[] = await bpfAttachments(MOUNT);
const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
/** IP bytes against the veth's IP bytes: the same packets, so only noise is allowed. */
const TOLERANCE = 0.02;
/** A steady paced TCP flow each way, long enough for a kill, a gap and a restart. */
const RATE = 1_000_000;
const BYTES = Math.round(RATE * 8 * SLOW_FACTOR);
const SURVIVING_BACKENDS = ["ebpf", "nft", "iptables"] as const;

async function scratch(env: Lab, backend: string) {
  const dir = await Deno.makeTempDir({ prefix: "stb-survive-" });
  const config = (name: string, extra: Record<string, unknown> = {}) =>
    env.writeRunConfig(`${dir}/${name}.json`, backend, { interval_s: 0.5, ...extra });
  return { dir, config, close: () => Deno.remove(dir, { recursive: true }) };
}

/** The ebpf run's pinned sets and link pins; nft's tables and our iptables lines in the client netns. */
async function keptState(backend: string, env: Lab, statePath: string) {
  if (backend === "ebpf") {
    const dir = await stateDir(statePath);
    const links = (() => {
      try {
        return [...Deno.readDirSync(`${dir}/links`)].map((e) => e.name);
      } catch {
        return [];
      }
    })();
    return { sets: pinnedSets(dir).map((s) => s.dir), links, nft: [] as string[], ipt: [] };
  }
  if (backend === "iptables") {
    return { sets: [], links: [], nft: [], ipt: await iptablesLines(env.clientNetns) };
  }
  return { sets: [], links: [], nft: await nftTables(env.clientNetns), ipt: [] as string[] };
}

/** Per tool, our chains declared and the jumps into them (never attached twice: one each). */
function iptablesShape(lines: string[]) {
  const out: Record<string, { chains: number; jumps: string[] }> = {};
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const mine = lines.filter((l) => l.startsWith(`${tool}: `)).map((l) =>
      l.slice(tool.length + 2)
    );
    out[tool] = {
      chains: mine.filter((l) => l.startsWith(":STB_NETACCT_")).length,
      jumps: mine.filter((l) => /-A (OUTPUT|PREROUTING|INPUT) .*-j STB_NETACCT_/.test(l))
        .map((l) => l.replace(/^\[\d+:\d+\] /, "").split(" ").slice(0, 2).join(" ")).sort(),
    };
  }
  return out;
}

const ONE_JUMP_EACH = { chains: 4, jumps: ["-A OUTPUT", "-A PREROUTING"] };

/** The kernel's own list of BPF links (never attached twice: one per cgroup and program). */
async function cgroupLinksByTarget(): Promise<string[]> {
  const links = JSON.parse(await output(["bpftool", "-j", "link", "show"])) as {
    type: string;
    prog_id: number;
    cgroup_id?: number;
    attach_type?: string;
  }[];
  // Defunct links (their cgroup gone: id 0) attach nowhere. Several programs share an attach
  // type (counting and DNS capture both at ingress): twice is one program twice at one hook.
  return links.filter((l) => l.type === "cgroup" && l.cgroup_id)
    .map((l) => `${l.cgroup_id}/${l.attach_type}/${l.prog_id}`);
}

interface Fault {
  /** The second run's config (null: the first's). */
  secondConfig: string | null;
}

/**
 * A steady flow from "server"; meanwhile `run` is SIGKILLed, nothing samples for a while,
 * and a second `run` starts. Returns the bytes counted and the wire's reference.
 */
async function killUnderTraffic(
  env: Lab,
  backend: string,
  files: Awaited<ReturnType<typeof scratch>>,
  fault: Fault,
): Promise<void> {
  const first = await files.config("first");
  const options = { backend, config: first, output: `${files.dir}/counters.json` };
  let cli: RunningCli | null = await startRun(env.layout, env.clientNetns, options);
  let measured: ReturnType<typeof measureFlows> | null = null;
  try {
    const s0 = await cli.sampleAfter();
    const flow = `tcp,${REMOTES.internet4},${TCP_PORT},${BYTES},${BYTES},${RATE}`;
    measured = measureFlows(env, "server", [flow]);
    await sleep(1500 * SLOW_FACTOR);
    const killed = await cli.stop("SIGKILL", undefined, { keepKernelState: true });
    cli = null;
    assertEquals(killed.signal, "SIGKILL", "run died by SIGKILL");
    const kept = await keptState(backend, env, `${options.output}.state`);
    if (backend === "ebpf") {
      assertEquals(kept.sets.length, 1, `one pinned set after SIGKILL: ${kept.sets}`);
      assert(kept.links.length >= 2, `links pinned after SIGKILL: ${kept.links}`);
    } else if (backend === "iptables") {
      const shape = iptablesShape(kept.ipt);
      for (const tool of Object.keys(shape)) {
        assertEquals(shape[tool], ONE_JUMP_EACH, `${tool}: our chains after SIGKILL`);
      }
    } else {
      assertEquals(kept.nft, ["inet stb_netacct"], "the nft table after SIGKILL");
    }
    // Nobody samples for a while; the kernel counts on.
    await sleep(1500 * SLOW_FACTOR);
    const second = fault.secondConfig ?? first;
    cli = await startRun(env.layout, env.clientNetns, { ...options, config: second });
    if (backend === "ebpf") {
      const targets = await cgroupLinksByTarget();
      assertEquals(targets.length, new Set(targets).size, `a link attached twice: ${targets}`);
    }
    if (backend === "iptables") {
      const shape = iptablesShape((await keptState(backend, env, "")).ipt);
      for (const tool of Object.keys(shape)) {
        assertEquals(shape[tool], ONE_JUMP_EACH, `${tool}: chains and jumps after the restart`);
      }
    }
    const { wire } = await measured;
    const end = await settle(cli);
    const counted = countedDelta(s0, end, "server");
    const lost = { rx: wire.rx - counted.rx, tx: wire.tx - counted.tx };
    console.log(
      `${backend}: wire ${JSON.stringify(wire)}, counted ${JSON.stringify(counted)}, ` +
        `lost per fault ${JSON.stringify(lost)} B at ${RATE} B/s each way`,
    );
    assertBytesWithin(counted, wire, TOLERANCE, `${backend} across a SIGKILL`);
    if (fault.secondConfig !== null) {
      const after = await keptState(backend, env, `${options.output}.state`);
      if (backend === "ebpf") {
        // The replaced set was read once and removed once the totals holding it were kept.
        assertEquals(after.sets.length, 1, `pinned sets after the takeover: ${after.sets}`);
        assert(after.sets[0] !== kept.sets[0], "the old set was not replaced");
      }
      assert(/took over|rebuilt/.test(cli.stderr), `no takeover logged:\n${cli.stderr}`);
    } else {
      assert(/adopted/.test(cli.stderr), `no adoption logged:\n${cli.stderr}`);
    }
    const stop = await cli.stop("SIGTERM");
    cli = null;
    assertEquals(stop.code, 0, `exit code after SIGTERM; stderr:\n${stop.stderr}`);
    assertEquals(
      await kernelStateLeft(MOUNT, BPF_BASELINE, [env.clientNetns]),
      [],
      "kernel state left after SIGTERM outside systemd",
    );
  } finally {
    await measured?.catch(() => {}); // a failure above must not leave the flow unawaited
    await cli?.stop("SIGKILL");
  }
}

async function settle(cli: RunningCli): Promise<Sample> {
  await cli.sampleAfter();
  return await cli.sampleAfter();
}

async function scenario(backend: string, layout: LayoutName, incompatible: boolean) {
  const env = await Lab.open(layout);
  const files = await scratch(env, backend);
  try {
    for (const s of SERVICE_NAMES) env.cgroups.create(s);
    const secondConfig = incompatible
      ? await files.config("second", {
        services: { ...env.cgroups.configServices(), extra: `${env.cgroups.top}/extra.slice` },
      })
      : null;
    await killUnderTraffic(env, backend, files, { secondConfig });
  } finally {
    await env.close();
    await files.close();
  }
}

for (const layout of LAYOUT_NAMES) {
  for (const backend of SURVIVING_BACKENDS) {
    Deno.test({
      name: `survive ${backend} / ${layout}: SIGKILL under traffic, restart, totals = the wire`,
      ...TEST_OPTIONS,
      fn: () => scenario(backend, layout, false),
    });
  }
}

for (const backend of SURVIVING_BACKENDS) {
  Deno.test({
    name: `survive ${backend} / hybrid: SIGTERM under systemd keeps the kernel state, Ctrl-C ` +
      "removes it",
    ...TEST_OPTIONS,
    async fn() {
      const env = await Lab.open("hybrid");
      const files = await scratch(env, backend);
      let cli: RunningCli | null = null;
      try {
        for (const s of SERVICE_NAMES) env.cgroups.create(s);
        const options = {
          backend,
          config: await files.config("config"),
          output: `${files.dir}/counters.json`,
        };
        // INVOCATION_ID is how `run` knows systemd started it: a stop is a restart or upgrade.
        const service = { ...options, env: { INVOCATION_ID: "0123456789abcdef" } };
        cli = await startRun(env.layout, env.clientNetns, service);
        const stop = await cli.stop("SIGTERM", undefined, { keepKernelState: true });
        cli = null;
        assertEquals(stop.code, 0, `exit code after SIGTERM; stderr:\n${stop.stderr}`);
        const kept = await keptState(backend, env, `${options.output}.state`);
        assert(
          kept.sets.length + kept.nft.length + kept.ipt.length > 0,
          `nothing kept after SIGTERM under systemd:\n${stop.stderr}`,
        );
        if (backend !== "ebpf") {
          // `status` (root, no sampler) names what counts unread, in the netns it looks at;
          // ebpf's pins are found by their root, which this test's runs do not share.
          const status = await run(
            [
              ...env.layout.wrap(env.clientNetns),
              // A file no sampler writes: counters.json itself is fresh, so "healthy".
              ...cliArgv(["status", "--input", `${files.dir}/unread.json`, "--json"]),
            ],
            { allowFail: true },
          );
          const kernel = (JSON.parse(status.stdout) as { kernel_state?: string[] }).kernel_state;
          const named = backend === "nft" ? "nft table" : "iptables chains";
          assert(
            (kernel ?? []).some((k) => k.startsWith(named)),
            `status does not name the kept ${named}: ${status.stdout}`,
          );
        }
        // A person's Ctrl-C under systemd too: everything goes.
        cli = await startRun(env.layout, env.clientNetns, service);
        assert(/adopted/.test(cli.stderr), `no adoption logged:\n${cli.stderr}`);
        const int = await cli.stop("SIGINT");
        cli = null;
        assertEquals(int.code, 0, `exit code after SIGINT; stderr:\n${int.stderr}`);
        assertEquals(
          await kernelStateLeft(MOUNT, BPF_BASELINE, [env.clientNetns]),
          [],
          "kernel state left after Ctrl-C",
        );
      } finally {
        await cli?.stop("SIGKILL");
        await env.close();
        await files.close();
      }
    },
  });

  Deno.test({
    name: `survive ${backend} / hybrid: kernel state of another config is taken over once`,
    ...TEST_OPTIONS,
    fn: () => scenario(backend, "hybrid", true),
  });
}
