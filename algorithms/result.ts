/**
 * The record every quantizer returns (after SpQR's typed `QuantizationResult`): the dequantized weights for
 * evaluation, everything a checkpoint writer needs, and the statistics a report prints.
 *
 * @module
 */

import type { GridParams, GridSpec } from "../core/grids/types.ts";
import type { Matrix } from "../core/tensor.ts";

/** Statistics of one quantized layer. */
export interface QuantStats {
  /** `tr((W − Ŵ) H (W − Ŵ)ᵀ)` with the undamped Hessian given (0 when quantized without one). */
  readonly layerLoss: number;
  /** Storage per weight, everything included (codes, scales, zeros, outliers, codebooks, low-rank factors). */
  readonly avgBits: number;
  /** Wall time of the call. */
  readonly seconds: number;
  /** Damping added to the Hessian's diagonal, absolute (the requested damping plus any retry). */
  readonly damping?: number;
}

/** Outliers kept in full precision (SpQR): coordinates in the original column order and their values. */
export interface Outliers {
  readonly rows: Int32Array;
  readonly cols: Int32Array;
  readonly values: Float32Array;
}

/** A quantized linear layer `[rows, cols]`. Everything is in the original column order unless noted. */
export interface QuantizedLayer {
  /** Method that produced it ("rtn", "gptq", ...). */
  readonly method: string;
  /** `[rows, cols]` dequantized weights (outliers and low-rank terms included): what evaluation uses. */
  readonly dequantized: Matrix;
  /** The grid of the codes; absent for methods without one integer grid (BiLLM, VPTQ). */
  readonly grid?: GridSpec;
  /** `[rows, cols]` integer codes, row-major. */
  readonly codes?: Uint8Array;
  /** `[rows, groups]` scales and zeros. */
  readonly params?: GridParams;
  /** Group of each column (GPTQ's `g_idx`): column `j` uses `params` group `groupIndex[j]`. */
  readonly groupIndex?: Int32Array;
  /** Columns per group (0 = one group per row), as requested. */
  readonly groupSize?: number;
  /** Act-order: `permutation[k]` is the original column processed `k`-th. */
  readonly permutation?: Int32Array;
  /** Weights kept in full precision. */
  readonly outliers?: Outliers;
  readonly stats: QuantStats;
}

/** Bits a float16 scale and a `bits`-bit zero add per weight for groups of `groupSize` (0 = rows of `cols`). */
export function statsBitsPerWeight(bits: number, groupSize: number, cols: number, hasZero: boolean): number {
  const g = groupSize === 0 ? cols : Math.min(groupSize, cols);
  return (16 + (hasZero ? bits : 0)) / g;
}
