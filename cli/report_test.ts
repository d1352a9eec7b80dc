import assert from "node:assert/strict";
import { FormatError } from "../core/errors.ts";
import {
  linearTicks,
  logTicks,
  markdownTable,
  parseResults,
  pointLabel,
  renderPlotSvg,
  type ResultRow,
  seriesOf,
} from "./report.ts";

const LINES = [
  `calibrate+quantize done in 2.1s`,
  `{"method":"rtn","bits":4,"group":0,"act_order":false,"avg_bits":4.26,"ppl":{"valid.txt":6.92,"wiki.txt":40.1},"seconds":{"quantize":0.03}}`,
  `{"method":"gptq","bits":4,"group":32,"act_order":true,"avg_bits":4.62,"ppl":{"valid.txt":6.72}}`,
  `{"method":"gptq","bits":2,"group":0,"avg_bits":2.24,"ppl":{"valid.txt":819.4}}`,
  `{"method":"oac","engine":"gptq","bits":3,"group":0,"avg_bits":3.25,"ppl":{"valid.txt":10.5}}`,
  `{"method":"rtn","bits":3,"group":32,"avg_bits":3.59,"ppl":{"valid.txt":11.96}}`,
].join("\n");

Deno.test("parseResults reads JSON lines among other output, or a JSON array, and names bad lines", () => {
  const rows = parseResults(LINES, "runs.jsonl");
  assert.equal(rows.length, 5);
  assert.equal(rows[2].group, 0);
  assert.deepEqual(parseResults(JSON.stringify(rows), "runs.json"), rows);
  assert.throws(
    () => parseResults(`{"method":"rtn"`, "r.jsonl"),
    (e) => e instanceof FormatError && /line 1/.test(e.message),
  );
  assert.throws(() => parseResults(`\n{"method":"rtn","bits":4,"avg_bits":4.2,"ppl":{}} `, "r.jsonl"), /"ppl"|ppl/);
  assert.throws(() => parseResults(`{"method":"rtn","bits":4,"ppl":{"a":3}}`, "r.jsonl"), /avg_bits/);
});

Deno.test("seriesOf groups by method (OAC with its engine) and sorts by bits", () => {
  const s = seriesOf(parseResults(LINES, "x"), "valid.txt");
  assert.deepEqual(s.map((x) => x.name), ["rtn", "gptq", "oac+gptq"]);
  assert.deepEqual(s[1].points.map((p) => p.x), [2.24, 4.62]);
  assert.equal(pointLabel(parseResults(LINES, "x")[1]), "4b g32 act");
  assert.deepEqual(seriesOf(parseResults(LINES, "x"), "wiki.txt").map((x) => x.points.length), [1]);
});

Deno.test("ticks: nice linear steps, log mantissas", () => {
  assert.deepEqual(linearTicks(1.9, 4.9), [2, 2.5, 3, 3.5, 4, 4.5]);
  assert.deepEqual(linearTicks(0, 10), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(logTicks(4.5, 1100), [5, 10, 20, 50, 100, 200, 500, 1000]);
  assert.deepEqual(logTicks(5.6, 7.4), [6, 7]);
  assert.ok(logTicks(6.01, 6.2).length >= 2);
});

Deno.test("renderPlotSvg draws every point, axis labels, title, legend and baseline", () => {
  const rows = parseResults(LINES, "x");
  const series = seriesOf(rows, "valid.txt");
  const svg = renderPlotSvg(series, { title: "A & B", yLabel: "perplexity on valid.txt (log scale)", baseline: 6.16 });
  assert.ok(svg.startsWith(`<svg xmlns="http://www.w3.org/2000/svg"`));
  const points = [...svg.matchAll(/<g class="point" data-series="([^"]+)" data-x="([^"]+)" data-y="([^"]+)">/g)];
  assert.equal(points.length, rows.length);
  for (const r of rows) {
    const name = r.engine ? `${r.method}+${r.engine}` : r.method;
    assert.ok(points.some((p) => p[1] === name && Number(p[2]) === r.avg_bits && Number(p[3]) === r.ppl["valid.txt"]));
  }
  assert.match(svg, /class="x-label"[^>]*>average bits per weight</);
  assert.match(svg, /class="y-label"[^>]*>perplexity on valid\.txt \(log scale\)</);
  assert.match(svg, /class="title"[^>]*>A &amp; B</);
  assert.match(svg, /full precision 6\.16/);
  for (const s of ["rtn", "gptq", "oac+gptq"]) {
    assert.match(svg, new RegExp(`<text[^>]*>${s.replace("+", "\\+")}</text>`));
  }
  // Every point's marker is inside the plotting area (the frame rect), and elements are balanced.
  const frame = /<rect x="(\d+)" y="(\d+)" width="([\d.]+)" height="([\d.]+)" fill="none"/.exec(svg)!;
  const [fx, fy, fw, fh] = frame.slice(1).map(Number);
  for (const c of svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)"/g)) {
    const [x, y] = [Number(c[1]), Number(c[2])];
    if (x > fx + fw) continue; // legend markers
    assert.ok(x >= fx && x <= fx + fw && y >= fy && y <= fy + fh, `marker at ${x},${y} outside the plot`);
  }
  assert.equal(svg.split("<g").length, svg.split("</g>").length);
  assert.equal(renderPlotSvg([]).includes("<svg"), true);
});

Deno.test("markdownTable lists every run with each perplexity column", () => {
  const rows: ResultRow[] = parseResults(LINES, "x");
  const md = markdownTable(rows);
  const lines = md.trim().split("\n");
  assert.equal(lines.length, 2 + rows.length);
  assert.equal(
    lines[0],
    "| method | bits | group | act-order | avg bits | ppl valid.txt | ppl wiki.txt | quantize s |",
  );
  assert.ok(lines.includes("| rtn | 4 | row | no | 4.260 | 6.920 | 40.100 | 0.0 |"));
  assert.ok(lines.includes("| gptq | 4 | 32 | yes | 4.620 | 6.720 |  |  |"));
});
