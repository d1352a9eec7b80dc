/**
 * Round-to-nearest: every weight to its group's grid, independently. The baseline every other method must beat, and
 * what GPTQ reduces to when the Hessian is the identity.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { ShapeError } from "../core/errors.ts";
import { groupIndex } from "../core/grids/fit.ts";
import type { GridSpec } from "../core/grids/types.ts";
import { assertFinite, type FloatArray, type Matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { layerLoss } from "./layer_loss.ts";
import { type QuantizedLayer, statsBitsPerWeight } from "./result.ts";

/** Options of {@link rtn}. */
export interface RtnOptions {
  /** Bits of the uniform grid, 1-8; default 4. Ignored when `grid` is given. */
  readonly bits?: number;
  /** Any grid (NF4, FP4, FP8, ...) instead of the uniform `bits` grid. */
  readonly grid?: GridSpec;
  /** Columns per group, 0 = one grid per row; default 0. */
  readonly groupSize?: number;
  /** Symmetric uniform grid; default false. */
  readonly symmetric?: boolean;
  /** GPTQ's MSE grid search; default false. */
  readonly mse?: boolean;
  /** Kernels; default the current backend. */
  readonly backend?: Backend;
}

/**
 * Rounds a layer to nearest on a per-row or per-group grid.
 *
 * @param w `[rows, cols]` weights.
 * @param h optional `[cols, cols]` Hessian, only to report the layer loss.
 * @throws {NonFiniteError} on NaN/Inf weights; {OptionError} on bad bits or group size; {ShapeError} on a mismatched `h`.
 *
 * @example
 * ```ts
 * import { rtn } from "./rtn.ts";
 * import { fromRows } from "../core/tensor.ts";
 * const q = await rtn(fromRows([[0.1, -0.2, 0.3, 0.4]]), undefined, { bits: 2 });
 * console.assert(q.codes!.every((c) => c <= 3));
 * ```
 */
export async function rtn(w: Matrix, h?: Matrix<FloatArray>, options: RtnOptions = {}): Promise<QuantizedLayer> {
  const t0 = performance.now();
  const { bits = 4, groupSize = 0, backend = getBackend() } = options;
  const grid: GridSpec = options.grid ??
    { kind: "uniform", bits, symmetric: options.symmetric ?? false, mse: options.mse ?? false };
  const cols = w.shape[1];
  if (h && (h.shape[0] !== cols || h.shape[1] !== cols)) {
    throw new ShapeError(`rtn: Hessian is ${h.shape.join("×")} for a layer with ${cols} input columns`);
  }
  assertFinite(w, "rtn weights");
  const params = await backend.fitGrid(w, grid, groupSize);
  const index = groupIndex(cols, groupSize);
  const { codes, dequantized } = await backend.quantizeGrid(w, grid, params, index);
  return {
    method: "rtn",
    dequantized,
    grid,
    codes,
    params,
    groupIndex: index,
    groupSize,
    stats: {
      layerLoss: h ? await layerLoss(w, dequantized, h, backend) : 0,
      avgBits: grid.bits + statsBitsPerWeight(grid.bits, groupSize, cols, grid.kind === "uniform"),
      seconds: (performance.now() - t0) / 1000,
    },
  };
}
