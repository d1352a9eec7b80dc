/**
 * Triangular solves and inverses in float64, rounded once to the input's element type. Only the triangle named by
 * the options is read, so a Cholesky factor stored in a full matrix (or a matrix holding both factors) works as is.
 *
 * @module
 */

import type { TriangularSolveOptions } from "../backend.ts";
import { NonFiniteError, ShapeError } from "../errors.ts";
import { type FloatArray, type Matrix, zerosLike } from "../tensor.ts";

/**
 * `X` with `op(T)·X = B`, where `op(T)` is `T` or `Tᵀ`, for a multi-column right-hand side.
 *
 * Substitution runs over whole rows of `B` (an update subtracts multiples of solved rows from another row), so
 * every inner loop reads contiguous memory whatever the flags; transposed solves read rows of `T` too, in the
 * "column" (right-looking) order. Cost `n²·k/2` multiply-adds; to invert a triangular matrix use
 * {@link invertTriangular} (`n³/6`), not a solve against the identity (`n³/2`).
 *
 * @param t `[n, n]` triangular matrix; only the triangle selected by `lower` (and the diagonal, unless
 *   `unitDiagonal`) is read.
 * @param b `[n, k]` right-hand sides.
 * @param options `lower`: which triangle; `transpose`: solve with `Tᵀ`; `unitDiagonal`: take the diagonal as ones.
 * @returns `[n, k]` solution in the element type of `b`.
 * @throws {ShapeError} when `t` is not square or `b` does not have `n` rows.
 * @throws {NonFiniteError} when a diagonal entry is zero or not finite (and `unitDiagonal` is false): the system is
 *   singular and the solution would be infinite or NaN.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { triangularSolve } from "./triangular.ts";
 * const x = triangularSolve(fromRows([[2, 0], [1, 4]]), fromRows([[2], [9]]), { lower: true });
 * console.assert(x.data[0] === 1 && x.data[1] === 2);
 * ```
 */
export function triangularSolve<A extends FloatArray>(
  t: Matrix<A>,
  b: Matrix<A>,
  options: TriangularSolveOptions,
): Matrix<A> {
  const { lower, transpose = false, unitDiagonal = false } = options;
  const n = t.shape[0];
  if (t.shape[1] !== n || t.data.length !== n * n) {
    throw new ShapeError(`triangularSolve: T must be square, got ${t.shape[0]}×${t.shape[1]}`);
  }
  const [br, k] = b.shape;
  if (br !== n || b.data.length !== br * k) {
    throw new ShapeError(`triangularSolve: T is ${n}×${n} but B is ${br}×${k}`);
  }
  const T = t.data;
  const inv = diagonalInverse(T, n, unitDiagonal, "triangularSolve");
  const x = Float64Array.from(b.data); // B, overwritten row by row with X
  // Forward when the effective matrix op(T) is lower triangular, backward otherwise.
  const forward = lower !== transpose;
  if (!transpose) gatherSolve(T, x, inv, n, k, forward);
  else scatterSolve(T, x, inv, n, k, forward);
  const out = zerosLike(b);
  out.data.set(x);
  return out;
}

/**
 * `op(T) = T`: row `i` of X is `(B[i] − Σ_j T[i][j]·X[j]) / T[i][i]` over the solved rows `j` (row `i` of `T` read
 * contiguously). Four solved rows are folded in per pass, so each element of row `i` is loaded and stored once per
 * four multiply-adds.
 */
function gatherSolve(T: FloatArray, x: Float64Array, inv: Float64Array, n: number, k: number, forward: boolean): void {
  for (let s = 0; s < n; s++) {
    const i = forward ? s : n - 1 - s;
    const ri = i * k, ti = i * n;
    const j1 = forward ? i : n;
    let j = forward ? 0 : i + 1;
    for (; j + 4 <= j1; j += 4) {
      const c0 = T[ti + j], c1 = T[ti + j + 1], c2 = T[ti + j + 2], c3 = T[ti + j + 3];
      if (c0 === 0 && c1 === 0 && c2 === 0 && c3 === 0) continue;
      const r0 = j * k, r1 = r0 + k, r2 = r1 + k, r3 = r2 + k;
      for (let p = 0; p < k; p++) {
        x[ri + p] -= c0 * x[r0 + p] + c1 * x[r1 + p] + c2 * x[r2 + p] + c3 * x[r3 + p];
      }
    }
    for (; j < j1; j++) {
      const c = T[ti + j];
      if (c === 0) continue;
      const rj = j * k;
      for (let p = 0; p < k; p++) x[ri + p] -= c * x[rj + p];
    }
    const d = inv[i];
    if (d !== 1) {
      for (let p = 0; p < k; p++) x[ri + p] *= d;
    }
  }
}

/**
 * `op(T) = Tᵀ`, so `op(T)[j][i] = T[i][j]`: once row `i` of X is final, `T[i][j]·X[i]` is subtracted from every row `j`
 * still to be solved (row `i` of `T` read contiguously). Rows are finalised four at a time (first among themselves),
 * then all four are subtracted from each remaining row in one pass.
 */
function scatterSolve(T: FloatArray, x: Float64Array, inv: Float64Array, n: number, k: number, forward: boolean): void {
  const order = (s: number) => (forward ? s : n - 1 - s);
  for (let s0 = 0; s0 < n; s0 += 4) {
    const bs = Math.min(4, n - s0);
    // Inside the block: finalise each row, then update the block's later rows with it.
    for (let a = 0; a < bs; a++) {
      const i = order(s0 + a), ri = i * k, d = inv[i];
      if (d !== 1) {
        for (let p = 0; p < k; p++) x[ri + p] *= d;
      }
      for (let b = a + 1; b < bs; b++) {
        const j = order(s0 + b), c = T[i * n + j];
        if (c === 0) continue;
        const rj = j * k;
        for (let p = 0; p < k; p++) x[rj + p] -= c * x[ri + p];
      }
    }
    // The rest: rows j solved after this block (none after a partial block, which is always the last one).
    if (bs < 4) break;
    const j0 = forward ? s0 + 4 : 0, j1 = forward ? n : n - s0 - 4;
    const i0 = order(s0), i1 = order(s0 + 1), i2 = order(s0 + 2), i3 = order(s0 + 3);
    const t0 = i0 * n, t1 = i1 * n, t2 = i2 * n, t3 = i3 * n;
    const r0 = i0 * k, r1 = i1 * k, r2 = i2 * k, r3 = i3 * k;
    for (let j = j0; j < j1; j++) {
      const c0 = T[t0 + j], c1 = T[t1 + j], c2 = T[t2 + j], c3 = T[t3 + j];
      if (c0 === 0 && c1 === 0 && c2 === 0 && c3 === 0) continue;
      const rj = j * k;
      for (let p = 0; p < k; p++) {
        x[rj + p] -= c0 * x[r0 + p] + c1 * x[r1 + p] + c2 * x[r2 + p] + c3 * x[r3 + p];
      }
    }
  }
}

/** Options of {@link invertTriangular}. */
export interface InvertTriangularOptions {
  /** `T` is lower triangular (true) or upper triangular (false). */
  readonly lower: boolean;
  /** Treat the diagonal as ones. Default false. */
  readonly unitDiagonal?: boolean;
}

/**
 * `T⁻¹` of a triangular matrix (triangular of the same kind; the other triangle of the result is zero).
 *
 * @param t `[n, n]`; only the triangle named by `lower` is read.
 * @throws {ShapeError} when `t` is not square.
 * @throws {NonFiniteError} when a diagonal entry is zero or not finite (and `unitDiagonal` is false).
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { invertTriangular } from "./triangular.ts";
 * const inv = invertTriangular(fromRows([[2, 0], [1, 4]]), { lower: true });
 * console.assert(inv.data[0] === 0.5 && inv.data[2] === -0.125 && inv.data[3] === 0.25);
 * ```
 */
export function invertTriangular<A extends FloatArray>(t: Matrix<A>, options: InvertTriangularOptions): Matrix<A> {
  const { lower, unitDiagonal = false } = options;
  const n = t.shape[0];
  if (t.shape[1] !== n || t.data.length !== n * n) {
    throw new ShapeError(`invertTriangular: T must be square, got ${t.shape[0]}×${t.shape[1]}`);
  }
  diagonalInverse(t.data, n, unitDiagonal, "invertTriangular");
  // Work on a lower matrix L (T, or Tᵀ when T is upper); the kernel returns (L⁻¹)ᵀ, which is T⁻¹ for an upper T.
  const w = new Float64Array(n * n);
  const T = t.data;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) w[i * n + j] = lower ? T[i * n + j] : T[j * n + i];
  }
  const y = invertLowerTransposed64(w, n, unitDiagonal);
  const out = zerosLike(t);
  const o = out.data;
  if (lower) {
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) o[i * n + j] = y[j * n + i];
  } else {
    o.set(y);
  }
  return out;
}

/**
 * `(L⁻¹)ᵀ` (upper triangular, new `n × n` array, zero below the diagonal) of a lower-triangular float64 `L` in full
 * row-major storage, reading only its lower triangle and trusting that its diagonal is non-zero.
 *
 * With `Y = (L⁻¹)ᵀ`, `Y[j][i] = −(Σ_{k ∈ [j, i)} L[i][k]·Y[j][k]) / L[i][i]`: a dot product of row `i` of `L` with row
 * `j` of `Y`, both contiguous. Rows `i` go four at a time: each value of `Y` read serves four sums (so `Y` streams
 * through the cache once per four rows), and the few terms inside the block are added in order afterwards.
 * Cost `n³/6` multiply-adds.
 */
export function invertLowerTransposed64(l: Float64Array, n: number, unitDiagonal: boolean): Float64Array {
  const y = new Float64Array(n * n);
  const d = new Float64Array(4);
  for (let i0 = 0; i0 < n; i0 += 4) {
    const rb = Math.min(4, n - i0);
    for (let r = 0; r < rb; r++) {
      const i = i0 + r;
      d[r] = unitDiagonal ? 1 : 1 / l[i * n + i];
      y[i * n + i] = d[r];
    }
    if (rb === 4) {
      const l0 = i0 * n, l1 = l0 + n, l2 = l1 + n, l3 = l2 + n;
      const d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
      const c10 = l[l1 + i0], c20 = l[l2 + i0], c21 = l[l2 + i0 + 1];
      const c30 = l[l3 + i0], c31 = l[l3 + i0 + 1], c32 = l[l3 + i0 + 2];
      for (let j = 0; j < i0; j++) {
        const yj = j * n;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let k = j; k < i0; k++) {
          const v = y[yj + k];
          s0 += l[l0 + k] * v;
          s1 += l[l1 + k] * v;
          s2 += l[l2 + k] * v;
          s3 += l[l3 + k] * v;
        }
        // Inside the block, Y[j][i0 + r] depends on the entries just computed for the rows before it.
        // `0 − s·d` rather than `−s·d`: a zero sum gives +0, not −0.
        const y0 = 0 - s0 * d0;
        const y1 = 0 - (s1 + c10 * y0) * d1;
        const y2 = 0 - (s2 + c20 * y0 + c21 * y1) * d2;
        const y3 = 0 - (s3 + c30 * y0 + c31 * y1 + c32 * y2) * d3;
        y[yj + i0] = y0, y[yj + i0 + 1] = y1, y[yj + i0 + 2] = y2, y[yj + i0 + 3] = y3;
      }
    } else {
      for (let r = 0; r < rb; r++) {
        const i = i0 + r, li = i * n;
        for (let j = 0; j < i0; j++) {
          const yj = j * n;
          let s = 0;
          for (let k = j; k < i; k++) s += l[li + k] * y[yj + k];
          y[yj + i] = 0 - s * d[r];
        }
      }
    }
    // Rows j inside the block.
    for (let r = 1; r < rb; r++) {
      const i = i0 + r, li = i * n;
      for (let j = i0; j < i; j++) {
        const yj = j * n;
        let s = 0;
        for (let k = j; k < i; k++) s += l[li + k] * y[yj + k];
        y[yj + i] = 0 - s * d[r];
      }
    }
  }
  return y;
}

/** `1 / T[i][i]` (or ones), after checking the diagonal of a system that must be non-singular. */
function diagonalInverse(T: FloatArray, n: number, unitDiagonal: boolean, what: string): Float64Array {
  const inv = new Float64Array(n).fill(1);
  if (unitDiagonal) return inv;
  for (let i = 0; i < n; i++) {
    const d = T[i * n + i];
    if (d === 0 || !Number.isFinite(d)) {
      throw new NonFiniteError(`${what}: T is singular or not finite: diagonal entry ${i} of ${n} is ${d}`);
    }
    inv[i] = 1 / d;
  }
  return inv;
}
