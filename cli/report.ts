/**
 * Reports of quantization runs, as pure functions: the `ptq quantize --json` result lines parsed, an SVG plot of
 * perplexity (log scale) against average bits per weight with one colour and marker per method, and a Markdown table.
 * The SVG is written by hand (no plotting library): axes with "nice" ticks, a log-scale y axis, one polyline and
 * marker shape per method, point labels, a legend, an optional full-precision reference line.
 *
 * @module
 */

import { FormatError } from "../core/errors.ts";

/** One result line of `ptq quantize --json` (the fields the report uses; others are kept). */
export interface ResultRow {
  readonly method: string;
  readonly engine?: string;
  readonly bits: number;
  readonly group: number;
  readonly act_order?: boolean;
  readonly avg_bits: number;
  /** Perplexity by evaluation file name. */
  readonly ppl: Readonly<Record<string, number>>;
  readonly seconds?: Readonly<Record<string, number>>;
  /** A free label overriding the series name (optional). */
  readonly label?: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkRow(v: unknown, where: string, path: string): ResultRow {
  if (!isRecord(v)) throw new FormatError(path, `${where}: a result must be a JSON object`);
  const num = (k: string) => {
    if (typeof v[k] !== "number" || !Number.isFinite(v[k])) {
      throw new FormatError(path, `${where}: "${k}" must be a number, got ${JSON.stringify(v[k])}`);
    }
  };
  if (typeof v.method !== "string") throw new FormatError(path, `${where}: "method" must be a string`);
  num("bits");
  num("avg_bits");
  if (v.group === undefined) v.group = 0;
  num("group");
  const ppl = v.ppl;
  if (
    !isRecord(ppl) || Object.keys(ppl).length === 0 || Object.values(ppl).some((p) => typeof p !== "number" || !(p > 0))
  ) {
    throw new FormatError(path, `${where}: "ppl" must map evaluation files to positive numbers`);
  }
  return v as unknown as ResultRow;
}

/**
 * Parses result lines: JSON objects one per line (other lines, such as progress output, are skipped) or one JSON
 * array of objects.
 *
 * @param path names the source in errors.
 * @throws {FormatError} naming the file and line for a line that starts like JSON but does not parse, or a result
 *   without method, bits, avg_bits and ppl.
 */
export function parseResults(text: string, path: string): ResultRow[] {
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) {
    let arr: unknown;
    try {
      arr = JSON.parse(trimmed);
    } catch (e) {
      throw new FormatError(path, `not valid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(arr)) throw new FormatError(path, "expected an array of results");
    return arr.map((v, i) => checkRow(v, `result ${i + 1}`, path));
  }
  const rows: ResultRow[] = [];
  text.split("\n").forEach((line, i) => {
    const l = line.trim();
    if (!l.startsWith("{")) return;
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch (e) {
      throw new FormatError(path, `line ${i + 1} is not valid JSON: ${(e as Error).message}`);
    }
    rows.push(checkRow(v, `line ${i + 1}`, path));
  });
  return rows;
}

/** The series a row belongs to: its label, else the method (with its engine for OAC). */
export function seriesName(r: ResultRow): string {
  return r.label ?? (r.engine ? `${r.method}+${r.engine}` : r.method);
}

/** A short label for a point: "4b g128 act". */
export function pointLabel(r: ResultRow): string {
  return `${r.bits}b${r.group ? ` g${r.group}` : ""}${r.act_order ? " act" : ""}`;
}

/** One plotted series. */
export interface PlotSeries {
  readonly name: string;
  readonly points: readonly { readonly x: number; readonly y: number; readonly label: string }[];
}

/** Rows grouped into series for one evaluation file (rows without that file are left out), sorted by bits. */
export function seriesOf(rows: readonly ResultRow[], evalFile: string): PlotSeries[] {
  const by = new Map<string, { x: number; y: number; label: string }[]>();
  for (const r of rows) {
    const y = r.ppl[evalFile];
    if (y === undefined) continue;
    const name = seriesName(r);
    if (!by.has(name)) by.set(name, []);
    by.get(name)!.push({ x: r.avg_bits, y, label: pointLabel(r) });
  }
  return [...by].map(([name, points]) => ({ name, points: points.sort((a, b) => a.x - b.x || a.y - b.y) }));
}

/** Colour-blind-safe colours (Okabe-Ito, without the yellow that vanishes on white). */
export const COLOURS: readonly string[] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

/** Marker shapes, cycled with the colours so that every series differs in both. */
export const MARKERS = ["circle", "square", "triangle", "diamond", "cross", "triangle-down", "plus"] as const;

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function n(v: number): string {
  return Number(v.toFixed(2)).toString();
}

function marker(shape: typeof MARKERS[number], x: number, y: number, colour: string, r = 5): string {
  const fill = `fill="${colour}" stroke="white" stroke-width="1"`;
  switch (shape) {
    case "circle":
      return `<circle cx="${n(x)}" cy="${n(y)}" r="${r}" ${fill}/>`;
    case "square":
      return `<rect x="${n(x - r)}" y="${n(y - r)}" width="${2 * r}" height="${2 * r}" ${fill}/>`;
    case "triangle":
      return `<path d="M${n(x)},${n(y - r * 1.2)}L${n(x + r * 1.1)},${n(y + r * 0.8)}L${n(x - r * 1.1)},${
        n(y + r * 0.8)
      }Z" ${fill}/>`;
    case "triangle-down":
      return `<path d="M${n(x)},${n(y + r * 1.2)}L${n(x + r * 1.1)},${n(y - r * 0.8)}L${n(x - r * 1.1)},${
        n(y - r * 0.8)
      }Z" ${fill}/>`;
    case "diamond":
      return `<path d="M${n(x)},${n(y - r * 1.3)}L${n(x + r * 1.1)},${n(y)}L${n(x)},${n(y + r * 1.3)}L${
        n(x - r * 1.1)
      },${n(y)}Z" ${fill}/>`;
    case "cross":
      return `<path d="M${n(x - r)},${n(y - r)}L${n(x + r)},${n(y + r)}M${n(x - r)},${n(y + r)}L${n(x + r)},${
        n(y - r)
      }" stroke="${colour}" stroke-width="2.5" fill="none"/>`;
    case "plus":
      return `<path d="M${n(x - r)},${n(y)}L${n(x + r)},${n(y)}M${n(x)},${n(y - r)}L${n(x)},${
        n(y + r)
      }" stroke="${colour}" stroke-width="2.5" fill="none"/>`;
  }
}

/**
 * "Nice" linear ticks covering `[lo, hi]`: steps of 1, 2, 2.5 or 5 × 10^k, about `target` of them.
 */
export function linearTicks(lo: number, hi: number, target = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / target, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw * (1 - 1e-9)) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/**
 * Ticks for a log axis over `[lo, hi]`: powers of ten times the densest mantissa set (1; 1, 2, 5; 1, 2, 3, 5; 1…9)
 * that gives at most `max` ticks, and at least two.
 */
export function logTicks(lo: number, hi: number, max = 9): number[] {
  const sets = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 1.5, 2, 3, 4, 5, 7], [1, 2, 3, 5], [1, 2, 5], [1]];
  let best: number[] = [];
  for (const set of sets) {
    const ticks: number[] = [];
    for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of set) {
        const v = Number((m * 10 ** e).toPrecision(12));
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push(v);
      }
    }
    if (ticks.length <= max && ticks.length >= 2) return ticks;
    if (ticks.length >= 2) best = ticks;
  }
  // A range too narrow for any mantissa set: its two ends.
  return best.length ? best.filter((_, i, a) => i % Math.ceil(a.length / max) === 0) : [lo, hi];
}

interface Box {
  readonly x0: number;
  readonly y0: number;
  readonly x1: number;
  readonly y1: number;
}

function overlaps(a: Box, b: Box): boolean {
  return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

function tickText(v: number): string {
  if (v >= 1e5) return v.toExponential(0).replace("e+", "e");
  return Number(v.toPrecision(3)).toString();
}

/** Options of {@link renderPlotSvg}. */
export interface PlotOptions {
  readonly title?: string;
  readonly xLabel?: string;
  readonly yLabel?: string;
  /** Full-precision perplexity: a dashed reference line. */
  readonly baseline?: number;
  readonly width?: number;
  readonly height?: number;
}

/**
 * The plot as an SVG document: perplexity on a log scale against average bits per weight, one colour and marker per
 * series, each point labelled, a legend on the right.
 *
 * @example
 * ```ts
 * import { renderPlotSvg } from "./report.ts";
 * const svg = renderPlotSvg([{ name: "rtn", points: [{ x: 4.1, y: 7.2, label: "4b" }] }]);
 * console.assert(svg.startsWith("<svg") && svg.includes("rtn"));
 * ```
 */
export function renderPlotSvg(series: readonly PlotSeries[], options: PlotOptions = {}): string {
  const W = options.width ?? 760, H = options.height ?? 480;
  const legendWidth = Math.max(110, 24 + 7.5 * Math.max(0, ...series.map((s) => s.name.length)));
  const m = { left: 72, right: legendWidth + 30, top: 52, bottom: 62 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p.x), ys = all.map((p) => p.y);
  if (options.baseline !== undefined) ys.push(options.baseline);
  let x0 = xs.length ? Math.min(...xs) : 0, x1 = xs.length ? Math.max(...xs) : 1;
  const xpad = Math.max((x1 - x0) * 0.08, 0.25);
  x0 -= xpad, x1 += xpad;
  let y0 = ys.length ? Math.min(...ys) : 1, y1 = ys.length ? Math.max(...ys) : 10;
  const lpad = Math.max(Math.log10(y1 / y0) * 0.08, 0.02);
  y0 = y0 / 10 ** lpad, y1 = y1 * 10 ** lpad;
  const X = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y: number) => m.top + ph - ((Math.log10(y) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0))) * ph;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  const title = options.title ?? "Perplexity against bits per weight";
  out.push(
    `<text class="title" x="${n(m.left + pw / 2)}" y="28" text-anchor="middle" font-size="16" font-weight="bold">${
      escapeXml(title)
    }</text>`,
  );
  // Grid and ticks.
  out.push(`<g class="x-axis">`);
  for (const t of linearTicks(x0, x1)) {
    const x = X(t);
    out.push(`<line x1="${n(x)}" y1="${m.top}" x2="${n(x)}" y2="${m.top + ph}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${n(x)}" y="${m.top + ph + 18}" text-anchor="middle">${tickText(t)}</text>`);
  }
  out.push(`</g><g class="y-axis">`);
  for (const t of logTicks(y0, y1)) {
    const y = Y(t);
    out.push(`<line x1="${m.left}" y1="${n(y)}" x2="${m.left + pw}" y2="${n(y)}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${m.left - 8}" y="${n(y + 4)}" text-anchor="end">${tickText(t)}</text>`);
  }
  out.push(`</g>`);
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  const xLabel = options.xLabel ?? "average bits per weight";
  const yLabel = options.yLabel ?? "perplexity (log scale)";
  out.push(
    `<text class="x-label" x="${n(m.left + pw / 2)}" y="${H - 18}" text-anchor="middle" font-size="13">${
      escapeXml(xLabel)
    }</text>`,
  );
  out.push(
    `<text class="y-label" x="${18}" y="${n(m.top + ph / 2)}" text-anchor="middle" font-size="13" ` +
      `transform="rotate(-90 18 ${n(m.top + ph / 2)})">${escapeXml(yLabel)}</text>`,
  );
  // Marker positions, dodged sideways where two series' points would cover each other (same bits, close perplexity).
  const placed: { x: number; y: number }[] = [];
  const positions = series.map((s) =>
    s.points.map((p) => {
      let x = X(p.x);
      const y = Y(p.y);
      for (let k = 0; k < 4 && placed.some((q) => Math.hypot(q.x - x, q.y - y) < 9); k++) x += 8;
      placed.push({ x, y });
      return { x, y };
    })
  );
  // Labels go where they cover no marker, no other label and stay inside the plot: the first free spot of a few
  // candidates around the point (right-above first), else right-above anyway.
  const boxes: Box[] = placed.map((q) => ({ x0: q.x - 6, y0: q.y - 6, x1: q.x + 6, y1: q.y + 6 }));
  // The connecting lines are obstacles too: small boxes every few pixels along each segment.
  for (const ps of positions) {
    for (let k = 1; k < ps.length; k++) {
      const a = ps[k - 1], b = ps[k], steps = Math.ceil(Math.hypot(b.x - a.x, b.y - a.y) / 4);
      for (let t = 1; t < steps; t++) {
        const x = a.x + ((b.x - a.x) * t) / steps, y = a.y + ((b.y - a.y) * t) / steps;
        boxes.push({ x0: x - 1.5, y0: y - 1.5, x1: x + 1.5, y1: y + 1.5 });
      }
    }
  }
  const inside = (b: Box) =>
    b.x0 >= m.left + 2 && b.x1 <= m.left + pw - 2 && b.y0 >= m.top + 2 && b.y1 <= m.top + ph - 2;
  const place = (x: number, y: number, text: string, size: number, candidates: readonly [number, number, string][]) => {
    const w = text.length * size * 0.62, h = size;
    const boxOf = ([dx, dy, anchor]: readonly [number, number, string]): Box => {
      const left = anchor === "end" ? x + dx - w : anchor === "middle" ? x + dx - w / 2 : x + dx;
      return { x0: left, y0: y + dy - h, x1: left + w, y1: y + dy + 2 };
    };
    const free = candidates.find((c) => {
      const b = boxOf(c);
      return inside(b) && !boxes.some((o) => overlaps(o, b));
    }) ?? candidates[0];
    boxes.push(boxOf(free));
    return { x: x + free[0], y: y + free[1], anchor: free[2] };
  };
  const around: [number, number, string][] = [
    [8, -7, "start"],
    [8, 13, "start"],
    [-8, -7, "end"],
    [-8, 13, "end"],
    [0, -10, "middle"],
    [0, 19, "middle"],
    [14, 3, "start"],
    [-14, 3, "end"],
  ];
  if (options.baseline !== undefined) {
    const y = Y(options.baseline);
    boxes.push({ x0: m.left, y0: y - 1, x1: m.left + pw, y1: y + 1 });
    const text = `full precision ${tickText(options.baseline)}`;
    const at = place(m.left + 6, y, text, 11, [[0, -5, "start"], [0, 14, "start"], [pw - 12, -5, "end"], [
      pw - 12,
      14,
      "end",
    ]]);
    out.push(
      `<g class="baseline"><line x1="${m.left}" y1="${n(y)}" x2="${m.left + pw}" y2="${n(y)}" stroke="#777" ` +
        `stroke-dasharray="6 4"/><text x="${n(at.x)}" y="${n(at.y)}" text-anchor="${at.anchor}" font-size="11" ` +
        `fill="#555">${escapeXml(text)}</text></g>`,
    );
  }
  // Series: line, markers, point labels.
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length], shape = MARKERS[i % MARKERS.length];
    out.push(`<g class="series" data-series="${escapeXml(s.name)}">`);
    if (s.points.length > 1) {
      out.push(
        `<polyline points="${positions[i].map((q) => `${n(q.x)},${n(q.y)}`).join(" ")}" fill="none" ` +
          `stroke="${colour}" stroke-width="1.8" stroke-opacity="0.8"/>`,
      );
    }
    s.points.forEach((p, k) => {
      const q = positions[i][k];
      const at = place(q.x, q.y, p.label, 10, around);
      out.push(
        `<g class="point" data-series="${escapeXml(s.name)}" data-x="${p.x}" data-y="${p.y}">` +
          `<title>${escapeXml(`${s.name} ${p.label}: ${p.x.toFixed(3)} bits, ppl ${p.y.toFixed(3)}`)}</title>` +
          marker(shape, q.x, q.y, colour) +
          `<text x="${n(at.x)}" y="${n(at.y)}" text-anchor="${at.anchor}" font-size="10" fill="${colour}">${
            escapeXml(p.label)
          }</text></g>`,
      );
    });
    out.push(`</g>`);
  });
  // Legend, right of the plot.
  const lx = m.left + pw + 18;
  out.push(`<g class="legend">`);
  out.push(`<text x="${lx}" y="${m.top + 4}" font-weight="bold">method</text>`);
  series.forEach((s, i) => {
    const y = m.top + 24 + i * 22, colour = COLOURS[i % COLOURS.length];
    out.push(`<line x1="${lx}" y1="${y}" x2="${lx + 22}" y2="${y}" stroke="${colour}" stroke-width="1.8"/>`);
    out.push(marker(MARKERS[i % MARKERS.length], lx + 11, y, colour));
    out.push(`<text x="${lx + 30}" y="${y + 4}">${escapeXml(s.name)}</text>`);
  });
  out.push(`</g></svg>`);
  return out.join("\n") + "\n";
}

/** A Markdown table of the rows: method, bits, group, act-order, average bits, each perplexity, seconds. */
export function markdownTable(rows: readonly ResultRow[]): string {
  const files = [...new Set(rows.flatMap((r) => Object.keys(r.ppl)))];
  const sorted = [...rows].sort((a, b) => seriesName(a).localeCompare(seriesName(b)) || a.avg_bits - b.avg_bits);
  const head = ["method", "bits", "group", "act-order", "avg bits", ...files.map((f) => `ppl ${f}`), "quantize s"];
  const lines = [`| ${head.join(" | ")} |`, `| ${head.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`];
  for (const r of sorted) {
    const cells = [
      seriesName(r),
      String(r.bits),
      r.group ? String(r.group) : "row",
      r.act_order ? "yes" : "no",
      r.avg_bits.toFixed(3),
      ...files.map((f) => (r.ppl[f] === undefined ? "" : r.ppl[f].toFixed(3))),
      r.seconds?.quantize === undefined ? "" : r.seconds.quantize.toFixed(1),
    ];
    lines.push(`| ${cells.map((c) => c.replace(/\|/g, "\\|")).join(" | ")} |`);
  }
  return lines.join("\n") + "\n";
}
