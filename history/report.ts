/**
 * `stb-netacct report`: how much StB used per hour, day or month, from the history `run`
 * records. Unprivileged: it opens the database read-only.
 */

import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { UsageError } from "../lib/errors.ts";
import { hostZone } from "./calendar.ts";
import { DEFAULT_HISTORY_PATH } from "./paths.ts";
import { parseTime, resolveTime, TIME_FORMS, type TimeSpec } from "./range.ts";
import { HistoryReader } from "./reader.ts";
import { buildReport, type ReportUnit } from "./report_data.ts";
import { renderCsv, renderJson, renderTable } from "./report_render.ts";

/** What each resolution shows without --since: 24 hours, 30 days, 12 months. */
const DEFAULT_SINCE: Record<ReportUnit, TimeSpec> = {
  hour: { kind: "ago", n: 24, unit: "h" },
  day: { kind: "ago", n: 30, unit: "d" },
  month: { kind: "ago", n: 12, unit: "mo" },
};

function parseTimeFlag(value: string): TimeSpec {
  const spec = parseTime(value);
  if (!spec) {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a time: use ${TIME_FORMS}`);
  }
  return spec;
}

export interface ReportOptions {
  hours?: boolean;
  days?: boolean;
  months?: boolean;
  service?: string;
  since?: TimeSpec;
  until?: TimeSpec;
  json?: boolean;
  csv?: boolean;
  historyDb: string;
}

export function reportCommand() {
  return new Command("report")
    .summary("how much StB used per hour, day or month (from history)")
    .description(
      "Show StB's external traffic per hour, day (the default) or month of the local " +
        "calendar, with download, upload and total per row, a bar per row and the totals " +
        "per service, from the history `run` writes once a minute. No root needed: root " +
        "and the config's owner may read the history.",
    )
    .option("--hours", "one row per hour (without --since: the last 24 hours)")
    .option("--days", "one row per day, the default (without --since: the last 30 days)")
    .option("--months", "one row per month (without --since: the last 12 months)")
    .option("--service <name>", "only this service (default: all, with a total)")
    .option("--since <time>", `rows from this time on: ${TIME_FORMS}`, parseTimeFlag)
    .option("--until <time>", "rows that start before this time (default: now)", parseTimeFlag)
    .option("--json", "JSON (schema/report.schema.json) instead of the table")
    .option("--csv", "CSV: start, end, rx_bytes, tx_bytes, then each service's rx and tx")
    .option("--history-db <path>", "the history database", DEFAULT_HISTORY_PATH)
    .addHelpText(
      "after",
      "\nRows are the buckets that start in [--since, --until): hours, and days and months\n" +
        "of the local calendar (a day with a DST change has 23 or 25 hours).\n\nExamples:\n" +
        "  stb-netacct report                          # the last 30 days\n" +
        "  stb-netacct report --hours --since today    # today, hour by hour\n" +
        "  stb-netacct report --months --service server\n" +
        "  stb-netacct report --since 2025-03-01 --until 2025-04-01 --csv > march.csv\n" +
        "  stb-netacct report --days --since 7d --json\n",
    )
    .action((opts) => report(opts));
}

function unitOf(o: ReportOptions): ReportUnit {
  const chosen = (["hours", "days", "months"] as const).filter((k) => o[k]);
  if (chosen.length > 1) {
    throw new UsageError(
      `${chosen.map((c) => `--${c}`).join(" and ")} were both given: choose one of ` +
        "--hours, --days, --months",
    );
  }
  return chosen[0] === "hours" ? "hour" : chosen[0] === "months" ? "month" : "day";
}

export function report(o: ReportOptions, out: (text: string) => void = write): void {
  const unit = unitOf(o);
  if (o.json && o.csv) throw new UsageError("--json and --csv were both given: choose one");
  const zone = hostZone();
  const now = Date.now() / 1000;
  const since = resolveTime(o.since ?? DEFAULT_SINCE[unit], now, zone);
  const until = o.until ? resolveTime(o.until, now, zone) : now;
  if (since >= until) {
    throw new UsageError(
      `--since (${zone.iso(since)}) is not before --until (${zone.iso(until)}): swap them`,
    );
  }
  const reader = HistoryReader.open(o.historyDb);
  try {
    const service = o.service ?? null;
    if (service !== null) {
      const known = reader.services();
      if (!known.includes(service)) {
        throw new UsageError(
          `--service ${JSON.stringify(service)}: no such service in the history` +
            (known.length ? `; it has ${known.join(", ")}` : " (it holds no traffic yet)"),
        );
      }
    }
    const r = buildReport(reader, { unit, since, until, service, zone: zone.name });
    out(o.json ? renderJson(r) : o.csv ? renderCsv(r) : renderTable(r, columns()));
  } finally {
    reader.close();
  }
}

function columns(): number {
  try {
    if (Deno.stdout.isTerminal()) return Deno.consoleSize().columns;
  } catch { /* not a terminal */ }
  return 80;
}

function write(text: string): void {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}
