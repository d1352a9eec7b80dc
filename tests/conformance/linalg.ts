/**
 * Conformance of the linear-algebra kernels against the float64 TS references in `core/linalg/`: `cholesky`,
 * `triangularSolve` (all eight flag combinations), `choleskyInverse`, `upperCholeskyOfInverse`, `reverseCholesky`, `eigh`,
 * `svd` (full and top-k) and `kmeans`,
 * each on float32 and float64 inputs (the output must keep the input's element type), on sizes that include 1, odd
 * sizes and sizes that are not multiples of a tile.
 *
 * What must agree, and the tolerances (`ts` = the backend's tolerance scale; `u = 2⁻²⁴`, float32's unit roundoff).
 * A backend may compute in float32 (the interface allows it), so float64 inputs are held to the same float32-level
 * tolerances; the matrices are well conditioned (condition ≤ ~10) so that those tolerances mean something.
 * - `cholesky`: lower triangular (upper triangle exactly 0); `‖A − LLᵀ‖_F/‖A‖_F ≤ 4·√n·u·ts`;
 *   `|L − L_ref| ≤ 8·√n·u·ts·max|L_ref|`; an indefinite matrix throws {@link NotPositiveDefiniteError} at the same pivot.
 * - `triangularSolve`: `|X − X_ref| ≤ 16·√n·u·ts·max|X_ref|` and residual `‖op(T)X − B‖ ≤ 8·√n·u·ts·‖T‖‖X‖` (max norms);
 *   with `unitDiagonal` the stored diagonal (not 1) must be ignored.
 * - `choleskyInverse`: `|X − X_ref| ≤ 16·√n·u·ts·max|X_ref|`, symmetric to the same tolerance.
 * - `upperCholeskyOfInverse`: `|U − U_ref| ≤ 16·√n·u·ts·max|U_ref|`, zero below the diagonal, and an indefinite
 *   matrix throws {@link NotPositiveDefiniteError} naming the failing pivot as an index of `H`.
 * - `reverseCholesky`: upper triangular (lower triangle exactly 0); `‖H − RRᵀ‖_F/‖H‖_F ≤ 4·√n·u·ts`;
 *   `|R − R_ref| ≤ 8·√n·u·ts·max|R_ref|`; the failing pivot as for `upperCholeskyOfInverse`.
 * - `eigh`: eigenvalues ascending and `|λ − λ_ref| ≤ 8·√n·u·ts·‖A‖` (Weyl); `‖A − VΛVᵀ‖_F/‖A‖_F` and `max|VᵀV − I|`
 *   `≤ 8·√n·u·ts`. Vectors are compared through these, never directly (signs and bases of repeated eigenvalues are
 *   free).
 * - `svd`: values descending, non-negative, `|s − s_ref| ≤ 8·√n·u·ts·s_ref[0]`; full: `‖A − USVᵀ‖_F ≤ 8·√n·u·ts·‖A‖_F`;
 *   top-k on decaying spectra: kept values within `1e-5·ts` relative of the reference and the residual within
 *   `(1 + 1e-5·ts)` of the best rank-k residual (plus `8·√n·u·ts·‖A‖_F`); orthonormality `≤ 8·√n·u·ts`.
 * - `kmeans` (well-separated blobs, so the optimum is unambiguous): inertia within `1e-4·ts` relative of the reference
 *   with the same seed, every point assigned to its nearest returned centroid, and two calls bit-identical.
 *
 * @module
 */

import { AssertionError } from "node:assert/strict";
import { NotPositiveDefiniteError } from "../../core/errors.ts";
import { cholesky, choleskyInverse, reverseCholesky, upperCholeskyOfInverse } from "../../core/linalg/cholesky.ts";
import { eigh } from "../../core/linalg/eigh.ts";
import { kmeans } from "../../core/linalg/kmeans.ts";
import { svd } from "../../core/linalg/svd.ts";
import { triangularSolve } from "../../core/linalg/triangular.ts";
import { createRng, type Rng } from "../../core/random.ts";
import { type FloatArray, type Matrix, matrix, matrix64, toFloat32 } from "../../core/tensor.ts";
import type { ConformanceCase } from "./case.ts";

const U = 2 ** -24;
const DTYPES = ["float32", "float64"] as const;
type Dtype = (typeof DTYPES)[number];

function fail(message: string): never {
  throw new AssertionError({ message });
}

function check(ok: boolean, message: () => string): void {
  if (!ok) fail(message());
}

/** The matrix in the requested element type (float32: rounded once). */
function as(dtype: Dtype, m: Matrix<Float64Array>): Matrix<FloatArray> {
  return dtype === "float32" ? toFloat32(m) : m;
}

function checkType(dtype: Dtype, m: Matrix<FloatArray>, rows: number, cols: number, what: string): void {
  const ok = dtype === "float32" ? m.data instanceof Float32Array : m.data instanceof Float64Array;
  check(ok, () => `${what}: expected ${dtype} output, got ${m.data.constructor.name}`);
  check(
    m.shape[0] === rows && m.shape[1] === cols && m.data.length === rows * cols,
    () => `${what}: expected ${rows}×${cols}, got ${m.shape[0]}×${m.shape[1]}`,
  );
}

function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
}

function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

/** Element-wise `|a − e| ≤ tol`, naming the worst element. */
function closeAbs(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  let worst = -1, worstDiff = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= tol) && (worst < 0 || !(d <= worstDiff))) worst = i, worstDiff = d;
  }
  if (worst >= 0) {
    fail(`${what}[${worst}]: ${actual[worst]} vs reference ${expected[worst]} (|Δ| = ${worstDiff}, allowed ${tol})`);
  }
}

/** `X·Xᵀ/n + I`: SPD with condition number ≈ 5 or less. */
/** Checks that `result` rejects with a {@link NotPositiveDefiniteError} at `pivot` of a matrix of `size`. */
async function failsAtPivot(result: Promise<unknown>, pivot: number, size: number, what: string): Promise<void> {
  let thrown: unknown;
  try {
    await result;
  } catch (e) {
    thrown = e;
  }
  check(thrown instanceof NotPositiveDefiniteError, () => `${what}: expected NotPositiveDefiniteError`);
  const e = thrown as NotPositiveDefiniteError;
  check(
    e.pivot === pivot && e.size === size,
    () => `${what}: pivot ${e.pivot} of size ${e.size}, expected ${pivot} of ${size}`,
  );
}

function randomSpd(n: number, rng: Rng): Matrix<Float64Array> {
  const x = Float64Array.from({ length: n * n }, () => rng.normal());
  const a = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += x[i * n + k] * x[j * n + k];
      a.data[i * n + j] = a.data[j * n + i] = s / n + (i === j ? 1 : 0);
    }
  }
  return a;
}

/** `[rows, k]` with orthonormal columns (Gram-Schmidt twice on Gaussian columns). */
function orthonormalColumns(rows: number, k: number, rng: Rng): Float64Array {
  const q = Float64Array.from({ length: k * rows }, () => rng.normal());
  for (let j = 0; j < k; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let c = 0;
        for (let t = 0; t < rows; t++) c += q[i * rows + t] * q[j * rows + t];
        for (let t = 0; t < rows; t++) q[j * rows + t] -= c * q[i * rows + t];
      }
    }
    const nr = frob(q.subarray(j * rows, (j + 1) * rows));
    for (let t = 0; t < rows; t++) q[j * rows + t] /= nr;
  }
  const out = new Float64Array(rows * k);
  for (let j = 0; j < k; j++) for (let t = 0; t < rows; t++) out[t * k + j] = q[j * rows + t];
  return out;
}

/** `U·diag(s)·Vᵀ` with random orthonormal factors. */
function withSingularValues(m: number, n: number, s: ArrayLike<number>, rng: Rng): Matrix<Float64Array> {
  const r = s.length;
  const u = orthonormalColumns(m, r, rng), v = orthonormalColumns(n, r, rng);
  const a = matrix64(m, n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let x = 0;
      for (let c = 0; c < r; c++) x += u[i * r + c] * s[c] * v[j * r + c];
      a.data[i * n + j] = x;
    }
  }
  return a;
}

/** Random triangular `T` (diagonal in [1, 2], off-diagonal of size 1/n, other triangle 0): condition ≲ 3. */
function randomTriangular(n: number, lower: boolean, rng: Rng): Matrix<Float64Array> {
  const t = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i === j) t.data[i * n + j] = 1 + rng.float();
      else if (lower ? j < i : j > i) t.data[i * n + j] = rng.normal() / n;
    }
  }
  return t;
}

/** `op(T)·X` with the diagonal taken as ones when `unit`. */
function applyTriangular(
  t: Matrix<FloatArray>,
  x: Matrix<FloatArray>,
  transpose: boolean,
  unit: boolean,
): Float64Array {
  const n = t.shape[0], k = x.shape[1];
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let p = 0; p < n; p++) {
        const tv = i === p && unit ? 1 : transpose ? t.data[p * n + i] : t.data[i * n + p];
        s += tv * x.data[p * k + c];
      }
      out[i * k + c] = s;
    }
  }
  return out;
}

/** `max|QᵀQ − I|` for `Q` `[rows, k]`. */
function orthonormality(q: Matrix<FloatArray>): number {
  const [rows, k] = q.shape;
  let worst = 0;
  for (let c = 0; c < k; c++) {
    for (let d = 0; d <= c; d++) {
      let s = 0;
      for (let i = 0; i < rows; i++) s += q.data[i * k + c] * q.data[i * k + d];
      worst = Math.max(worst, Math.abs(s - (c === d ? 1 : 0)));
    }
  }
  return worst;
}

/** `‖A − U·diag(s)·Vᵀ‖_F`. */
function svdResidual(a: Matrix<FloatArray>, u: Matrix<FloatArray>, s: Float64Array, v: Matrix<FloatArray>): number {
  const [m, n] = a.shape, k = s.length;
  let sum = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let x = 0;
      for (let c = 0; c < k; c++) x += u.data[i * k + c] * s[c] * v.data[j * k + c];
      sum += (a.data[i * n + j] - x) ** 2;
    }
  }
  return Math.sqrt(sum);
}

function checkDescending(s: Float64Array, ascending: boolean, what: string): void {
  for (let i = 1; i < s.length; i++) {
    const ok = ascending ? s[i - 1] <= s[i] : s[i - 1] >= s[i];
    check(ok, () => `${what}: values out of order at ${i} (${s[i - 1]}, ${s[i]})`);
  }
}

const CHOL_SIZES = [1, 7, 64, 385];
const SOLVE_SHAPES: [number, number][] = [[1, 1], [7, 3], [100, 1], [129, 5]];
const EIGH_SIZES = [1, 2, 7, 64, 129];

const FLAGS = [false, true].flatMap((lower) =>
  [false, true].flatMap((transpose) => [false, true].map((unitDiagonal) => ({ lower, transpose, unitDiagonal })))
);

export const linalgCases: ConformanceCase[] = [
  {
    name: "cholesky: factor, residual and element type (sizes 1, 7, 64, 385)",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(201);
      for (const n of CHOL_SIZES) {
        const spd = randomSpd(n, rng);
        for (const dtype of DTYPES) {
          const a = as(dtype, spd);
          const got = await backend.cholesky(a);
          const what = `cholesky ${dtype} n=${n}`;
          checkType(dtype, got, n, n, what);
          for (let i = 0; i < n; i++) {
            for (let j = i + 1; j < n; j++) check(got.data[i * n + j] === 0, () => `${what}: upper [${i}, ${j}] ≠ 0`);
          }
          const ref = cholesky(a);
          closeAbs(got.data, ref.data, 8 * Math.sqrt(n) * U * ts * maxAbs(ref.data), what);
          const diff = new Float64Array(n * n);
          for (let i = 0; i < n; i++) {
            for (let j = 0; j <= i; j++) {
              let s = 0;
              for (let k = 0; k <= j; k++) s += got.data[i * n + k] * got.data[j * n + k];
              diff[i * n + j] = diff[j * n + i] = a.data[i * n + j] - s;
            }
          }
          const res = frob(diff) / frob(a.data);
          check(res <= 4 * Math.sqrt(n) * U * ts, () => `${what}: ‖A − LLᵀ‖/‖A‖ = ${res}`);
        }
      }
    },
  },
  {
    name: "cholesky: NotPositiveDefiniteError at the failing pivot",
    async run({ backend }) {
      for (const dtype of DTYPES) {
        const a = matrix64(6, 6);
        [2, 1, -3, 4, 1, 1].forEach((v, i) => a.data[i * 6 + i] = v);
        a.data[1 * 6 + 0] = a.data[0 * 6 + 1] = 0.5;
        await failsAtPivot(backend.cholesky(as(dtype, a)), 2, 6, dtype);
      }
    },
  },
  ...FLAGS.map(({ lower, transpose, unitDiagonal }): ConformanceCase => ({
    name: `triangularSolve lower=${lower} transpose=${transpose} unitDiagonal=${unitDiagonal}`,
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(202);
      for (const [n, k] of SOLVE_SHAPES) {
        const t64 = randomTriangular(n, lower, rng);
        const b64 = matrix64(n, k, Float64Array.from({ length: n * k }, () => rng.normal()));
        for (const dtype of DTYPES) {
          const t = as(dtype, t64), b = as(dtype, b64);
          const what = `triangularSolve ${dtype} ${n}×${k}`;
          const got = await backend.triangularSolve(t, b, { lower, transpose, unitDiagonal });
          checkType(dtype, got, n, k, what);
          const ref = triangularSolve(t, b, { lower, transpose, unitDiagonal });
          closeAbs(got.data, ref.data, 16 * Math.sqrt(n) * U * ts * maxAbs(ref.data), what);
          const r = applyTriangular(t, got, transpose, unitDiagonal);
          for (let i = 0; i < r.length; i++) r[i] -= b.data[i];
          const bound = 8 * Math.sqrt(n) * U * ts * Math.max(maxAbs(t.data), 1) * maxAbs(got.data);
          check(maxAbs(r) <= bound, () => `${what}: residual ${maxAbs(r)} > ${bound}`);
        }
      }
    },
  })),
  {
    name: "choleskyInverse: (L·Lᵀ)⁻¹ against the reference (sizes 1, 7, 64, 129)",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(203);
      for (const n of [1, 7, 64, 129]) {
        const l64 = cholesky(randomSpd(n, rng));
        for (const dtype of DTYPES) {
          const l = as(dtype, l64);
          const what = `choleskyInverse ${dtype} n=${n}`;
          const got = await backend.choleskyInverse(l);
          checkType(dtype, got, n, n, what);
          const ref = choleskyInverse(l);
          const tol = 16 * Math.sqrt(n) * U * ts * maxAbs(ref.data);
          closeAbs(got.data, ref.data, tol, what);
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < i; j++) {
              const d = Math.abs(got.data[i * n + j] - got.data[j * n + i]);
              check(d <= tol, () => `${what}: asymmetric at [${i}, ${j}] by ${d}`);
            }
          }
        }
      }
    },
  },
  {
    name: "upperCholeskyOfInverse: GPTQ's U against the reference (sizes 1, 7, 64, 129, 300) and the failing pivot",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(205);
      for (const n of [1, 7, 64, 129, 300]) {
        const h64 = randomSpd(n, rng);
        for (const dtype of DTYPES) {
          const h = as(dtype, h64);
          const what = `upperCholeskyOfInverse ${dtype} n=${n}`;
          const got = await backend.upperCholeskyOfInverse(h);
          checkType(dtype, got, n, n, what);
          const ref = upperCholeskyOfInverse(h);
          closeAbs(got.data, ref.data, 16 * Math.sqrt(n) * U * ts * maxAbs(ref.data), what);
          for (let i = 1; i < n; i++) {
            for (let j = 0; j < i; j++) check(got.data[i * n + j] === 0, () => `${what}: U[${i}][${j}] ≠ 0`);
          }
        }
      }
      // An indefinite matrix: the error names the failing pivot as an index of H (the last row whose trailing block is
      // not positive definite, since the elimination runs from the end).
      const a = matrix64(5, 5);
      [1, -2, 3, 4, 5].forEach((v, i) => a.data[i * 5 + i] = v);
      await failsAtPivot(backend.upperCholeskyOfInverse(a), 1, 5, "upperCholeskyOfInverse");
    },
  },
  {
    name: "reverseCholesky: H = R·Rᵀ, against the reference (sizes 1, 7, 64, 129, 300) and the failing pivot",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(206);
      for (const n of [1, 7, 64, 129, 300]) {
        const h64 = randomSpd(n, rng);
        for (const dtype of DTYPES) {
          const h = as(dtype, h64);
          const what = `reverseCholesky ${dtype} n=${n}`;
          const got = await backend.reverseCholesky(h);
          checkType(dtype, got, n, n, what);
          const ref = reverseCholesky(h);
          closeAbs(got.data, ref.data, 8 * Math.sqrt(n) * U * ts * maxAbs(ref.data), what);
          for (let i = 1; i < n; i++) {
            for (let j = 0; j < i; j++) check(got.data[i * n + j] === 0, () => `${what}: R[${i}][${j}] ≠ 0`);
          }
          // ‖H − R·Rᵀ‖_F / ‖H‖_F, in float64 over the upper factor's non-zero range.
          let err = 0, norm = 0;
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) {
              let s = 0;
              for (let k = Math.max(i, j); k < n; k++) s += got.data[i * n + k] * got.data[j * n + k];
              err += (h64.data[i * n + j] - s) ** 2;
              norm += h64.data[i * n + j] ** 2;
            }
          }
          const rel = Math.sqrt(err / norm);
          check(rel <= 4 * Math.sqrt(n) * U * ts, () => `${what}: ‖H − RRᵀ‖/‖H‖ = ${rel}`);
        }
      }
      const a = matrix64(5, 5);
      [1, -2, 3, 4, 5].forEach((v, i) => a.data[i * 5 + i] = v);
      await failsAtPivot(backend.reverseCholesky(a), 1, 5, "reverseCholesky");
    },
  },
  {
    name: "eigh: eigenvalues, reconstruction V·diag·Vᵀ and orthogonality (sizes 1, 2, 7, 64, 129; repeated values)",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(204);
      const inputs: [string, Matrix<Float64Array>][] = EIGH_SIZES.map((n) => {
        const a = matrix64(n, n);
        for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) a.data[i * n + j] = a.data[j * n + i] = rng.normal();
        return [`n=${n}`, a];
      });
      // Repeated eigenvalues: Q·diag(3, 3, 3, −1, −1, 0, 2)·Qᵀ.
      const spectrum = [3, 3, 3, -1, -1, 0, 2];
      const q = orthonormalColumns(7, 7, rng);
      const rep = matrix64(7, 7);
      for (let i = 0; i < 7; i++) {
        for (let j = 0; j < 7; j++) {
          for (let c = 0; c < 7; c++) rep.data[i * 7 + j] += q[i * 7 + c] * spectrum[c] * q[j * 7 + c];
        }
      }
      for (let i = 0; i < 7; i++) for (let j = 0; j < i; j++) rep.data[j * 7 + i] = rep.data[i * 7 + j];
      inputs.push(["repeated eigenvalues", rep]);
      for (const [name, a64] of inputs) {
        const n = a64.shape[0];
        for (const dtype of DTYPES) {
          const a = as(dtype, a64);
          const what = `eigh ${dtype} ${name}`;
          const got = await backend.eigh(a);
          checkType(dtype, got.vectors, n, n, what);
          check(got.values instanceof Float64Array && got.values.length === n, () => `${what}: values`);
          checkDescending(got.values, true, what);
          const ref = eigh(a);
          const tol = 8 * Math.sqrt(n) * U * ts;
          const normA = frob(a.data);
          closeAbs(got.values, ref.values, tol * normA, `${what} values`);
          const V = got.vectors.data, diff = new Float64Array(n * n);
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) {
              let s = 0;
              for (let k = 0; k < n; k++) s += V[i * n + k] * got.values[k] * V[j * n + k];
              diff[i * n + j] = a.data[i * n + j] - s;
            }
          }
          const rec = frob(diff) / normA;
          check(rec <= tol, () => `${what}: ‖A − VΛVᵀ‖/‖A‖ = ${rec}`);
          const orth = orthonormality(got.vectors);
          check(orth <= tol, () => `${what}: max|VᵀV − I| = ${orth}`);
        }
      }
    },
  },
  {
    name: "svd (full): values, reconstruction, orthonormality on tall, wide, square and rank-deficient inputs",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(205);
      const inputs: [string, Matrix<Float64Array>][] = [
        ["1×1", matrix64(1, 1, new Float64Array([-3]))],
        ["7×1", matrix64(7, 1, Float64Array.from({ length: 7 }, () => rng.normal()))],
        ["5×7", matrix64(5, 7, Float64Array.from({ length: 35 }, () => rng.normal()))],
        ["65×40", matrix64(65, 40, Float64Array.from({ length: 2600 }, () => rng.normal()))],
        ["40×65", matrix64(40, 65, Float64Array.from({ length: 2600 }, () => rng.normal()))],
        ["rank 3 of 30×20", withSingularValues(30, 20, [4, 2, 1], rng)],
      ];
      for (const [name, a64] of inputs) {
        const [m, n] = a64.shape;
        const k = Math.min(m, n);
        for (const dtype of DTYPES) {
          const a = as(dtype, a64);
          const what = `svd ${dtype} ${name}`;
          const got = await backend.svd(a);
          checkType(dtype, got.u, m, k, `${what} u`);
          checkType(dtype, got.v, n, k, `${what} v`);
          check(got.s.length === k && got.s.every((x) => x >= 0), () => `${what}: s must be ${k} values ≥ 0`);
          checkDescending(got.s, false, what);
          const ref = svd(a);
          const tol = 8 * Math.sqrt(Math.max(m, n)) * U * ts;
          closeAbs(got.s, ref.s, tol * ref.s[0], `${what} s`);
          const res = svdResidual(a, got.u, got.s, got.v);
          check(res <= tol * frob(a.data), () => `${what}: ‖A − USVᵀ‖ = ${res}`);
          const ou = orthonormality(got.u), ov = orthonormality(got.v);
          check(ou <= tol && ov <= tol, () => `${what}: orthonormality U ${ou}, V ${ov}`);
        }
      }
    },
  },
  {
    name: "svd (top-k): kept values and near-optimal residual on decaying spectra",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(206);
      const cases: [number, number, number, (i: number) => number][] = [
        [300, 200, 10, (i) => 0.9 ** i],
        [150, 257, 6, (i) => 1 / (i + 1)],
      ];
      for (const [m, n, k, f] of cases) {
        const full = Float64Array.from({ length: Math.min(m, n) }, (_, i) => f(i));
        const a64 = withSingularValues(m, n, full, rng);
        for (const dtype of DTYPES) {
          const a = as(dtype, a64);
          const what = `svd ${dtype} ${m}×${n} rank ${k}`;
          const got = await backend.svd(a, { rank: k });
          checkType(dtype, got.u, m, k, `${what} u`);
          checkType(dtype, got.v, n, k, `${what} v`);
          check(got.s.length === k, () => `${what}: ${got.s.length} values`);
          checkDescending(got.s, false, what);
          const ref = svd(a, { rank: k });
          for (let i = 0; i < k; i++) {
            const rel = Math.abs(got.s[i] - ref.s[i]) / ref.s[i];
            check(rel <= 1e-5 * ts, () => `${what}: s[${i}] = ${got.s[i]} vs ${ref.s[i]} (relative ${rel})`);
          }
          const tol = 8 * Math.sqrt(Math.max(m, n)) * U * ts;
          const best = svdResidual(a, ref.u, ref.s, ref.v);
          const res = svdResidual(a, got.u, got.s, got.v);
          check(
            res <= best * (1 + 1e-5 * ts) + tol * frob(a.data),
            () => `${what}: residual ${res} vs the reference's ${best}`,
          );
          const ou = orthonormality(got.u), ov = orthonormality(got.v);
          check(ou <= tol && ov <= tol, () => `${what}: orthonormality U ${ou}, V ${ov}`);
        }
      }
    },
  },
  {
    name: "kmeans: same seed → reference inertia, nearest assignments, deterministic",
    async run({ backend, toleranceScale: ts }) {
      const rng = createRng(207);
      const dim = 4, perBlob = 100;
      const centers = Array.from({ length: 6 }, () => Array.from({ length: dim }, () => 20 * rng.normal()));
      const points = matrix(centers.length * perBlob, dim);
      centers.forEach((c, b) => {
        for (let i = 0; i < perBlob; i++) {
          for (let t = 0; t < dim; t++) points.data[(b * perBlob + i) * dim + t] = c[t] + rng.normal();
        }
      });
      const weights = Float32Array.from({ length: points.shape[0] }, () => 0.1 + rng.float());
      for (const [k, seed] of [[6, 1], [6, 2], [1, 3], [9, 4]]) {
        const options = { k, weights, seed, iterations: 50 };
        const what = `kmeans k=${k} seed=${seed}`;
        const got = await backend.kmeans(points, options);
        const again = await backend.kmeans(points, options);
        check(
          got.inertia === again.inertia && got.assignments.every((a, i) => a === again.assignments[i]) &&
            got.centroids.data.every((x, i) => x === again.centroids.data[i]),
          () => `${what}: two calls differ`,
        );
        check(got.centroids.shape[0] === k && got.centroids.shape[1] === dim, () => `${what}: centroid shape`);
        const ref = kmeans(points, options);
        const rel = Math.abs(got.inertia - ref.inertia) / ref.inertia;
        check(rel <= 1e-4 * ts, () => `${what}: inertia ${got.inertia} vs reference ${ref.inertia}`);
        // Every assignment is (within float32 rounding) a nearest centroid.
        for (let i = 0; i < points.shape[0]; i++) {
          let best = Infinity, mine = 0;
          for (let c = 0; c < k; c++) {
            let s = 0;
            for (let t = 0; t < dim; t++) s += (points.data[i * dim + t] - got.centroids.data[c * dim + t]) ** 2;
            best = Math.min(best, s);
            if (c === got.assignments[i]) mine = s;
          }
          check(mine <= best * (1 + 1e-5 * ts) + 1e-6, () => `${what}: point ${i} is not at its nearest centroid`);
        }
      }
    },
  },
];
