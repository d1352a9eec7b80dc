/**
 * Method table on llama-12m: RTN and GPTQ at 4, 3 and 2 bits (per row and group 128, act-order on and off), SpQR near
 * 3 and 2 bits, BiLLM, and OAC's default feeding GPTQ (group 128, act-order), SpQR and BiLLM; held-out and WikiText-2
 * perplexity with average bits per weight. Calibration: 128 windows of 512 tokens from calib.txt (seed 0). The model
 * is loaded and the texts tokenized once; each setting quantizes a fresh copy and is evaluated on every file.
 *
 * Usage: `deno run -A bench/methods.ts [--only NAME,...] [--windows N] [--samples 128] [--backend wasm] [--out FILE]
 *   [--resume] [--readme]`. Each finished setting is appended to `bench/results/methods.jsonl` at once, so a long run
 * can be resumed with `--resume` (settings already there for the same calibration and windows are skipped); the table
 * is rebuilt from that file into `bench/results/methods.json` and `bench/results/methods.md`; `--readme` also replaces
 * the table between the `methods-table` markers in README.md.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { BillmStorage } from "../algorithms/billm.ts";
import type { MethodOptions } from "../algorithms/methods.ts";
import { setBackend, setBestBackend } from "../backends/registry.ts";
import { loadModel } from "../model/load.ts";
import type { LlamaModel } from "../model/llama.ts";
import { perplexity } from "../model/perplexity.ts";
import { type ModelQuantizeOptions, quantizeModel } from "../model/quantize_model.ts";
import { sampleWindows } from "../model/windows.ts";
import { sharedPath } from "../tests/shared.ts";
import { fmt, markdownTable } from "./timing.ts";
import { openRunLog, replaceReadmeSection, writeResults } from "./results.ts";

/** One row of the table. */
interface Setting {
  readonly name: string;
  readonly run: Omit<ModelQuantizeOptions, "calibration" | "seqLen" | "backend">;
}

const uniform = (method: "rtn" | "gptq", bits: number, groupSize: number, actOrder = false): Setting => ({
  name: `${method} w${bits}${groupSize ? ` g${groupSize}` : " per row"}${actOrder ? " act-order" : ""}`,
  run: { method, options: { bits, groupSize, actOrder } satisfies MethodOptions },
});

const SETTINGS: Setting[] = [
  ...[4, 3, 2].flatMap((bits) => [uniform("rtn", bits, 0), uniform("rtn", bits, 128)]),
  ...[4, 3, 2].flatMap((bits) => [0, 128].flatMap((g) => [uniform("gptq", bits, g), uniform("gptq", bits, g, true)])),
  // SpQR with 3-bit statistics: 3-bit g16 τ0.2 lands near 4.2 bits with its outliers, 2-bit g16 τ1 near 2.9 and
  // 2-bit g128 τ8 near 2.1 (measured: bench/results/methods.md).
  { name: "spqr w3 g16 τ0.2", run: { method: "spqr", options: { bits: 3, groupSize: 16, outlierThreshold: 0.2 } } },
  {
    name: "spqr w2 g16 τ1",
    run: { method: "spqr", options: { bits: 2, groupSize: 16, outlierThreshold: 1, actOrder: true } },
  },
  {
    name: "spqr w2 g128 τ8",
    run: { method: "spqr", options: { bits: 2, groupSize: 128, outlierThreshold: 8, actOrder: true } },
  },
  { name: "billm", run: { method: "billm" } },
  // OAC with its defaults (coupled rows, per-layer refresh, the first-order step) feeding the engines above.
  ...[4, 3, 2].map((bits): Setting => ({
    name: `oac w${bits} g128 act-order`,
    run: { method: "oac", options: { bits, groupSize: 128, actOrder: true } },
  })),
  {
    name: "oac spqr w2 g16 τ1",
    run: { method: "oac", engine: "spqr", options: { bits: 2, groupSize: 16, outlierThreshold: 1, actOrder: true } },
  },
  { name: "oac billm", run: { method: "oac", engine: "billm" } },
];

const { values } = parseArgs({
  options: {
    only: { type: "string" },
    windows: { type: "string" },
    samples: { type: "string", default: "128" },
    seqlen: { type: "string", default: "512" },
    batch: { type: "string", default: "8" },
    backend: { type: "string" },
    out: { type: "string", default: "bench/results/methods" },
    resume: { type: "boolean", default: false },
    readme: { type: "boolean", default: false },
  },
});
const backend = values.backend ? await setBackend(values.backend) : await setBestBackend();
const seqLen = Number(values.seqlen), samples = Number(values.samples), batch = Number(values.batch);
const windows = values.windows ? Number(values.windows) : undefined;
const only = values.only?.split(",");

const { model, tokenizer } = await loadModel(sharedPath("models/llama-12m"));
const read = async (rel: string) => tokenizer.encode(await Deno.readTextFile(sharedPath(rel)));
const calibration = sampleWindows(await read("data/calib.txt"), samples, seqLen, 0);
const evals = { heldout: await read("data/heldout.txt"), wiki: await read("data/wiki.test.raw") };
console.error(`backend ${backend.name}; calibration ${samples}×${seqLen}; eval ${windows ?? "all"} windows`);

async function evaluate(m: LlamaModel): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [name, tokens] of Object.entries(evals)) {
    out[name] = (await perplexity(m, tokens, { seqLen, batch, windows, backend })).ppl;
  }
  return out;
}

/** One finished setting, as stored in the JSONL file. */
interface Row {
  setting: string;
  samples: number;
  seqLen: number;
  windows: number | "all";
  avg_bits: number;
  /** BiLLM only: bits per weight as its paper counts them (`1 + salient share`, flags and bitmaps apart). */
  param_bits?: number;
  ppl: Record<string, number>;
  /** Calibration, quantization and their sum with evaluation (`total`), in seconds. */
  seconds: { calibrate?: number; quantize?: number; total: number };
}

const { runs: results, append } = await openRunLog<Row>(values.out, values.resume);
const sameRun = (r: Row) => r.samples === samples && r.seqLen === seqLen && r.windows === (windows ?? "all");
const foreign = results.filter((r) => !sameRun(r));
if (foreign.length) {
  throw new Error(`${values.out}.jsonl holds runs with another calibration or window count; remove it`);
}

async function record(setting: string, run: () => Promise<Omit<Row, "setting" | "samples" | "seqLen" | "windows">>) {
  if (results.some((r) => r.setting === setting)) return;
  const row: Row = { setting, samples, seqLen, windows: windows ?? "all", ...await run() };
  await append(row);
  console.error(`${setting}: ${fmt(row.avg_bits)} bits, ${JSON.stringify(row.ppl)}, ${fmt(row.seconds.total)} s`);
}

const FULL = "full precision (bf16 weights in f32)";
await record(FULL, async () => {
  const t = performance.now();
  const ppl = await evaluate(model);
  return { avg_bits: 16, ppl, seconds: { total: (performance.now() - t) / 1000 } };
});

for (const s of SETTINGS) {
  if (only && !only.some((o) => s.name.startsWith(o))) continue;
  await record(s.name, async () => {
    const t = performance.now();
    const q = await quantizeModel(model, { ...s.run, calibration, seqLen, batch, backend });
    const ppl = await evaluate(q.model);
    let paramBits = 0, weights = 0;
    for (const r of q.layers.values()) {
      if (!("storage" in r)) continue;
      const n = r.dequantized.data.length;
      paramBits += (r.storage as BillmStorage).paramBits * n;
      weights += n;
    }
    return {
      avg_bits: q.avgBits,
      ...(weights ? { param_bits: paramBits / weights } : {}),
      ppl,
      seconds: { ...q.seconds, total: (performance.now() - t) / 1000 },
    };
  });
}
const order = [FULL, ...SETTINGS.map((s) => s.name)];
results.sort((a, b) => order.indexOf(a.setting) - order.indexOf(b.setting));

const table = markdownTable(
  ["setting", "avg bits", "held-out ppl", "WikiText-2 ppl", "seconds (calibrate + quantize + evaluate)"],
  results.map((r) => [
    r.setting,
    r.param_bits === undefined ? fmt(r.avg_bits) : `${fmt(r.avg_bits)} (${fmt(r.param_bits)} as BiLLM counts)`,
    fmt(r.ppl.heldout, 4),
    fmt(r.ppl.wiki, 4),
    fmt(r.seconds.total),
  ]),
);
const note = `llama-12m, calibration ${samples} windows of ${seqLen} tokens from calib.txt (seed 0), ` +
  `${windows ? `first ${windows} windows` : "all windows"} of ${seqLen} tokens per file, backend ${backend.name}. ` +
  "Average bits count everything a checkpoint stores: codes, grid statistics, SpQR's outliers, BiLLM's masks. " +
  `Generated by \`deno run -A bench/methods.ts${windows ? ` --windows ${windows}` : ""}\`.`;
await writeResults(values.out, results, `${table}\n\n${note}\n`);
if (values.readme) await replaceReadmeSection("methods-table", `${table}\n\n${note}`);
console.log(`${table}\n\n${note}`);
backend.dispose?.();
