import { assertEquals } from "../lib/test_assert.ts";
import { summarize } from "./summary.ts";

const outsider = (runs: number, connects: number) => ({
  rounds: 3,
  mb: 1000,
  connects: 100,
  rows: [{
    backend: "ebpf",
    outsider_packets: 30000,
    programs: 6,
    runs_per_outsider_transfer: runs,
    runs_per_outsider_connects: connects,
    runs_for_service_check: 40,
    ns_per_packet_vs_none: 3,
    ns_per_packet_vs_none_min: -100,
    ns_per_packet_vs_none_max: 90,
    within_noise: true,
  }],
});

const window = (fault: string, lost: number) => ({
  fault,
  wire_bytes: 50_000_000,
  counted_bytes: 50_000_000 - lost,
  missing_bytes: lost,
  lost_bytes: fault === "control" ? 0 : lost,
  lost_intervals: 0,
});

const verdicts = (r: Record<string, unknown>, prefix: string) =>
  summarize(r).filter((t) => t.target.startsWith(prefix)).map((t) => t.verdict);

Deno.test("summarize: an outsider's program runs and connects are judged against 0", () => {
  assertEquals(verdicts({ outsider_cost: outsider(0, 0) }, "ebpf: 0"), ["PASS", "PASS"]);
  assertEquals(verdicts({ outsider_cost: outsider(1, 0) }, "ebpf: 0"), ["MISS", "PASS"]);
  assertEquals(verdicts({ outsider_cost: outsider(0, 2) }, "ebpf: 0"), ["PASS", "MISS"]);
  assertEquals(verdicts({}, "ebpf: 0"), ["MISS"], "not measured is a MISS");
});

Deno.test("summarize: bytes lost per fault pass only within 0.1% of the window", () => {
  const fl = (lost: number) => ({
    rate_mbit: 100,
    interval_s: 0.5,
    rows: [{
      backend: "nft",
      windows: [window("control", 300), window("sigkill", lost), window("restart", 0)],
    }],
  });
  assertEquals(verdicts({ fault_loss: fl(40_000) }, "nft: no bytes"), ["PASS"]);
  assertEquals(verdicts({ fault_loss: fl(2_000_000) }, "nft: no bytes"), ["MISS"]);
});

Deno.test("summarize: the paired throughput row says how sure its verdict is", () => {
  const pt = (verdict: string, ci: [number, number], met: boolean) => ({
    paired_throughput: {
      loss_pct: 0.5,
      ratio: 0.995,
      ratio_ci95: ci,
      ratio_min: 0.9,
      ratio_max: 1.1,
      pairs: 20,
      verdict,
      target_met: met,
    },
  });
  const row = (r: Record<string, unknown>) =>
    summarize(r).find((t) => t.target.includes("paired: service vs outsider"))!;
  const noisy = row(pt("within noise", [0.97, 1.02], true));
  assertEquals(noisy.verdict, "PASS");
  assertEquals(noisy.note?.startsWith("within noise"), true, noisy.note);
  assertEquals(row(pt("MISS", [0.95, 0.98], false)).verdict, "MISS");
});
