/**
 * Methods by name, for the CLI, the server and benchmarks: each turns common options into a layer quantizer
 * `(name, W, H) → QuantizedLayer` that the calibration driver calls for every linear layer.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError } from "../core/errors.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";
import { billm } from "./billm.ts";
import type { FactorPrecision } from "./prepare.ts";
import { gptq } from "./gptq.ts";
import type { QuantizedLayer } from "./result.ts";
import { rtn } from "./rtn.ts";
import { spqr } from "./spqr.ts";
import { vptq } from "./vptq.ts";

/** Names accepted by {@link layerQuantizer}. */
export const METHODS = ["rtn", "gptq", "spqr", "billm", "vptq"] as const;

/** One of {@link METHODS}. */
export type MethodName = typeof METHODS[number];

/** Options shared by the methods; each method reads the ones it has. */
export interface MethodOptions {
  /** Bits per weight of the grid; default 4. */
  readonly bits?: number;
  /** Columns per group; 0 = per row; default: the method's (0 for RTN and GPTQ, 16 for SpQR). */
  readonly groupSize?: number;
  /** GPTQ act-order (VPTQ: non-outlier columns by descending Hessian diagonal); default false. */
  readonly actOrder?: boolean;
  /** Static groups (GPTQ); default false. */
  readonly staticGroups?: boolean;
  /** Symmetric grid; default false. */
  readonly symmetric?: boolean;
  /** MSE grid search; default false. */
  readonly mse?: boolean;
  /** Relative Hessian damping; default 0.01. */
  readonly damping?: number;
  /** Precision of the factorisation of `H` (GPTQ, SpQR, BiLLM, VPTQ; {@link FactorPrecision}); default "f64". */
  readonly factorPrecision?: FactorPrecision;
  /** GPTQ, SpQR, BiLLM with an output-side Hessian (OAC's coupled rows): its relative damping; default 0.1. */
  readonly outputDamping?: number;
  /** GPTQ, SpQR, BiLLM with an output-side Hessian: round rows by descending `B_ii`; default false. */
  readonly outputOrder?: boolean;
  /** SpQR: relative outlier threshold τ; default 0.2. */
  readonly outlierThreshold?: number;
  /** SpQR: bits of the quantized scales and zeros; default 3. */
  readonly statBits?: number;
  /** VPTQ: vector length `v` (consecutive output channels of one column); default 4. */
  readonly vectorSize?: number;
  /** VPTQ: centroids `k` of the per-layer codebook; default 256 (with `v = 4`: 2 index bits per weight). */
  readonly codebookSize?: number;
  /** VPTQ: centroids of the residual codebook; default 0 (none). */
  readonly residualCodebookSize?: number;
  /** VPTQ: fraction of columns (largest `H_jj`) with their own codebook; default 0. */
  readonly outlierFraction?: number;
  /** VPTQ: centroids of the outlier codebook; default `codebookSize`. */
  readonly outlierCodebookSize?: number;
  /** VPTQ: Lloyd iterations of each k-means at most; default 25. */
  readonly kmeansIterations?: number;
  /** VPTQ: seed of the k-means++ initialisations; default 0. */
  readonly seed?: number;
  readonly backend?: Backend;
}

/** A layer's calibration beyond its Hessian, for the engines that take it. */
export interface LayerExtras {
  /** A second `[in, in]` Hessian that only chooses the salient weights (BiLLM's salient columns). */
  readonly salience?: Matrix<FloatArray>;
  /** `[out, out]` output-side Hessian: rounding coupled across rows (GPTQ's, SpQR's and BiLLM's `outputHessian`). */
  readonly outputHessian?: Matrix<FloatArray>;
}

/** True when the method needs calibration Hessians (every method but RTN). */
export function needsCalibration(method: MethodName): boolean {
  return method !== "rtn";
}

/**
 * A layer quantizer for `method`.
 *
 * @throws {OptionError} for an unknown method.
 */
export function layerQuantizer(
  method: string,
  options: MethodOptions,
): (
  name: string,
  w: Matrix,
  h: Matrix<FloatArray> | undefined,
  extras?: LayerExtras,
) => Promise<QuantizedLayer> {
  /** Only BiLLM takes a separate Hessian for its salient weights, only GPTQ, SpQR and BiLLM an output-side Hessian. */
  const none = (name: string, extras: LayerExtras | undefined, ...accepted: (keyof LayerExtras)[]) => {
    if (extras?.salience && !accepted.includes("salience")) {
      throw new OptionError(`${name}: ${method} takes no separate salience Hessian (BiLLM does)`);
    }
    if (extras?.outputHessian && !accepted.includes("outputHessian")) {
      throw new OptionError(`${name}: ${method} takes no output-side Hessian (GPTQ, SpQR and BiLLM do)`);
    }
  };
  switch (method) {
    case "rtn":
      return (name, w, h, extras) => (none(name, extras), rtn(w, h, options));
    case "gptq":
      return (name, w, h, extras) => (
        none(name, extras, "outputHessian"),
          gptq(w, requireHessian(name, h), { ...options, outputHessian: extras?.outputHessian })
      );
    case "spqr":
      return (name, w, h, extras) => (
        none(name, extras, "outputHessian"),
          spqr(w, requireHessian(name, h), { ...options, outputHessian: extras?.outputHessian })
      );
    case "billm":
      return (name, w, h, extras) => (
        none(name, extras, "salience", "outputHessian"),
          billm(w, requireHessian(name, h), {
            ...options,
            salienceHessian: extras?.salience,
            outputHessian: extras?.outputHessian,
          })
      );
    case "vptq":
      return (name, w, h, extras) => (none(name, extras), vptq(w, requireHessian(name, h), options));
    default:
      throw new OptionError(`unknown method "${method}"; available: ${METHODS.join(", ")}`);
  }
}

function requireHessian(name: string, h: Matrix<FloatArray> | undefined): Matrix<FloatArray> {
  if (!h) throw new OptionError(`${name}: this method needs a calibration Hessian`);
  return h;
}
