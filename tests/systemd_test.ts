/**
 * `install`, `status`, `graph` and `uninstall` under a real systemd 252 booted in
 * systemd-nspawn (tests/systemd/container.ts), with cad's user manager running three StB
 * stand-in services (tests/systemd/stb_services.ts) in the exact default slices. The
 * container's network is a netns this test created, joined by veth to a peer netns that
 * plays the internet (198.51.100.2, 2001:db8:1::2) and the LAN (192.168.50.2).
 *
 * Needs the built program (`make build`; STB_NETACCT_BIN overrides the path) and root.
 * Skips only when systemd-nspawn cannot be installed.
 */

import { assert, assertEquals, assertStringIncludes, present } from "../lib/test_assert.ts";
import type { CountersV1 } from "../lib/contract.ts";
import { randomTag, run, sleep } from "./harness/exec.ts";
import { denoTool, PEER_TS } from "./harness/processes.ts";
import { PEER_IF, Topology } from "./harness/topology.ts";
import { Container, ensureNspawn } from "./systemd/container.ts";
import {
  containerFiles,
  LO_PEER,
  LOG_DIR,
  parseServiceLog,
  type ServiceLog,
  type ServiceName,
  SERVICES,
  TCP_PORT,
  UDP_PORT,
  unitName,
} from "./systemd/stb_services.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const BIN = Deno.env.get("STB_NETACCT_BIN") ?? `${REPO}/stb-netacct`;
const dirname = (p: string) => p.slice(0, p.lastIndexOf("/")) || "/";
const COUNTERS = "/run/stb-netacct/counters.json";
const ROUNDS = 2;
/** What install leaves on the machine; uninstall --purge must remove all of it. */
const INSTALLED = [
  "/etc/systemd/system/stb-netacct.service",
  "/etc/systemd/system/multi-user.target.wants/stb-netacct.service",
  "/usr/local/bin/stb-netacct",
  "/usr/local/lib/stb-netacct",
  "/run/stb-netacct",
  "/etc/stb-netacct",
  "/var/lib/stb-netacct",
  "/var/lib/private/stb-netacct",
  "/var/cache/stb-netacct",
  "/var/cache/private/stb-netacct",
  "/var/lib/stb-netacct-history",
];
const HISTORY = "/var/lib/stb-netacct-history/history.sqlite";

/**
 * Counted bytes against payload: headers make it a little more (TCP/IP headers once per
 * GSO aggregate, ACKs of the other direction, handshakes); counting internal traffic too
 * would make it about six times more.
 */
function assertCounted(what: string, exact: bigint, payload: number, flows: number): void {
  const counted = Number(exact);
  const low = payload * 0.99, high = payload * 1.08 + flows * 16_000;
  assert(
    counted >= low && counted <= high,
    `${what}: counted ${counted} bytes for ${payload} bytes of external payload ` +
      `(accepted ${Math.round(low)}..${Math.round(high)})`,
  );
}

Deno.test({
  name: "install under a real systemd: hardened service counts StB's external traffic",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const skip = await ensureNspawn();
    if (skip) {
      console.log(`SKIPPED: ${skip}`);
      return;
    }
    const help = await run([BIN, "--help"], { allowFail: true });
    assert(
      help.code === 0 && /\binstall\b/.test(help.stdout),
      `${BIN} is not a build with \`install\`: run \`make build\` or set STB_NETACCT_BIN`,
    );
    const started = Date.now();
    const tag = `sd${randomTag(4)}`;
    const topo = new Topology(tag);
    const box = new Container(tag);
    let peer: Deno.ChildProcess | null = null;
    try {
      await topo.up();
      peer = new Deno.Command("nsenter", {
        args: [
          `--net=${topo.peerNetnsPath}`,
          ...denoTool(PEER_TS, [
            "--tcp-port",
            String(TCP_PORT),
            "--udp-port",
            String(UDP_PORT),
            "--scope",
            PEER_IF,
          ]),
        ],
        stdout: "null",
        stderr: "null",
        env: { DENO_DIR: `/tmp/stbsd-${tag}-deno` },
      }).spawn();
      await box.boot({
        netnsPath: topo.clientNetnsPath,
        files: containerFiles(ROUNDS),
        userDirs: [LOG_DIR],
        bindReadOnly: [
          ...new Set([REPO, dirname(Deno.realPathSync(BIN)), dirname(Deno.execPath())]),
        ],
      });
      console.log(`container booted in ${Date.now() - started} ms`);
      await box.exec(["systemctl", "start", LO_PEER]);

      const readCounters = async (): Promise<CountersV1> =>
        JSON.parse((await box.exec(["cat", COUNTERS])).stdout);
      const now = async () => Number((await box.exec(["date", "+%s.%N"])).stdout);
      const waitSample = async (after: number, timeoutMs = 15000): Promise<CountersV1> => {
        const until = Date.now() + timeoutMs;
        for (;;) {
          const r = await box.exec(["cat", COUNTERS], { allowFail: true });
          if (r.code === 0) {
            try {
              const c = JSON.parse(r.stdout) as CountersV1;
              if (c.ts_unix > after) return c;
            } catch { /* mid-replace is impossible (rename), but be lenient */ }
          }
          if (Date.now() > until) throw new Error(`no sample after ${after} in ${COUNTERS}`);
          await sleep(200);
        }
      };
      const logs = async (): Promise<Record<ServiceName, ServiceLog>> => {
        const out = {} as Record<ServiceName, ServiceLog>;
        for (const s of SERVICES) {
          const r = await box.exec(["cat", `${LOG_DIR}/${s}.log`], { allowFail: true });
          out[s] = parseServiceLog(r.code === 0 ? r.stdout : "");
        }
        return out;
      };
      const waitDone = async (want: Record<ServiceName, number>) => {
        const until = Date.now() + 60000;
        for (;;) {
          const l = await logs();
          for (const s of SERVICES) {
            assertEquals(l[s].errors, 0, `traffic of ${s} failed: see ${LOG_DIR}/${s}.log`);
          }
          if (SERVICES.every((s) => l[s].done >= want[s])) return l;
          if (Date.now() > until) {
            throw new Error(`StB stand-ins did not finish: ${JSON.stringify(want)}`);
          }
          await sleep(300);
        }
      };
      /** Counters after all traffic so far settled, checked against the services' logs. */
      const checkAgainstLogs = async (what: string, l: Record<ServiceName, ServiceLog>) => {
        const c = await waitSample((await now()) + 0.6);
        for (const s of SERVICES) {
          const sv = c.services[s];
          assert(sv !== undefined, `${what}: no service ${s} in counters.json`);
          const n = l[s].flows.filter((f) => f.host.includes(":") || f.host.startsWith("198."))
            .length;
          assertCounted(`${what}, ${s} upload`, sv.tx_bytes_total, l[s].externalSent, n);
          assertCounted(`${what}, ${s} download`, sv.rx_bytes_total, l[s].externalReceived, n);
        }
        return c;
      };

      // Every step needs the service installed; the others are independent enough to
      // report on their own when one fails.
      let installed = true;
      const step = async (name: string, fn: () => Promise<void>, gate = false) => {
        const ok = await t.step({ name, ignore: !installed, fn });
        if (gate) installed = ok;
      };
      const restartUser = async (s: ServiceName) =>
        await box.execUser(["systemctl", "--user", "restart", unitName(s)]);

      await step(
        "install --backend ebpf as root: active, fresh, owned by cad, 0644",
        async () => {
          const t0 = Date.now();
          const r = await box.exec([BIN, "install", "--backend", "ebpf", "--owner", "cad"], {
            allowFail: true,
          });
          console.log(`install took ${Date.now() - t0} ms`);
          assertEquals(r.code, 0, `install failed: ${r.stderr}\n${r.stdout}`);
          assertStringIncludes(r.stdout, "running with the ebpf backend");
          assertEquals(
            (await box.exec(["systemctl", "is-active", "stb-netacct.service"])).stdout.trim(),
            "active",
          );
          // Only sd_notify sets the status text: readiness reached systemd through the sandbox.
          const status = (await box.exec([
            "systemctl",
            "show",
            "-p",
            "StatusText",
            "--value",
            "stb-netacct.service",
          ])).stdout.trim();
          assertStringIncludes(status, "Counting 3 services with ebpf");
          const st = (await box.exec(["stat", "-c", "%U %a", COUNTERS])).stdout.trim();
          assertEquals(st, "cad 644");
          const c = await readCounters();
          assert((await now()) - c.ts_unix < 2, "counters.json is not fresh");
          assertEquals(c.backend, "ebpf");
        },
        true,
      );

      await step("StB user services in their slices: only external traffic counts", async () => {
        await box.execUser([
          "systemctl",
          "--user",
          "start",
          ...SERVICES.map(unitName),
        ]);
        const cg = (await box.execUser([
          "systemctl",
          "--user",
          "show",
          "-p",
          "ControlGroup",
          "--value",
          unitName("server"),
        ])).stdout.trim();
        assertEquals(
          cg,
          "/user.slice/user-1000.slice/user@1000.service/app.slice/" +
            "app-stb\\x2dnext\\x2dserver.slice/stb-next-server@split.service",
        );
        const l = await waitDone({ "host-agent": 1, server: 1, shell: 1 });
        for (const s of SERVICES) {
          assert(l[s].internalSent > 4 * l[s].externalSent, "internal traffic must dominate");
        }
        await checkAgainstLogs("first rounds", l);
      });

      await step("systemctl --user restart of a service: counting continues", async () => {
        const before = present((await readCounters()).services.server, "server");
        await restartUser("server");
        const l = await waitDone({ "host-agent": 1, server: 2, shell: 1 });
        const c = await checkAgainstLogs("after the user service restart", l);
        assert(present(c.services.server, "server").tx_bytes_total > before.tx_bytes_total);
      });

      let beforeRestart: CountersV1 | null = null;
      await step("restart of the root service: totals continue", async () => {
        beforeRestart = await readCounters();
        const t0 = await now();
        await box.exec(["systemctl", "restart", "stb-netacct.service"]);
        const c = await waitSample(t0);
        assert(
          c.rx_bytes_total >= beforeRestart.rx_bytes_total &&
            c.tx_bytes_total >= beforeRestart.tx_bytes_total,
          `totals went back after a restart of the root service: rx ${beforeRestart.rx_bytes_total}` +
            ` -> ${c.rx_bytes_total}, tx ${beforeRestart.tx_bytes_total} -> ${c.tx_bytes_total}`,
        );
      });

      await step(
        "report as cad: the history holds what was counted; only the service writes it",
        async () => {
          // The restart above wrote the stopping run's last batch; the new run starts where
          // it ended, so the history is every byte counted since install.
          const c = await readCounters();
          const r = await box.execUser([BIN, "report", "--days", "--since", "2d", "--json"], {
            allowFail: true,
          });
          assertEquals(r.code, 0, `report as cad: ${r.stderr}`);
          const doc = JSON.parse(r.stdout);
          assertEquals(
            [BigInt(doc.totals.rx_bytes), BigInt(doc.totals.tx_bytes)],
            [BigInt(c.rx_bytes_total), BigInt(c.tx_bytes_total)],
            "history total against counters.json",
          );
          for (const s of SERVICES) {
            assertEquals(
              BigInt(doc.totals.services[s].tx_bytes),
              BigInt(c.services[s]!.tx_bytes_total),
            );
          }
          // The dynamic user writes it; cad's group reads it; nobody else.
          const st = (await box.exec(["stat", "-c", "%U %G %a", HISTORY])).stdout.trim();
          assertEquals(st, "stb-netacct cad 640");
          const w = await box.execUser(["truncate", "-s", "0", HISTORY], { allowFail: true });
          assert(w.code !== 0, "cad could truncate the history");
          const other = await box.exec(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN, "report"],
            { allowFail: true },
          );
          assertEquals(other.code, 1, `report as nobody: ${other.stdout}${other.stderr}`);
        },
      );

      await step("graph --once and status as cad", async () => {
        const g = await box.execUser([BIN, "graph", "--once"], { allowFail: true });
        assertEquals(g.code, 0, `graph --once: ${g.stderr}`);
        assert(g.stdout.trim().length > 0, "graph --once printed nothing");
        const s = await box.execUser([BIN, "status"], { allowFail: true });
        assertEquals(s.code, 0, `status: ${s.stdout}\n${s.stderr}`);
        assertStringIncludes(s.stdout, "verdict   healthy");
        assertStringIncludes(s.stdout, "active (running)");
        const j = JSON.parse((await box.execUser([BIN, "status", "--json"])).stdout);
        assertEquals(j.verdict, "healthy");
        for (const svc of SERVICES) assertEquals(j.cgroups[svc].exists, true);
      });

      await step("a second install changes nothing", async () => {
        const r = await box.exec([BIN, "install", "--backend", "ebpf"], { allowFail: true });
        assertEquals(r.code, 0, r.stderr);
        assertStringIncludes(r.stdout, "nothing changed");
      });

      for (const backend of ["nft", "iptables"]) {
        await t.step(
          `install --backend ${backend}: upgrade, counts under its own unit`,
          async () => {
            const r = await box.exec([BIN, "install", "--backend", backend], { allowFail: true });
            assertEquals(r.code, 0, `install --backend ${backend}: ${r.stderr}\n${r.stdout}`);
            assertStringIncludes(r.stdout, `Restarted stb-netacct.service`);
            const unit =
              (await box.exec(["cat", "/etc/systemd/system/stb-netacct.service"])).stdout;
            assertStringIncludes(unit, "AmbientCapabilities=CAP_CHOWN CAP_NET_ADMIN\n");
            const before = await waitSample(await now());
            assertEquals(before.backend, backend);
            await restartUser("shell");
            const l = await logs();
            const want = l.shell.done + 1;
            const after = await waitDone({ "host-agent": 0, server: 0, shell: want });
            const c = await waitSample((await now()) + 0.6);
            const sent = after.shell.externalSent - l.shell.externalSent;
            const got = after.shell.externalReceived - l.shell.externalReceived;
            const flows = 3;
            assertCounted(
              `${backend}: shell upload`,
              present(c.services.shell, "shell").tx_bytes_total -
                present(before.services.shell, "shell before").tx_bytes_total,
              sent,
              flows,
            );
            assertCounted(
              `${backend}: shell download`,
              present(c.services.shell, "shell").rx_bytes_total -
                present(before.services.shell, "shell before").rx_bytes_total,
              got,
              flows,
            );
          },
        );
      }

      await step("status exit codes: stopped is 'not running'", async () => {
        await box.exec(["systemctl", "stop", "stb-netacct.service"]);
        // Given back to root at stop: no file stays owned by a dynamic uid.
        const owners =
          (await box.exec(["stat", "-c", "%u", HISTORY.replace(/\/[^/]+$/, ""), HISTORY]))
            .stdout.trim().split("\n");
        assertEquals(owners, ["0", "0"], "history owners after stop");
        const s = await box.execUser([BIN, "status"], { allowFail: true });
        assertEquals(s.code, 4, s.stdout);
        assertStringIncludes(s.stdout, "verdict   not running");
      });

      await step("uninstall --purge: nothing left", async () => {
        const r = await box.exec(["/usr/local/bin/stb-netacct", "uninstall", "--purge"], {
          allowFail: true,
        });
        assertEquals(r.code, 0, `uninstall: ${r.stderr}\n${r.stdout}`);
        for (const p of INSTALLED) {
          const e = await box.exec(["test", "-e", p], { allowFail: true });
          const l = await box.exec(["test", "-L", p], { allowFail: true });
          assert(e.code !== 0 && l.code !== 0, `${p} is still there after uninstall --purge`);
        }
        const load = (await box.exec([
          "systemctl",
          "show",
          "-p",
          "LoadState",
          "--value",
          "stb-netacct.service",
        ])).stdout.trim();
        assertEquals(load, "not-found");
        const nft = await box.exec(["nft", "list", "table", "inet", "stb_netacct"], {
          allowFail: true,
        });
        assert(nft.code !== 0, "nft table inet stb_netacct is left");
        const ipt = (await box.exec(["sh", "-c", "iptables-save; ip6tables-save"])).stdout;
        assert(!/stb/i.test(ipt), `iptables rules left:\n${ipt}`);
        const s = await box.execUser([BIN, "status"], { allowFail: true });
        assertEquals(s.code, 5, s.stdout);
        assertStringIncludes(s.stdout, "verdict   not installed");
      });
    } finally {
      await box.stop();
      if (peer) {
        try {
          peer.kill("SIGTERM");
        } catch { /* exited */ }
        await peer.status;
      }
      await topo.down();
      try {
        Deno.removeSync(`/tmp/stbsd-${tag}-deno`, { recursive: true });
      } catch { /* never created */ }
      console.log(`systemd test took ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  },
});
