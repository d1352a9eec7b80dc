/**
 * Symmetric eigendecomposition in float64: Householder reduction to tridiagonal form, then the implicit QL algorithm
 * with Wilkinson-type shifts (the EISPACK `tql2` iteration as published in JAMA). O(n³), backward stable: the
 * reconstruction error `‖A − V·diag(λ)·Vᵀ‖` and `‖VᵀV − I‖` are a small multiple of `n·ε·‖A‖` and `n·ε`.
 *
 * The working matrix keeps eigenvectors as *rows* (the transpose of the result), so each QL rotation and each
 * Householder reflection combines contiguous rows; the classic column-oriented loops would stride by `n` at every
 * step, which dominates the run time once `n` is in the thousands.
 *
 * @module
 */

import type { EighResult } from "../backend.ts";
import { ConvergenceError } from "../errors.ts";
import { assertFinite, type FloatArray, type Matrix, zerosLike } from "../tensor.ts";
import { squareSize } from "./cholesky.ts";

/** Options of {@link eigh}. */
export interface EighOptions {
  /** QL iterations allowed per eigenvalue before {@link ConvergenceError}; default 60 (2–3 are typical). */
  readonly maxIterations?: number;
}

/**
 * Eigenvalues (ascending) and unit eigenvectors of a symmetric matrix: `A = V·diag(values)·Vᵀ`.
 *
 * Only the lower triangle of `a` is read; the upper one is taken to mirror it. Eigenvector signs are whatever the
 * algorithm produces (compare subspaces or reconstructions, not signs).
 *
 * @param a `[n, n]` symmetric matrix, float32 or float64.
 * @returns `values` in float64 and `vectors` (`[n, n]`, column `i` belongs to `values[i]`) in the element type of `a`.
 * @throws {ShapeError} when `a` is not square.
 * @throws {NonFiniteError} when `a` holds NaN or infinite values.
 * @throws {ConvergenceError} when an eigenvalue needs more than `maxIterations` QL iterations.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { eigh } from "./eigh.ts";
 * const { values } = eigh(fromRows([[2, 1], [1, 2]]));
 * console.assert(Math.abs(values[0] - 1) < 1e-12 && Math.abs(values[1] - 3) < 1e-12);
 * ```
 */
export function eigh<A extends FloatArray>(a: Matrix<A>, options: EighOptions = {}): EighResult<A> {
  const n = squareSize(a, "eigh");
  assertFinite(a, "eigh input");
  const { values, rows } = eighRows64(Float64Array.from(a.data), n, options.maxIterations);
  const vectors = zerosLike(a);
  const V = vectors.data;
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let r = 0; r < n; r++) V[r * n + i] = rows[ri + r];
  }
  return { values, vectors };
}

/**
 * The float64 kernel of {@link eigh}, for callers that stay in float64 (`spd.ts`): destroys `w` (an `n × n` row-major
 * symmetric matrix of which only the lower triangle is read) and returns ascending eigenvalues and the eigenvectors as
 * the rows of `rows` (row `i` belongs to `values[i]`).
 *
 * @throws {ConvergenceError} when an eigenvalue needs more than `maxIterations` QL iterations.
 */
export function eighRows64(
  w: Float64Array,
  n: number,
  maxIterations = 60,
): { values: Float64Array; rows: Float64Array } {
  const d = new Float64Array(n), e = new Float64Array(n), beta = new Float64Array(n);
  tridiagonalize(w, n, d, e, beta);
  const z = new Float64Array(n * n); // rows: eigenvectors of the tridiagonal matrix, then of A
  for (let i = 0; i < n; i++) z[i * n + i] = 1;
  tql2(d, e, z, n, maxIterations);
  backTransform(w, n, beta, z);
  // Sort ascending (tql2 leaves the order of convergence).
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => d[i] - d[j] || i - j);
  const values = new Float64Array(n), rows = new Float64Array(n * n);
  order.forEach((src, i) => {
    values[i] = d[src];
    rows.set(z.subarray(src * n, (src + 1) * n), i * n);
  });
  return { values, rows };
}

/**
 * Householder reduction `A = Q·T·Qᵀ`, `T` tridiagonal, using and updating the lower triangle of `w` only.
 *
 * Step `k` reflects `x = A[k+1:, k]` onto `α·e₁` with `H = I − β·v·vᵀ` and updates the trailing block as
 * `A ← A − v·wᵀ − w·vᵀ`, `w = p − (β/2)(pᵀv)·v`, `p = β·A·v` (the symmetric rank-2 form: half the work of applying `H`
 * on both sides). On return `d` is the diagonal of `T`, `e[i] = T[i+1][i]` (`e[n−1] = 0`), `beta[k]` the reflector
 * scales, and row `k` of `w` holds `v_k` in columns `k+1…n−1` (the strictly upper triangle is free storage).
 */
function tridiagonalize(w: Float64Array, n: number, d: Float64Array, e: Float64Array, beta: Float64Array): void {
  const v = new Float64Array(n), p = new Float64Array(n), u = new Float64Array(n);
  for (let k = 0; k + 2 < n; k++) {
    const k1 = k + 1;
    let scale = 0;
    for (let j = k1; j < n; j++) scale = Math.max(scale, Math.abs(w[j * n + k]));
    if (scale === 0) {
      // Column already reduced: H = I.
      e[k] = 0;
      beta[k] = 0;
      continue;
    }
    let ss = 0;
    for (let j = k1; j < n; j++) {
      const t = w[j * n + k] / scale; // scaled so that the sum of squares cannot overflow or underflow
      ss += t * t;
      v[j] = w[j * n + k];
    }
    const sigma = scale * Math.sqrt(ss);
    const x0 = v[k1];
    const alpha = x0 > 0 ? -sigma : sigma; // opposite sign to x0: v0 = x0 − α has no cancellation
    v[k1] = x0 - alpha;
    const b = 1 / (sigma * (sigma + Math.abs(x0))); // 2 / vᵀv
    e[k] = alpha;
    beta[k] = b;
    // p = β·A₂₂·v from the lower triangle: each stored A[i][j] (j < i) serves both A[i][j]·v[j] and A[j][i]·v[i].
    p.fill(0, k1, n);
    for (let i = k1; i < n; i++) {
      const ri = i * n, vi = v[i];
      let s = w[ri + i] * vi;
      for (let j = k1; j < i; j++) {
        const aij = w[ri + j];
        s += aij * v[j];
        p[j] += aij * vi;
      }
      p[i] += s;
    }
    let pv = 0;
    for (let i = k1; i < n; i++) {
      p[i] *= b;
      pv += p[i] * v[i];
    }
    const K = 0.5 * b * pv;
    for (let i = k1; i < n; i++) u[i] = p[i] - K * v[i];
    for (let i = k1; i < n; i++) {
      const ri = i * n, vi = v[i], ui = u[i];
      for (let j = k1; j <= i; j++) w[ri + j] -= vi * u[j] + ui * v[j];
    }
    // Keep v in the free upper part of row k for the back-transformation.
    const rk = k * n;
    for (let j = k1; j < n; j++) w[rk + j] = v[j];
  }
  for (let i = 0; i < n; i++) d[i] = w[i * n + i];
  if (n >= 2) e[n - 2] = w[(n - 1) * n + n - 2];
  e[n - 1] = 0;
  for (let k = Math.max(0, n - 2); k < n; k++) beta[k] = 0;
}

/**
 * Implicit QL with shifts on the tridiagonal `(d, e)` (EISPACK `tql2`), accumulating the rotations into the rows of
 * `z`. On return `d` holds the eigenvalues (unsorted) and row `i` of `z` the eigenvector of `d[i]` in the basis `z`
 * started from.
 */
function tql2(d: Float64Array, e: Float64Array, z: Float64Array, n: number, maxIterations: number): void {
  const eps = Number.EPSILON;
  let f = 0, tst1 = 0;
  for (let l = 0; l < n; l++) {
    // Find a negligible sub-diagonal element; the test is relative to the largest |d| + |e| seen, as in tql2.
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n - 1 && Math.abs(e[m]) > eps * tst1) m++;
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > maxIterations) {
          throw new ConvergenceError(
            `eigh: eigenvalue ${l} of ${n} did not converge in ${maxIterations} QL iterations`,
          );
        }
        // Shift from the leading 2×2 block.
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        // Chase the bulge from m back to l with Givens rotations.
        p = d[m];
        let c = 1, c2 = 1, c3 = 1, s = 0, s2 = 0;
        const el1 = e[l + 1];
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          // Rotate eigenvector rows i and i+1 (contiguous).
          const zi = i * n, zj = zi + n;
          for (let k = 0; k < n; k++) {
            const a = z[zi + k], b = z[zj + k];
            z[zj + k] = s * a + c * b;
            z[zi + k] = c * a - s * b;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
}

/** Applies `Q = H₀·H₁·…` to every row of `z` (each row is a vector `g`; `g ← H₀(H₁(…(g)))`). */
function backTransform(w: Float64Array, n: number, beta: Float64Array, z: Float64Array): void {
  for (let r = 0; r < n; r++) {
    const zr = r * n;
    for (let k = n - 3; k >= 0; k--) {
      const b = beta[k];
      if (b === 0) continue;
      const rk = k * n;
      let s = 0;
      for (let j = k + 1; j < n; j++) s += w[rk + j] * z[zr + j];
      s *= b;
      if (s === 0) continue;
      for (let j = k + 1; j < n; j++) z[zr + j] -= s * w[rk + j];
    }
  }
}
