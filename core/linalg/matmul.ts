/**
 * Reference matrix multiply in plain TypeScript. Accumulates in float64 (JS numbers) and rounds once to float32, so it
 * is also the accuracy reference the faster backends are compared against.
 *
 * @module
 */

import type { MatmulOptions } from "../backend.ts";
import { ShapeError } from "../errors.ts";
import { type Matrix, matrix, transpose } from "../tensor.ts";

/**
 * `op(A) · op(B)` where `op` transposes when asked.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { matmul } from "./matmul.ts";
 * const c = matmul(fromRows([[1, 2]]), fromRows([[3], [4]]));
 * console.assert(c.data[0] === 11);
 * ```
 * @throws {ShapeError} when the inner dimensions differ.
 */
export function matmul(a: Matrix, b: Matrix, options: MatmulOptions = {}): Matrix {
  const { transA = false, transB = false } = options;
  const m = transA ? a.shape[1] : a.shape[0];
  const k = transA ? a.shape[0] : a.shape[1];
  const kb = transB ? b.shape[1] : b.shape[0];
  const n = transB ? b.shape[0] : b.shape[1];
  if (k !== kb) {
    throw new ShapeError(
      `matmul: ${m}×${k} (A${transA ? "ᵀ" : ""}) times ${kb}×${n} (B${transB ? "ᵀ" : ""}): inner dimensions differ`,
    );
  }
  // Transposing an operand costs O(m·k) or O(k·n), small beside the O(m·k·n) product, and lets one cache-friendly
  // loop serve all four modes.
  return matmulRowsAxpy(transA ? transpose(a) : a, transB ? transpose(b) : b, m, k, n);
}

/** `C = A · B`: each row of C is a sum of rows of B, four rows of A at a time to reuse each row of B. */
function matmulRowsAxpy(a: Matrix, b: Matrix, m: number, k: number, n: number): Matrix {
  const A = a.data, B = b.data;
  const c = matrix(m, n);
  const acc0 = new Float64Array(n), acc1 = new Float64Array(n), acc2 = new Float64Array(n), acc3 = new Float64Array(n);
  let i = 0;
  for (; i + 4 <= m; i += 4) {
    acc0.fill(0), acc1.fill(0), acc2.fill(0), acc3.fill(0);
    for (let p = 0; p < k; p++) {
      const a0 = A[i * k + p], a1 = A[(i + 1) * k + p], a2 = A[(i + 2) * k + p], a3 = A[(i + 3) * k + p];
      const off = p * n;
      for (let j = 0; j < n; j++) {
        const bv = B[off + j];
        acc0[j] += a0 * bv;
        acc1[j] += a1 * bv;
        acc2[j] += a2 * bv;
        acc3[j] += a3 * bv;
      }
    }
    c.data.set(acc0, i * n),
      c.data.set(acc1, (i + 1) * n),
      c.data.set(acc2, (i + 2) * n),
      c.data.set(acc3, (i + 3) * n);
  }
  for (; i < m; i++) {
    acc0.fill(0);
    for (let p = 0; p < k; p++) {
      const av = A[i * k + p], off = p * n;
      for (let j = 0; j < n; j++) acc0[j] += av * B[off + j];
    }
    c.data.set(acc0, i * n);
  }
  return c;
}
