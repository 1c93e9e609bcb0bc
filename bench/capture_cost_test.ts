import { assertEquals, assertThrows } from "../lib/test_assert.ts";
import { captureFigures, parseLinkStats, parsePerfScript, PERIOD_NS } from "./capture_cost.ts";

const testdata = (name: string) =>
  Deno.readTextFileSync(new URL(`./testdata/${name}`, import.meta.url));

Deno.test("parsePerfScript counts samples with a capture frame in their kernel chain", () => {
  // Real `perf script -F comm,ip,sym` of `perf record -a -g --kernel-callchains` while nethogs
  // watched a veth carrying iperf3 at 1 Gbit/s, trimmed to 96 samples: all 16 with a
  // capture frame (4 of them under dev_queue_xmit_nit: outgoing packets, one in its
  // skb_clone) and others beside.
  const s = parsePerfScript(testdata("perf_script_nethogs_1g.txt"));
  assertEquals(s.samples, 96);
  assertEquals(s.capture, 16);
  assertEquals(s.captureTx, 4);
  assertEquals(s.byComm.nethogs, 40);
  assertEquals(s.byComm.iperf3, 16);
});

Deno.test("parsePerfScript matches whole symbols, not prefixes or callers", () => {
  const text = [
    "iperf3 ",
    "\tffffffff82150338 tpacket_rcv_helper",
    "\tffffffff81e64d8b __netif_receive_skb_core.constprop.0",
    "",
    "ksoftirqd/0 ",
    "\tffffffff82150338 packet_rcv",
    "",
    "swapper ",
    "\tffffffff821f206b pv_native_safe_halt",
  ].join("\n");
  const s = parsePerfScript(text);
  assertEquals(s, {
    samples: 3,
    capture: 1,
    captureTx: 0,
    byComm: { iperf3: 1, "ksoftirqd/0": 1, swapper: 1 },
  });
});

Deno.test("captureFigures turns samples into % of one core and ns per packet", () => {
  // 50 samples of 100 us in 5 s = 5 ms/s = 0.5% of a core; over 20,000 packets 250 ns each.
  const f = captureFigures(
    { samples: 1000, capture: 50, captureTx: 10, byComm: { nethogs: 100 } },
    20_000,
    5,
    "nethogs",
  );
  assertEquals(PERIOD_NS, 100_000);
  assertEquals(f, {
    kernel_pct: 0.1,
    kernel_tx_pct: 0.02,
    samples: 50,
    monitor_sampled_pct: 0.2,
    packets_per_s: 4000,
    ns_per_packet: 250,
  });
  assertEquals(
    captureFigures({ samples: 0, capture: 0, captureTx: 0, byComm: {} }, 0, 1, null)
      .ns_per_packet,
    null,
  );
});

Deno.test("parseLinkStats reads ifindex, packet and byte counters of `ip -j -s link`", () => {
  const text = testdata("ip_link_stats_lo.json");
  const s = parseLinkStats(text);
  const raw = JSON.parse(text)[0].stats64;
  assertEquals(s.ifindex, 1);
  assertEquals(s.rxPackets > 0 && s.txPackets > 0, true);
  assertEquals([s.rxBytes, s.txBytes], [raw.rx.bytes, raw.tx.bytes]);
  assertThrows(() => parseLinkStats("[]"), Error, "no device with packet counters");
});
