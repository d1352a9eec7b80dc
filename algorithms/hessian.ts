/**
 * GPTQ's layer-wise Hessian `H = (2/N) Σ_t x_t x_tᵀ`, accumulated over calibration batches without keeping them.
 * This accumulator is the one piece of state in the quantization flow, with an explicit life cycle:
 * `observe` batches, `finish` once, then drop it.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { assertFinite, type FloatArray, type Matrix, matrix, matrix64 } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";

/** Options of {@link createHessianAccumulator}. */
export interface HessianOptions {
  /** Accumulate in float32 (default, as GPTQ does; enough per ALGORITHMS.md) or float64. */
  readonly precision?: "f32" | "f64";
  /** Kernels to use; default the current backend. */
  readonly backend?: Backend;
}

/** A streaming accumulator of `(2/N) Σ x xᵀ`. */
export interface HessianAccumulator {
  /** Input dimension `d` (the layer's `in` features). */
  readonly dim: number;
  /** Rows observed so far. */
  readonly rows: number;
  /** Adds a batch of input rows `[n, d]`. @throws {ShapeError} on a wrong width, {NonFiniteError} on NaN/Inf. */
  observe(x: Matrix): Promise<void>;
  /**
   * Adds the Gram matrix `XᵀX` (`[d, d]`, both triangles) of a batch of `rows` rows formed elsewhere (a worker), as
   * `observe` would have added it: `observe(x)` equals `observeGram(G, n)` to the bit when `G` is the same backend's
   * `gramAccumulate` of `x` into a float64 zero matrix (one rounding into the sum either way).
   * @throws {ShapeError} on a wrong size, {NonFiniteError} on NaN/Inf.
   */
  observeGram(gram: Matrix<FloatArray>, rows: number): void;
  /** The Hessian `[d, d]` of everything observed. @throws {OptionError} when nothing was observed. */
  finish(): Matrix<FloatArray>;
}

/**
 * A new accumulator for inputs of width `dim`.
 *
 * @example
 * ```ts
 * import { createHessianAccumulator } from "./hessian.ts";
 * import { fromRows } from "../core/tensor.ts";
 * const acc = createHessianAccumulator(2);
 * await acc.observe(fromRows([[1, 0], [0, 2]]));
 * const h = acc.finish(); // (2/2)·(xxᵀ summed) = [[1, 0], [0, 4]]
 * console.assert(h.data[3] === 4);
 * ```
 */
export function createHessianAccumulator(dim: number, options: HessianOptions = {}): HessianAccumulator {
  const { precision = "f32", backend = getBackend() } = options;
  // Raw sums are kept and scaled once at the end: the same result as GPTQ's running mean, with fewer roundings.
  const sum = precision === "f64" ? matrix64(dim, dim) : matrix(dim, dim);
  let rows = 0;
  let finished = false;
  return {
    dim,
    get rows() {
      return rows;
    },
    async observe(x) {
      if (finished) throw new OptionError("Hessian accumulator already finished");
      if (x.shape[1] !== dim) throw new ShapeError(`Hessian of width ${dim} observed rows of width ${x.shape[1]}`);
      assertFinite(x, "calibration input");
      await backend.gramAccumulate(sum, x, 1);
      rows += x.shape[0];
    },
    observeGram(gram, n) {
      if (finished) throw new OptionError("Hessian accumulator already finished");
      if (gram.shape[0] !== dim || gram.shape[1] !== dim) {
        throw new ShapeError(`Hessian of width ${dim} given a Gram matrix of ${gram.shape[0]}×${gram.shape[1]}`);
      }
      assertFinite(gram, "calibration Gram matrix");
      // One rounding per element into the sum's precision, as gramAccumulate's fold with alpha = 1 does.
      const S = sum.data, G = gram.data;
      for (let i = 0; i < S.length; i++) S[i] += G[i];
      rows += n;
    },
    finish() {
      if (rows === 0) throw new OptionError("Hessian accumulator observed no rows");
      finished = true;
      const scale = 2 / rows;
      for (let i = 0; i < sum.data.length; i++) sum.data[i] *= scale;
      return sum;
    },
  };
}

/** The Hessian of one batch of inputs: `(2/N) XᵀX`. */
export async function hessianOf(x: Matrix, options: HessianOptions = {}): Promise<Matrix<FloatArray>> {
  const acc = createHessianAccumulator(x.shape[1], options);
  await acc.observe(x);
  return acc.finish();
}
