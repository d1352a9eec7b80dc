/**
 * The calibration driver: GPTQ's sequential flow over a whole model. The residual stream of every calibration window
 * enters layer 0; for each decoder layer in turn,
 *
 * 1. run the layer (still full precision) over every window, accumulating one Hessian per distinct linear input
 *    (q/k/v share one, gate/up share one);
 * 2. quantize its seven linear layers with the quantizer passed in;
 * 3. run the *quantized* layer over every window: its outputs feed the next layer.
 *
 * Only the current layer's inputs are held (one `[windows·seqLen, hidden]` buffer), never every layer's activations.
 * With `trueSequential`, step 1-2 run per group (q/k/v, then o, then gate/up, then down), each group's inputs computed
 * with the groups before it already quantized.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError } from "../core/errors.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";
import { createHessianAccumulator, type HessianAccumulator } from "../algorithms/hessian.ts";
import type { LayerExtras } from "../algorithms/methods.ts";
import { getBackend } from "../backends/registry.ts";
import { type CalibrationPool, type PassShape, startCalibrationPool } from "./calibrate_pool.ts";
import { checkWorkers } from "./worker_pool.ts";
import {
  decoderLayerForward,
  decoderLayerInputs,
  embedTokens,
  LINEAR_KINDS,
  type LinearKind,
  linearName,
  linearWeight,
  type LlamaModel,
  withLinearWeights,
} from "./llama.ts";

/** Quantizes one linear layer: its name, `[out, in]` weight and `[in, in]` Hessian in; the dequantized weight out. */
export type LayerQuantizer<R extends { dequantized: Matrix }> = (
  name: string,
  w: Matrix,
  h: Matrix<FloatArray>,
  extras?: LayerExtras,
) => Promise<R>;

/** What a {@link HessianSource} supplies for a group of linear layers. */
export interface LayerCalibration {
  /** `[in, in]` Hessian of each layer. */
  readonly hessians: ReadonlyMap<string, Matrix<FloatArray>>;
  /** Weights to quantize instead of the layer's own, where given (a first-order target, for instance). */
  readonly targets?: ReadonlyMap<string, Matrix>;
  /** A second Hessian per layer that only chooses the salient weights (BiLLM's salient columns), where given. */
  readonly salience?: ReadonlyMap<string, Matrix<FloatArray>>;
  /** `[out, out]` output-side Hessian per layer (rounding coupled across rows), where given. */
  readonly outputHessians?: ReadonlyMap<string, Matrix<FloatArray>>;
}

/**
 * Supplies the Hessians of one decoder layer's linear layers instead of the inputs' `2/N·XᵀX` (OAC's output-adaptive
 * Hessians, say). Called once per layer (per group with `trueSequential`), after the layers before it are quantized,
 * with the current model; `stream` is the residual stream entering the layer for every calibration window (computed
 * through the layers already quantized), and `inputHessians` computes GPTQ's Hessians of the same layers on demand.
 */
export type HessianSource = (
  layer: number,
  model: LlamaModel,
  names: readonly string[],
  context: {
    readonly stream: Matrix;
    readonly inputHessians: () => Promise<ReadonlyMap<string, Matrix<FloatArray>>>;
  },
) => Promise<LayerCalibration>;

/** Progress of {@link quantizeSequential}. */
export interface CalibrationProgress {
  /**
   * "hessian": step 1 over windows; "quantize": step 2, one linear layer done; "propagate": step 3 over windows (not
   * after the last layer, whose outputs nothing reads).
   */
  readonly stage: "hessian" | "quantize" | "propagate";
  readonly layer: number;
  readonly layers: number;
  /** Linear layer just quantized (stage "quantize"). */
  readonly name?: string;
  /** Units done and in all within the stage (windows, or linear layers of this layer). */
  readonly done: number;
  readonly total: number;
}

/**
 * Units of progress {@link quantizeSequential} reports in all: every window once per input-Hessian pass
 * (`hessianPasses` per layer: 1, 4 with true-sequential groups, 0 when a Hessian source needs none) and once per
 * layer but the last to propagate, and each layer's seven linear layers.
 */
export function calibrationSteps(layers: number, windows: number, hessianPasses = 1): number {
  return layers * (hessianPasses * windows + 7) + Math.max(0, layers - 1) * windows;
}

/** Options of {@link quantizeSequential}. */
export interface SequentialOptions<R extends { dequantized: Matrix }> {
  /** Window length of the calibration tokens. */
  readonly seqLen: number;
  /** The quantizer applied to each linear layer. */
  readonly quantize: LayerQuantizer<R>;
  /** Windows per forward pass; default 8. */
  readonly batch?: number;
  /** Quantize q/k/v, o, gate/up, down in turn, recomputing inputs in between; default false (the reference default). */
  readonly trueSequential?: boolean;
  /** Hessians from elsewhere (OAC); default the inputs' `2/N·XᵀX`. */
  readonly hessians?: HessianSource;
  /** Hessian accumulation precision; default "f32". */
  readonly precision?: "f32" | "f64";
  /**
   * Workers for the passes over the windows when the backend is "wasm" or "ts" and every worker gets two batches or
   * more: each runs the backend's kind on one thread over whole batches (`model/calibrate_pool.ts`). The result is
   * the same as in this thread, to the bit. Each worker holds a batch's activations and float64 Gram matrices of its
   * linear inputs. Default 1: every pass in this thread.
   */
  readonly workers?: number;
  readonly backend?: Backend;
  readonly onProgress?: (p: CalibrationProgress) => void;
  /** Cancels the work: checked between batches of windows and between layers; the signal's reason is thrown. */
  readonly signal?: AbortSignal;
}

/** Result of {@link quantizeSequential}. */
export interface SequentialResult<R> {
  /** The model with every decoder linear layer replaced by its dequantized weights. */
  readonly model: LlamaModel;
  /** Each linear layer's quantizer result, by name, in quantization order. */
  readonly layers: ReadonlyMap<string, R>;
}

/** Linear layers quantized together: they share an input, or (with trueSequential) must wait for earlier groups. */
const GROUPS: readonly (readonly LinearKind[])[] = [["q_proj", "k_proj", "v_proj"], ["o_proj"], [
  "gate_proj",
  "up_proj",
], [
  "down_proj",
]];

/**
 * Quantizes every decoder linear layer of `model`, layer by layer, calibrated on `tokens`.
 *
 * @param tokens calibration windows, `windows·seqLen` ids, batch-major.
 * @throws {OptionError} when `tokens` is not a whole number of windows.
 */
export async function quantizeSequential<R extends { dequantized: Matrix }>(
  model: LlamaModel,
  tokens: Int32Array,
  options: SequentialOptions<R>,
): Promise<SequentialResult<R>> {
  const { seqLen, batch = 8, workers = 1 } = options;
  const backend = options.backend ?? getBackend();
  if (!Number.isInteger(seqLen) || seqLen < 1 || tokens.length % seqLen !== 0 || tokens.length === 0) {
    throw new OptionError(`calibration: ${tokens.length} tokens are not a whole number of windows of ${seqLen}`);
  }
  checkWorkers(workers);
  if (!Number.isInteger(batch) || batch < 1) throw new OptionError(`batch must be a positive integer, got ${batch}`);
  const pool = await startCalibrationPool(model.config, backend, workers, Math.ceil(tokens.length / seqLen / batch));
  try {
    return await sequentialPasses(model, tokens, options, backend, pool);
  } finally {
    pool?.close();
  }
}

/** {@link quantizeSequential}'s passes, in this thread or on `pool`. */
async function sequentialPasses<R extends { dequantized: Matrix }>(
  model: LlamaModel,
  tokens: Int32Array,
  options: SequentialOptions<R>,
  backend: Backend,
  pool: CalibrationPool | undefined,
): Promise<SequentialResult<R>> {
  const { seqLen, quantize, batch = 8, trueSequential = false, precision = "f32", onProgress, signal } = options;
  const windows = tokens.length / seqLen;
  const layers = model.weights.layers.length;
  const hidden = model.config.hiddenSize;
  const pass = { windows, seqLen, batch };
  const results = new Map<string, R>();
  let current = model;
  // The residual stream entering the current layer, for every window: [windows·seqLen, hidden].
  let stream: Matrix = embedTokens(model, tokens);
  if (pool) stream = pool.share(stream);

  /**
   * Runs layer `l` of `m` over all windows. "propagate": returns the outputs. "hessian": `hook` sees the linear inputs
   * up to those of `last`, and the rest of the layer is skipped.
   */
  const runLayer = async (
    l: number,
    m: LlamaModel,
    stage: "hessian" | "propagate",
    hook?: (name: string, x: Matrix) => Promise<void>,
    last?: LinearKind,
  ): Promise<Matrix | undefined> => {
    if (pool && stage === "propagate") {
      let done = 0;
      const report = (nb: number) => onProgress?.({ stage, layer: l, layers, done: done += nb, total: windows });
      return await pool.propagate(l, m.weights.layers[l], stream, pass, report, signal);
    }
    const out = stage === "propagate" ? new Float32Array(stream.data.length) : undefined;
    for (let b0 = 0; b0 < windows; b0 += batch) {
      const nb = Math.min(batch, windows - b0);
      const rows = nb * seqLen;
      const x: Matrix = {
        data: stream.data.subarray(b0 * seqLen * hidden, (b0 * seqLen + rows) * hidden),
        shape: [rows, hidden],
      };
      const shape = { batch: nb, seqLen };
      if (out) {
        out.set(
          (await decoderLayerForward(backend, m.config, l, m.weights.layers[l], x, shape)).data,
          b0 * seqLen * hidden,
        );
      } else await decoderLayerInputs(backend, m.config, l, m.weights.layers[l], x, shape, hook ?? (() => {}), last);
      onProgress?.({ stage, layer: l, layers, done: b0 + nb, total: windows });
      signal?.throwIfAborted();
    }
    return out && { data: out, shape: [stream.shape[0], hidden] };
  };

  for (let l = 0; l < layers; l++) {
    const groups = trueSequential ? GROUPS : [GROUPS.flat()];
    let done = 0;
    for (const kinds of groups) {
      const names = kinds.map((k) => linearName(l, k));
      const fromInputs = () =>
        pool
          ? poolInputHessians(l, current, names, pool, stream, pass, precision, backend, (done) => {
            onProgress?.({ stage: "hessian", layer: l, layers, done, total: windows });
          }, signal)
          : inputHessians(l, current, names, runLayer, precision, backend);
      const { hessians, targets, salience, outputHessians }: LayerCalibration = options.hessians
        ? await options.hessians(l, current, names, { stream, inputHessians: fromInputs })
        : { hessians: await fromInputs() };
      const replaced = new Map<string, Matrix>();
      for (const name of names) {
        const h = hessians.get(name);
        if (!h) throw new OptionError(`no Hessian for ${name}`);
        const r = await quantize(name, targets?.get(name) ?? linearWeight(current, name), h, {
          salience: salience?.get(name),
          outputHessian: outputHessians?.get(name),
        });
        results.set(name, r);
        replaced.set(name, r.dequantized);
        onProgress?.({ stage: "quantize", layer: l, layers, name, done: ++done, total: 7 });
        signal?.throwIfAborted();
      }
      current = withLinearWeights(current, replaced);
    }
    // The last layer's outputs are read by nothing: its propagation pass is skipped.
    if (l + 1 < layers) stream = (await runLayer(l, current, "propagate"))!;
  }
  return { model: current, layers: results };
}

/** The input a linear layer reads: q/k/v share the normed stream, gate/up the normed post-attention stream. */
const INPUT_OF: Record<LinearKind, string> = {
  q_proj: "attention input",
  k_proj: "attention input",
  v_proj: "attention input",
  o_proj: "attention output",
  gate_proj: "MLP input",
  up_proj: "MLP input",
  down_proj: "MLP activation",
};

/** GPTQ's Hessians of layer `l`'s linears named in `names`, from one pass over every window. */
async function inputHessians(
  l: number,
  model: LlamaModel,
  names: readonly string[],
  runLayer: (
    l: number,
    m: LlamaModel,
    stage: "hessian",
    hook: (name: string, x: Matrix) => Promise<void>,
    last: LinearKind,
  ) => Promise<Matrix | undefined>,
  precision: "f32" | "f64",
  backend: Backend,
): Promise<Map<string, Matrix<FloatArray>>> {
  const kindOf = new Map(names.map((n) => [n, n.slice(n.lastIndexOf(".") + 1) as LinearKind]));
  // One accumulator per distinct input; the hook reports a shared input once per linear layer, so each batch's
  // activation is observed only the first time it is seen.
  const accumulators = new Map<string, HessianAccumulator>();
  const lastSeen = new Map<string, Matrix>();
  // The pass stops after the input of the latest of these layers (in forward order).
  const last = LINEAR_KINDS.findLast((k) => names.some((n) => kindOf.get(n) === k))!;
  await runLayer(l, model, "hessian", async (name, x) => {
    const kind = kindOf.get(name);
    if (!kind) return;
    const input = INPUT_OF[kind];
    if (lastSeen.get(input) === x) return;
    lastSeen.set(input, x);
    let acc = accumulators.get(input);
    if (!acc) accumulators.set(input, acc = createHessianAccumulator(x.shape[1], { precision, backend }));
    await acc.observe(x);
  }, last);
  return finishedByName(names, kindOf, accumulators);
}

/** Each layer's Hessian from the accumulator of its input. */
function finishedByName(
  names: readonly string[],
  kindOf: ReadonlyMap<string, LinearKind>,
  accumulators: ReadonlyMap<string, HessianAccumulator>,
): Map<string, Matrix<FloatArray>> {
  const finished = new Map<string, Matrix<FloatArray>>();
  for (const [input, acc] of accumulators) finished.set(input, acc.finish());
  return new Map(names.map((n) => [n, finished.get(INPUT_OF[kindOf.get(n)!])!]));
}

/** {@link inputHessians} on the pool: each batch's Gram matrices formed by a worker, added here in batch order. */
async function poolInputHessians(
  l: number,
  model: LlamaModel,
  names: readonly string[],
  pool: CalibrationPool,
  stream: Matrix,
  pass: PassShape,
  precision: "f32" | "f64",
  backend: Backend,
  onWindows: (done: number) => void,
  signal?: AbortSignal,
): Promise<Map<string, Matrix<FloatArray>>> {
  const kindOf = new Map(names.map((n) => [n, n.slice(n.lastIndexOf(".") + 1) as LinearKind]));
  const accumulators = new Map<string, HessianAccumulator>();
  const last = LINEAR_KINDS.findLast((k) => names.some((n) => kindOf.get(n) === k))!;
  let done = 0;
  await pool.grams(l, model.weights.layers[l], stream, pass, names, last, (grams, rows) => {
    for (const [name, gram] of grams) {
      const input = INPUT_OF[kindOf.get(name)!];
      let acc = accumulators.get(input);
      if (!acc) accumulators.set(input, acc = createHessianAccumulator(gram.shape[0], { precision, backend }));
      acc.observeGram(gram, rows);
    }
    onWindows(done += rows / pass.seqLen);
  }, signal);
  return finishedByName(names, kindOf, accumulators);
}
