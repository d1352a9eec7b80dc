/**
 * A whole model through one method: RTN layer by layer without calibration, every other method through the
 * calibration driver (GPTQ's sequential flow), OAC as a Hessian source feeding an engine. Shared by the CLI, the
 * demo, the server and the benchmarks.
 *
 * Two optional stages wrap the method: `smooth` (SmoothQuant or AWQ scales folded into the model before anything is
 * quantized, `model/smooth.ts`) and `lowRank` (LoRC or QERA factors added to every quantized layer, so the driver
 * propagates through the corrected layers, `algorithms/low_rank.ts`).
 *
 * @module
 */

import {
  type LayerExtras,
  layerQuantizer,
  type MethodName,
  type MethodOptions,
  METHODS,
} from "../algorithms/methods.ts";
import { type LowRankKind, withLowRank } from "../algorithms/low_rank.ts";
import {
  defaultOacRows,
  defaultOacStep,
  OAC_DEFAULT_DAMPING,
  oacHessianSource,
  type OacOptions,
} from "../algorithms/oac.ts";
import type { QuantizedLayer } from "../algorithms/result.ts";
import type { Backend } from "../core/backend.ts";
import { OptionError } from "../core/errors.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { type CalibrationProgress, calibrationSteps, quantizeSequential } from "./calibrate.ts";
import { linearNames, linearWeight, type LlamaModel, withLinearWeights } from "./llama.ts";
import { type SiteReport, smoothModel } from "./smooth.ts";

/** OAC's variant options, without what the driver supplies (window length, batch, backend). */
export type OacVariant = Omit<OacOptions, "seqLen" | "batch" | "backend" | "onProgress">;

/** What to run on a model. */
export interface ModelQuantizeOptions {
  /** A method of {@link METHODS}, or "oac" (`engine` calibrated from the gradients of the model's loss). */
  readonly method: MethodName | "oac";
  /** With "oac": the engine (gptq, spqr, billm, vptq); default gptq. */
  readonly engine?: Exclude<MethodName, "rtn">;
  /** Options of the layer quantizer. With "oac", `damping` defaults to {@link OAC_DEFAULT_DAMPING} (0.1). */
  readonly options?: MethodOptions;
  /**
   * With "oac": the variant; `rows` defaults to `defaultOacRows(oac, engine)` (coupled where it applies), the first-order
   * step to `defaultOacStep` (along the lost gradient with coupled rows and per-layer refresh).
   */
  readonly oac?: OacVariant;
  /** Calibration windows (`windows·seqLen` ids); required for every method but RTN. */
  readonly calibration?: Int32Array;
  /** Window length of `calibration`; default 512. */
  readonly seqLen?: number;
  /** Windows per forward pass; default 8. */
  readonly batch?: number;
  /** Quantize q/k/v, o, gate/up, down in turn; default false. */
  readonly trueSequential?: boolean;
  /**
   * Low-rank error reconstruction after the method, rank `r` per layer: "lorc" (weight error), "qera" (QERA-exact) or
   * "qera-approx" (output error; they use each layer's calibration Hessian, so RTN then goes through the driver too).
   */
  readonly lowRank?: { readonly kind: LowRankKind; readonly rank: number };
  /**
   * Scales folded into the model before quantization (needs calibration windows): "smoothquant" with `alpha`
   * (default 0.5), or "awq", whose `α` is searched on a grid of 20 by each site's output error after quantization with
   * this run's method and options (its GPTQ-Hessian engine for OAC), unless `alpha` fixes it.
   */
  readonly smooth?: { readonly kind: "awq" | "smoothquant"; readonly alpha?: number };
  readonly backend?: Backend;
  /** Workers for the calibration driver's passes (`SequentialOptions.workers`); default 1. */
  readonly workers?: number;
  /** Progress of the calibration driver, or of RTN's layers (`stage: "quantize"`). */
  readonly onProgress?: (p: CalibrationProgress) => void;
}

/** Result of {@link quantizeModel}. */
export interface ModelQuantizeResult {
  /** The model with dequantized linear weights, for evaluation. */
  readonly model: LlamaModel;
  /** Each linear layer's result, by name. */
  readonly layers: ReadonlyMap<string, QuantizedLayer>;
  /** Parameter-weighted mean of the layers' average bits. */
  readonly avgBits: number;
  /** Wall seconds: in the layer quantizers, and the rest (forward passes, Hessians, gradients, smoothing). */
  readonly seconds: { readonly quantize: number; readonly calibrate: number };
  /** With `smooth`: per decoder layer, the sites scaled and the `α` chosen. */
  readonly smoothing?: readonly (readonly SiteReport[])[];
}

/**
 * Quantizes every decoder linear layer of `original` (after smoothing it, when asked; `original` is never modified).
 *
 * @throws {OptionError} for an unknown method, engine or low-rank kind, or a calibrated method (or smoothing, or QERA)
 *   without calibration windows.
 */
export async function quantizeModel(original: LlamaModel, run: ModelQuantizeOptions): Promise<ModelQuantizeResult> {
  const { method, seqLen = 512, batch = 8, onProgress } = run;
  const options: MethodOptions = method === "oac" && run.options?.damping === undefined
    ? { ...run.options, damping: OAC_DEFAULT_DAMPING }
    : run.options ?? {};
  const backend = run.backend ?? options.backend ?? getBackend();
  const engine = method === "oac" ? run.engine ?? "gptq" : method;
  if (!(METHODS as readonly string[]).includes(engine) || (method === "oac" && engine === "rtn")) {
    throw new OptionError(`unknown method "${method}"${method === "oac" ? ` with engine "${engine}"` : ""}`);
  }
  if (method === "oac" && run.oac?.role === "salience" && engine !== "billm") {
    throw new OptionError(`OAC's "salience" role needs an engine that chooses salient weights (billm), not ${engine}`);
  }
  if (method === "oac" && run.oac?.rows === "coupled" && engine === "vptq") {
    throw new OptionError(
      `OAC's coupled rows need an engine that rounds rows coupled (gptq, spqr, billm), not ${engine}`,
    );
  }
  const rows = run.oac?.rows ?? defaultOacRows(run.oac ?? {}, engine);
  const step = defaultOacStep(rows, run.oac?.refresh ?? "per-layer");
  const oac: OacVariant = {
    ...run.oac,
    rows,
    firstOrder: run.oac?.firstOrder ?? step.firstOrder,
    firstOrderGradient: run.oac?.firstOrderGradient ?? step.firstOrderGradient,
  };
  const baseQuantizer = layerQuantizer(engine, { ...options, backend });
  const quantizer = run.lowRank ? withLowRank(baseQuantizer, { ...run.lowRank, backend }) : baseQuantizer;
  let quantizeSeconds = 0;
  const timed = async (name: string, w: Matrix, h: Matrix<FloatArray> | undefined, extras?: LayerExtras) => {
    const t = performance.now();
    const r = await quantizer(name, w, h, extras);
    quantizeSeconds += (performance.now() - t) / 1000;
    return r;
  };

  const t0 = performance.now();
  // Smoothing first: the scales are folded into a new model (exact in full precision), which is then quantized.
  // AWQ's search runs the base quantizer itself (its time counts as calibration, not as quantization).
  let smoothing: readonly (readonly SiteReport[])[] | undefined;
  let model = original;
  if (run.smooth) {
    if (!run.calibration) throw new OptionError(`smoothing (${run.smooth.kind}) needs calibration windows`);
    const r = await smoothModel(original, run.calibration, {
      kind: run.smooth.kind,
      alpha: run.smooth.alpha,
      seqLen,
      batch,
      backend,
      quantize: (name, w, h) => baseQuantizer(name, w, h),
    });
    model = r.model;
    smoothing = r.layers;
  }
  let layers: ReadonlyMap<string, QuantizedLayer>;
  let quantized: LlamaModel;
  // QERA needs each layer's Hessian: RTN then goes through the calibration driver like the other methods.
  if (engine === "rtn" && !run.lowRank?.kind.startsWith("qera")) {
    const done = new Map<string, QuantizedLayer>();
    const names = linearNames(model.config);
    for (const [i, name] of names.entries()) {
      done.set(name, await timed(name, linearWeight(model, name), undefined));
      onProgress?.({
        stage: "quantize",
        layer: Math.floor(i / 7),
        layers: model.config.numLayers,
        name,
        done: i + 1,
        total: names.length,
      });
    }
    layers = done;
    quantized = withLinearWeights(model, new Map([...done].map(([n, r]) => [n, r.dequantized])));
  } else {
    const calibration = run.calibration;
    if (!calibration) throw new OptionError(`method ${method} needs calibration windows`);
    const r = await quantizeSequential(model, calibration, {
      seqLen,
      batch,
      backend,
      trueSequential: run.trueSequential,
      workers: run.workers,
      quantize: timed,
      hessians: method === "oac" ? oacHessianSource(calibration, { ...oac, seqLen, batch, backend }) : undefined,
      onProgress,
    });
    layers = r.layers;
    quantized = r.model;
  }
  const total = (performance.now() - t0) / 1000;
  return {
    model: quantized,
    layers,
    avgBits: averageBits(layers),
    seconds: { quantize: quantizeSeconds, calibrate: Math.max(0, total - quantizeSeconds) },
    ...(smoothing ? { smoothing } : {}),
  };
}

/** Parameter-weighted mean of the layers' average bits. */
export function averageBits(layers: ReadonlyMap<string, QuantizedLayer>): number {
  let bits = 0, count = 0;
  for (const r of layers.values()) {
    const n = r.dequantized.data.length;
    bits += r.stats.avgBits * n;
    count += n;
  }
  return count ? bits / count : 0;
}

/**
 * Units of progress {@link quantizeModel} reports in all for `run` on a model of `layers` decoder layers (what a
 * progress bar counts to): one per linear layer quantized, and one per window in every pass over the calibration
 * windows ({@link calibrationSteps}).
 */
export function quantizeProgressTotal(layers: number, run: ModelQuantizeOptions): number {
  const engine = run.method === "oac" ? run.engine ?? "gptq" : run.method;
  if (engine === "rtn" && !run.lowRank?.kind.startsWith("qera")) return 7 * layers;
  const windows = (run.calibration?.length ?? 0) / (run.seqLen ?? 512);
  const groups = run.trueSequential ? 4 : 1;
  // OAC brings its own Hessians (its gradient passes report nothing); GPTQ's input pass runs only to mix them in, to
  // drive the salience role's feedback, or as the input side of coupled rows.
  const rows = run.oac?.rows ?? defaultOacRows(run.oac ?? {}, engine);
  const ownHessians = !((run.oac?.mix ?? 0) > 0) && run.oac?.role !== "salience" && rows !== "coupled";
  const passes = run.method === "oac" && ownHessians ? 0 : groups;
  return calibrationSteps(layers, windows, passes);
}

/**
 * A running count of the units of {@link quantizeProgressTotal}: call it with every progress event of
 * {@link quantizeModel}; it returns the units done so far.
 */
export function progressCounter(): (p: CalibrationProgress) => number {
  let units = 0, lastDone = 0;
  return (p) => {
    // Window stages report a running count that restarts at every pass; linear layers report one at a time.
    units += p.stage === "quantize" ? 1 : p.done > lastDone ? p.done - lastDone : p.done;
    lastDone = p.stage === "quantize" ? 0 : p.done;
    return units;
  };
}
