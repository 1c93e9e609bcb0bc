/**
 * Frames as text. Pure: a FrameData and a size in, lines out, so frames can be compared
 * with snapshot files. Colour is opt-in per call; without it the output has no escape
 * codes at all (pipes, NO_COLOR, --no-color).
 *
 * Layout, top to bottom: title, rate table (now / peak / average / total), optional host
 * line, chart (download and upload, newest on the right), legend, top destinations (when
 * the sample has them and there is room), status line.
 */

import asciichartJs from "asciichart";
import type { FrameData, Status, StatusKind } from "./model.ts";
import { formatBytes, formatRate, niceCeiling } from "../lib/units.ts";
import { describeToday } from "../history/today.ts";

/** The part of asciichart 1.5 used here; the package ships no types of its own. */
interface AsciiChart {
  plot(series: number[][], cfg: {
    min?: number;
    max?: number;
    height?: number;
    offset?: number;
    colors?: string[];
    format?: (x: number, i: number) => string;
  }): string;
  green: string;
  cyan: string;
  yellow: string;
  red: string;
  reset: string;
}
const asciichart = asciichartJs as unknown as AsciiChart;

export interface RenderOptions {
  columns: number;
  rows: number;
  color: boolean;
  /** The top-destinations table under the chart (default true; `--no-destinations`). */
  destinations?: boolean;
}

/** Destinations listed under the chart, at most. */
export const DESTINATIONS_SHOWN = 5;

const RX_COLOR = asciichart.green;
const TX_COLOR = asciichart.cyan;
const RESET = asciichart.reset;
const STATUS_COLOR: Record<StatusKind, string> = {
  ok: asciichart.green,
  reset: asciichart.cyan,
  waiting: asciichart.yellow,
  stale: asciichart.yellow,
  malformed: asciichart.red,
  unreadable: asciichart.red,
};

/** y-axis labels are right-aligned to this width ("1023 KiB/s"). */
const LABEL_WIDTH = 10;
/** asciichart puts a space and the axis after the label. */
const AXIS_WIDTH = LABEL_WIDTH + 2;
const MIN_COLUMNS = 40;
const MIN_CHART_ROWS = 3;
const MAX_CHART_ROWS = 25;

function paint(text: string, color: string, on: boolean): string {
  return on ? color + text + RESET : text;
}

/** Cuts plain text (no escapes) to the terminal width. */
function fit(text: string, width: number): string {
  const chars = [...text];
  return chars.length <= width ? text : chars.slice(0, width - 1).join("") + "…";
}

function cell(text: string, width = CELL): string {
  return text.padStart(width);
}

type Column = "now" | "peak" | "average" | "total";
const CELL = 11;
const ROW_LABEL = 6;

/** The table's columns that fit, dropped least useful first (average, then peak). */
function tableColumns(width: number): Column[] {
  const fit = Math.max(1, Math.floor((width - ROW_LABEL) / CELL));
  const keep = (["now", "total", "peak", "average"] as Column[]).slice(0, fit);
  return (["now", "peak", "average", "total"] as Column[]).filter((c) => keep.includes(c));
}

interface RateRow {
  label: string;
  color: string;
  d: { current: number | null; peak: number; average: number } | null;
  total: bigint | null;
}

function rateRow(row: RateRow, columns: Column[], on: boolean): string {
  const { label, color, d, total } = row;
  const text: Record<Column, string> = {
    now: d === null ? "collecting" : d.current === null ? "—" : formatRate(d.current),
    peak: d === null ? "—" : formatRate(d.peak),
    average: d === null ? "—" : formatRate(d.average),
    total: total === null ? "—" : formatBytes(total),
  };
  return paint(label, color, on) + columns.map((c) => cell(text[c])).join("");
}

function pct(v: number | null): string {
  // Over 100% cannot be real (the host carries StB's bytes): the two are from different
  // windows of time or different machines; say so rather than print 1149353%.
  if (v === null) return "—";
  return v > 1.005 ? ">100%" : `${Math.round(v * 100)}%`;
}

function headerLines(f: FrameData, o: RenderOptions): string[] {
  const on = o.color;
  const backend = f.backend === null
    ? ""
    : ` · backend ${f.backend}${f.fallbackReason ? ` (fallback: ${f.fallbackReason})` : ""}`;
  const title = fit(`StB external traffic${backend} · ${f.path}`, o.columns);
  const cols = tableColumns(o.columns);
  const lines = [
    title,
    " ".repeat(ROW_LABEL) + cols.map((c) => cell(c)).join(""),
    rateRow(
      { label: "↓ RX  ", color: RX_COLOR, d: f.stats?.rx ?? null, total: f.totals?.rx ?? null },
      cols,
      on,
    ),
    rateRow(
      { label: "↑ TX  ", color: TX_COLOR, d: f.stats?.tx ?? null, total: f.totals?.tx ?? null },
      cols,
      on,
    ),
  ];
  // Beside the running totals, what today came to, and from when (history lags a minute).
  if (f.today) {
    lines.push(fit(" ".repeat(ROW_LABEL) + describeToday(f.today, formatBytes), o.columns));
  }
  if (f.host !== null) {
    const h = f.host;
    const now = h.error !== null
      ? `unavailable: ${h.error}`
      : h.current === null
      ? "collecting"
      : `↓ ${formatRate(h.current.rx)} ↑ ${formatRate(h.current.tx)}`;
    const share = h.share === null ? "" : ` · StB share ↓ ${pct(h.share.rx)} ↑ ${pct(h.share.tx)}`;
    lines.push(fit(`host (not lo) ${now}${share}`, o.columns));
  }
  return lines;
}

/** Word-wraps plain text to `width`, at most `maxLines` lines (the last one cut). */
function wrap(text: string, width: number, maxLines: number): string[] {
  const lines: string[] = [];
  let cur = "";
  for (const word of text.split(" ")) {
    const next = cur === "" ? word : `${cur} ${word}`;
    if ([...next].length <= width || cur === "") {
      cur = next;
      continue;
    }
    lines.push(cur);
    cur = word;
  }
  lines.push(cur);
  if (lines.length > maxLines) {
    lines.splice(maxLines - 1, lines.length, lines.slice(maxLines - 1).join(" "));
  }
  return lines.map((l) => fit(l, width));
}

/** The status gets up to three lines when it needs them: its reason is the useful part. */
function statusLines(s: Status, o: RenderOptions): string[] {
  return wrap(`status: ${s.text}`, o.columns, 3).map((l) =>
    paint(l, STATUS_COLOR[s.kind], o.color)
  );
}

/** The chart's data columns for a terminal this wide: one per interval, at most. */
export function chartColumns(f: FrameData, terminalColumns: number): number {
  const avail = Math.max(MIN_COLUMNS, terminalColumns) - AXIS_WIDTH - 1;
  return Math.max(2, Math.min(avail, Math.ceil(f.window / f.interval)));
}

function chartLines(f: FrameData, o: RenderOptions, rows: number): string[] {
  const columns = chartColumns(f, o.columns);
  const { rx, tx } = f.series(columns);
  // Until the window is full the chart starts at the first data; holes (a reset, the sampler
  // down) are drawn at zero, since asciichart cannot skip points.
  let first = 0;
  while (first < columns && rx[first] === null) first++;
  // One point is no line: wait for a second column of data.
  if (first >= columns - 1) {
    const lines = new Array<string>(rows).fill("");
    lines[Math.floor(rows / 2)] = fit(
      " ".repeat(AXIS_WIDTH) + "(no rates yet: the chart starts after two samples)",
      o.columns,
    );
    return lines;
  }
  const rxs = rx.slice(first).map((v) => v ?? 0);
  const txs = tx.slice(first).map((v) => v ?? 0);
  const top = niceCeiling(Math.max(...rxs, ...txs));
  const plot = asciichart.plot([rxs, txs], {
    min: 0,
    max: top,
    height: rows - 1,
    offset: 3,
    format: (x: number) => formatRate(x).padStart(LABEL_WIDTH),
    ...(o.color ? { colors: [RX_COLOR, TX_COLOR] } : {}),
  });
  return plot.split("\n").map((l) => l.trimEnd());
}

function legend(f: FrameData, o: RenderOptions, columns: number): string {
  const col = f.window / columns;
  const span = col < 10 ? col.toFixed(col < 1 ? 2 : 1).replace(/\.?0+$/, "") : `${Math.round(col)}`;
  const rx = "── ↓ download", tx = "── ↑ upload";
  const tail = ` · last ${f.window} s, ${span} s per column`;
  const pad = " ".repeat(AXIS_WIDTH);
  // Drop the least useful parts first when the terminal is narrow.
  for (const [lead, end] of [[pad, tail], ["", tail], ["", ""]]) {
    if ([...`${lead}${rx}  ${tx}${end}`].length <= o.columns) {
      return lead + paint(rx, RX_COLOR, o.color) + "  " + paint(tx, TX_COLOR, o.color) + end;
    }
  }
  return paint(rx, RX_COLOR, o.color) + "  " + paint(tx, TX_COLOR, o.color);
}

/**
 * The busiest endpoints now (rate over the last interval, then total), a title line and
 * at most DESTINATIONS_SHOWN rows, fewer when the terminal has no room for them.
 */
function destinationLines(f: FrameData, o: RenderOptions, room: number): string[] {
  if (o.destinations === false || f.destinations === null || room < 2) return [];
  if (f.destinations.length === 0) return [fit("top destinations: none yet", o.columns)];
  const rows = f.destinations.slice(0, Math.min(DESTINATIONS_SHOWN, room - 1));
  const cells = o.columns >= 3 * CELL ? 2 : 1;
  const left = o.columns - cells * CELL;
  const title = fit("top destinations", left).padEnd(left) +
    cell("now") + (cells > 1 ? cell("total") : "");
  return [
    title,
    ...rows.map((d) => {
      const arrow = d.direction === "rx" ? "↓" : "↑";
      const text = fit(`${arrow} ${d.endpoint} ${d.protocol} · ${d.service}`, left - 1);
      const line = text + " ".repeat(Math.max(0, left - [...text].length)) +
        cell(d.rate === null ? "—" : formatRate(d.rate)) +
        (cells > 1 ? cell(formatBytes(d.total)) : "");
      return paint(line, d.direction === "rx" ? RX_COLOR : TX_COLOR, o.color);
    }),
  ];
}

/** One full-screen frame, at most `rows` lines, none wider than `columns` (colour aside). */
export function renderFrame(f: FrameData, o: RenderOptions): string[] {
  const header = headerLines(f, o);
  const status = statusLines(f.status, o);
  const fixed = header.length + 1 + status.length; // + legend
  const dests = destinationLines(f, o, o.rows - fixed - MIN_CHART_ROWS);
  const chartRows = Math.min(
    MAX_CHART_ROWS,
    Math.max(MIN_CHART_ROWS, o.rows - fixed - dests.length),
  );
  return [
    ...header,
    ...chartLines(f, o, chartRows),
    legend(f, o, chartColumns(f, o.columns)),
    ...dests,
    ...status,
  ];
}

/** One line per interval for pipes and logs: time, rates, totals, status. */
export function renderPlainLine(f: FrameData): string {
  const time = new Date(f.nowUnix * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  const cur = (v: number | null | undefined) => v == null ? "-" : formatRate(v);
  const tot = (v: bigint | undefined) => v === undefined ? "-" : formatBytes(v);
  let line = `${time} rx ${cur(f.stats?.rx.current)} tx ${cur(f.stats?.tx.current)}` +
    ` total rx ${tot(f.totals?.rx)} tx ${tot(f.totals?.tx)}`;
  if (f.host !== null) {
    line += ` host rx ${cur(f.host.current?.rx)} tx ${cur(f.host.current?.tx)}`;
    if (f.host.error !== null) line += ` (${f.host.error})`;
  }
  return `${line} status ${f.status.text}`;
}
