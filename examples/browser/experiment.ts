/**
 * What the browser example computes, free of any runtime: stories260K and the TinyStories sample from bytes already
 * fetched, split as `examples/demo.ts` splits them (first half of the stories to calibrate, second half to evaluate,
 * BOS before each story), then perplexity before, quantization, perplexity after. The page's worker and the test's
 * reference computation in Deno both call this, so "the same settings" means the same code.
 *
 * @module
 */

import type { Backend } from "../../core/backend.ts";
import { llamaFromWeights, type LlamaModel } from "../../model/llama.ts";
import { parseLlama2cCheckpoint, parseLlama2cTokenizer } from "../../model/llama2c.ts";
import { perplexity } from "../../model/perplexity.ts";
import { progressCounter, quantizeModel, quantizeProgressTotal } from "../../model/quantize_model.ts";
import { sampleWindows } from "../../model/windows.ts";
import type { ExperimentSettings } from "./settings.ts";

export { DEFAULT_SETTINGS, type ExperimentSettings } from "./settings.ts";

/** The model and the two halves of the text, tokenized. */
export interface ExperimentData {
  readonly model: LlamaModel;
  readonly calibTokens: Int32Array;
  readonly evalTokens: Int32Array;
  /** Stories in each half. */
  readonly stories: { readonly calibration: number; readonly evaluation: number };
}

/**
 * Parses the fetched files.
 *
 * @param checkpoint `stories260K.bin` (llama2.c legacy format).
 * @param tokenizer `tok512.bin`.
 * @param text The TinyStories sample, stories separated by `<|endoftext|>`.
 * @throws {FormatError} for malformed files.
 */
export function prepareData(checkpoint: Uint8Array, tokenizer: Uint8Array, text: string): ExperimentData {
  const loaded = parseLlama2cCheckpoint(checkpoint, "stories260K.bin");
  const model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n), "stories260K");
  const tok = parseLlama2cTokenizer(tokenizer, "tok512.bin", model.config.vocabSize);
  const stories = text.split("<|endoftext|>").map((s) => s.trim()).filter((s) => s.length > 0);
  const half = Math.floor(stories.length / 2);
  const encode = (texts: string[]) => {
    const parts = texts.map((s) => tok.encode(s, { bos: true }));
    const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) out.set(p, o), o += p.length;
    return out;
  };
  return {
    model,
    calibTokens: encode(stories.slice(0, half)),
    evalTokens: encode(stories.slice(half)),
    stories: { calibration: half, evaluation: stories.length - half },
  };
}

/** Progress of {@link runExperiment}: which phase, and the fraction of the whole run done. */
export interface ExperimentProgress {
  readonly phase: "before" | "quantize" | "after";
  readonly fraction: number;
  readonly note: string;
}

/** What the page shows. */
export interface ExperimentResult {
  readonly backend: string;
  readonly pplBefore: number;
  readonly pplAfter: number;
  /** Bits per weight of the linear layers, grid statistics included. */
  readonly avgBits: number;
  readonly windows: number;
  readonly seconds: { readonly before: number; readonly quantize: number; readonly after: number };
}

/**
 * Perplexity of the model, quantization with `settings`, perplexity of the result.
 *
 * @throws {OptionError} for settings the library refuses (a window longer than the text, bad bits).
 */
export async function runExperiment(
  data: ExperimentData,
  settings: ExperimentSettings,
  backend: Backend,
  onProgress: (p: ExperimentProgress) => void = () => {},
): Promise<ExperimentResult> {
  const { model, calibTokens, evalTokens } = data;
  const { seqLen } = settings;
  const windows = Math.min(settings.windows, Math.floor(evalTokens.length / seqLen));
  const layers = model.config.numLayers;
  const calibrated = settings.method !== "rtn";
  // Work in units of one decoder layer over one window: an eval window is `layers` units, a calibration step one.
  const calibration = calibrated ? sampleWindows(calibTokens, settings.samples, seqLen, settings.seed) : undefined;
  const quantizeUnits = quantizeProgressTotal(layers, { method: settings.method, calibration, seqLen });
  const total = 2 * windows * layers + quantizeUnits;
  const ppl = async (m: LlamaModel, phase: "before" | "after", offset: number) =>
    (await perplexity(m, evalTokens, {
      seqLen,
      batch: 4,
      windows,
      backend,
      onProgress: (p) =>
        onProgress({
          phase,
          fraction: (offset + p.windows * layers) / total,
          note: `window ${p.windows}/${p.totalWindows}, ppl ${p.ppl.toFixed(3)}`,
        }),
    })).ppl;

  let t = performance.now();
  const pplBefore = await ppl(model, "before", 0);
  const before = (performance.now() - t) / 1000;

  t = performance.now();
  const count = progressCounter();
  const q = await quantizeModel(model, {
    method: settings.method,
    options: { bits: settings.bits, groupSize: settings.group, actOrder: settings.actOrder, backend },
    calibration,
    seqLen,
    batch: 4,
    backend,
    onProgress: (p) => {
      onProgress({
        phase: "quantize",
        fraction: (windows * layers + Math.min(count(p), quantizeUnits)) / total,
        note: `layer ${p.layer + 1}/${p.layers}: ${p.name?.replace(/^model\.layers\.\d+\./, "") ?? p.stage}`,
      });
    },
  });
  const quantize = (performance.now() - t) / 1000;

  t = performance.now();
  const pplAfter = await ppl(q.model, "after", windows * layers + quantizeUnits);
  const after = (performance.now() - t) / 1000;
  return {
    backend: backend.name,
    pplBefore,
    pplAfter,
    avgBits: q.avgBits,
    windows,
    seconds: { before, quantize, after },
  };
}
