/**
 * The preparation every Hessian-based method shares (the first lines of GPTQ's `fasterquant`):
 *
 * ```
 * dead columns (H_jj = 0) → H_jj = 1, W[:, j] = 0
 * optional permutation (act-order: descending diag H)
 * H += λ·mean(diag H)·I;   U = upper Cholesky factor of H⁻¹   (more damping if H is still not positive definite)
 *                          or R = upper factor with H = R·Rᵀ   (GPTQ's kernel: U = R⁻¹)
 * ```
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { choleskyWithRetry } from "../core/linalg/cholesky.ts";
import {
  assertFinite,
  clone,
  diagonal,
  type FloatArray,
  type Matrix,
  permuteColumns,
  toFloat32,
  toFloat64,
} from "../core/tensor.ts";

/**
 * Precision of the factorisation of `H` into GPTQ's `U`: "f64", or "f32" as the reference GPTQ computes it (half the
 * cost on the WASM backend, which factors a float32 Hessian in float32).
 */
export type FactorPrecision = "f64" | "f32";

/** A layer ready for error feedback, in processing order. */
export interface PreparedLayer {
  /** `[rows, cols]` weights with dead columns zeroed, original column order. */
  readonly deadZeroed: Matrix;
  /** `[rows, cols]` the same in processing order. */
  readonly w: Matrix;
  /** `[cols, cols]` damped Hessian in processing order, float32 with `factorPrecision` "f32", else float64. */
  readonly h: Matrix<FloatArray>;
  /** `[cols, cols]` upper factor with `H⁻¹ = UᵀU`, processing order, in the requested `factorPrecision`. */
  readonly u: Matrix<FloatArray>;
  /** `permutation[k]` is the original column processed `k`-th; undefined for the identity. */
  readonly permutation?: Int32Array;
  /** Absolute damping added to the diagonal: the requested `λ·mean(diag H)` plus any retry. */
  readonly damping: number;
}

/** Options of {@link prepareLayer}. */
export interface PrepareOptions {
  /** Relative damping `λ`. */
  readonly damping: number;
  /** `true`: act-order (descending diagonal, ties in column order); or an explicit processing order. */
  readonly order?: boolean | Int32Array;
  /** Precision of the factorisation that gives `U` or `R` ({@link FactorPrecision}); default "f64". */
  readonly factorPrecision?: FactorPrecision;
  readonly backend: Backend;
}

/** Columns by descending `diag(H)`; equal diagonals keep their column order, so the result is deterministic. */
export function actOrder(h: Matrix<FloatArray>): Int32Array {
  return orderByDiagonal(diagonal(h));
}

function orderByDiagonal(d: ArrayLike<number>): Int32Array {
  return Int32Array.from({ length: d.length }, (_, j) => j).sort((a, b) => d[b] - d[a] || a - b);
}

/** `h` in float32 or float64, rows and columns reordered when `perm` is given: `out[i][j] = h[perm[i]][perm[j]]`. */
function symmetricCopy(h: Matrix<FloatArray>, perm: Int32Array | undefined, f32: boolean): Matrix<FloatArray> {
  const n = h.shape[0];
  const out = f32 ? new Float32Array(n * n) : new Float64Array(n * n), a = h.data;
  if (!perm) out.set(a);
  else permutedCopy(out, a, perm, n);
  return { data: out, shape: [n, n] };
}

/**
 * The permuted copy's loop. Each source row is first copied whole into a scratch row (a sequential read the
 * prefetcher follows), then gathered from there in cache: gathering straight from a large `h` missed the cache on
 * nearly every element (a 4096² float64 `h` into float32: 180–250 ms, against 95–125 ms this way).
 */
function permutedCopy(out: FloatArray, a: FloatArray, perm: Int32Array, n: number): void {
  const row = a instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) {
    row.set(a.subarray(perm[i] * n, perm[i] * n + n));
    const dst = i * n;
    for (let j = 0; j < n; j++) out[dst + j] = row[perm[j]];
  }
}

/**
 * Dead columns, the processing order, damping and GPTQ's `U`, without modifying `w` or `h`.
 *
 * @throws {NotPositiveDefiniteError} when even heavy extra damping cannot make `H` positive definite.
 */
export async function prepareLayer(
  w: Matrix,
  h: Matrix<FloatArray>,
  options: PrepareOptions,
): Promise<PreparedLayer> {
  const { h: Hp, u, permutation, dead, damping } = await prepareHessian(h, options);
  // A copy in every case: engines update `w` in place.
  const W = dead.length > 0 ? zeroColumns(w, dead) : clone(w);
  const Wp = permutation ? permuteColumns(W, permutation) : W;
  return { deadZeroed: W, w: Wp, h: Hp, u, permutation, damping };
}

/** The Hessian half of {@link PreparedLayer}, and the dead columns (original indices). */
export interface PreparedHessian extends Pick<PreparedLayer, "h" | "u" | "permutation" | "damping"> {
  readonly dead: readonly number[];
}

/**
 * {@link prepareLayer} without the weights: dead columns, processing order, damping and `U` of `h` alone (what BiLLM's
 * separate salience Hessian needs).
 *
 * @throws {OptionError} for an unknown `factorPrecision`; {@link NotPositiveDefiniteError} as {@link prepareLayer}.
 */
export async function prepareHessian(h: Matrix<FloatArray>, options: PrepareOptions): Promise<PreparedHessian> {
  const { h: Hp, permutation, dead, damping } = dampedHessian(h, options);
  const { u, extraDamping } = await inverseUpperFactor(Hp, options.backend, options.factorPrecision);
  return { h: Hp, u, permutation, dead, damping: damping + extraDamping };
}

/** {@link PreparedHessian} with `R` (`H = R·Rᵀ`) in place of `U = R⁻¹`: what `Backend.gptqQuantize` takes. */
export interface PreparedFactor extends Omit<PreparedHessian, "u"> {
  /** `[cols, cols]` upper factor with `H = R·Rᵀ` of the damped Hessian, processing order, in `factorPrecision`. */
  readonly r: Matrix<FloatArray>;
}

/**
 * {@link prepareHessian} for GPTQ's kernel: the same dead columns, order and damping (and the same retries with more
 * damping), factored by `Backend.reverseCholesky` into `R` instead of `U`, which saves the triangular inverse.
 *
 * @throws {OptionError} for an unknown `factorPrecision`; {@link NotPositiveDefiniteError} as {@link prepareLayer}.
 */
export async function prepareHessianFactor(h: Matrix<FloatArray>, options: PrepareOptions): Promise<PreparedFactor> {
  const { h: Hp, permutation, dead, damping } = dampedHessian(h, options);
  const { factor, damping: extra } = await choleskyWithRetry<FloatArray>(
    Hp,
    { initialDamping: 1e-4 },
    (m) => options.backend.reverseCholesky(m),
  );
  return { h: Hp, r: factor, permutation, dead, damping: damping + extra };
}

/**
 * The shared steps of {@link prepareHessian}: dead columns, processing order, and the damped copy of `h` in the
 * factorisation's precision.
 */
function dampedHessian(
  h: Matrix<FloatArray>,
  { damping, order = false, factorPrecision = "f64" }: PrepareOptions,
): Omit<PreparedHessian, "u"> {
  if (factorPrecision !== "f64" && factorPrecision !== "f32") {
    throw new OptionError(`factorPrecision must be "f64" or "f32", got ${JSON.stringify(factorPrecision)}`);
  }
  const cols = h.shape[0];
  const diag = diagonal(h);
  const dead: number[] = [];
  for (let j = 0; j < cols; j++) {
    if (diag[j] === 0) {
      dead.push(j);
      diag[j] = 1;
    }
  }
  const permutation = order === true ? orderByDiagonal(diag) : order === false ? undefined : order;
  if (permutation && permutation.length !== cols) {
    throw new ShapeError(`permutation of length ${permutation.length} for ${cols} columns`);
  }
  // H is copied once, permuted or as it is, into the factorisation's precision. Its diagonal (dead columns raised to
  // 1, then GPTQ's damping added) is formed in float64 from the source and rounded once.
  const Hp = symmetricCopy(h, permutation, factorPrecision === "f32");
  const d = Float64Array.from({ length: cols }, (_, k) => diag[permutation ? permutation[k] : k]);
  let mean = 0;
  for (let k = 0; k < cols; k++) mean += d[k];
  const damp = damping * mean / Math.max(cols, 1);
  for (let k = 0; k < cols; k++) Hp.data[k * cols + k] = d[k] + damp;
  return { h: Hp, permutation, dead, damping: damp };
}

/** An engine's options for an output-side Hessian `B` (OAC's coupled rows). */
export interface OutputHessianOptions {
  /** `[rows, rows]` `B`; none: rows independent. */
  readonly outputHessian?: Matrix<FloatArray>;
  /** Relative damping of `B`; default 0.1. */
  readonly outputDamping?: number;
  /** Round rows by descending `B_ii`; default false. */
  readonly outputOrder?: boolean;
}

/**
 * The rows' side of coupled rows for an engine (`method` names it in errors): `B` checked against the layer's `rows`,
 * damped and factored as {@link prepareHessian} does (`u` = upper factor of the damped `B⁻¹`, in the rows' processing
 * order `permutation`; rows whose output nothing moves get a unit diagonal, as dead columns do). Undefined without `B`.
 *
 * @throws {ShapeError} when `B` is not `[rows, rows]`; {OptionError} for a negative damping; {NonFiniteError} on NaN/Inf.
 */
export async function prepareOutputHessian(
  method: string,
  rows: number,
  { outputHessian: b, outputDamping = 0.1, outputOrder = false }: OutputHessianOptions,
  { factorPrecision, backend }: { factorPrecision?: FactorPrecision; backend: Backend },
): Promise<PreparedHessian | undefined> {
  if (!b) return undefined;
  if (b.shape[0] !== rows || b.shape[1] !== rows) {
    throw new ShapeError(`${method}: output Hessian is ${b.shape.join("×")} for a layer with ${rows} rows`);
  }
  if (!(outputDamping >= 0)) throw new OptionError(`${method}: outputDamping must be ≥ 0, got ${outputDamping}`);
  assertFinite(b, `${method} output Hessian`);
  return await prepareHessian(b, { damping: outputDamping, order: outputOrder, factorPrecision, backend });
}

/** Adds `λ·mean(diag H)` to the diagonal of `h` in place; returns the absolute amount added. */
export function addRelativeDamping(h: Matrix<Float64Array>, lambda: number): number {
  const n = h.shape[0];
  let mean = 0;
  for (let j = 0; j < n; j++) mean += h.data[j * n + j];
  const damp = lambda * mean / Math.max(n, 1);
  for (let j = 0; j < n; j++) h.data[j * n + j] += damp;
  return damp;
}

/**
 * GPTQ's `U` (upper, `H⁻¹ = UᵀU`) through the backend's kernel (one factorisation and one triangular inverse, no
 * second factorisation of an ill-conditioned `H⁻¹`), from `H` in `precision` (converted when it is not already). If
 * `H` is not positive definite even after GPTQ's damping, more damping is added (and reported); in float32 the extra
 * damping is added to the float32 diagonal.
 */
export async function inverseUpperFactor(
  h: Matrix<FloatArray>,
  backend: Backend,
  precision: FactorPrecision = "f64",
): Promise<{ u: Matrix<FloatArray>; extraDamping: number }> {
  const f32 = precision === "f32";
  const inPrecision = f32 ? (h.data instanceof Float32Array ? h : toFloat32(h)) : toFloat64Once(h);
  const { factor, damping } = await choleskyWithRetry<FloatArray>(
    inPrecision,
    { initialDamping: 1e-4 },
    (m) => backend.upperCholeskyOfInverse(m),
  );
  return { u: factor, extraDamping: damping };
}

/**
 * `w` with the `dead` columns (zero Hessian diagonal) zeroed, as GPTQ does: a new matrix when there are any, `w`
 * itself when there are none (callers treat the result as read-only).
 */
export function zeroColumns(w: Matrix, dead: readonly number[]): Matrix {
  if (dead.length === 0) return w;
  const [rows, cols] = w.shape;
  const W = clone(w);
  for (const j of dead) for (let i = 0; i < rows; i++) W.data[i * cols + j] = 0;
  return W;
}

/** `m` as float64: itself when it already is. */
function toFloat64Once(m: Matrix<FloatArray>): Matrix<Float64Array> {
  return m.data instanceof Float64Array ? m as Matrix<Float64Array> : toFloat64(m);
}
