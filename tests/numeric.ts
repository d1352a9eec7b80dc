/**
 * Helpers shared by the numeric tests: seeded random matrices, central-difference gradients, and inputs with
 * correlated columns (so that Hessians are far from diagonal and error feedback has something to do).
 *
 * @module
 */

import { createRng, randomNormal, type Rng } from "../core/random.ts";
import { type FloatArray, type Matrix, matrix, matrix64 } from "../core/tensor.ts";

/** A float64 matrix of normal values times `scale`. */
export function random64(seed: number, rows: number, cols: number, scale = 1): Matrix<Float64Array> {
  const rng = createRng(seed), m = matrix64(rows, cols);
  for (let i = 0; i < m.data.length; i++) m.data[i] = rng.normal() * scale;
  return m;
}

/** Central-difference gradient of `f` with respect to every entry of `x` (modified and restored in place). */
export function numericGrad(x: Float64Array, f: () => number, h = 1e-6): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + h;
    const up = f();
    x[i] = v - h;
    const down = f();
    x[i] = v;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

/** `Σ a_i·b_i` in float64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Inputs with strongly correlated columns: `x = (z·M + 0.3·z)·s_j` with a random mixing matrix `M` and optional
 * column scales `s_j` (unequal scales give act-order and Hessian weights something to sort).
 */
export function correlatedInputs(n: number, d: number, seed: number, columnScale?: (j: number) => number): Matrix {
  const rng = createRng(seed);
  const z = randomNormal(rng, n * d), mix = randomNormal(rng, d * d, 1 / Math.sqrt(d));
  const x = matrix(n, d);
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += z[t * d + k] * mix[k * d + j];
      x.data[t * d + j] = (s + 0.3 * z[t * d + j]) * (columnScale ? columnScale(j) : 1);
    }
  }
  return x;
}

/** `tr(B·E·H·Eᵀ)`, `E = W − Q`: the Kronecker-factored loss that an output-side Hessian `B` asks for. */
export function kroneckerLoss(w: Matrix, q: Matrix, h: Matrix<FloatArray>, b: Matrix<FloatArray>): number {
  const [r, c] = w.shape;
  const eh = new Float64Array(r * c); // E·H
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < c; j++) {
      let s = 0;
      for (let k = 0; k < c; k++) s += (w.data[i * c + k] - q.data[i * c + k]) * h.data[k * c + j];
      eh[i * c + j] = s;
    }
  }
  let total = 0;
  for (let i = 0; i < r; i++) {
    for (let k = 0; k < r; k++) {
      let s = 0; // (E·H·Eᵀ)[k, i]
      for (let j = 0; j < c; j++) s += eh[k * c + j] * (w.data[i * c + j] - q.data[i * c + j]);
      total += b.data[i * r + k] * s;
    }
  }
  return total;
}

/**
 * A random well-conditioned Hessian: `XᵀX/m + ridge·I` (float64) for `m = 2n` standard normal rows of `X` drawn from
 * `rng`, summed row by row.
 */
export function randomHessian(rng: Rng, n: number, ridge: number): Matrix<Float64Array> {
  const m = 2 * n, x = randomNormal(rng, m * n), h = matrix64(n, n);
  for (let t = 0; t < m; t++) {
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) h.data[i * n + j] += (x[t * n + i] * x[t * n + j]) / m;
  }
  for (let i = 0; i < n; i++) h.data[i * n + i] += ridge;
  return h;
}
