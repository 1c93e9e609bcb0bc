import { assertEquals } from "../lib/test_assert.ts";
import { pairedRatios, roundOrder } from "./throughput.ts";
import { median } from "./stats.ts";
import { nethogsRatio, summarize } from "./summary.ts";

Deno.test("roundOrder reverses every other round, so neighbours change", () => {
  assertEquals(roundOrder(4, 0), [0, 1, 2, 3]);
  assertEquals(roundOrder(4, 1), [3, 2, 1, 0]);
  assertEquals(roundOrder(4, 2), [0, 1, 2, 3]);
});

Deno.test("pairedRatios divides each round by the same round's baseline", () => {
  // Round 2 ran on a slower machine for both: it pairs as 0.98 like the others, where the
  // raw figures alone would mix a fast none with a slow configuration.
  const paired = pairedRatios([25, 20, 24], [24.5, 19.6, 23.52]);
  assertEquals(paired.map((x) => Number(x.toFixed(4))), [0.98, 0.98, 0.98]);
  assertEquals(Number(median(paired).toFixed(4)), 0.98);
  // A round where one side failed is skipped, not paired with another round.
  assertEquals(pairedRatios([10, null, 8], [9, 7, null]), [0.9]);
});

Deno.test("nethogsRatio adds the capture cost and keeps the process-only ratio in the note", () => {
  const tcp = { kernel_pct_core_per_gbps_net: 0.03 };
  const ours = { monitor_cpu_pct_median: 0.17 };
  const nh = {
    monitor_cpu_pct_median: 2.4,
    capture_kernel_pct_median: 0.3,
    capture: [{ samples: 85 }, { samples: 92 }],
  };
  const r = nethogsRatio(nh, ours, tcp, 1);
  assertEquals(Number(r.ratio!.toFixed(2)), 13.5);
  assertEquals(
    r.measured,
    "13.5x (nethogs 2.40% + capture 0.300% vs run 0.170% + ebpf kernel 0.030%)",
  );
  assertEquals(r.note.startsWith("process only: 12.0x (nethogs 2.40%)"), true);
  assertEquals(r.note.includes("85..92 samples a run"), true);
  const old = nethogsRatio({ monitor_cpu_pct_median: 2.4 }, ours, tcp, 1);
  assertEquals(Number(old.ratio!.toFixed(1)), 12);
  assertEquals(old.note.includes("not measured"), true);
});

Deno.test("the loss verdict is ebpf's alone; the floor's loss is named in its note", () => {
  const config = (name: string, ratios: number[]) => ({
    name,
    paired_ratios: ratios,
    paired_ratio: median(ratios),
    paired_ratio_min: Math.min(...ratios),
    paired_ratio_max: Math.max(...ratios),
    paired_loss_pct: (1 - median(ratios)) * 100,
    loss_pct: (1 - median(ratios)) * 100,
    ratio: median(ratios),
    median_gbps: 21,
    min_gbps: 20,
    max_gbps: 22,
  });
  const results = {
    throughput: {
      rates: {
        max: {
          configurations: [
            config("none", [1, 1, 1]),
            config("floor", [0.97, 0.98, 0.975]),
            config("ebpf", [0.95, 0.94, 0.96]),
          ],
        },
      },
    },
  };
  const rows = summarize(results).filter((r) => r.target.includes("throughput loss"));
  assertEquals(rows.length, 1);
  const [row] = rows;
  assertEquals(row?.verdict, "MISS");
  assertEquals(row?.measured.startsWith("5.00%"), true, row?.measured);
  assertEquals(
    row?.note?.includes(
      "floor (return-1 cgroup_skb programs at the root, the same way): " +
        "loss 2.50% (rounds 0.97..0.98)",
    ),
    true,
    row?.note,
  );
});
