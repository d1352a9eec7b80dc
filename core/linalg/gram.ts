/**
 * Reference Gram accumulation `acc += α·XᵀX`, the inner step of every calibration Hessian.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import type { FloatArray, Matrix } from "../tensor.ts";

/**
 * Adds `alpha · XᵀX` to the symmetric accumulator `acc` in place (both triangles are written).
 *
 * @param acc `[d, d]` float32 or float64 accumulator, modified.
 * @param x `[n, d]` batch of input rows.
 * @param alpha scale of this batch's contribution (for a running mean, `2/N` of the whole set).
 * @throws {ShapeError} when `acc` is not `[d, d]`.
 *
 * @example
 * ```ts
 * import { fromRows, matrix64 } from "../tensor.ts";
 * import { gramAccumulate } from "./gram.ts";
 * const h = matrix64(2, 2);
 * gramAccumulate(h, fromRows([[1, 2]]), 1);
 * console.assert(h.data[1] === 2);
 * ```
 */
export function gramAccumulate(acc: Matrix<FloatArray>, x: Matrix, alpha: number): void {
  const [n, d] = x.shape;
  if (acc.shape[0] !== d || acc.shape[1] !== d) {
    throw new ShapeError(`gramAccumulate: accumulator ${acc.shape[0]}×${acc.shape[1]} for inputs with ${d} columns`);
  }
  const X = x.data, H = acc.data;
  // Rows i0..i0+3 of the upper triangle at once: each input row is read once per four output rows, and every inner
  // loop runs over contiguous memory. Sums stay in float64 until they are added to the accumulator.
  const acc0 = new Float64Array(d), acc1 = new Float64Array(d), acc2 = new Float64Array(d), acc3 = new Float64Array(d);
  const rows = [acc0, acc1, acc2, acc3];
  for (let i0 = 0; i0 < d; i0 += 4) {
    const w = Math.min(4, d - i0);
    acc0.fill(0), acc1.fill(0), acc2.fill(0), acc3.fill(0);
    for (let t = 0; t < n; t++) {
      const o = t * d;
      const a0 = X[o + i0],
        a1 = w > 1 ? X[o + i0 + 1] : 0,
        a2 = w > 2 ? X[o + i0 + 2] : 0,
        a3 = w > 3 ? X[o + i0 + 3] : 0;
      for (let j = i0; j < d; j++) {
        const v = X[o + j];
        acc0[j] += a0 * v;
        acc1[j] += a1 * v;
        acc2[j] += a2 * v;
        acc3[j] += a3 * v;
      }
    }
    for (let r = 0; r < w; r++) {
      const i = i0 + r, sums = rows[r];
      for (let j = i; j < d; j++) {
        const v = alpha * sums[j];
        H[i * d + j] += v;
        if (j !== i) H[j * d + i] += v;
      }
    }
  }
}
