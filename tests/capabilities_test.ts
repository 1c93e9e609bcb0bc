/**
 * The service's capability sets are minimal: each backend starts as an unprivileged uid
 * holding exactly BACKEND_INFO's capabilities as ambient ones (what the systemd unit grants),
 * and fails without any single one of them. The backend is driven directly, past `run`'s own
 * privilege check, so it is the kernel that says no. nft and iptables run in a throwaway
 * network namespace; ebpf links its programs at a throwaway service cgroup, with the
 * connect-event programs `run` starts beside it by default: counting through cgroup_skb
 * links needs CAP_BPF and CAP_PERFMON, the cgroup_sock_addr event programs CAP_NET_ADMIN.
 */

import { BACKEND_INFO, BACKEND_NAMES, type BackendName } from "../backends/mod.ts";
import { capabilityName } from "../lib/capabilities.ts";
import { assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import { run } from "./harness/mod.ts";
import { findCgroup2Mount } from "../lib/cgroup.ts";

const NOBODY = 65534;

const DRIVER = `
import { loadBackend } from ${JSON.stringify(new URL("../backends/mod.ts", import.meta.url).href)};
import { findCgroup2Mount } from ${
  JSON.stringify(new URL("../lib/cgroup.ts", import.meta.url).href)
};
import { DEFAULT_EXCLUDE, parseCidr } from ${
  JSON.stringify(new URL("../lib/cidr.ts", import.meta.url).href)
};
import { EventCollector } from ${
  JSON.stringify(new URL("../events/collector.ts", import.meta.url).href)
};
const backend = await loadBackend(Deno.args[0]);
let collector = null;
try {
  await backend.start([{ name: "svc", path: Deno.args[1], id: null }], {
    mount: findCgroup2Mount(),
    exclude: DEFAULT_EXCLUDE.map(parseCidr),
    ctMark: 0x510000,
    ctMask: 0xff0000,
    log: () => {},
  });
  await backend.read();
  if (Deno.args[0] === "ebpf") {
    // What run starts beside the ebpf backend by default: the connect-event programs.
    collector = new EventCollector();
    collector.start([{ name: "svc", path: Deno.args[1], id: null }], {
      mount: findCgroup2Mount(),
      exclude: DEFAULT_EXCLUDE.map(parseCidr),
      monotonicNow: () => performance.now() / 1000,
    });
  }
  console.log("started");
} catch (e) {
  console.log("refused: " + e.message);
  Deno.exitCode = 1;
} finally {
  collector?.stop();
  await backend.stop();
}
`;

/** setpriv's spelling of a capability: "bpf" for CAP_BPF. */
function capArg(cap: number): string {
  return capabilityName(cap).replace(/^CAP_/, "").toLowerCase();
}

async function startWith(
  at: { dir: string; service: string },
  backend: BackendName,
  caps: number[],
) {
  const { dir, service } = at;
  const list = caps.map((c) => `+${capArg(c)}`).join(",");
  const setpriv = [
    "setpriv",
    `--reuid=${NOBODY}`,
    `--regid=${NOBODY}`,
    "--clear-groups",
    ...(caps.length ? [`--inh-caps=${list}`, `--ambient-caps=${list}`] : ["--inh-caps=-all"]),
  ];
  const netns = backend === "ebpf" ? [] : ["unshare", "--net"];
  const argv = [
    ...netns,
    ...setpriv,
    Deno.execPath(),
    "run",
    "-A",
    "--no-lock",
    `${dir}/driver.ts`,
    backend,
    service,
  ];
  return await run(argv, { allowFail: true, env: { DENO_DIR: `${dir}/deno`, HOME: dir } });
}

for (const backend of BACKEND_NAMES) {
  const needed = BACKEND_INFO[backend].capabilities;
  Deno.test({
    name: `${backend} starts with exactly ${
      needed.map(capabilityName).join(", ")
    } and not without any`,
    sanitizeResources: false,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "stb-caps-" });
      const mount = findCgroup2Mount().mountPoint;
      const service = `/stb-caps-${Deno.pid}x${backend}`;
      Deno.mkdirSync(mount + service);
      const at = { dir, service };
      try {
        await Deno.chmod(dir, 0o755);
        await Deno.writeTextFile(`${dir}/driver.ts`, DRIVER, { mode: 0o644 });
        await Deno.mkdir(`${dir}/deno`);
        await Deno.chown(`${dir}/deno`, NOBODY, NOBODY);

        const full = await startWith(at, backend, needed);
        assertEquals(full.code, 0, `with all: ${full.stdout}${full.stderr}`);
        assertStringIncludes(full.stdout, "started");
        for (const cap of needed) {
          const less = await startWith(at, backend, needed.filter((c) => c !== cap));
          assertEquals(
            less.code,
            1,
            `without ${capabilityName(cap)} it must fail: ${less.stdout}${less.stderr}`,
          );
          assertStringIncludes(less.stdout, "refused: ");
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
        Deno.removeSync(mount + service);
      }
    },
  });
}
