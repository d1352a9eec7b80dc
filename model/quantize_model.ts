/**
 * A whole model through one method: RTN layer by layer without calibration, every other method through the
 * calibration driver (GPTQ's sequential flow), OAC as a Hessian source feeding an engine. Shared by the CLI, the
 * demo, the server and the benchmarks.
 *
 * @module
 */

import { layerQuantizer, type MethodName, type MethodOptions, METHODS } from "../algorithms/methods.ts";
import { oacHessianSource, type OacOptions } from "../algorithms/oac.ts";
import type { QuantizedLayer } from "../algorithms/result.ts";
import type { Backend } from "../core/backend.ts";
import { OptionError } from "../core/errors.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { type CalibrationProgress, quantizeSequential } from "./calibrate.ts";
import { linearNames, linearWeight, type LlamaModel, withLinearWeights } from "./llama.ts";

/** OAC's variant options, without what the driver supplies (window length, batch, backend). */
export type OacVariant = Omit<OacOptions, "seqLen" | "batch" | "backend" | "onProgress">;

/** What to run on a model. */
export interface ModelQuantizeOptions {
  /** A method of {@link METHODS}, or "oac" (output-adaptive Hessians fed to `engine`). */
  readonly method: MethodName | "oac";
  /** With "oac": the engine (gptq, spqr, billm); default gptq. */
  readonly engine?: Exclude<MethodName, "rtn">;
  /** Options of the layer quantizer. */
  readonly options?: MethodOptions;
  /** With "oac": the variant. */
  readonly oac?: OacVariant;
  /** Calibration windows (`windows·seqLen` ids); required for every method but RTN. */
  readonly calibration?: Int32Array;
  /** Window length of `calibration`; default 512. */
  readonly seqLen?: number;
  /** Windows per forward pass; default 8. */
  readonly batch?: number;
  /** Quantize q/k/v, o, gate/up, down in turn; default false. */
  readonly trueSequential?: boolean;
  readonly backend?: Backend;
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
  /** Wall seconds: in the layer quantizers, and the rest (forward passes, Hessians, gradients). */
  readonly seconds: { readonly quantize: number; readonly calibrate: number };
}

/**
 * Quantizes every decoder linear layer of `model`.
 *
 * @throws {OptionError} for an unknown method or engine, or a calibrated method without calibration windows.
 */
export async function quantizeModel(model: LlamaModel, run: ModelQuantizeOptions): Promise<ModelQuantizeResult> {
  const { method, options = {}, seqLen = 512, batch = 8, onProgress } = run;
  const backend = run.backend ?? options.backend ?? getBackend();
  const engine = method === "oac" ? run.engine ?? "gptq" : method;
  if (!(METHODS as readonly string[]).includes(engine) || (method === "oac" && engine === "rtn")) {
    throw new OptionError(`unknown method "${method}"${method === "oac" ? ` with engine "${engine}"` : ""}`);
  }
  const quantizer = layerQuantizer(engine, { ...options, backend });
  let quantizeSeconds = 0;
  const timed = async (name: string, w: Matrix, h: Matrix<FloatArray> | undefined) => {
    const t = performance.now();
    const r = await quantizer(name, w, h);
    quantizeSeconds += (performance.now() - t) / 1000;
    return r;
  };

  const t0 = performance.now();
  let layers: ReadonlyMap<string, QuantizedLayer>;
  let quantized: LlamaModel;
  if (engine === "rtn") {
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
      quantize: timed,
      hessians: method === "oac" ? oacHessianSource(calibration, { ...run.oac, seqLen, batch, backend }) : undefined,
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
