import { assert, assertEquals, assertStringIncludes } from "../lib/test_assert.ts";
import { bar, renderCsv, renderTable } from "./report_render.ts";
import type { Report } from "./report_data.ts";

const c = (rx: bigint, tx: bigint) => ({
  rx_bytes: rx,
  tx_bytes: tx,
  rx_packets: 0n,
  tx_packets: 0n,
});
const utc = (iso: string) => Date.parse(iso) / 1000;

function sampleReport(): Report {
  const rows = [
    ["2025-03-29", "2025-03-28T23:00:00Z", "2025-03-29T23:00:00Z", 3n << 30n, 100n << 20n],
    ["2025-03-30", "2025-03-29T23:00:00Z", "2025-03-30T22:00:00Z", 1n << 30n, 0n],
  ] as const;
  return {
    unit: "day",
    zone: "Europe/Berlin",
    since: utc("2025-03-29T00:00:00Z"),
    until: utc("2025-03-31T00:00:00Z"),
    recordedUntil: utc("2025-03-30T21:59:30Z"),
    services: ["server", "shell"],
    rows: rows.map(([key, s, e, rx, tx]) => ({
      key,
      start: utc(s),
      end: utc(e),
      total: c(rx, tx),
      services: new Map([["server", c(rx, tx)]]),
    })),
    totals: {
      total: c(4n << 30n, 100n << 20n),
      services: new Map([["server", c(4n << 30n, 100n << 20n)], ["shell", c(0n, 0n)]]),
    },
  };
}

Deno.test("table: a row per day with download, upload, total and a bar; DST days say their length", () => {
  const text = renderTable(sampleReport(), 80);
  assertStringIncludes(text, "StB external traffic per day · all services · Europe/Berlin");
  const sat = text.split("\n").find((l) => l.startsWith("Sat 2025-03-29"))!;
  const sun = text.split("\n").find((l) => l.startsWith("Sun 2025-03-30 (23 h)"))!;
  assertStringIncludes(sat, "3.00 GiB");
  assertStringIncludes(sat, "100 MiB");
  assertStringIncludes(sat, "3.10 GiB");
  assert(sat.trimEnd().endsWith("█"), sat);
  // A third of the biggest day's bar, give or take an eighth.
  const len = (l: string) => [...l.slice(l.indexOf("  █"))].length - 2;
  assert(Math.abs(len(sun) * 3.1 - len(sat)) <= 3.5, `${len(sun)} vs ${len(sat)}`);
  assertStringIncludes(text, "total (2 days)");
  assertStringIncludes(text, "per service");
  assertStringIncludes(text, "  shell            0 B");
  assertStringIncludes(text, "Recorded until 2025-03-30 23:59:30");
  for (const line of text.split("\n")) assert([...line].length <= 80, `too wide: ${line}`);
});

Deno.test("bars: proportional in eighths, never empty for a row with traffic", () => {
  assertEquals(bar(10n, 10n, 4), "████");
  assertEquals(bar(5n, 10n, 4), "██");
  assertEquals(bar(1n, 8n, 1), "▏");
  assertEquals(bar(1n, 1_000_000n, 10), "▏");
  assertEquals(bar(0n, 10n, 4), "");
});

Deno.test("csv: start and end with the local offset, totals, then each service", () => {
  assertEquals(
    renderCsv(sampleReport()),
    "start,end,rx_bytes,tx_bytes,server_rx_bytes,server_tx_bytes,shell_rx_bytes,shell_tx_bytes\n" +
      "2025-03-29T00:00:00+01:00,2025-03-30T00:00:00+01:00,3221225472,104857600,3221225472,104857600,0,0\n" +
      "2025-03-30T00:00:00+01:00,2025-03-31T00:00:00+02:00,1073741824,0,1073741824,0,0,0\n",
  );
});
