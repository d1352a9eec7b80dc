/**
 * Reference RMSNorm (Llama's normalisation) and its backward pass. Storage follows the input (float32 for the model,
 * float64 for gradient checks); sums are accumulated in float64.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import { type FloatArray, type Matrix, zerosLike } from "../tensor.ts";

function checkWeight(x: Matrix<FloatArray>, weight: FloatArray, what: string): void {
  if (weight.length !== x.shape[1]) {
    throw new ShapeError(`${what}: weight of length ${weight.length} for rows of ${x.shape[1]} features`);
  }
}

/**
 * `y = x / sqrt(mean(x²) + eps) · weight`, row by row.
 *
 * @param x `[tokens, d]` activations.
 * @param weight `d` gains.
 * @param eps added to the mean square (Llama: 1e-5 or 1e-6).
 * @returns `[tokens, d]` in the element type of `x`.
 * @throws {ShapeError} when `weight` does not have `d` values.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { rmsNorm } from "./rms_norm.ts";
 * const y = rmsNorm(fromRows([[3, 4]]), new Float32Array([1, 1]), 0);
 * console.assert(Math.abs(y.data[0] - 3 / Math.sqrt(12.5)) < 1e-6);
 * ```
 */
export function rmsNorm<A extends FloatArray>(x: Matrix<A>, weight: FloatArray, eps: number): Matrix<A> {
  checkWeight(x, weight, "rmsNorm");
  const [n, d] = x.shape;
  const out = zerosLike(x);
  const X = x.data, Y = out.data;
  for (let i = 0; i < n; i++) {
    const o = i * d;
    let ss = 0;
    for (let j = 0; j < d; j++) ss += X[o + j] * X[o + j];
    const r = 1 / Math.sqrt(ss / d + eps);
    for (let j = 0; j < d; j++) Y[o + j] = X[o + j] * r * weight[j];
  }
  return out;
}

/**
 * Gradients of {@link rmsNorm}. With `r = 1/sqrt(mean(x²) + eps)` and `y_j = x_j·r·w_j`:
 * `dx_j = r·w_j·dy_j − x_j·r³/d · Σ_k dy_k·w_k·x_k` and `dweight_j = Σ_rows dy_j·x_j·r`.
 *
 * @param x `[tokens, d]` the forward input.
 * @param weight `d` gains.
 * @param dy `[tokens, d]` gradient of the output.
 * @param eps as in the forward pass.
 * @returns `dx` in the element type of `x`, `dweight` as float32 (accumulated in float64 over tokens).
 * @throws {ShapeError} when shapes disagree.
 */
export function rmsNormBackward<A extends FloatArray>(
  x: Matrix<A>,
  weight: FloatArray,
  dy: Matrix<FloatArray>,
  eps: number,
): { dx: Matrix<A>; dweight: Float32Array } {
  checkWeight(x, weight, "rmsNormBackward");
  const [n, d] = x.shape;
  if (dy.shape[0] !== n || dy.shape[1] !== d) {
    throw new ShapeError(`rmsNormBackward: dy ${dy.shape[0]}×${dy.shape[1]} for x ${n}×${d}`);
  }
  const dx = zerosLike(x);
  const dw = new Float64Array(d);
  const X = x.data, DY = dy.data, DX = dx.data;
  for (let i = 0; i < n; i++) {
    const o = i * d;
    let ss = 0, dot = 0;
    for (let j = 0; j < d; j++) {
      const xv = X[o + j];
      ss += xv * xv;
      dot += DY[o + j] * weight[j] * xv;
    }
    const r = 1 / Math.sqrt(ss / d + eps);
    const c = (r * r * r * dot) / d;
    for (let j = 0; j < d; j++) {
      const xv = X[o + j], g = DY[o + j];
      DX[o + j] = r * weight[j] * g - xv * c;
      dw[j] += g * xv * r;
    }
  }
  return { dx, dweight: Float32Array.from(dw) };
}
