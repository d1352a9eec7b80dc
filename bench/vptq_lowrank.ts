/**
 * Vector codebooks, low-rank error reconstruction and scaling on llama-12m: VPTQ near 2 bits (GPTQ's and OAC's
 * Hessians), GPTQ 3-bit and 2-bit g128 alone and with LoRC and QERA at ranks 8 and 32, AWQ before GPTQ 3-bit, and GPTQ
 * 2-bit g64 for reference; held-out perplexity with average bits per weight (codebooks and float16 factors included).
 * Calibration: `--samples` windows of `--seqlen` tokens from calib.txt (seed 0); evaluation: the first `--windows`
 * windows of heldout.txt (all by default). GPTQ and VPTQ run with act-order.
 *
 * Usage: `deno run -A bench/vptq_lowrank.ts [--backend wasm] [--samples 128] [--seqlen 512] [--windows N]
 *   [--only NAME,...] [--batch 8] [--out bench/results/vptq_lowrank]`. `--only` keeps settings whose name starts with
 * one of the prefixes. The table is printed and written to `<out>.md` and `<out>.json`; runs with fewer samples or
 * windows than the defaults are labelled "quick" there.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { MethodOptions } from "../algorithms/methods.ts";
import { setBackend, setBestBackend } from "../backends/registry.ts";
import { loadModel } from "../model/load.ts";
import { perplexity } from "../model/perplexity.ts";
import { type ModelQuantizeOptions, quantizeModel } from "../model/quantize_model.ts";
import { sampleWindows } from "../model/windows.ts";
import { sharedPath } from "../tests/shared.ts";
import { replaceReadmeSection, writeResults } from "./results.ts";
import { fmt, markdownTable } from "./timing.ts";

/** One row of the table. */
interface Setting {
  readonly name: string;
  readonly run: Omit<ModelQuantizeOptions, "calibration" | "seqLen" | "backend" | "batch">;
}

const gptq = (bits: number, groupSize: number): MethodOptions => ({ bits, groupSize, actOrder: true });
const lowRanks = (bits: number): Setting[] => [
  { name: `gptq w${bits} g128`, run: { method: "gptq", options: gptq(bits, 128) } },
  ...(["lorc", "qera"] as const).flatMap((kind) =>
    [8, 32].map((rank): Setting => ({
      name: `gptq w${bits} g128 + ${kind} r${rank}`,
      run: { method: "gptq", options: gptq(bits, 128), lowRank: { kind, rank } },
    }))
  ),
  {
    name: `gptq w${bits} g128 + qera-approx r32`,
    run: { method: "gptq", options: gptq(bits, 128), lowRank: { kind: "qera-approx", rank: 32 } },
  },
];
// v = 4, k = 256: 2 index bits per weight, plus the float16 codebook (256·4·16 bits per layer, ≈ 0.07 bits here).
const vq: MethodOptions = { vectorSize: 4, codebookSize: 256, actOrder: true };

const SETTINGS: Setting[] = [
  { name: "gptq w2 g64", run: { method: "gptq", options: gptq(2, 64) } },
  { name: "vptq v4 k256 (GPTQ H)", run: { method: "vptq", options: vq } },
  // OAC's gradients once on the full-precision model: per-layer refresh costs a backward pass per decoder layer.
  { name: "vptq v4 k256 (OAC H)", run: { method: "oac", engine: "vptq", options: vq, oac: { refresh: "once" } } },
  {
    name: "vptq v4 k64 + residual k4 (GPTQ H)",
    run: { method: "vptq", options: { ...vq, codebookSize: 64, residualCodebookSize: 4 } },
  },
  ...lowRanks(3),
  ...lowRanks(2),
  { name: "awq + gptq w3 g128", run: { method: "gptq", options: gptq(3, 128), smooth: { kind: "awq" } } },
];

const { values } = parseArgs({
  options: {
    only: { type: "string" },
    windows: { type: "string" },
    samples: { type: "string", default: "128" },
    seqlen: { type: "string", default: "512" },
    batch: { type: "string", default: "8" },
    backend: { type: "string" },
    out: { type: "string", default: "bench/results/vptq_lowrank" },
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
const heldout = await read("data/heldout.txt");
const available = Math.floor(heldout.length / seqLen);
const evaluated = Math.min(available, windows ?? available);
const quick = samples < 128 || evaluated < available || seqLen !== 512;
console.error(
  `backend ${backend.name}; calibration ${samples}×${seqLen}; held-out ${evaluated} of ${available} windows` +
    (quick ? " (quick run)" : ""),
);

interface Row {
  readonly setting: string;
  readonly avg_bits: number;
  readonly ppl: number;
  readonly seconds: { readonly quantize: number; readonly calibrate: number; readonly eval: number };
}
const rows: Row[] = [];
const evaluate = async (m: typeof model) => {
  const t = performance.now();
  const { ppl } = await perplexity(m, heldout, { seqLen, batch, windows: evaluated, backend });
  return { ppl, seconds: (performance.now() - t) / 1000 };
};

const fp = await evaluate(model);
rows.push({
  setting: "full precision",
  avg_bits: 16,
  ppl: fp.ppl,
  seconds: { quantize: 0, calibrate: 0, eval: fp.seconds },
});
console.error(`full precision: ppl ${fp.ppl.toFixed(4)} (${fmt(fp.seconds)} s)`);

for (const s of SETTINGS) {
  if (only && !only.some((o) => s.name.startsWith(o))) continue;
  const q = await quantizeModel(model, { ...s.run, calibration, seqLen, batch, backend });
  const e = await evaluate(q.model);
  const row: Row = { setting: s.name, avg_bits: q.avgBits, ppl: e.ppl, seconds: { ...q.seconds, eval: e.seconds } };
  rows.push(row);
  console.error(
    `${s.name}: ${q.avgBits.toFixed(3)} bits, ppl ${e.ppl.toFixed(4)}, ` +
      `${fmt(q.seconds.quantize + q.seconds.calibrate)} s + eval ${fmt(e.seconds)} s`,
  );
}

const header =
  `llama-12m, backend ${backend.name}, calibration ${samples} windows of ${seqLen} tokens from calib.txt ` +
  `(seed 0), held-out perplexity over ${evaluated} of ${available} windows of heldout.txt` +
  (quick ? ". QUICK RUN: fewer calibration samples and/or evaluation windows than the full benchmark." : ".");
const table = markdownTable(
  ["method", "avg bits (incl. codebooks/factors)", "held-out ppl", "seconds (calibrate + quantize)", "eval seconds"],
  rows.map((r) => [
    r.setting,
    r.avg_bits.toFixed(3),
    r.ppl.toFixed(3),
    fmt(r.seconds.calibrate + r.seconds.quantize),
    fmt(r.seconds.eval),
  ]),
);
const markdown = `# VPTQ, low-rank reconstruction and AWQ on llama-12m\n\n${header}\n\n${table}\n`;
console.log(markdown);
await writeResults(values.out!, {
  model: "llama-12m",
  backend: backend.name,
  calibration: { samples, seqLen, seed: 0 },
  heldout: { windows: evaluated, of: available },
  quick,
  rows,
}, markdown);
if (values.readme) {
  await replaceReadmeSection(
    "vptq-table",
    `${header}\n\n${table}\n\nGenerated by \`deno run -A bench/vptq_lowrank.ts\`.`,
  );
}
