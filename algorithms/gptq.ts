/**
 * GPTQ (Frantar et al., arXiv 2210.17323): quantize a layer column by column, feeding each column's rounding error
 * forward through the Cholesky factor of the inverse Hessian so the later columns compensate for it.
 *
 * ```
 * W: [rows, cols]   H: [cols, cols]
 * dead columns (H_jj = 0) → H_jj = 1, W[:, j] = 0
 * act-order → permute columns by descending diag(H)
 * H += λ·mean(diag H)·I;   R = upper factor with H = R·Rᵀ      (GPTQ's U = R⁻¹; the CPU kernels never form it)
 * error-feedback loop over 128-column blocks          (Backend.gptqQuantize, W read through the permutation)
 * with an output-side Hessian B [rows, rows]: each column rounded row by row, errors fed to later rows through
 *   V = upper Cholesky factor of (B + λ_B·mean(diag B)·I)⁻¹     (minimises tr(B·E·H·Eᵀ): Kronecker B ⊗ H)
 * layer loss = Σ e² − δ·‖W − Q‖² − ‖(W − Q)_dead‖²      (GPTQ's identity; no rows × cols² product)
 * ```
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { fitGrid } from "../core/grids/fit.ts";
import type { GridParams, GridSpec } from "../core/grids/types.ts";
import { assertFinite, type FloatArray, invertPermutation, type Matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { layerLoss } from "./layer_loss.ts";
import { type FactorPrecision, prepareHessianFactor, prepareOutputHessian, zeroColumns } from "./prepare.ts";
import { type QuantizedLayer, statsBitsPerWeight } from "./result.ts";

/** Options of {@link gptq}. Defaults follow the reference implementation. */
export interface GptqOptions {
  /** Bits of the uniform grid, 2-8; default 4. Ignored when `grid` is given. */
  readonly bits?: number;
  /** Any grid (NF4, FP4, ...) instead of the uniform `bits` grid. */
  readonly grid?: GridSpec;
  /** Columns per group, 0 = one grid per row; default 0. */
  readonly groupSize?: number;
  /** Process columns by descending Hessian diagonal; default false. */
  readonly actOrder?: boolean;
  /** Fit all groups on the original weights before quantizing (with act-order: groups stay contiguous); default false. */
  readonly staticGroups?: boolean;
  /** Symmetric uniform grid; default false. */
  readonly symmetric?: boolean;
  /** GPTQ's MSE grid search; default false. */
  readonly mse?: boolean;
  /** Relative damping `λ`: `H += λ·mean(diag H)·I`; default 0.01. */
  readonly damping?: number;
  /** Columns per lazy-update block; default 128. */
  readonly blockSize?: number;
  /** Precision of the factorisation of `H` into `R` ({@link FactorPrecision}); default "f64". */
  readonly factorPrecision?: FactorPrecision;
  /**
   * `[rows, rows]` output-side Hessian `B`: the layer's loss is taken as `tr(B·E·H·Eᵀ)` (a Kronecker-factored Hessian
   * `B ⊗ H`, as K-FAC approximates a loss's Fisher) instead of `tr(E·H·Eᵀ)`, so rounding is coupled across rows (see
   * `GptqKernelArgs.rowFactor`). Default: none (`B = I`: GPTQ; a diagonal `B` changes nothing either). Every backend
   * runs this loop in TS: `rows²·cols/2` more multiply-adds, rows in sequence within each column.
   */
  readonly outputHessian?: Matrix<FloatArray>;
  /** Relative damping of `outputHessian`: `B += λ_B·mean(diag B)·I`; default 0.1. */
  readonly outputDamping?: number;
  /**
   * With `outputHessian`: round each column's rows by descending `B_ii` (act-order for the rows: the outputs the loss
   * weighs most are rounded first and the others absorb their errors); default false. It lowers `tr(B·E·H·Eᵀ)` on
   * layers whose `B_ii` vary, but gave no better perplexity on llama-12m (README, "Coupled rows").
   */
  readonly outputOrder?: boolean;
  /** Kernels; default the current backend. */
  readonly backend?: Backend;
}

/**
 * Quantizes one linear layer with GPTQ.
 *
 * @param w `[rows, cols]` weights (out × in).
 * @param h `[cols, cols]` Hessian of the layer's inputs (e.g. `2/N·XᵀX`), not yet damped.
 * @returns the quantized layer, in the original column order, with `tr((W−Ŵ)H(W−Ŵ)ᵀ)` in its stats.
 * @throws {ShapeError} when `h` does not match `w`; {NonFiniteError} on NaN/Inf inputs; {OptionError} on bad options;
 *   {NotPositiveDefiniteError} when even heavy extra damping cannot make `H` positive definite.
 *
 * @example
 * ```ts
 * import { gptq } from "./gptq.ts";
 * import { eye, fromRows, toFloat32 } from "../core/tensor.ts";
 * const w = fromRows([[0.1, -0.4, 0.25], [0.3, 0.2, -0.1]]);
 * const q = await gptq(w, toFloat32(eye(3)), { bits: 2 });
 * console.assert(q.dequantized.shape[1] === 3 && q.stats.avgBits > 2);
 * ```
 */
export async function gptq(w: Matrix, h: Matrix<FloatArray>, options: GptqOptions = {}): Promise<QuantizedLayer> {
  const t0 = performance.now();
  const {
    bits = 4,
    groupSize = 0,
    actOrder = false,
    staticGroups = false,
    damping = 0.01,
    blockSize = 128,
    factorPrecision = "f64",
    backend = getBackend(),
  } = options;
  const grid: GridSpec = options.grid ??
    { kind: "uniform", bits, symmetric: options.symmetric ?? false, mse: options.mse ?? false };
  const cols = w.shape[1];
  if (h.shape[0] !== cols || h.shape[1] !== cols) {
    throw new ShapeError(`gptq: Hessian is ${h.shape.join("×")} for a layer with ${cols} input columns`);
  }
  if (!(damping >= 0)) throw new OptionError(`gptq: damping must be ≥ 0, got ${damping}`);
  assertFinite(w, "gptq weights");
  assertFinite(h, "gptq Hessian");

  // Per-row grids are fitted on the weights as given, before dead columns are zeroed (the reference's order).
  const perRow = groupSize === 0 ? fitGrid(w, grid, 0) : undefined;

  const prepared = await prepareHessianFactor(h, { damping, order: actOrder, factorPrecision, backend });
  const { r, permutation: perm } = prepared;
  const W = zeroColumns(w, prepared.dead);
  // Static groups are fitted on the dead-zeroed weights in their original order.
  const staticParams = staticGroups && groupSize > 0 ? fitGrid(W, grid, groupSize) : undefined;

  const groups = perRow
    ? { kind: "fixed" as const, params: perRow, groupOfColumn: new Int32Array(cols) }
    : staticParams
    ? {
      kind: "fixed" as const,
      params: staticParams,
      groupOfColumn: Int32Array.from({ length: cols }, (_, k) => Math.floor((perm ? perm[k] : k) / groupSize)),
    }
    : { kind: "dynamic" as const, groupSize };
  const rows = await prepareOutputHessian("gptq", w.shape[0], options, { factorPrecision, backend });
  // The kernel reads W through the permutation and returns values and codes in the original column order.
  const out = await backend.gptqQuantize({
    w: W,
    permutation: perm,
    r,
    grid,
    blockSize,
    groups,
    rowFactor: rows?.u,
    rowOrder: rows?.permutation,
  });
  const { dequantized, codes } = out;

  // Dynamic groups were formed in processing order, so column c belongs to the group of its processing position
  // (GPTQ's g_idx); fixed groups already index original columns.
  const inv = perm ? invertPermutation(perm) : undefined;
  const groupIndex = groups.kind === "fixed"
    ? (perRow ? groups.groupOfColumn : Int32Array.from({ length: cols }, (_, c) => Math.floor(c / groupSize)))
    : Int32Array.from({ length: cols }, (_, c) => Math.floor((inv ? inv[c] : c) / groupSize));
  const params: GridParams = out.params;

  const loss = out.errorEnergy === undefined ? await layerLoss(w, dequantized, h, backend) : await undampedLoss(
    out.errorEnergy,
    W,
    dequantized,
    prepared.damping,
    (c) => h.data[c * (cols + 1)] === 0,
    () => layerLoss(w, dequantized, h, backend),
  );
  const codeBits = grid.bits;
  return {
    method: "gptq",
    dequantized,
    grid,
    codes,
    params,
    groupIndex,
    groupSize,
    permutation: perm,
    stats: {
      layerLoss: loss,
      avgBits: codeBits + statsBitsPerWeight(codeBits, groupSize, cols, grid.kind === "uniform"),
      seconds: (performance.now() - t0) / 1000,
      damping: prepared.damping,
    },
  };
}

/**
 * `tr(E·H·Eᵀ)` for the undamped Hessian from the kernel's `Σ e²`, which is `tr(E·H_d·Eᵀ)` for the damped one that `R`
 * factors: `H_d = H + δ·I` with dead columns' zero diagonal raised to 1 first (their rows of `H` are zero). So
 * `tr(E·H·Eᵀ) = Σ e² − δ·‖E‖² − ‖E_dead‖²`, `E = W − Q` with dead columns zeroed. The difference
 * loses relative accuracy as the subtracted part approaches `Σ e²`; past 90 % the direct product is used instead.
 */
async function undampedLoss(
  energy: number,
  w: Matrix,
  q: Matrix,
  damping: number,
  isDead: (column: number) => boolean,
  direct: () => Promise<number>,
): Promise<number> {
  const [rows, cols] = w.shape;
  const perColumn = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0, k = i * cols; j < cols; j++, k++) perColumn[j] += (w.data[k] - q.data[k]) ** 2;
  }
  let correction = 0;
  for (let j = 0; j < cols; j++) correction += perColumn[j] * (isDead(j) ? 1 + damping : damping);
  if (!(correction <= 0.9 * energy)) return await direct();
  return Math.max(0, energy - correction);
}
