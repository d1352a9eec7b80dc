/**
 * LoRC, low-rank compensation (ZeroQuant-V2, Yao et al., arXiv 2303.08302): after any quantizer, approximate the
 * quantization error `E = W − Ŵ` by a rank-`r` product `A·B` from its truncated SVD, and infer with `Ŵ + A·B`.
 *
 * ```
 * E = W − Ŵ                     [rows, cols]
 * U_r Σ_r V_rᵀ = top-r SVD(E)   (Backend.svd with rank)
 * A = U_r [rows, r],  B = Σ_r V_rᵀ [r, cols]       (both stored as float16)
 * ```
 *
 * LoRC minimises `‖E − AB‖_F`, the weight error, blind to the inputs; QERA (`qera.ts`) minimises the output error.
 * This module also holds what both share: the factor record, the float16 rounding and the bit count.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { assertFinite, type Matrix, matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";

/** Low-rank factors with `E ≈ A·B`. */
export interface LowRankFactors {
  /** `[rows, r]`. */
  readonly a: Matrix;
  /** `[r, cols]`. */
  readonly b: Matrix;
}

/** Options shared by {@link lorc} and `qera`. */
export interface LowRankOptions {
  /**
   * Precision the factors are stored in and evaluated at: `"f16"` (default) rounds them to float16, as the bit count
   * assumes; `"f32"` keeps them exact (for tests of the maths).
   */
  readonly precision?: "f16" | "f32";
  /** Kernels; default the current backend. */
  readonly backend?: Backend;
}

/**
 * LoRC's factors of the quantization error `W − Ŵ`.
 *
 * @param w `[rows, cols]` original weights.
 * @param wq `[rows, cols]` quantized (dequantized) weights.
 * @param rank `r ≥ 0`; clipped to `min(rows, cols)`.
 * @returns `A = U_r` and `B = Σ_r V_rᵀ` (rounded to float16 unless `precision: "f32"`).
 * @throws {ShapeError} when the shapes differ; {OptionError} on a bad rank; {NonFiniteError} on NaN/Inf.
 *
 * @example
 * ```ts
 * import { lorc } from "./lorc.ts";
 * import { fromRows } from "../core/tensor.ts";
 * const { a, b } = await lorc(fromRows([[1, 2], [3, 4]]), fromRows([[1, 2], [3, 3]]), 1);
 * console.assert(Math.abs(a.data[1] * b.data[1] - 1) < 1e-3); // E = [[0, 0], [0, 1]] exactly
 * ```
 */
export async function lorc(w: Matrix, wq: Matrix, rank: number, options: LowRankOptions = {}): Promise<LowRankFactors> {
  const { backend = getBackend(), precision = "f16" } = options;
  const e = quantizationError(w, wq, "lorc");
  const r = effectiveRank(rank, e, "lorc");
  if (r === 0) return emptyFactors(e);
  const { u, s, v } = await backend.svd(e, { rank: r });
  const [rows, cols] = e.shape;
  const b = matrix(r, cols);
  for (let k = 0; k < r; k++) for (let j = 0; j < cols; j++) b.data[k * cols + j] = s[k] * v.data[j * r + k];
  return finish({ a: matrix(rows, r, u.data), b }, precision);
}

/** `W − Ŵ` in float32, after checking shapes and finiteness. */
export function quantizationError(w: Matrix, wq: Matrix, what: string): Matrix {
  const [rows, cols] = w.shape;
  if (wq.shape[0] !== rows || wq.shape[1] !== cols) {
    throw new ShapeError(`${what}: W is ${rows}×${cols}, Ŵ ${wq.shape.join("×")}`);
  }
  assertFinite(w, `${what} weights`);
  assertFinite(wq, `${what} quantized weights`);
  const e = matrix(rows, cols);
  for (let i = 0; i < e.data.length; i++) e.data[i] = w.data[i] - wq.data[i];
  return e;
}

/** The rank actually used: `min(rank, rows, cols)`. @throws {OptionError} on a negative or fractional rank. */
export function effectiveRank(rank: number, e: Matrix, what: string): number {
  if (!Number.isInteger(rank) || rank < 0) {
    throw new OptionError(`${what}: rank must be a non-negative integer, got ${rank}`);
  }
  return Math.min(rank, e.shape[0], e.shape[1]);
}

/** Rank-0 factors of a `[rows, cols]` layer. */
export function emptyFactors(e: Matrix): LowRankFactors {
  return { a: matrix(e.shape[0], 0), b: matrix(0, e.shape[1]) };
}

/** The factors at the requested storage precision. */
export function finish(f: LowRankFactors, precision: "f16" | "f32"): LowRankFactors {
  if (precision === "f32") return f;
  if (precision !== "f16") throw new OptionError(`low-rank precision must be "f16" or "f32", got "${precision}"`);
  return { a: roundToHalf(f.a), b: roundToHalf(f.b) };
}

/** `Ŵ + A·B` through the backend's matmul. */
export async function addLowRank(wq: Matrix, f: LowRankFactors, backend: Backend = getBackend()): Promise<Matrix> {
  const out = matrix(wq.shape[0], wq.shape[1], wq.data.slice());
  if (f.a.shape[1] === 0) return out;
  const ab = await backend.matmul(f.a, f.b);
  for (let i = 0; i < out.data.length; i++) out.data[i] += ab.data[i];
  return out;
}

/** Bits per weight of float16 factors of rank `r` on a `[rows, cols]` layer: `16·r·(rows + cols)/(rows·cols)`. */
export function lowRankBitsPerWeight(rows: number, cols: number, r: number): number {
  return 16 * r * (rows + cols) / (rows * cols);
}

function roundToHalf(m: Matrix): Matrix {
  return matrix(m.shape[0], m.shape[1], m.data.map((x) => f16BitsToF32(f32ToF16Bits(x))));
}
