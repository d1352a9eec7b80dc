/**
 * Singular value decomposition in float64, rounded once to the input's element type.
 *
 * - **Full** (`rank` omitted, or a small matrix): one-sided Jacobi (Hestenes) on the columns of the tall orientation.
 *   `≈ 6–10 sweeps × 5·m·n²` flops (384 × 1024: 2.5 s here) but simple and accurate: every singular value carries a
 *   small *relative* error (`≈ m·ε`, even the tiny ones of a well-scaled matrix), and `U`, `V` are orthonormal to
 *   `≈ m·ε`. Exactly rank-deficient matrices are fine: left vectors of zero (or negligible, `≤ max(m,n)·ε·σ₁`)
 *   singular values are completed to an orthonormal set.
 * - **Top-k** (`rank` well below `min(m, n)`): seeded randomized subspace iteration (Halko, Martinsson & Tropp 2011,
 *   Alg. 4.4) with `l = rank + oversampling` columns, re-orthonormalised after every product, then the exact SVD of the
 *   small projected matrix (Rayleigh-Ritz). Power iterations continue until every kept Ritz value changes by at most
 *   `tolerance·σ_j + 1e-13·σ₁` between two iterations, or `maxPowerIterations` is reached. Cost per iteration
 *   `4·m·n·l` flops. Ritz values approach the true values from below, the error shrinking like `(σ_{l+1}/σ_j)^{4q}`
 *   after `q` iterations, so accuracy depends on the spectrum's decay. Measured (300 × 220 and 1000 × 800, rank 12 and
 *   32, defaults): relative error of the kept values `1e-14` for `σ_i = 0.9^i`, `≤ 1e-11` for `1/(i+1)`, `≤ 4e-11`
 *   for `1/√(i+1)`. On flat spectra convergence is slow and the iteration cap decides: a Gaussian 400 × 300 matrix
 *   (rank 16) reaches `5e-7` after 50 iterations (`8e-3` after 10), `σ_i = 0.999^i` only `2e-3`. Even then the rank-k
 *   residual is near-optimal: `‖A − USVᵀ‖_F` within `4e-4` of the best after 10 iterations on the Gaussian matrix,
 *   `1e-8` after 50.
 *
 * @module
 */

import type { SvdOptions, SvdResult } from "../backend.ts";
import { ConvergenceError, OptionError, ShapeError } from "../errors.ts";
import { createRng, type Rng } from "../random.ts";
import { assertFinite, type FloatArray, type Matrix, zerosLike } from "../tensor.ts";

/** Options of the reference {@link svd}: the kernel's {@link SvdOptions} plus the knobs of the two methods. */
export interface SvdReferenceOptions extends SvdOptions {
  /**
   * `"full"`: Jacobi, then keep `rank`; `"randomized"`: subspace iteration (needs `rank < min(m, n)`);
   * `"auto"` (default): randomized when `rank + oversampling ≤ min(m, n)/2` and `min(m, n) ≥ 64`, full otherwise.
   */
  readonly method?: "auto" | "full" | "randomized";
  /** Extra columns of the randomized subspace; default `max(10, ⌈rank/2⌉)`. */
  readonly oversampling?: number;
  /** Power iterations at most (randomized); default 50. The result is returned (never thrown) when they run out. */
  readonly maxPowerIterations?: number;
  /** Relative change of the kept Ritz values that stops the power iterations; default `1e-10`. */
  readonly tolerance?: number;
  /** Seed of the random start (randomized); default `0x5eed`. Same seed, same result. */
  readonly seed?: number;
  /** Jacobi sweeps at most (full, and the small SVD of the randomized path); default 60 (≈ 6–12 are typical). */
  readonly maxSweeps?: number;
}

/**
 * `A ≈ U·diag(s)·Vᵀ` with `k = min(rank, m, n)` triplets, `s` descending and non-negative.
 *
 * `rank` larger than `min(m, n)` is clamped (a matrix has no more singular values); omitted, the thin SVD of all
 * `min(m, n)` values is returned. Signs of singular-vector pairs are arbitrary (a pair `(u_i, v_i)` may be negated).
 *
 * @param a `[m, n]` matrix, float32 or float64, any shape (tall, wide, empty, rank-deficient).
 * @param options `rank` and the method's knobs ({@link SvdReferenceOptions}).
 * @returns `u` `[m, k]` and `v` `[n, k]` with orthonormal columns, in the element type of `a`; `s` in float64.
 * @throws {ShapeError} when `a.data` does not hold `m·n` values.
 * @throws {NonFiniteError} when `a` holds NaN or infinite values.
 * @throws {OptionError} when `rank` or another option is invalid.
 * @throws {ConvergenceError} when Jacobi needs more than `maxSweeps` sweeps.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { svd } from "./svd.ts";
 * const { s } = svd(fromRows([[3, 0], [0, -4], [0, 0]]));
 * console.assert(Math.abs(s[0] - 4) < 1e-12 && Math.abs(s[1] - 3) < 1e-12);
 * ```
 */
export function svd<A extends FloatArray>(a: Matrix<A>, options: SvdReferenceOptions = {}): SvdResult<A> {
  const [m, n] = a.shape;
  if (a.data.length !== m * n) throw new ShapeError(`svd: a ${m}×${n} matrix with ${a.data.length} values`);
  assertFinite(a, "svd input");
  const minDim = Math.min(m, n);
  const { rank = minDim, method = "auto", maxSweeps = 60 } = options;
  if (!Number.isInteger(rank) || rank < 0) {
    throw new OptionError(`svd: rank must be a non-negative integer, got ${rank}`);
  }
  const k = Math.min(rank, minDim);
  const oversampling = options.oversampling ?? Math.max(10, Math.ceil(k / 2));
  if (!Number.isInteger(oversampling) || oversampling < 0) {
    throw new OptionError(`svd: oversampling must be a non-negative integer, got ${oversampling}`);
  }
  const { maxPowerIterations = 50, tolerance = 1e-10 } = options;
  if (!Number.isInteger(maxPowerIterations) || maxPowerIterations < 0 || !(tolerance >= 0)) {
    throw new OptionError(`svd: maxPowerIterations ${maxPowerIterations} and tolerance ${tolerance} must be ≥ 0`);
  }
  if (!Number.isInteger(maxSweeps) || maxSweeps < 1) {
    throw new OptionError(`svd: maxSweeps must be ≥ 1, got ${maxSweeps}`);
  }
  const l = Math.min(minDim, k + oversampling);
  const randomized = method === "randomized" ||
    (method === "auto" && k < minDim && 2 * l <= minDim && minDim >= 64);
  if (method === "randomized" && k >= minDim) {
    throw new OptionError(`svd: the randomized method needs rank < min(m, n) = ${minDim}, got ${rank}`);
  }
  const r = k === 0
    ? { u: new Float64Array(0), s: new Float64Array(0), v: new Float64Array(0), k: 0 }
    : randomized
    ? randomizedSvd64(a.data, m, n, k, l, options, maxSweeps)
    : truncate(svd64(Float64Array.from(a.data), m, n, maxSweeps), m, n, k);
  const u = zerosLike(a, m, k), v = zerosLike(a, n, k);
  u.data.set(r.u);
  v.data.set(r.v);
  return { u, s: r.s, v };
}

/** A float64 SVD: `u` `[m, k]` and `v` `[n, k]` row-major, `s` descending. */
export interface Svd64 {
  readonly u: Float64Array;
  readonly s: Float64Array;
  readonly v: Float64Array;
  readonly k: number;
}

/**
 * Thin SVD of the `m × n` row-major float64 matrix `a` (`k = min(m, n)`), by one-sided Jacobi on the tall orientation.
 * Shared with the randomized path, which calls it on small matrices.
 *
 * @throws {ConvergenceError} after `maxSweeps` sweeps without convergence.
 */
export function svd64(a: Float64Array, m: number, n: number, maxSweeps = 60): Svd64 {
  const k = Math.min(m, n);
  if (k === 0) return { u: new Float64Array(0), s: new Float64Array(0), v: new Float64Array(0), k };
  // Rows of w are the columns of the tall orientation M (M = A when m ≥ n, Aᵀ otherwise), so they are contiguous.
  let w: Float64Array, len: number;
  if (m >= n) {
    len = m;
    w = new Float64Array(n * m);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = a[i * n + j];
  } else {
    len = n;
    w = a;
  }
  const { s, left, right } = jacobiRows(w, k, len, maxSweeps);
  // M = U_M·S·V_Mᵀ with U_M's columns = rows of `left` (length len) and V_M's columns = rows of `right` (length k).
  const big = rowsToColumns(left, k, len), small = rowsToColumns(right, k, k);
  return m >= n ? { u: big, s, v: small, k } : { u: small, s, v: big, k };
}

/** `[r, len]` rows → `[len, r]` matrix whose columns they are. */
function rowsToColumns(rows: Float64Array, r: number, len: number): Float64Array {
  const out = new Float64Array(len * r);
  for (let j = 0; j < r; j++) {
    const rj = j * len;
    for (let i = 0; i < len; i++) out[i * r + j] = rows[rj + i];
  }
  return out;
}

/** The first `k` triplets of a thin SVD. */
function truncate(full: Svd64, m: number, n: number, k: number): Svd64 {
  if (k === full.k) return full;
  const cut = (x: Float64Array, rows: number) => {
    const out = new Float64Array(rows * k);
    for (let i = 0; i < rows; i++) out.set(x.subarray(i * full.k, i * full.k + k), i * k);
    return out;
  };
  return { u: cut(full.u, m), s: full.s.slice(0, k), v: cut(full.v, n), k };
}

/**
 * One-sided Jacobi on `p` rows of length `len ≥ p` (the columns of a tall `len × p` matrix `M`; destroyed).
 *
 * Each pair of columns is rotated to be orthogonal (the rotation that diagonalises their 2×2 Gram matrix) until a
 * whole sweep finds every pair orthogonal to `len·ε` relative to their norms. Then `σ_j = ‖w_j‖`, `u_j = w_j/σ_j` and
 * the accumulated rotations are `V`. The matrix is scaled by a power of two first, so squares can neither overflow
 * nor underflow and the scaling is exact.
 *
 * @returns `s` descending, `left` (`[p, len]`, row `j` = `u_j`) and `right` (`[p, p]`, row `j` = `v_j`).
 */
function jacobiRows(
  w: Float64Array,
  p: number,
  len: number,
  maxSweeps: number,
): { s: Float64Array; left: Float64Array; right: Float64Array } {
  let amax = 0;
  for (let i = 0; i < p * len; i++) amax = Math.max(amax, Math.abs(w[i]));
  const scale = amax > 0 ? 2 ** Math.round(Math.log2(amax)) : 1;
  if (scale !== 1) { for (let i = 0; i < p * len; i++) w[i] /= scale; }
  const v = new Float64Array(p * p);
  for (let i = 0; i < p; i++) v[i * p + i] = 1;
  const norms = new Float64Array(p);
  const tol = len * Number.EPSILON;
  let converged = false;
  for (let sweep = 0; sweep < maxSweeps && !converged; sweep++) {
    converged = true;
    for (let i = 0; i < p; i++) norms[i] = dot(w, i * len, w, i * len, len);
    for (let i = 0; i < p - 1; i++) {
      const wi = i * len;
      for (let j = i + 1; j < p; j++) {
        const wj = j * len;
        const g = dot(w, wi, w, wj, len);
        const a = norms[i], b = norms[j];
        if (!(Math.abs(g) > tol * Math.sqrt(a * b))) continue; // also skips zero columns (g = 0)
        converged = false;
        const zeta = (b - a) / (2 * g);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        rotate(w, wi, wj, len, c, s);
        rotate(v, i * p, j * p, p, c, s);
        // Updated squared norms (exact in exact arithmetic); recomputed when cancellation may have eaten them.
        let na = a - t * g, nb = b + t * g;
        if (na < 0.25 * a) na = dot(w, wi, w, wi, len);
        if (nb < 0.25 * b) nb = dot(w, wj, w, wj, len);
        norms[i] = na;
        norms[j] = nb;
      }
    }
  }
  if (!converged) throw new ConvergenceError(`svd: one-sided Jacobi did not converge in ${maxSweeps} sweeps`);
  const sig = new Float64Array(p);
  for (let j = 0; j < p; j++) sig[j] = Math.sqrt(dot(w, j * len, w, j * len, len));
  const order = Array.from({ length: p }, (_, i) => i).sort((i, j) => sig[j] - sig[i] || i - j);
  const s = new Float64Array(p), left = new Float64Array(p * len), right = new Float64Array(p * p);
  const negligible = Math.max(len, p) * Number.EPSILON * sig[order[0]];
  const pending: number[] = [];
  order.forEach((src, j) => {
    s[j] = sig[src] * scale;
    right.set(v.subarray(src * p, (src + 1) * p), j * p);
    if (sig[src] > negligible) {
      const inv = 1 / sig[src];
      for (let t = 0; t < len; t++) left[j * len + t] = w[src * len + t] * inv;
    } else {
      left.set(w.subarray(src * len, (src + 1) * len), j * len);
      pending.push(j);
    }
  });
  // Negligible values come last (s is sorted), so every row before them is final when they are completed.
  for (const j of pending) completeRow(left, j, len);
  return { s, left, right };
}

/**
 * Replaces row `j` of `q` by a unit vector orthogonal to rows `0…j−1` (orthonormal): its own direction when that
 * survives two Gram-Schmidt passes, otherwise the first standard basis vector that does.
 */
function completeRow(q: Float64Array, j: number, len: number): void {
  const rj = j * len;
  const own = Math.sqrt(dot(q, rj, q, rj, len));
  for (let candidate = -1; candidate < len; candidate++) {
    if (candidate < 0) {
      if (own === 0) continue;
      for (let t = 0; t < len; t++) q[rj + t] /= own;
    } else {
      q.fill(0, rj, rj + len);
      q[rj + candidate] = 1;
    }
    if (orthogonalizeAgainst(q, j, q, 0, j, len) > 0.5) return;
  }
  throw new ConvergenceError(`svd: could not complete singular vector ${j} of length ${len}`); // unreachable: j < len
}

/**
 * Two modified Gram-Schmidt passes ("twice is enough") removing from row `j` of `x` its components along rows
 * `[q0, q1)` of the orthonormal `q`, then normalising it. Returns the norm before normalisation and, in `coef`
 * (when given), the removed coefficients.
 */
function orthogonalizeAgainst(
  x: Float64Array,
  j: number,
  q: Float64Array,
  q0: number,
  q1: number,
  len: number,
  coef?: Float64Array,
): number {
  const rj = j * len;
  for (let pass = 0; pass < 2; pass++) {
    for (let i = q0; i < q1; i++) {
      const ri = i * len;
      const c = dot(q, ri, x, rj, len);
      if (c === 0) continue;
      for (let t = 0; t < len; t++) x[rj + t] -= c * q[ri + t];
      if (coef) coef[i] += c;
    }
  }
  const nrm = Math.sqrt(dot(x, rj, x, rj, len));
  if (nrm > 0) { for (let t = 0; t < len; t++) x[rj + t] /= nrm; }
  return nrm;
}

/**
 * Orthonormalises the `r` rows (length `len ≥ r`) of `x` in place: `x_original = L·x_new` with `L` (`[r, r]`, lower,
 * returned). A row that is (numerically) in the span of the previous ones gets `L[j][j] = 0` and is replaced by a
 * random direction orthogonal to them, so the rows stay an orthonormal basis whatever the rank.
 */
function orthonormalizeRows(x: Float64Array, r: number, len: number, rng: Rng): Float64Array {
  const L = new Float64Array(r * r);
  const coef = new Float64Array(r);
  for (let j = 0; j < r; j++) {
    const rj = j * len;
    const before = Math.sqrt(dot(x, rj, x, rj, len));
    coef.fill(0);
    const nrm = orthogonalizeAgainst(x, j, x, 0, j, len, coef);
    for (let i = 0; i < j; i++) L[j * r + i] = coef[i];
    if (nrm > 1e-13 * before) {
      L[j * r + j] = nrm;
      continue;
    }
    L[j * r + j] = 0; // dependent: the residual (≤ 1e-13 of the row) is dropped
    for (let attempt = 0; attempt < 8; attempt++) {
      for (let t = 0; t < len; t++) x[rj + t] = rng.normal();
      const before2 = Math.sqrt(dot(x, rj, x, rj, len));
      if (orthogonalizeAgainst(x, j, x, 0, j, len) > 0.1 * before2) break;
    }
  }
  return L;
}

/** Randomized subspace iteration for the top `k` triplets with an `l`-column subspace; see the module notes. */
function randomizedSvd64(
  A: FloatArray,
  m: number,
  n: number,
  k: number,
  l: number,
  options: SvdReferenceOptions,
  maxSweeps: number,
): Svd64 {
  const { maxPowerIterations = 50, tolerance = 1e-10, seed = 0x5eed } = options;
  const rng = createRng(seed);
  let x: Float64Array = new Float64Array(l * n); // Ωᵀ: l random directions in the row space
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  let q = timesRowsTransposed(A, m, n, x, l); // (A·Ω)ᵀ, [l, m]
  orthonormalizeRows(q, l, m, rng);
  let prev: Float64Array | undefined;
  let L: Float64Array;
  for (let it = 0;; it++) {
    x = rowsTimes(A, m, n, q, l); // (Aᵀ·Q)ᵀ = Qᵀ·A = B, [l, n]
    L = orthonormalizeRows(x, l, n, rng); // B = L·P, P = x now
    const ritz = svd64(L.slice(), l, l, maxSweeps).s; // σ(B): the Ritz values of this subspace
    if (prev && converged(ritz, prev, k, tolerance)) break;
    if (it >= maxPowerIterations) break;
    prev = ritz;
    q = timesRowsTransposed(A, m, n, x, l); // (A·P)ᵀ
    orthonormalizeRows(q, l, m, rng);
  }
  // A ≈ Q·B = Q·L·P = (Q·U_L)·S·(Pᵀ·V_L)ᵀ.
  const small = svd64(L, l, l, maxSweeps);
  const u = new Float64Array(m * k), v = new Float64Array(n * k);
  combineRows(q, l, m, small.u, l, k, u);
  combineRows(x, l, n, small.v, l, k, v);
  return { u, s: small.s.slice(0, k), v, k };
}

/** Every kept Ritz value moved by at most `tolerance·σ_j + 1e-13·σ₁` since the previous iteration. */
function converged(now: Float64Array, prev: Float64Array, k: number, tolerance: number): boolean {
  const floor = 1e-13 * now[0];
  for (let j = 0; j < k; j++) if (Math.abs(now[j] - prev[j]) > tolerance * now[j] + floor) return false;
  return true;
}

/** `out[i][c] = Σ_j rows[j][i]·coef[j][c]` for `c < k`: `rowsᵀ·coef`, `[len, k]` (coef is `[r, cols]`). */
function combineRows(
  rows: Float64Array,
  r: number,
  len: number,
  coef: Float64Array,
  cols: number,
  k: number,
  out: Float64Array,
): void {
  for (let j = 0; j < r; j++) {
    const rj = j * len, cj = j * cols;
    for (let i = 0; i < len; i++) {
      const x = rows[rj + i];
      if (x === 0) continue;
      const oi = i * k;
      for (let c = 0; c < k; c++) out[oi + c] += x * coef[cj + c];
    }
  }
}

/** `(A·Xᵀ)ᵀ`: `Y[j][i] = A[i,:]·X[j,:]` for `X` `[r, n]`; each row of `A` is read once and serves four rows of X. */
function timesRowsTransposed(A: FloatArray, m: number, n: number, X: Float64Array, r: number): Float64Array {
  const Y = new Float64Array(r * m);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    for (let c = 0; c < n; c++) row[c] = A[i * n + c];
    let j = 0;
    for (; j + 4 <= r; j += 4) {
      const x0 = j * n, x1 = x0 + n, x2 = x1 + n, x3 = x2 + n;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let c = 0; c < n; c++) {
        const a = row[c];
        s0 += a * X[x0 + c];
        s1 += a * X[x1 + c];
        s2 += a * X[x2 + c];
        s3 += a * X[x3 + c];
      }
      Y[j * m + i] = s0, Y[(j + 1) * m + i] = s1, Y[(j + 2) * m + i] = s2, Y[(j + 3) * m + i] = s3;
    }
    for (; j < r; j++) Y[j * m + i] = dot(row, 0, X, j * n, n);
  }
  return Y;
}

/** `Q·A` for `Q` `[r, m]`: `Z[j,:] = Σ_i Q[j][i]·A[i,:]`, each row of `A` read once and added into every row of Z. */
function rowsTimes(A: FloatArray, m: number, n: number, Q: Float64Array, r: number): Float64Array {
  const Z = new Float64Array(r * n);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    for (let c = 0; c < n; c++) row[c] = A[i * n + c];
    for (let j = 0; j < r; j++) {
      const q = Q[j * m + i];
      if (q === 0) continue;
      const zj = j * n;
      for (let c = 0; c < n; c++) Z[zj + c] += q * row[c];
    }
  }
  return Z;
}

function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, len: number): number {
  let s = 0;
  for (let t = 0; t < len; t++) s += a[ao + t] * b[bo + t];
  return s;
}

/** `(x_i, x_j) ← (c·x_i − s·x_j, s·x_i + c·x_j)` on two rows of one array. */
function rotate(x: Float64Array, ri: number, rj: number, len: number, c: number, s: number): void {
  for (let t = 0; t < len; t++) {
    const a = x[ri + t], b = x[rj + t];
    x[ri + t] = c * a - s * b;
    x[rj + t] = s * a + c * b;
  }
}
