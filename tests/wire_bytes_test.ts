/**
 * What the byte counts are, through the real CLI with each backend's default config: the
 * ebpf backend counts bytes as the wire carries them, nft and iptables count a GSO/GRO
 * aggregate's headers once, bulk TCP a few percent under the wire (what README, the
 * contract and `doctor` say).
 *
 * The lab's veth is made to behave as a wire: TSO off, so the stack cuts TCP's aggregates
 * into segments before the veth, which counts each; GRO on at the client, so its receive
 * path merges the peer's segments into aggregates again, as a real NIC's GRO does. The
 * hooks see aggregates both ways, the veth counts segments. Run as root.
 */

import { BACKEND_NAMES } from "../backends/mod.ts";
import {
  assert,
  CLIENT_IF,
  flowsTo,
  Lab,
  nativeLayout,
  PEER_IF,
  type RunningCli,
  type Sample,
  SLOW_FACTOR,
  startRun,
} from "./harness/mod.ts";

const TEST_OPTIONS = { sanitizeOps: false, sanitizeResources: false };
/** Bulk TCP each way and family (a quarter in the slow kernel-6.1 guest). */
const MB = SLOW_FACTOR === 1 ? 1_000_000 : 250_000;
const BULK = { tcpUp: 16 * MB, tcpDown: 16 * MB, udpCount: 0, udpSize: 0 };
const CT_MARKS: Record<string, Record<string, string>> = {
  nft: { ct_mark: "0x00510000", ct_mask: "0x00ff0000" },
  iptables: { ct_mark: "0x5a000000", ct_mask: "0xff000000" },
};

/** Counted minus wire, in % of the wire. */
const errorPct = (counted: number, wire: number) => (counted - wire) / wire * 100;

Deno.test({
  name: "wire bytes: ebpf by default counts bulk TCP as the wire; nft and iptables 2-6% under",
  ...TEST_OPTIONS,
  async fn() {
    const lab = await Lab.open(nativeLayout());
    const dir = await Deno.makeTempDir({ prefix: "stb-wire-" });
    const clis: RunningCli[] = [];
    try {
      await lab.inClient(["ethtool", "-K", CLIENT_IF, "tso", "off", "gso", "on", "gro", "on"]);
      await lab.inPeer(["ethtool", "-K", PEER_IF, "tso", "off", "gso", "on", "gro", "off"]);
      lab.cgroups.create("server");
      for (const backend of BACKEND_NAMES) {
        const config = `${dir}/${backend}.json`;
        // Each backend as installed: no "gso_correction" key, its default.
        await Deno.writeTextFile(
          config,
          JSON.stringify({ services: lab.cgroups.configServices(), ...CT_MARKS[backend] }),
        );
        clis.push(
          await startRun(lab.layout, lab.clientNetns, {
            backend,
            config,
            output: `${dir}/${backend}-counters.json`,
          }),
        );
      }
      const before = await Promise.all(clis.map((c) => c.sampleAfter()));
      const wire0 = await lab.topology.linkCounters();
      await lab.traffic("server", [...flowsTo("internet4", BULK), ...flowsTo("internet6", BULK)]);
      const wire1 = await lab.topology.linkCounters();
      const after = await Promise.all(clis.map((c) => c.sampleAfter()));
      // L3 bytes on the wire: the client's veth counts what it sends with its 14-byte
      // Ethernet header, what it takes through NAPI (GRO on) after eth_type_trans, without.
      const wire = {
        tx: (wire1.txBytes - wire0.txBytes) - 14 * (wire1.txPackets - wire0.txPackets),
        rx: wire1.rxBytes - wire0.rxBytes,
      };
      const counted = (a: Sample, b: Sample) => ({
        tx: b.tx_bytes_total - a.tx_bytes_total,
        rx: b.rx_bytes_total - a.rx_bytes_total,
      });
      const figures = BACKEND_NAMES.map((backend, i) => {
        const c = counted(before[i]!, after[i]!); // one sample per backend, in order
        return { backend, tx: errorPct(c.tx, wire.tx), rx: errorPct(c.rx, wire.rx) };
      });
      const table = figures.map((f) => `${f.backend} tx ${f.tx.toFixed(3)}% rx ${f.rx.toFixed(3)}%`)
        .join("; ");
      console.log(`counted vs wire: ${table} (wire tx ${wire.tx}, rx ${wire.rx} B)`);
      for (const f of figures) {
        for (const d of ["tx", "rx"] as const) {
          if (f.backend === "ebpf") {
            assert(Math.abs(f[d]) <= 0.5, `ebpf ${d} ${f[d].toFixed(3)}% off the wire: ${table}`);
          } else {
            assert(f[d] >= -6 && f[d] <= -2, `${f.backend} ${d}: ${f[d].toFixed(3)}%: ${table}`);
          }
        }
      }
    } finally {
      for (const c of clis) await c.stop("SIGINT");
      await lab.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
