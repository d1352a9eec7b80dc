/**
 * The quantity every Hessian-based method minimises for one layer: `tr((W − Ŵ) H (W − Ŵ)ᵀ)`.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { ShapeError } from "../core/errors.ts";
import { type FloatArray, type Matrix, matrix, toFloat32 } from "../core/tensor.ts";

/**
 * `tr(E H Eᵀ)` with `E = W − Ŵ`, through the backend's matmul; summed in float64.
 *
 * @throws {ShapeError} when the shapes disagree.
 */
export async function layerLoss(
  w: Matrix,
  dequantized: Matrix,
  h: Matrix<FloatArray>,
  backend: Backend,
): Promise<number> {
  const [rows, cols] = w.shape;
  if (dequantized.shape[0] !== rows || dequantized.shape[1] !== cols || h.shape[0] !== cols || h.shape[1] !== cols) {
    throw new ShapeError(
      `layer loss: W ${rows}×${cols}, Ŵ ${dequantized.shape.join("×")}, H ${h.shape.join("×")}`,
    );
  }
  const e = matrix(rows, cols);
  for (let i = 0; i < e.data.length; i++) e.data[i] = w.data[i] - dequantized.data[i];
  const h32 = h.data instanceof Float32Array ? h as Matrix : toFloat32(h);
  const eh = await backend.matmul(e, h32);
  let loss = 0;
  for (let i = 0; i < e.data.length; i++) loss += e.data[i] * eh.data[i];
  return loss;
}
