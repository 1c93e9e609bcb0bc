/**
 * The LPM-trie path of the counting programs on the real kernel: an address whose first 16
 * bits a user exclusion longer than /16 shares is judged by the trie, so one inside that
 * prefix is not counted and one beside it is, for IPv4, IPv6 and IPv4-mapped IPv6, in both
 * directions. The packets are BPF_PROG_TEST_RUN runs tagged with this process's cgroup
 * (bpf/packet_run.ts), so the test moves itself into a scratch service cgroup and back.
 *
 *   deno test -A bpf/trie_path_test.ts   (root)
 */

import { EbpfBackend } from "../backends/ebpf.ts";
import {
  craftPacket,
  joinCgroup,
  nonLoopbackIfindex,
  ownCgroupPath,
  testRun,
} from "./packet_run.ts";
import { ASK_TRIE, prefixVerdicts, verdictKey } from "./netacct_abi.ts";
import { cgroupDir, cgroupId, findCgroup2Mount } from "../lib/cgroup.ts";
import { DEFAULT_EXCLUDE, parseCidr, parseIpv4, parseIpv6 } from "../lib/cidr.ts";
import { assertEquals } from "../lib/test_assert.ts";

const EXTRA = ["203.0.113.0/24", "2001:db8::/32"];

/** remote address -> counted?; each one's first 16 bits send it to the trie. */
const CASES: { remote: string; local: string; counted: boolean }[] = [
  { remote: "203.0.113.7", local: "192.0.2.1", counted: false },
  { remote: "203.0.5.7", local: "192.0.2.1", counted: true },
  { remote: "2001:db8::7", local: "2001:db8::1", counted: false },
  { remote: "2001:dead::7", local: "2001:db8::1", counted: true },
  { remote: "::ffff:203.0.113.9", local: "::ffff:192.0.2.1", counted: false },
  { remote: "::ffff:203.0.6.9", local: "::ffff:192.0.2.1", counted: true },
];

const addr = (a: string) => a.includes(":") ? parseIpv6(a)! : parseIpv4(a)!;

Deno.test({
  name: "netacct trie path: inside a /24 or /32 exclusion not counted, beside it counted",
  ignore: Deno.uid() !== 0,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const mount = findCgroup2Mount();
    const home = ownCgroupPath();
    const svc = `/stb-netacct-trie-${crypto.randomUUID().slice(0, 8)}`;
    Deno.mkdirSync(cgroupDir(mount, svc));
    const backend = new EbpfBackend();
    try {
      const exclude = [...DEFAULT_EXCLUDE, ...EXTRA].map(parseCidr);
      const table = prefixVerdicts(exclude);
      await backend.start([{ name: "svc", path: svc, id: cgroupId(mount, svc)! }], {
        mount,
        exclude,
        ctMark: 0,
        ctMask: 0,
        log: () => {},
      });
      const ifindex = nonLoopbackIfindex();
      const got: string[] = [], want: string[] = [];
      for (const c of CASES) {
        // The case is only about the trie if the table sends it there.
        const bytes = addr(c.remote);
        const v4 = bytes.length === 4;
        const key = verdictKey(bytes);
        if (v4 || !c.remote.startsWith("::ffff:")) {
          assertEquals((v4 ? table.v4 : table.v6)[key], ASK_TRIE, `${c.remote} asks the trie`);
        }
        for (const program of ["ingress", "egress"] as const) {
          const frame = craftPacket(
            program === "ingress"
              ? { src: bytes, dst: addr(c.local) }
              : { src: addr(c.local), dst: bytes },
          );
          const total = async () => {
            const s = (await backend.read()).svc;
            return Number((s?.rxPackets ?? 0n) + (s?.txPackets ?? 0n));
          };
          const before = await total();
          joinCgroup(cgroupDir(mount, svc));
          try {
            testRun(backend.programFd(program), { frame, ifindex, repeat: 3 });
          } finally {
            joinCgroup(cgroupDir(mount, home));
          }
          got.push(`${program} ${c.remote}: ${(await total()) - before}`);
          want.push(`${program} ${c.remote}: ${c.counted ? 3 : 0}`);
        }
      }
      assertEquals(got, want);
    } finally {
      try {
        joinCgroup(cgroupDir(mount, home));
      } finally {
        await backend.stop();
        Deno.removeSync(cgroupDir(mount, svc));
      }
    }
  },
});
