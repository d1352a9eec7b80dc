/**
 * QERA, quantization error reconstruction (Zhang et al., arXiv 2410.06040): the rank-`r` correction `A·B` of a quantized
 * layer that minimises the expected *output* error `E_x‖(W − Ŵ − AB)·x‖² = tr((E − AB) R (E − AB)ᵀ)`, with
 * `R = E[x·xᵀ]` the input autocorrelation, instead of LoRC's weight error `‖E − AB‖_F`.
 *
 * ```
 * E = W − Ŵ                                   [rows, cols]
 * exact:  S = R^{1/2}  (symmetric eigendecomposition, core/linalg/spd.ts)
 * approx: S = diag(sqrt(R_jj)) = diag(sqrt(E[x_j²]))
 * U_r Σ_r V_rᵀ = top-r SVD(E·S)                (Backend.svd with rank)
 * A·B = U_r Σ_r V_rᵀ S⁻¹ = U_r·(U_rᵀ E)        A = U_r [rows, r], B = U_rᵀ E [r, cols]
 * ```
 *
 * The last line is the paper's `U_r Σ_r V_rᵀ R^{−1/2}` (ALGORITHMS.md, row layout) rewritten: `V_r = S·Eᵀ·U_r·Σ_r⁻¹`
 * for every kept triplet, so `Σ_r V_rᵀ S⁻¹ = U_rᵀ E` whenever `S` is invertible (the test checks it against the explicit
 * `R^{−1/2}`). The projected form needs no inverse root, so it stays exact and bounded when `R` is singular (dead or
 * collinear inputs) or ill-conditioned, where `R^{−1/2}` would amplify float32 noise; it is also the best `B` for the
 * chosen `A = U_r` in any case.
 *
 * Relation to GPTQ's Hessian: `H = (2/N)·XᵀX = 2·R`. The factors do not change when `R` is scaled, so the calibration
 * Hessian can be passed as `R` unchanged; with OAC's Hessian the same maths minimises OAC's loss `tr(E' H_OAC E'ᵀ)`.
 *
 * @module
 */

import { OptionError, ShapeError } from "../core/errors.ts";
import { sqrtSpd } from "../core/linalg/spd.ts";
import { assertFinite, type FloatArray, type Matrix, matrix, toFloat32 } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import {
  effectiveRank,
  emptyFactors,
  finish,
  type LowRankFactors,
  type LowRankOptions,
  quantizationError,
} from "./lorc.ts";

/** Options of {@link qera}. */
export interface QeraOptions extends LowRankOptions {
  /** `true` (default): QERA-exact with `R^{1/2}`; `false`: QERA-approx with `diag(sqrt(R_jj))`. */
  readonly exact?: boolean;
}

/**
 * QERA's factors of the quantization error `W − Ŵ`, weighted by the input autocorrelation `R`.
 *
 * @param w `[rows, cols]` original weights.
 * @param wq `[rows, cols]` quantized (dequantized) weights.
 * @param r `[cols, cols]` input autocorrelation `E[x·xᵀ]`, or any positive multiple of it (GPTQ's `H = 2R`).
 * @param rank `≥ 0`; clipped to `min(rows, cols)`.
 * @returns `A = U_r` `[rows, r]` and `B = U_rᵀ E` `[r, cols]` (float16 unless `precision: "f32"`).
 * @throws {ShapeError} when shapes differ; {OptionError} on a bad rank; {NonFiniteError} on NaN/Inf;
 *   {ConvergenceError} if the eigen-solver or SVD does not converge.
 *
 * @example
 * ```ts
 * import { qera } from "./qera.ts";
 * import { fromRows } from "../core/tensor.ts";
 * // Input 0 carries 100× the energy of input 1: rank 1 spends itself on column 0's error.
 * const w = fromRows([[1, 1], [1, 1]]), wq = fromRows([[0.9, 0.5], [1.1, 0.5]]);
 * const { a, b } = await qera(w, wq, fromRows([[100, 0], [0, 1]]), 1);
 * console.assert(Math.abs(a.data[0] * b.data[0] - 0.1) < 1e-3);
 * ```
 */
export async function qera(
  w: Matrix,
  wq: Matrix,
  r: Matrix<FloatArray>,
  rank: number,
  options: QeraOptions = {},
): Promise<LowRankFactors> {
  const { backend = getBackend(), precision = "f16", exact = true } = options;
  const e = quantizationError(w, wq, "qera");
  const [rows, cols] = e.shape;
  if (r.shape[0] !== cols || r.shape[1] !== cols) {
    throw new ShapeError(`qera: R is ${r.shape.join("×")} for a layer with ${cols} input columns`);
  }
  if (typeof exact !== "boolean") throw new OptionError(`qera: exact must be a boolean`);
  assertFinite(r, "qera R");
  const k = effectiveRank(rank, e, "qera");
  if (k === 0) return emptyFactors(e);

  let es: Matrix; // E·S [rows, cols]
  if (exact) {
    es = await backend.matmul(e, toFloat32(sqrtSpd(r)));
  } else {
    es = matrix(rows, cols);
    const d = new Float64Array(cols);
    for (let j = 0; j < cols; j++) d[j] = Math.sqrt(Math.max(r.data[j * cols + j], 0));
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) es.data[i * cols + j] = e.data[i * cols + j] * d[j];
  }
  const { u } = await backend.svd(es, { rank: k });
  const a = matrix(rows, k, u.data.slice());
  const b = await backend.matmul(a, e, { transA: true }); // U_rᵀ E
  return finish({ a, b }, precision);
}
