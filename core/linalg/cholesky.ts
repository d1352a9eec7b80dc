/**
 * Cholesky factorisation and what GPTQ builds from it: the inverse from a factor, a damped retry loop, and the upper
 * factor of the inverse Hessian. Everything is computed in float64 and rounded once to the input's element type.
 *
 * Loops are row-oriented (dot products of contiguous rows, four rows at a time) because the matrices reach
 * `n = 4096` (128 MiB in float64), where a column-strided loop would spend its time on cache misses. Measured at
 * `n = 4096` on one shared core: `cholesky` ≈ 11 s (`n³/6` multiply-adds at ≈ 1 G/s), `upperCholeskyOfInverse`
 * ≈ 24 s, `choleskyInverse` ≈ 30 s.
 *
 * @module
 */

import type { Backend } from "../backend.ts";
import { NonFiniteError, NotPositiveDefiniteError, ShapeError } from "../errors.ts";
import { type FloatArray, type Matrix, zerosLike } from "../tensor.ts";
import { invertLowerTransposed64 } from "./triangular.ts";

/**
 * Lower-triangular `L` with `A = L·Lᵀ` and a positive diagonal.
 *
 * Only the lower triangle of `a` is read (the upper one is assumed to mirror it); the result's upper triangle is zero.
 *
 * @param a `[n, n]` symmetric positive definite matrix, float32 or float64.
 * @returns `L` in the element type of `a`.
 * @throws {ShapeError} when `a` is not square.
 * @throws {NotPositiveDefiniteError} at the first pivot that is `≤ 0` or NaN, naming the matrix size, the 0-based
 *   pivot row and its value.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { cholesky } from "./cholesky.ts";
 * const l = cholesky(fromRows([[4, 2], [2, 5]]));
 * console.assert(l.data[0] === 2 && l.data[2] === 1 && l.data[3] === 2);
 * ```
 */
export function cholesky<A extends FloatArray>(a: Matrix<A>): Matrix<A> {
  const n = squareSize(a, "cholesky");
  const w = Float64Array.from(a.data);
  choleskyInPlace64(w, n);
  const out = zerosLike(a);
  out.data.set(w);
  return out;
}

/**
 * `(L·Lᵀ)⁻¹` from a lower-triangular factor `L` (only its lower triangle is read).
 *
 * Computed as `L⁻ᵀ·L⁻¹` without forming `L·Lᵀ`, so the conditioning is that of `L`, not of its square. The result is
 * exactly symmetric: the lower triangle is computed and mirrored.
 *
 * @param l `[n, n]` lower-triangular factor with a non-zero diagonal.
 * @throws {ShapeError} when `l` is not square.
 * @throws {NotPositiveDefiniteError} when a diagonal entry of `l` is zero or not finite (then `L·Lᵀ` is singular);
 *   `pivot` is its index.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { choleskyInverse } from "./cholesky.ts";
 * const inv = choleskyInverse(fromRows([[2, 0], [1, 2]])); // L·Lᵀ = [[4, 2], [2, 5]]
 * console.assert(Math.abs(inv.data[0] - 5 / 16) < 1e-7);
 * ```
 */
export function choleskyInverse<A extends FloatArray>(l: Matrix<A>): Matrix<A> {
  const n = squareSize(l, "choleskyInverse");
  const x = Float64Array.from(l.data);
  for (let i = 0; i < n; i++) {
    const d = x[i * n + i];
    if (d === 0 || !Number.isFinite(d)) throw new NotPositiveDefiniteError(n, i, d);
  }
  const out = zerosLike(l);
  out.data.set(gramOfUpperRows64(invertLowerTransposed64(x, n, false), n));
  return out;
}

/** Options of {@link choleskyWithRetry}. */
export interface CholeskyRetryOptions {
  /** Relative damping `λ` of the first damped retry (the first try is undamped); default `1e-6`. */
  readonly initialDamping?: number;
  /** Factor by which `λ` grows after each failed retry; default 10. */
  readonly growth?: number;
  /** Tries in all, the undamped one included; default 8 (so `λ` reaches `1e-6 · 10⁶ = 1`). */
  readonly maxTries?: number;
}

/** Result of {@link choleskyWithRetry}. */
export interface CholeskyRetryResult<A extends FloatArray> {
  /** Lower factor of `A + damping·I`. */
  readonly factor: Matrix<A>;
  /**
   * Absolute value added to every diagonal entry (0 when the first try succeeded). For float32 input the damped
   * diagonal is rounded to float32, so the amount actually added to each entry may differ from this in its last bits.
   */
  readonly damping: number;
  /** `damping / mean(diag A)`: the `λ` that succeeded (0 when undamped). */
  readonly relativeDamping: number;
  /** Factorisations attempted, the successful one included (1 = no damping needed). */
  readonly tries: number;
}

/**
 * Factorises `A`, and when that fails with {@link NotPositiveDefiniteError} retries on `A + λ·mean(diag A)·I` with
 * `λ = initialDamping, initialDamping·growth, …` until a factorisation succeeds or `maxTries` are spent.
 *
 * Defaults: first try undamped, then `λ = 1e-6, 1e-5, …, 1` (8 tries). `1e-6` sits just above float32 rounding of a
 * Hessian's diagonal (~6e-8 relative), so a matrix that is positive semi-definite up to rounding is rescued with the
 * least distortion; `λ = 1` (the diagonal doubled on average) is far beyond any useful damping, so failing there means
 * the input is broken rather than ill-conditioned. When `mean(diag A) ≤ 0` (a zero matrix, say) the scale falls back
 * to 1 so that damping still adds something.
 *
 * A failure at a NaN pivot is not retried (damping cannot repair NaN); it is rethrown at once.
 *
 * @param a `[n, n]` symmetric matrix (only the lower triangle is read by the reference kernel).
 * @param options damping schedule.
 * @param chol the factorisation to use; defaults to the reference {@link cholesky}. Backends inject theirs, e.g.
 *   `(m) => backend.cholesky(m)`.
 * @throws {NotPositiveDefiniteError} the last failure when every try failed, or a NaN-pivot failure.
 * @throws {NonFiniteError} when the diagonal of `a` holds a non-finite value.
 * @throws {ShapeError} when `a` is not square.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { choleskyWithRetry } from "./cholesky.ts";
 * const r = await choleskyWithRetry(fromRows([[1, 1], [1, 1]])); // singular: needs a little damping
 * console.assert(r.tries === 2 && r.relativeDamping === 1e-6);
 * ```
 */
export async function choleskyWithRetry<A extends FloatArray>(
  a: Matrix<A>,
  options: CholeskyRetryOptions = {},
  chol: (a: Matrix<A>) => Matrix<A> | Promise<Matrix<A>> = cholesky,
): Promise<CholeskyRetryResult<A>> {
  const { initialDamping = 1e-6, growth = 10, maxTries = 8 } = options;
  const n = squareSize(a, "choleskyWithRetry");
  let mean = 0;
  for (let i = 0; i < n; i++) mean += a.data[i * n + i];
  mean /= Math.max(n, 1);
  if (!Number.isFinite(mean)) throw new NonFiniteError(`choleskyWithRetry: the diagonal has a non-finite value`);
  const scale = mean > 0 ? mean : 1;
  let lambda = 0;
  for (let tries = 1;; tries++) {
    const damping = lambda * scale;
    let m = a;
    if (damping > 0) {
      m = { data: a.data.slice() as A, shape: [n, n] };
      for (let i = 0; i < n; i++) m.data[i * n + i] += damping;
    }
    try {
      const factor = await chol(m);
      return { factor, damping, relativeDamping: lambda, tries };
    } catch (err) {
      if (!(err instanceof NotPositiveDefiniteError) || Number.isNaN(err.value) || tries >= maxTries) throw err;
    }
    lambda = lambda === 0 ? initialDamping : lambda * growth;
  }
}

/**
 * GPTQ's `U`: the upper-triangular factor with `H⁻¹ = Uᵀ·U` and a positive diagonal (in PyTorch,
 * `cholesky(cholesky_inverse(cholesky(H)), upper=True)`).
 *
 * Computed without forming `H⁻¹`: with `J` the order-reversing permutation, factor `J·H·J = L̃·L̃ᵀ`; then
 * `H = Ũ·Ũᵀ` with `Ũ = J·L̃·J` upper, so `H⁻¹ = (Ũ⁻¹)ᵀ·Ũ⁻¹` and `U = Ũ⁻¹ = J·L̃⁻¹·J` (the factor is unique, so this is
 * the same matrix). One factorisation and one triangular inverse instead of three `n³/3` steps, and a second
 * factorisation of an ill-conditioned `H⁻¹` cannot fail.
 *
 * @param h `[n, n]` symmetric positive definite (damped) Hessian; only its lower triangle is read.
 * @returns `U` in the element type of `h`, zero below the diagonal.
 * @throws {NotPositiveDefiniteError} when `h` is not positive definite. Its pivot is an index of `h`, but the
 *   elimination runs from the last row backwards, so it is the *last* row whose trailing block is not positive
 *   definite (pivot `n − 1` fails first).
 * @throws {ShapeError} when `h` is not square.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { upperCholeskyOfInverse } from "./cholesky.ts";
 * const u = upperCholeskyOfInverse(fromRows([[4, 0], [0, 16]]));
 * console.assert(u.data[0] === 0.5 && u.data[3] === 0.25);
 * ```
 */
export function upperCholeskyOfInverse<A extends FloatArray>(h: Matrix<A>): Matrix<A> {
  const n = squareSize(h, "upperCholeskyOfInverse");
  const w = reversedFactor64(h.data, n);
  const y = invertLowerTransposed64(w, n, false); // (L̃⁻¹)ᵀ
  // U[i][j] = L̃⁻¹[n−1−i][n−1−j] = y[n−1−j][n−1−i]: reversing both orders turns lower into upper.
  const out = zerosLike(h);
  const U = out.data;
  for (let j = 0; j < n; j++) {
    const src = (n - 1 - j) * n + n - 1;
    for (let i = 0; i <= j; i++) U[i * n + j] = y[src - i];
  }
  return out;
}

/**
 * Upper-triangular `R` with `H = R·Rᵀ` and a positive diagonal: the Cholesky factorisation taken from the last row up.
 * With `J` the order-reversing permutation, `J·H·J = L̃·L̃ᵀ` and `R = J·L̃·J`. GPTQ's `U` is its inverse
 * (`H⁻¹ = UᵀU`, `U = R⁻¹`), and GPTQ's error feedback can run on `R` itself (`core/quant/gptq_kernel.ts`), which
 * saves {@link upperCholeskyOfInverse}'s triangular inverse.
 *
 * @param h `[n, n]` symmetric positive definite (damped) Hessian; only its lower triangle is read.
 * @returns `R` in the element type of `h`, zero below the diagonal.
 * @throws {NotPositiveDefiniteError} as {@link upperCholeskyOfInverse} (the pivot an index of `h`, the last row whose
 *   trailing block is not positive definite).
 * @throws {ShapeError} when `h` is not square.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { reverseCholesky } from "./cholesky.ts";
 * const r = reverseCholesky(fromRows([[5, 2], [2, 4]])); // R = [[2, 1], [0, 2]]: R·Rᵀ = [[5, 2], [2, 4]]
 * console.assert(r.data[0] === 2 && r.data[1] === 1 && r.data[2] === 0 && r.data[3] === 2);
 * ```
 */
export function reverseCholesky<A extends FloatArray>(h: Matrix<A>): Matrix<A> {
  const n = squareSize(h, "reverseCholesky");
  const w = reversedFactor64(h.data, n);
  const out = zerosLike(h);
  out.data.set(w.reverse()); // R[i][j] = L̃[n−1−i][n−1−j]: the storage read backwards
  return out;
}

/**
 * {@link reverseCholesky} through a backend's own `cholesky` (for backends without a kernel of their own): `J·H·J` is
 * `H`'s storage read backwards, so `R` is one factorisation between two reversals.
 * @throws {NotPositiveDefiniteError} as {@link reverseCholesky}, with the pivot given as an index of `h`.
 */
export async function reverseCholeskyWith<A extends FloatArray>(
  h: Matrix<A>,
  kernels: Pick<Backend, "cholesky">,
): Promise<Matrix<A>> {
  const n = squareSize(h, "reverseCholesky");
  return reversed(await reversedFactorWith(h, n, kernels));
}

/**
 * `L̃` with `J·H·J = L̃·L̃ᵀ` in float64, reading the lower triangle of `H` (`(JHJ)[i][j] = H[n−1−i][n−1−j]`, lower when
 * `H`'s entry is upper: its mirror `H[n−1−j][n−1−i]` is read instead).
 * @throws {NotPositiveDefiniteError} with the pivot given as an index of `H`.
 */
function reversedFactor64(H: FloatArray, n: number): Float64Array {
  const w = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = n - 1 - i;
    for (let j = 0; j <= i; j++) w[i * n + j] = H[(n - 1 - j) * n + ri];
  }
  try {
    choleskyInPlace64(w, n);
  } catch (err) {
    throw asPivotOfReversed(err, n);
  }
  return w;
}

/** {@link reversedFactor64} through a backend's `cholesky`: `J·H·J` is `H`'s storage read backwards. */
async function reversedFactorWith<A extends FloatArray>(
  h: Matrix<A>,
  n: number,
  kernels: Pick<Backend, "cholesky">,
): Promise<Matrix<A>> {
  try {
    return await kernels.cholesky(reversed(h));
  } catch (err) {
    throw asPivotOfReversed(err, n);
  }
}

/** `m`'s storage read backwards: `J·M·J` for a square `m`. */
function reversed<A extends FloatArray>(m: Matrix<A>): Matrix<A> {
  return { data: m.data.slice().reverse() as A, shape: m.shape };
}

/**
 * An error of the factorisation of `J·H·J` as one of `H`'s: a failing pivot `p` of the reversed matrix is row
 * `n − 1 − p` of `H`. Other errors pass unchanged.
 */
export function asPivotOfReversed(err: unknown, n: number): unknown {
  return err instanceof NotPositiveDefiniteError ? new NotPositiveDefiniteError(n, n - 1 - err.pivot, err.value) : err;
}

// ---- float64 kernels, shared with eigh/spd and the other linalg files ----

/** The size of a square matrix, or a {@link ShapeError} naming `what`. */
export function squareSize(a: Matrix<FloatArray>, what: string): number {
  const [r, c] = a.shape;
  if (r !== c || a.data.length !== r * c) {
    throw new ShapeError(`${what}: expected a square matrix, got ${r}×${c} (${a.data.length} values)`);
  }
  return r;
}

/**
 * In-place Cholesky of the `n × n` row-major float64 matrix `w`: reads its lower triangle, writes `L` there and zeros
 * the upper triangle.
 *
 * Cholesky-Banachiewicz (row by row, `L[i][j] = (A[i][j] − L[i,:j]·L[j,:j]) / L[j][j]`), four rows at a time so each
 * row `L[j]` streamed from memory serves four dot products. Pivots are checked in row order, so the error names the
 * first failing row exactly as the unblocked loop would.
 *
 * @throws {NotPositiveDefiniteError} at the first pivot `≤ 0` or NaN.
 */
export function choleskyInPlace64(w: Float64Array, n: number): void {
  const inv = new Float64Array(n); // 1 / L[j][j]
  for (let i0 = 0; i0 < n; i0 += 4) {
    const rb = Math.min(4, n - i0);
    if (rb === 4) {
      const r0 = i0 * n, r1 = r0 + n, r2 = r1 + n, r3 = r2 + n;
      for (let j = 0; j < i0; j++) {
        const rj = j * n;
        let s0 = w[r0 + j], s1 = w[r1 + j], s2 = w[r2 + j], s3 = w[r3 + j];
        for (let p = 0; p < j; p++) {
          const lj = w[rj + p];
          s0 -= w[r0 + p] * lj;
          s1 -= w[r1 + p] * lj;
          s2 -= w[r2 + p] * lj;
          s3 -= w[r3 + p] * lj;
        }
        const d = inv[j];
        w[r0 + j] = s0 * d, w[r1 + j] = s1 * d, w[r2 + j] = s2 * d, w[r3 + j] = s3 * d;
      }
    } else {
      for (let r = 0; r < rb; r++) {
        const ri = (i0 + r) * n;
        for (let j = 0; j < i0; j++) {
          const rj = j * n;
          let s = w[ri + j];
          for (let p = 0; p < j; p++) s -= w[ri + p] * w[rj + p];
          w[ri + j] = s * inv[j];
        }
      }
    }
    // The small triangle inside the block, row by row so that pivots fail in order.
    for (let i = i0; i < i0 + rb; i++) {
      const ri = i * n;
      for (let j = i0; j <= i; j++) {
        const rj = j * n;
        let s = w[ri + j];
        for (let p = 0; p < j; p++) s -= w[ri + p] * w[rj + p];
        if (j < i) {
          w[ri + j] = s * inv[j];
        } else {
          if (!(s > 0)) throw new NotPositiveDefiniteError(n, i, s);
          const d = Math.sqrt(s);
          w[ri + i] = d;
          inv[i] = 1 / d;
        }
      }
    }
  }
  for (let i = 0; i < n; i++) w.fill(0, i * n + i + 1, (i + 1) * n);
}

/**
 * `Y·Yᵀ` for an upper-triangular float64 `Y` (full `n × n` storage, zero below the diagonal), exactly symmetric. With
 * `Y = (L⁻¹)ᵀ` this is `L⁻ᵀ·L⁻¹ = (L·Lᵀ)⁻¹`. `R[i][j] = Σ_{k ≥ i} Y[i][k]·Y[j][k]` for `j ≤ i`: dot products of
 * contiguous rows. Rows `i` go four at a time, all summed from `k = i₀` (the stored zeros make that exact), so each
 * value of row `j` read serves four sums.
 */
export function gramOfUpperRows64(y: Float64Array, n: number): Float64Array {
  const r = new Float64Array(n * n);
  for (let i0 = 0; i0 < n; i0 += 4) {
    const rb = Math.min(4, n - i0);
    if (rb === 4) {
      const a0 = i0 * n, a1 = a0 + n, a2 = a1 + n, a3 = a2 + n;
      for (let j = 0; j <= i0 + 3; j++) {
        const yj = j * n;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let k = Math.max(i0, j); k < n; k++) {
          const v = y[yj + k];
          s0 += y[a0 + k] * v;
          s1 += y[a1 + k] * v;
          s2 += y[a2 + k] * v;
          s3 += y[a3 + k] * v;
        }
        // Only the lower triangle (j ≤ i) is stored here; the mirror below fills the rest.
        if (j <= i0) r[a0 + j] = s0;
        if (j <= i0 + 1) r[a1 + j] = s1;
        if (j <= i0 + 2) r[a2 + j] = s2;
        r[a3 + j] = s3;
      }
    } else {
      for (let i = i0; i < n; i++) {
        const yi = i * n;
        for (let j = 0; j <= i; j++) {
          const yj = j * n;
          let s = 0;
          for (let k = i; k < n; k++) s += y[yi + k] * y[yj + k];
          r[yi + j] = s;
        }
      }
    }
  }
  // Mirror: the result is exactly symmetric.
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) r[j * n + i] = r[i * n + j];
  return r;
}

/**
 * {@link upperCholeskyOfInverse} through a backend's own `cholesky` and `triangularSolve` (for backends without a fused
 * kernel): `J·H·J` is `H`'s storage read backwards, so `U = J·L̃⁻¹·J` takes one factorisation, one solve against the
 * identity and two reversals.
 * @throws {NotPositiveDefiniteError} as {@link upperCholeskyOfInverse}, with the pivot given as an index of `h`.
 */
export async function upperCholeskyOfInverseWith<A extends FloatArray>(
  h: Matrix<A>,
  kernels: Pick<Backend, "cholesky" | "triangularSolve">,
): Promise<Matrix<A>> {
  const n = squareSize(h, "upperCholeskyOfInverse");
  const factor = await reversedFactorWith(h, n, kernels);
  const identity = zerosLike(h);
  for (let i = 0; i < n; i++) identity.data[i * n + i] = 1;
  return reversed(await kernels.triangularSolve(factor, identity, { lower: true }));
}
