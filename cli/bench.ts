/**
 * `ptq bench --report DIR --results FILE [--results FILE …]`: turns `ptq quantize --json` result lines into a report:
 * `DIR/report.svg` (perplexity on a log scale against average bits per weight, one colour and marker per method),
 * `DIR/report.png` (the same, rendered with resvg), and `DIR/report.md` (a table of every run). Files are written
 * atomically.
 *
 * ```
 * for b in 2 3 4; do for m in rtn gptq; do
 *   ptq quantize --model M --method $m --bits $b --calib C --eval E --json | tail -1 >> runs.jsonl
 * done; done
 * ptq bench --report out/ --results runs.jsonl
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { FormatError } from "../core/errors.ts";
import { writeAll, writeFileAtomically } from "../model/checkpoint_files.ts";
import { failure, numberOption, parseCommand, UsageError } from "./common.ts";
import { markdownTable, parseResults, renderPlotSvg, type ResultRow, seriesOf } from "./report.ts";

const USAGE = `Usage: ptq bench --report DIR --results FILE [--results FILE ...] [options]

Writes DIR/report.svg, DIR/report.png and DIR/report.md from "ptq quantize --json" result lines
(one JSON object per line; other lines are skipped; "-" reads standard input).

Options:
  --report DIR      output folder (created if needed)
  --results FILE    result lines (repeatable)
  --eval NAME       evaluation file whose perplexity is plotted (default: the first one in the results)
  --title TEXT      plot title
  --baseline PPL    full-precision perplexity, drawn as a dashed line
  --font FILE       TrueType font for the PNG's text (default: a system sans-serif font)
  --no-png          write only the SVG and the Markdown
  --json            print one JSON line with the files written
  -h, --help        show this help
`;

async function readResults(file: string): Promise<ResultRow[]> {
  let text: string;
  if (file === "-") {
    text = await new Response(Deno.stdin.readable).text();
  } else {
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      throw new FormatError(file, e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message);
    }
  }
  return parseResults(text, file === "-" ? "stdin" : file);
}

/** Runs `ptq bench`; returns the exit status (0 ok, 1 failure, 2 bad command line). */
export async function benchCommand(args: string[]): Promise<number> {
  const values = parseCommand("bench", USAGE, args, {
    report: { type: "string" },
    results: { type: "string", multiple: true },
    eval: { type: "string" },
    title: { type: "string" },
    baseline: { type: "string" },
    font: { type: "string" },
    "no-png": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  });
  if (typeof values === "number") return values;
  try {
    if (!values.report) throw new UsageError("--report DIR is required");
    const files = values.results ?? [];
    if (files.length === 0) throw new UsageError("--results FILE is required (repeatable; - for standard input)");
    const baseline = values.baseline === undefined ? undefined : numberOption(values.baseline, "baseline", 0, 0);
    const rows: ResultRow[] = [];
    for (const f of files) rows.push(...await readResults(f));
    if (rows.length === 0) throw new FormatError(files.join(", "), "no result lines found");
    const evalFile = values.eval ?? Object.keys(rows[0].ppl)[0];
    if (evalFile === undefined) throw new FormatError(files[0], "the results have no perplexity");
    const series = seriesOf(rows, evalFile);
    if (series.length === 0) {
      const known = [...new Set(rows.flatMap((r) => Object.keys(r.ppl)))].join(", ");
      throw new UsageError(`no result has a perplexity for --eval ${evalFile} (the results have: ${known})`);
    }
    const svg = renderPlotSvg(series, {
      title: values.title,
      yLabel: `perplexity on ${evalFile} (log scale)`,
      baseline,
    });
    await Deno.mkdir(values.report, { recursive: true });
    const write = (name: string, bytes: Uint8Array) =>
      writeFileAtomically(join(values.report!, name), (f) => writeAll(f, bytes));
    const enc = new TextEncoder();
    const written: string[] = [];
    await write("report.svg", enc.encode(svg));
    written.push(join(values.report, "report.svg"));
    const md = `# ${values.title ?? "Quantization results"}\n\n![perplexity against bits](report.svg)\n\n` +
      `Perplexity on ${evalFile}${baseline ? `; full precision ${baseline}` : ""}.\n\n${markdownTable(rows)}`;
    await write("report.md", enc.encode(md));
    written.push(join(values.report, "report.md"));
    let font: string | undefined;
    if (!values["no-png"]) {
      // Loaded only when needed: it compiles resvg's WebAssembly.
      const { renderPng } = await import("./png.ts");
      const png = await renderPng(svg, { font: values.font });
      font = png.font;
      if (!font) console.error("ptq bench: no font found for the PNG's text; pass --font FILE (the SVG is complete)");
      await write("report.png", png.png);
      written.push(join(values.report, "report.png"));
    }
    const points = series.reduce((a, s) => a + s.points.length, 0);
    if (values.json) {
      console.log(JSON.stringify({ files: written, points, series: series.length, eval: evalFile, font }));
    } else console.log(`wrote ${written.join(", ")} (${points} points in ${series.length} series, ppl on ${evalFile})`);
    return 0;
  } catch (e) {
    return failure("bench", e, USAGE);
  }
}
