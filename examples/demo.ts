/**
 * `deno task demo`: quantizes the bundled stories260K model (llama2.c, 260K parameters) with RTN, GPTQ and OAC (GPTQ
 * rounding with the loss gradients' output-side Hessian as well as its own, from weights moved by the loss's
 * first-order step) at 4, 3 and 2 bits, calibrated on the
 * first half of the bundled TinyStories sample and evaluated on its second half, and prints full precision against
 * each setting. Needs nothing outside this repository.
 *
 * Usage: `deno task demo [--backend ts|wasm|webgpu] [--samples 32] [--seqlen 256]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { setBackend, setBestBackend } from "../backends/registry.ts";
import { linearNames, llamaFromWeights, type LlamaModel } from "../model/llama.ts";
import { quantizeModel } from "../model/quantize_model.ts";
import { loadLlama2cModel, loadLlama2cTokenizer } from "../model/llama2c.ts";
import { perplexity } from "../model/perplexity.ts";
import { sampleWindows } from "../model/windows.ts";
import { fmt, markdownTable } from "../bench/timing.ts";

const { values } = parseArgs({
  options: {
    backend: { type: "string" },
    samples: { type: "string", default: "32" },
    seqlen: { type: "string", default: "256" },
  },
});
const backend = values.backend ? await setBackend(values.backend) : await setBestBackend();
const samples = Number(values.samples), seqLen = Number(values.seqlen);

const data = new URL("./data/", import.meta.url);
const loaded = await loadLlama2cModel(new URL("stories260K/stories260K.bin", data).pathname);
const model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n), "stories260K");
const tokenizer = await loadLlama2cTokenizer(new URL("stories260K/tok512.bin", data).pathname, model.config.vocabSize);

// Stories are separated by "<|endoftext|>" lines; like llama2.c's pretokenizer, each story starts with BOS.
const stories = (await Deno.readTextFile(new URL("tinystories/tinystories-valid.txt", data)))
  .split("<|endoftext|>").map((s) => s.trim()).filter((s) => s.length > 0);
const half = Math.floor(stories.length / 2);
const encode = (texts: string[]) => {
  const parts = texts.map((s) => tokenizer.encode(s, { bos: true }));
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
};
const calibTokens = encode(stories.slice(0, half)), evalTokens = encode(stories.slice(half));
const calib = sampleWindows(calibTokens, samples, seqLen, 0);
console.log(
  `stories260K: ${model.config.numLayers} layers, dim ${model.config.hiddenSize}; ${stories.length} stories: ` +
    `${half} for calibration (${samples} windows of ${seqLen}), ${stories.length - half} for evaluation ` +
    `(${Math.floor(evalTokens.length / seqLen)} windows); backend ${backend.name}\n`,
);

const linear = new Set(linearNames(model.config));
const paramCounts = () => {
  let lin = 0, other = 0;
  for (const [name, t] of loaded.weights) {
    const n = t.data.length;
    if (linear.has(name.replace(/\.weight$/, ""))) lin += n;
    else if (!(name === "lm_head.weight" && model.weights.lmHead === model.weights.embed)) other += n;
  }
  return { lin, other };
};
const { lin, other } = paramCounts();
const ppl = async (m: LlamaModel) => (await perplexity(m, evalTokens, { seqLen, batch: 8, backend })).ppl;

const rows: (string | number)[][] = [];
const fp = await ppl(model);
rows.push(["full precision (f32)", "32", fmt(((lin + other) * 4) / 1024, 4), fmt(fp, 4), "", "—"]);
console.log(`full precision: perplexity ${fmt(fp, 4)}`);

// OAC's default (coupled rows and the first-order step): GPTQ's input Hessian and an output-side one from the gradients
// of the model's loss, and the weights moved towards what the earlier layers' rounding lost.
const settings: { label: string; method: "rtn" | "gptq" | "oac"; bits: number }[] = [];
for (const method of ["rtn", "gptq", "oac"] as const) {
  for (const bits of [4, 3, 2]) settings.push({ label: `${method} ${bits}-bit per row`, method, bits });
}
for (const { label, method, bits } of settings) {
  const t = performance.now();
  const { model: quantized, layers } = await quantizeModel(model, {
    method,
    options: { bits, groupSize: 0 },
    calibration: calib,
    seqLen,
    backend,
  });
  const seconds = (performance.now() - t) / 1000;
  const p = await ppl(quantized);
  let bitsTotal = 0;
  for (const r of layers.values()) bitsTotal += r.stats.avgBits * r.dequantized.data.length;
  const sizeKiB = (bitsTotal / 8 + other * 4) / 1024;
  rows.push([
    label,
    fmt(bitsTotal / lin, 3),
    fmt(sizeKiB, 4),
    fmt(p, 4),
    `${p >= fp ? "+" : ""}${fmt(p - fp, 3)}`,
    fmt(seconds),
  ]);
  console.log(`${label}: perplexity ${fmt(p, 4)} (${fmt(seconds)} s to quantize)`);
}

console.log(
  "\n" +
    markdownTable(
      ["setting", "bits/weight (linear)", "size KiB", "perplexity", "Δ vs f32", "seconds to quantize"],
      rows,
    ),
);
console.log("\nSize: linear layers at their average bits (codes and grid statistics), other tensors as f32.");
backend.dispose?.();
