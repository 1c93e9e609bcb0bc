/**
 * Frames as text. Pure: a FrameData and a size in, lines out, so frames can be compared
 * with snapshot files. Colour is opt-in per call; without it the output has no escape
 * codes at all (pipes, NO_COLOR, --no-color), and nothing depends on colour: every
 * service has its glyph in the chart, the legend and the table.
 *
 * Layout, top to bottom: title (backend, path, today's totals when a history gives them),
 * optional host line, the download chart and the upload chart (each with its own round
 * scale, one line per service and the total, newest on the right, the same window of
 * seconds whatever the width), the time axis, the per-service table (now, peak, average,
 * total, present), top destinations when there is room, the status line, the keys.
 */

import type { FrameData, SeriesSet, ServiceView, Status, StatusKind } from "./model.ts";
import type { DirectionStats } from "./rates.ts";
import { type ChartSeries, plot, rateAxis, timeAxis } from "./chart.ts";
import { formatBytes, formatRateIn } from "../lib/units.ts";
import { isoTime } from "../lib/time.ts";
import { describeToday } from "../history/today.ts";

export interface RenderOptions {
  columns: number;
  rows: number;
  color: boolean;
  /** Rates in bits per second (decimal units) instead of bytes (binary units). */
  bits?: boolean;
  /** Per-service lines in the charts (default true); the total is always drawn. */
  services?: boolean;
  /** The top-destinations table under the chart (default true; `--no-destinations`). */
  destinations?: boolean;
  /** The keys line at the bottom (live on a terminal); `paused` shows there too. */
  keys?: boolean;
  paused?: boolean;
}

/** Destinations listed under the chart, at most. */
export const DESTINATIONS_SHOWN = 5;

const SGR = (n: string) => `\x1b[${n}m`;
const SGR_RE = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");
const RESET = SGR("0");
const BOLD = SGR("1");
const GREEN = SGR("32"), YELLOW = SGR("33"), RED = SGR("31"), CYAN = SGR("36");
/** Service colours and glyphs, by the service's place in the file. */
const SERVICE_COLORS = [GREEN, CYAN, SGR("35"), YELLOW, SGR("34"), RED];
const GLYPHS = ["●", "▲", "■", "◆", "○", "△", "□", "◇"];
const ALL_GLYPH = "─";
const STATUS_COLOR: Record<StatusKind, string> = {
  ok: GREEN,
  reset: CYAN,
  discontinuity: YELLOW,
  clock: YELLOW,
  unknown: YELLOW,
  waiting: YELLOW,
  stale: YELLOW,
  malformed: RED,
  unreadable: RED,
};

const MIN_COLUMNS = 40;
const MIN_CHART_ROWS = 3;
const MAX_CHART_ROWS = 25;
/** Rows each chart keeps before the destinations table gets any. */
const DEST_CHART_ROWS = 4;
const CELL = 12;

export function glyphOf(index: number): string {
  return GLYPHS[index % GLYPHS.length]!; // GLYPHS is not empty
}

function colorOf(index: number): string {
  return SERVICE_COLORS[index % SERVICE_COLORS.length]!; // SERVICE_COLORS is not empty
}

function paint(text: string, color: string, on: boolean): string {
  return on && color !== "" ? color + text + RESET : text;
}

function width(text: string): number {
  return [...text].length;
}

/** Cuts plain text (no escapes) to the terminal width. */
function fit(text: string, cols: number): string {
  const chars = [...text];
  return chars.length <= cols ? text : chars.slice(0, Math.max(0, cols - 1)).join("") + "…";
}

function cell(text: string, w = CELL): string {
  return text.padStart(w);
}

function titleLine(f: FrameData, o: RenderOptions): string {
  const today = f.today ? ` · ${describeToday(f.today, formatBytes)}` : "";
  const backend = f.backend === null
    ? ""
    : ` · backend ${f.backend}${f.fallbackReason ? ` (fallback: ${f.fallbackReason})` : ""}`;
  return fit(`StB external traffic${today}${backend} · ${f.path}`, o.columns);
}

function pct(v: number | null): string {
  // Over 100% cannot be real (the host carries StB's bytes): the two are from different
  // windows of time or different machines; say so rather than print 1149353%.
  if (v === null) return "—";
  return v > 1.005 ? ">100%" : `${Math.round(v * 100)}%`;
}

function hostLine(f: FrameData, o: RenderOptions): string[] {
  const h = f.host;
  if (h === null) return [];
  const rate = (v: number) => formatRateIn(v, o.bits ?? false);
  const now = h.error !== null
    ? `unavailable: ${h.error}`
    : h.current === null
    ? "collecting"
    : `↓ ${rate(h.current.rx)} ↑ ${rate(h.current.tx)}`;
  const share = h.share === null ? "" : ` · StB share ↓ ${pct(h.share.rx)} ↑ ${pct(h.share.tx)}`;
  return [fit(`host (not lo) ${now}${share}`, o.columns)];
}

/** What a row of the table and a line of the chart stand for. */
interface Entry {
  glyph: string;
  color: string;
  name: string;
  present: boolean | null;
  stats: { rx: DirectionStats; tx: DirectionStats } | null;
  totals: { rx: bigint; tx: bigint } | null;
}

function entries(f: FrameData): Entry[] {
  const services = f.services.map((s: ServiceView, i) => ({
    glyph: glyphOf(i),
    color: colorOf(i),
    name: s.name,
    present: s.present,
    stats: s.stats,
    totals: s.totals,
  }));
  const all = {
    glyph: ALL_GLYPH,
    color: BOLD,
    name: "all",
    present: null,
    stats: f.stats,
    totals: f.totals,
  };
  return [...services, all];
}

function legend(f: FrameData, o: RenderOptions): string {
  const shown = o.services !== false;
  const items = entries(f).filter((e) => shown || e.present === null);
  const text = items.map((e) => paint(`${e.glyph} ${e.name}`, e.color, o.color)).join("  ");
  const hidden = !shown && f.services.length > 0 ? "  (services hidden)" : "";
  return text + hidden;
}

/** The two charts, each with its caption, and the time axis under them. */
function chartLines(f: FrameData, o: RenderOptions, rows: { rx: number; tx: number }): string[] {
  const bits = o.bits ?? false;
  const total = Math.max(MIN_COLUMNS, o.columns);
  // Labels are at most this wide on a chart of usual height ("1000 KiB/s"); a taller one
  // may need more, and then the data columns are resampled narrower.
  const usual = bits ? 11 : 10;
  let data = f.series(total - usual - 2);
  // Nothing measured yet: no scale to show.
  const axisOf = (dir: "rx" | "tx", rowCount: number) =>
    f.stats === null
      ? { perRow: 1, labels: ["0", ...new Array<string>(rowCount - 1).fill("")] }
      : rateAxis(seriesMax(data, dir), rowCount, bits);
  const axes = { rx: axisOf("rx", rows.rx), tx: axisOf("tx", rows.tx) };
  const labelWidth = Math.max(usual, ...[...axes.rx.labels, ...axes.tx.labels].map(width));
  const columns = total - labelWidth - 2;
  if (labelWidth !== usual) data = f.series(columns);
  const noRates = f.stats === null;
  const block = (dir: "rx" | "tx") => {
    const axis = axes[dir];
    const lines = noRates
      ? emptyChart(rows[dir], columns, noRatesText(f))
      : plot(chartSeries(data, dir, o), axis, { rows: rows[dir], columns });
    return lines.map((line, i) => {
      const r = rows[dir] - 1 - i;
      const label = axis.labels[r] ?? "";
      const tick = r === 0 ? "┼" : label !== "" ? "┤" : "│";
      return `${label.padStart(labelWidth)} ${tick}${line}`.trimEnd();
    });
  };
  const caption = (arrow: string, what: string, withLegend: boolean) =>
    fitStyled(`${arrow} ${what}`, withLegend ? `   ${legend(f, o)}` : "", o);
  return [
    caption("↓", "download", true),
    ...block("rx"),
    caption("↑", "upload", false),
    ...block("tx"),
    " ".repeat(labelWidth + 2) + timeAxis(f.window, columns),
  ];
}

/** The highest rate of any line in one direction (the total is at least each service). */
function seriesMax(s: SeriesSet, dir: "rx" | "tx"): number {
  let max = 0;
  for (const values of [s.all[dir], ...s.services.map((x) => x[dir])]) {
    for (const v of values) if (v !== null && v > max) max = v;
  }
  return max;
}

function chartSeries(data: SeriesSet, dir: "rx" | "tx", o: RenderOptions): ChartSeries[] {
  const color = (c: string) => (o.color ? c : "");
  const out: ChartSeries[] = [{ values: data.all[dir], glyph: null, color: color(BOLD) }];
  if (o.services === false) return out;
  data.services.forEach((s, i) => {
    out.push({ values: s[dir], glyph: glyphOf(i), color: color(colorOf(i)) });
  });
  return out;
}

/** Why a chart is empty: nothing read yet, one sample so far, or a file not updated. */
function noRatesText(f: FrameData): string {
  if (f.totals === null) return "";
  return f.status.kind === "stale"
    ? "no rates: the file is not being updated"
    : "rates after the next sample";
}

function emptyChart(rows: number, columns: number, message: string): string[] {
  const lines = new Array<string>(rows).fill(" ".repeat(columns));
  const text = fit(message, columns);
  lines[Math.floor((rows - 1) / 2)] = (" " + text).padEnd(columns).slice(0, columns);
  return lines;
}

/** A caption and a coloured tail, the tail dropped when the line would not fit. */
function fitStyled(head: string, tail: string, o: RenderOptions): string {
  const plainTail = tail.replace(SGR_RE, "");
  return width(head) + width(plainTail) <= o.columns ? head + tail : fit(head, o.columns);
}

type Column = "now" | "peak" | "average" | "total";
const PRIORITY: Column[] = ["now", "total", "peak", "average"];
const ORDER: Column[] = ["now", "peak", "average", "total"];

/** One cell of the table: `e`'s figure for `at.column` in direction `at.dir`. */
function value(e: Entry, at: { dir: "rx" | "tx"; column: Column; bits: boolean }): string {
  const { dir, column: c } = at;
  if (c === "total") return e.totals === null ? "—" : formatBytes(e.totals[dir]);
  const d = e.stats?.[dir];
  if (d === undefined) return "—";
  const v = c === "now" ? d.current : c === "peak" ? d.peak : d.average;
  return v === null ? "—" : formatRateIn(v, at.bits);
}

interface TableShape {
  /** Two lines per entry (↓ then ↑) or one with both directions. */
  tall: boolean;
  columns: Column[];
  nameWidth: number;
}

/** The table's shape for this width and the rows it may take. */
function tableShape(f: FrameData, o: RenderOptions, roomRows: number): TableShape {
  const names = entries(f).map((e) => width(e.name) + 2);
  const nameWidth = Math.min(18, Math.max(...names));
  // Name, a space, "present" or "absent" in 8, a space; tall rows add the arrow.
  const lead = nameWidth + 10;
  const entryCount = f.services.length + 1;
  if (lead + 8 * CELL <= o.columns) return { tall: false, columns: ORDER, nameWidth };
  if (1 + 2 * entryCount <= roomRows) {
    const n = Math.max(1, Math.min(4, Math.floor((o.columns - lead - 1) / CELL)));
    const keep = PRIORITY.slice(0, n);
    return { tall: true, columns: ORDER.filter((c) => keep.includes(c)), nameWidth };
  }
  const n = Math.max(1, Math.min(4, Math.floor((o.columns - lead) / (2 * CELL))));
  const keep = PRIORITY.slice(0, n);
  return { tall: false, columns: ORDER.filter((c) => keep.includes(c)), nameWidth };
}

function tableLines(f: FrameData, o: RenderOptions, shape: TableShape): string[] {
  const bits = o.bits ?? false;
  const { tall, columns, nameWidth } = shape;
  const head = (text: string) => fit(text, o.columns);
  const lead = (e: Entry | null) => {
    if (e === null) return " ".repeat(nameWidth + 10);
    const name = fit(`${e.glyph} ${e.name}`, nameWidth);
    const presence = e.present === null ? "" : e.present ? "present" : "absent";
    return paint(name, e.color, o.color) + " ".repeat(nameWidth - width(name) + 1) +
      presence.padEnd(8) + " ";
  };
  const cells = (e: Entry, dir: "rx" | "tx") =>
    columns.map((column) => cell(value(e, { dir, column, bits })));
  if (tall) {
    const lines = [head(" ".repeat(nameWidth + 11) + columns.map((c) => cell(c)).join(""))];
    for (const e of entries(f)) {
      lines.push(lead(e) + "↓" + cells(e, "rx").join(""));
      lines.push(lead(null) + "↑" + cells(e, "tx").join(""));
    }
    return lines;
  }
  const titles = [
    ...columns.map((c) => cell(`↓ ${c}`)),
    ...columns.map((c) => cell(`↑ ${c}`)),
  ];
  return [
    head(" ".repeat(nameWidth + 10) + titles.join("")),
    ...entries(f).map((e) => lead(e) + [...cells(e, "rx"), ...cells(e, "tx")].join("")),
  ];
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
      const where = d.name === undefined ? d.endpoint : `${d.name} ${d.endpoint}`;
      const text = fit(`${arrow} ${where} ${d.protocol} · ${d.service}`, left - 1);
      return text + " ".repeat(Math.max(0, left - width(text))) +
        cell(d.rate === null ? "—" : formatRateIn(d.rate, o.bits ?? false)) +
        (cells > 1 ? cell(formatBytes(d.total)) : "");
    }),
  ];
}

/** The keys that work now, and whether the view is paused. */
export function keysText(o: RenderOptions): string {
  const parts = [
    "q quit",
    o.paused ? "p resume" : "p pause",
    o.bits ? "b bytes" : "b bits",
    o.services === false ? "s show services" : "s hide services",
  ];
  return (o.paused ? "PAUSED · " : "") + parts.join(" · ");
}

/** Word-wraps plain text to `cols`, at most `maxLines` lines (the last one cut). */
function wrap(text: string, cols: number, maxLines: number): string[] {
  const lines: string[] = [];
  let cur = "";
  for (const word of text.split(" ")) {
    const next = cur === "" ? word : `${cur} ${word}`;
    if (width(next) <= cols || cur === "") {
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
  return lines.map((l) => fit(l, cols));
}

/**
 * The status (up to three lines: its reason is the useful part) and the keys, on one line
 * when both fit.
 */
function bottomLines(s: Status, o: RenderOptions): string[] {
  const keys = o.keys ? keysText(o) : "";
  const text = `status: ${s.text}`;
  const color = STATUS_COLOR[s.kind];
  if (keys !== "" && width(text) + 2 + width(keys) <= o.columns) {
    const gap = " ".repeat(o.columns - width(text) - width(keys));
    return [paint(text, color, o.color) + gap + paint(keys, o.paused ? YELLOW : "", o.color)];
  }
  const status = wrap(text, o.columns, 3).map((l) => paint(l, color, o.color));
  return keys === "" ? status : [...status, paint(fit(keys, o.columns), "", o.color)];
}

/**
 * One full-screen frame, at most `rows` lines, none wider than `columns` (colour aside). A
 * small terminal gives up the destinations first, then the table's second row per
 * service, then the table; the charts and the status line stay.
 */
export function renderFrame(f: FrameData, o: RenderOptions): string[] {
  const top = [titleLine(f, o), ...hostLine(f, o)];
  const bottom = bottomLines(f.status, o);
  // Besides those: two captions and the time axis; the rest is shared.
  const room = o.rows - top.length - bottom.length - 3;
  let table = tableLines(f, o, tableShape(f, o, room - 2 * MIN_CHART_ROWS));
  if (room - table.length < 2 * MIN_CHART_ROWS) table = [];
  // Destinations only where both charts keep DEST_CHART_ROWS and they get three lines.
  const destRoom = room - table.length - 2 * DEST_CHART_ROWS;
  const dests = destRoom >= 3 ? destinationLines(f, o, destRoom) : [];
  const chartRows = Math.min(2 * MAX_CHART_ROWS, Math.max(2, room - table.length - dests.length));
  const rows = { rx: Math.ceil(chartRows / 2), tx: Math.floor(chartRows / 2) };
  const lines = [...top, ...chartLines(f, o, rows), ...table, ...dests, ...bottom];
  // A terminal too small even for that keeps the top and the status.
  return lines.length <= o.rows
    ? lines
    : [...lines.slice(0, Math.max(0, o.rows - bottom.length)), ...bottom].slice(-o.rows);
}

/** One line per interval for pipes and logs: time, rates, totals, services, status. */
export function renderPlainLine(f: FrameData, bits = false): string {
  const cur = (v: number | null | undefined) => v == null ? "-" : formatRateIn(v, bits);
  const tot = (v: bigint | undefined) => v === undefined ? "-" : formatBytes(v);
  let line = `${isoTime(f.nowUnix)} rx ${cur(f.stats?.rx.current)} tx ${
    cur(f.stats?.tx.current)
  } total rx ${tot(f.totals?.rx)} tx ${tot(f.totals?.tx)}`;
  for (const s of f.services) {
    line += ` | ${s.name}${s.present ? "" : " (absent)"} rx ${cur(s.stats?.rx.current)} tx ${
      cur(s.stats?.tx.current)
    }`;
  }
  if (f.host !== null) {
    line += ` | host rx ${cur(f.host.current?.rx)} tx ${cur(f.host.current?.tx)}`;
    if (f.host.error !== null) line += ` (${f.host.error})`;
  }
  return `${line} | status ${f.status.text}`;
}
