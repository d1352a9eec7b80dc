/**
 * Reference Gram accumulation `acc += α·XᵀX`, the inner step of every calibration Hessian.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import type { FloatArray, Matrix } from "../tensor.ts";

/** Rows of X folded in per pass: a chunk of the transposed input stays in cache while all column pairs use it. */
const CHUNK = 256;

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
  const xt = new Float64Array(d * CHUNK); // [d, chunk]: column j of the chunk as a contiguous row
  for (let t0 = 0; t0 < n; t0 += CHUNK) {
    const len = Math.min(CHUNK, n - t0);
    for (let t = 0; t < len; t++) {
      const row = (t0 + t) * d;
      for (let j = 0; j < d; j++) xt[j * CHUNK + t] = X[row + j];
    }
    for (let i = 0; i < d; i++) {
      const oi = i * CHUNK;
      for (let j = i; j < d; j++) {
        const oj = j * CHUNK;
        let s = 0;
        for (let t = 0; t < len; t++) s += xt[oi + t] * xt[oj + t];
        const v = alpha * s;
        H[i * d + j] += v;
        if (j !== i) H[j * d + i] += v;
      }
    }
  }
}
