/**
 * Square roots of symmetric positive (semi-)definite matrices through {@link eigh}: `f(A) = V·diag(f(λ))·Vᵀ`.
 * QERA needs `R^{1/2}` and `R^{−1/2}` of an input autocorrelation `R = E[x·xᵀ]`, which is only semi-definite when an
 * input is dead or inputs are collinear, and slightly indefinite after float32 accumulation: hence the clamping.
 *
 * @module
 */

import { NotPositiveDefiniteError, OptionError } from "../errors.ts";
import { assertFinite, type FloatArray, type Matrix, zerosLike } from "../tensor.ts";
import { squareSize } from "./cholesky.ts";
import { eighRows64 } from "./eigh.ts";

/**
 * The symmetric positive semi-definite square root `S` with `S·S = A`.
 *
 * Negative eigenvalues (rounding noise of a semi-definite matrix) are clamped to 0, so the result is the square root
 * of the nearest positive semi-definite matrix. Only the lower triangle of `a` is read; the result is exactly
 * symmetric.
 *
 * @param a `[n, n]` symmetric matrix, float32 or float64.
 * @returns `A^{1/2}` in the element type of `a`.
 * @throws {ShapeError} when `a` is not square.
 * @throws {NonFiniteError} when `a` holds NaN or infinite values.
 * @throws {ConvergenceError} if the eigen-solver does not converge.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { sqrtSpd } from "./spd.ts";
 * const s = sqrtSpd(fromRows([[4, 0], [0, 9]]));
 * console.assert(Math.abs(s.data[0] - 2) < 1e-6 && Math.abs(s.data[3] - 3) < 1e-6);
 * ```
 */
export function sqrtSpd<A extends FloatArray>(a: Matrix<A>): Matrix<A> {
  return spectralFunction(a, "sqrtSpd", (values) => values.map((l) => Math.sqrt(Math.max(l, 0))));
}

/** Options of {@link invSqrtSpd}. */
export interface InvSqrtSpdOptions {
  /**
   * Relative eigenvalue floor: every eigenvalue below `floor · λ_max` (negative ones included) is raised to it before
   * `λ^{−1/2}` is taken, which bounds the result's norm by `(floor · λ_max)^{−1/2}`. Default `1e-12`, just above the
   * float64 rounding level of the eigenvalues (`≈ n·ε·λ_max`). For a float32 matrix, values below `~1e-6 · λ_max` are
   * already noise: pass a larger floor when the directions of noise should not be amplified.
   */
  readonly floor?: number;
}

/**
 * The inverse square root `A^{−1/2}` of a symmetric positive (semi-)definite matrix, with small and negative
 * eigenvalues clamped to `floor · λ_max` (see {@link InvSqrtSpdOptions.floor}). Only the lower triangle of `a` is
 * read; the result is exactly symmetric.
 *
 * @param a `[n, n]` symmetric matrix, float32 or float64.
 * @param options the eigenvalue floor.
 * @returns `A^{−1/2}` in the element type of `a`.
 * @throws {NotPositiveDefiniteError} when the largest eigenvalue is not positive (no scale to clamp to); its `pivot` is
 *   `n − 1`, the index of that eigenvalue in ascending order, and `value` the eigenvalue.
 * @throws {OptionError} when `floor` is not in `(0, 1]`.
 * @throws {ShapeError} when `a` is not square.
 * @throws {NonFiniteError} when `a` holds NaN or infinite values.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { invSqrtSpd } from "./spd.ts";
 * const s = invSqrtSpd(fromRows([[4, 0], [0, 16]]));
 * console.assert(Math.abs(s.data[0] - 0.5) < 1e-6 && Math.abs(s.data[3] - 0.25) < 1e-6);
 * ```
 */
export function invSqrtSpd<A extends FloatArray>(a: Matrix<A>, options: InvSqrtSpdOptions = {}): Matrix<A> {
  const { floor = 1e-12 } = options;
  if (!(floor > 0 && floor <= 1)) throw new OptionError(`invSqrtSpd: floor must be in (0, 1], got ${floor}`);
  return spectralFunction(a, "invSqrtSpd", (values) => {
    const n = values.length;
    const top = values[n - 1];
    if (!(top > 0)) throw new NotPositiveDefiniteError(n, n - 1, top);
    const min = floor * top;
    return values.map((l) => 1 / Math.sqrt(Math.max(l, min)));
  });
}

/** `V·diag(f(λ))·Vᵀ`, accumulated as `Σ_k f_k·v_k·v_kᵀ` over eigenvector rows (lower triangle, then mirrored). */
function spectralFunction<A extends FloatArray>(
  a: Matrix<A>,
  what: string,
  f: (values: Float64Array) => Float64Array,
): Matrix<A> {
  const n = squareSize(a, what);
  assertFinite(a, `${what} input`);
  const out = zerosLike(a);
  if (n === 0) return out;
  const { values, rows } = eighRows64(Float64Array.from(a.data), n);
  const fv = f(values);
  const s = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const fk = fv[k];
    if (fk === 0) continue;
    const rk = k * n;
    for (let i = 0; i < n; i++) {
      const c = fk * rows[rk + i];
      if (c === 0) continue;
      const ri = i * n;
      for (let j = 0; j <= i; j++) s[ri + j] += c * rows[rk + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) s[j * n + i] = s[i * n + j];
  out.data.set(s);
  return out;
}
