/**
 * One chart as text: a y axis of round steps, one line per series over a fixed window of
 * time, and the time axis under it. Pure, like render.ts.
 *
 * The total is drawn as a line (─ ╭ ╮ ╰ ╯ │); every service as its own glyph (● ▲ ■ …)
 * at each column, so services are told apart without colour. A column with no data (before
 * the first sample, across a reset or a discontinuity, while the sampler was away) stays
 * empty: nothing is drawn that was not measured.
 */

import { type RoundStep, roundSteps } from "../lib/units.ts";

export interface ChartSeries {
  /** Bytes per second per column, oldest first; null where nothing was measured. */
  values: (number | null)[];
  /** null: drawn as a line (the total); else the glyph of each point. */
  glyph: string | null;
  /** SGR sequence for this series, or "" without colour. */
  color: string;
}

export interface RateAxis {
  /** Bytes per second one row stands for. */
  perRow: number;
  /** Label per row, bottom (0) first; "" where a row has none. */
  labels: string[];
}

/** A chart never scales below this, so an idle line does not fill it with noise. */
const FLOOR_BYTES_PER_S = 1024;
const SGR_RESET = "\x1b[0m";

/**
 * The y axis for `rows` rows showing up to `max` bytes per second. Labels are round (1, 2
 * or 5 of a unit, and its multiples) and sit every `k` rows; of every spacing that leaves
 * at least two labels (and, on a tall chart, a row or two between them), the one whose top
 * is the least above `max` wins, so the lines use as much of the height as they can.
 */
export function rateAxis(max: number, rows: number, bits: boolean): RateAxis {
  const spans = Math.max(1, rows - 1);
  const want = Math.max(Number.isFinite(max) ? max : 0, FLOOR_BYTES_PER_S);
  const maxLabels = rows <= 7 ? spans : Math.max(3, Math.ceil(spans / 3));
  const minLabels = Math.min(2, spans);
  let best: { k: number; step: RoundStep; top: number } | null = null;
  for (let k = 1; k <= spans; k++) {
    const count = Math.floor(spans / k);
    if (count < minLabels || count > maxLabels) continue;
    for (const step of roundSteps(bits)) {
      const top = step.bytesPerSecond / k * spans;
      if (top < want) continue;
      if (best === null || top < best.top) best = { k, step, top };
      break;
    }
  }
  // k = spans always qualifies when nothing else does (one label, at the top).
  const { k, step } = best ?? { k: spans, step: [...roundSteps(bits)].at(-1)! };
  const labels = Array.from(
    { length: rows },
    (_, r) => r === 0 ? "0" : r % k === 0 ? `${(r / k) * step.m} ${step.unit}` : "",
  );
  return { perRow: step.bytesPerSecond / k, labels };
}

/** Cells of one chart: a glyph and its colour per row (top first) and column. */
class Canvas {
  readonly chars: string[][];
  readonly colors: string[][];
  constructor(readonly rows: number, readonly columns: number) {
    this.chars = Array.from({ length: rows }, () => new Array<string>(columns).fill(" "));
    this.colors = Array.from({ length: rows }, () => new Array<string>(columns).fill(""));
  }
  /** Puts `mark` at `row` (counted from the bottom) and `col`, when that is on the canvas. */
  set(row: number, col: number, mark: { ch: string; color: string }): void {
    const r = this.rows - 1 - row;
    const line = this.chars[r], colors = this.colors[r];
    if (line === undefined || colors === undefined || col < 0 || col >= this.columns) return;
    line[col] = mark.ch;
    colors[col] = mark.color;
  }
  /** Each row as text, colour runs opened and closed so nothing leaks past the row. */
  lines(): string[] {
    return this.chars.map((line, r) => {
      const colors = this.colors[r]!; // same length as chars
      let out = "", cur = "";
      line.forEach((ch, c) => {
        const want = ch === " " ? "" : colors[c]!; // colors[r] has `columns` cells
        if (want !== cur) {
          // A reset between two colours too: one may be bold, the next not.
          if (cur !== "") out += SGR_RESET;
          out += want;
          cur = want;
        }
        out += ch;
      });
      return cur !== "" ? out + SGR_RESET : out;
    });
  }
}

function drawLine(canvas: Canvas, s: ChartSeries, rowOf: (v: number) => number): void {
  let prev: number | null = null;
  s.values.forEach((v, x) => {
    if (v === null) {
      prev = null;
      return;
    }
    const y = rowOf(v);
    const mark = (ch: string) => ({ ch, color: s.color });
    if (prev === null || prev === y) {
      canvas.set(y, x, mark("─"));
    } else {
      const up = y > prev;
      canvas.set(prev, x, mark(up ? "╯" : "╮"));
      canvas.set(y, x, mark(up ? "╭" : "╰"));
      for (let r = Math.min(prev, y) + 1; r < Math.max(prev, y); r++) canvas.set(r, x, mark("│"));
    }
    prev = y;
  });
}

/**
 * The plot area, `rows` lines of exactly `columns` cells (colour codes aside): lines first,
 * then glyphs over them, later series over earlier ones. A service at zero is not drawn
 * (the total's line shows the zero); any traffic at all is.
 */
export function plot(series: ChartSeries[], axis: RateAxis, size: {
  rows: number;
  columns: number;
}): string[] {
  const canvas = new Canvas(size.rows, size.columns);
  const top = size.rows - 1;
  const rowOf = (v: number) => Math.max(0, Math.min(top, Math.round(v / axis.perRow)));
  for (const s of series) {
    if (s.glyph === null) {
      drawLine(canvas, s, rowOf);
      continue;
    }
    const mark = { ch: s.glyph, color: s.color };
    s.values.forEach((v, x) => {
      if (v !== null && v > 0) canvas.set(rowOf(v), x, mark);
    });
  }
  return canvas.lines();
}

/** Round spacings of the time axis, in seconds. */
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

function timeLabel(s: number): string {
  if (s % 3600 === 0) return `-${s / 3600} h`;
  if (s >= 120 && s % 60 === 0) return `-${s / 60} min`;
  return `-${s} s`;
}

/**
 * The time axis under a chart `columns` wide that spans `window` seconds ending now:
 * labels at round steps back from "now", as many as fit with room between them.
 */
export function timeAxis(window: number, columns: number): string {
  const cells = new Array<string>(columns).fill(" ");
  const put = (at: number, text: string) => {
    [...text].forEach((ch, i) => {
      if (at + i >= 0 && at + i < columns) cells[at + i] = ch;
    });
  };
  const now = "now";
  put(columns - now.length, now);
  const widest = timeLabel(window).length + 4;
  const step = TIME_STEPS.find((t) => (t / window) * columns >= widest) ?? window;
  let leftOfLast = columns - now.length - 1;
  for (let back = step; back <= window + 1e-9; back += step) {
    const label = timeLabel(back);
    const x = Math.round(columns * (1 - back / window));
    const at = Math.max(0, Math.min(x - Math.floor(label.length / 2), columns - label.length));
    if (at + label.length >= leftOfLast) continue;
    put(at, label);
    leftOfLast = at - 1;
  }
  return cells.join("");
}
