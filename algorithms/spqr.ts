/**
 * SpQR (Dettmers et al., arXiv 2306.03078): GPTQ's error feedback with small groups whose scales and zeros are
 * themselves quantized, plus a sparse set of outliers kept in full precision.
 *
 * ```
 * W: [rows, cols]   H: [cols, cols]
 * dead columns (H_jj = 0) → H_jj = 1, W[:, j] = 0;  act-order → permute by descending diag(H)
 * H += λ·mean(diag H)·I;   U = upper Cholesky factor of H⁻¹
 * τ = outlierThreshold · mean_j(Var_i W[:, j] / U_jj²)
 * for each block of B columns, for each column j:
 *   if j % g == 0: leave-one-out test on W[:, j:j+g] (current weights) → likely outliers replaced by the row mean,
 *                  min-max scale/zero per row, then scales and zeros quantized (statBits, groups of statGroup rows)
 *   q = quant(w_j);  outliers: ((w_j − q)/U_jj)² > τ  → q = w_j (kept exactly)
 *   e = (w_j − q)/U_jj;  W[:, j+1:block_end] −= e ⊗ U[j, j+1:block_end]
 * W[:, block_end:] −= E_block · U[block, block_end:]
 * ```
 *
 * With an output-side Hessian `B` (`outputHessian`, OAC's coupled rows) each column is rounded row by row as in
 * `GptqOptions.outputHessian`: a row's rounding error (zero for an outlier) moves the later rows of its column through
 * the upper factor of `B⁻¹`, the outlier test takes each row's own rounding error, and the column's error for the
 * feedback is measured before the rows' feedback.
 *
 * Grid choices follow the reference `spqr_engine.py` / `quant_groups.py` (where ALGORITHMS.md is silent or differs):
 * the range of a group is its true `[min, max]` (not widened to contain 0, unlike GPTQ's grid) and the zero point is
 * a real number (`round_zero = False`), since both are then quantized to `statBits` anyway; `roundZero: true` gives the
 * reference's `round_zero` mode. Groups are refitted on the *current* weights (the reference updates `W` in place),
 * not on the block-start weights GPTQ's kernel uses.
 *
 * The column loop runs here in TypeScript (the lazy block updates go through `backend.matmul`): outliers and the
 * leave-one-out fit do not fit `Backend.gptqQuantize`.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { roundHalfEven, uniformCode, uniformValue } from "../core/grids/uniform.ts";
import type { GridParams, UniformGrid } from "../core/grids/types.ts";
import { assertFinite, type FloatArray, invertPermutation, type Matrix, matrix, transpose } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { type FactorPrecision, prepareLayer, prepareOutputHessian } from "./prepare.ts";
import { feedLaterRows } from "../core/quant/gptq_kernel.ts";
import { layerLoss } from "./layer_loss.ts";
import type { Outliers, QuantizedLayer } from "./result.ts";

const fround = Math.fround;

/** Bits SpQR's accounting charges per outlier: a 16-bit value and a 16-bit column index (the paper's ~32 bits). */
export const SPQR_OUTLIER_BITS = 32;
/** Bits of an unquantized statistic, and of each second-level scale and zero (fp16, as the reference counts them). */
export const SPQR_FULL_STAT_BITS = 16;

/** Options of {@link spqr}. Defaults follow the paper's main setting (w3, groups of 16, 3-bit statistics). */
export interface SpqrOptions {
  /** Bits of the weight codes, 2-8; default 3. */
  readonly bits?: number;
  /** Columns per group (β₁), 0 = one group per row; default 16. */
  readonly groupSize?: number;
  /**
   * Bits of the quantized scales and zeros, 1-8, or 0 to keep them unquantized (kept as float32, counted as 16-bit
   * as the reference counts them); default 3.
   */
  readonly statBits?: number;
  /** Rows per group of the second-level (statistics) quantization (β₂); default 16. */
  readonly statGroup?: number;
  /**
   * Outlier threshold relative to `mean_j(Var_i W[:, j] / U_jj²)` (the reference's `outlier_relative_threshold`);
   * default 0.2. `Infinity` disables outliers (and the leave-one-out test).
   */
  readonly outlierThreshold?: number;
  /** Skip the leave-one-out test: fit each group on all its weights (faster, usually worse); default false. */
  readonly simplifiedOutliers?: boolean;
  /** Round zero points to integers (the reference's `round_zero`); default false. */
  readonly roundZero?: boolean;
  /** Process columns by descending Hessian diagonal (the reference's `permutation_order = "act_order"`); default false. */
  readonly actOrder?: boolean;
  /** Relative damping `λ`: `H += λ·mean(diag H)·I`; default 0.01. */
  readonly damping?: number;
  /** Precision of the factorisation of `H` into `U` ({@link FactorPrecision}); default "f64". */
  readonly factorPrecision?: FactorPrecision;
  /** Columns per lazy-update block; default 128. */
  readonly blockSize?: number;
  /**
   * `[rows, rows]` output-side Hessian `B`: rounding coupled across rows for the loss `tr(B·E·H·Eᵀ)`, as
   * `GptqOptions.outputHessian`. Default: none (`B = I`: SpQR as published).
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

/** A layer quantized by {@link spqr}. */
export interface SpqrLayer extends QuantizedLayer {
  /** Always "spqr". */
  readonly method: "spqr";
  /** The `bits`-bit uniform grid of the codes. */
  readonly grid: UniformGrid;
  /**
   * `[rows, cols]` codes; `ŵ = scale·(code − zero)` with the group's (dequantized) `params`. At an outlier's position
   * the code is unused: the outlier's value replaces it.
   */
  readonly codes: Uint8Array;
  /** `[rows, groups]` dequantized scales and zeros actually used (zeros need not be integers). */
  readonly params: GridParams;
  /** `cols` group indices: original column `c` uses `params` group `groupIndex[c]` (groups follow processing order). */
  readonly groupIndex: Int32Array;
  /** Columns per group as requested (0 = whole rows). */
  readonly groupSize: number;
  /** Outliers sorted by row then column, in the original column order; their values are also in `dequantized`. */
  readonly outliers: Outliers;
  /** The absolute outlier threshold τ on `((w − q)/U_jj)²` (Infinity when disabled). */
  readonly outlierThreshold: number;
}

/**
 * Quantizes one linear layer with SpQR.
 *
 * Average bits per weight (`stats.avgBits`), the paper's accounting (the reference's `get_average_number_of_bits`),
 * counted exactly over the layer's groups (equal to the formula when `groupSize` divides `cols` and `statGroup`
 * divides `rows`):
 *
 * `bits + (scaleBits + zeroBits)/g + k·(16 + 16)/(g·statGroup) + 32·outlierFraction`
 *
 * where `scaleBits = statBits` (16 when unquantized), `zeroBits = statBits` (with `roundZero` and `statBits ≥ bits`
 * the integer zero is stored in `bits` bits instead, as the reference; 16 when unquantized), `k` is the number of
 * statistics that are quantized (each quantized statistic group carries a 16-bit scale and a 16-bit zero), and each
 * outlier costs a 16-bit value plus a 16-bit column index (CSR row pointers are not counted, as in the paper). The
 * defaults give `3 + 6/16 + 64/256 = 3.625` bits plus the outliers.
 *
 * @param w `[rows, cols]` weights (out × in).
 * @param h `[cols, cols]` Hessian of the layer's inputs, not yet damped.
 * @returns the layer in the original column order, outliers included in `dequantized`.
 * @throws {ShapeError} when `h` does not match `w`; {NonFiniteError} on NaN/Inf inputs; {OptionError} on bad options;
 *   {NotPositiveDefiniteError} when even heavy extra damping cannot make `H` positive definite.
 *
 * @example
 * ```ts
 * import { spqr } from "./spqr.ts";
 * import { eye, matrix, toFloat32 } from "../core/tensor.ts";
 * const w = matrix(2, 16, Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)));
 * const q = await spqr(w, toFloat32(eye(16)), { bits: 2 });
 * console.assert(q.stats.avgBits >= 2 + 6 / 16);
 * ```
 */
export async function spqr(w: Matrix, h: Matrix<FloatArray>, options: SpqrOptions = {}): Promise<SpqrLayer> {
  const t0 = performance.now();
  const {
    bits = 3,
    groupSize = 16,
    statBits = 3,
    statGroup = 16,
    outlierThreshold = 0.2,
    simplifiedOutliers = false,
    roundZero = false,
    actOrder = false,
    damping = 0.01,
    blockSize = 128,
    backend = getBackend(),
  } = options;
  const [rows, cols] = w.shape;
  checkOptions(options, { bits, groupSize, statBits, statGroup, outlierThreshold, damping, blockSize });
  if (h.shape[0] !== cols || h.shape[1] !== cols) {
    throw new ShapeError(`spqr: Hessian is ${h.shape.join("×")} for a layer with ${cols} input columns`);
  }
  assertFinite(w, "spqr weights");
  assertFinite(h, "spqr Hessian");
  const maxq = 2 ** bits - 1;
  const g = groupSize === 0 ? Math.max(cols, 1) : groupSize;
  const groups = Math.ceil(cols / g);

  // Dead columns, act-order and damping exactly as gptq.ts, so that SpQR without its extras is GPTQ.
  const prepared = await prepareLayer(w, h, {
    damping,
    order: actOrder,
    factorPrecision: options.factorPrecision,
    backend,
  });
  const { w: Wp, u, permutation: perm } = prepared;
  // [cols, cols], upper, in float32 as the reference (and GPTQ's kernel) uses it.
  const U = u.data instanceof Float32Array ? u.data : new Float32Array(u.data);
  const Ud = Float64Array.from({ length: cols }, (_, j) => U[j * cols + j]);

  // The rows' factor (upper, of the damped inverse of B) and a column's values as its rows' errors move them.
  const coupled = await prepareOutputHessian("spqr", rows, options, {
    factorPrecision: options.factorPrecision,
    backend,
  });
  const V = coupled && (coupled.u.data instanceof Float32Array ? coupled.u.data : new Float32Array(coupled.u.data));
  const rowOrder = coupled?.permutation;
  const target = new Float32Array(rows);

  const tau = outlierThreshold === Infinity ? Infinity : outlierThreshold * outlierScale(Wp, Ud);
  const fit: FitSettings = { maxq, roundZero, statBits, statGroup, bits };

  const Wt = transpose(Wp).data; // [cols, rows]: a column of W is contiguous; updated in place as in the reference
  const Qt = new Float32Array(cols * rows);
  const codesT = new Uint8Array(cols * rows);
  const outlierT = new Uint8Array(cols * rows);
  const params: GridParams = {
    rows,
    groups,
    scale: new Float32Array(rows * groups),
    zero: new Float32Array(rows * groups),
  };
  const scale = new Float32Array(rows), zero = new Float32Array(rows); // the current group of every row

  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, cols), count = i2 - i1;
    const E = new Float32Array(count * rows); // [count, rows] scaled errors
    for (let i = 0; i < count; i++) {
      const j = i1 + i;
      if (j % g === 0) {
        const gi = j / g, width = Math.min(g, cols - j);
        fitGroup(Wt, rows, j, width, Ud, simplifiedOutliers ? Infinity : tau, fit, scale, zero);
        for (let r = 0; r < rows; r++) params.scale[r * groups + gi] = scale[r], params.zero[r * groups + gi] = zero[r];
      }
      const d = Ud[j], col = j * rows;
      if (V) target.set(Wt.subarray(col, col + rows));
      for (let s = 0; s < rows; s++) {
        const r = rowOrder ? rowOrder[s] : s;
        const x = Wt[col + r], t = V ? target[r] : x;
        const code = gridCode(t, scale[r], zero[r], maxq);
        let q = uniformValue(code, scale[r], zero[r]);
        const own = fround(fround(t - q) / d);
        if (own * own > tau) q = t, outlierT[col + r] = 1; // kept in full precision: no rounding error of its own
        if (V && q !== t) feedLaterRows(target, V, s, t - q, rowOrder);
        codesT[col + r] = code;
        Qt[col + r] = q;
        // Measured before the rows' feedback, as GPTQ's coupled rows (the later columns carry the rows' share).
        E[i * rows + r] = fround(fround(x - q) / d);
      }
      for (let k = i + 1; k < count; k++) {
        const uk = U[j * cols + i1 + k];
        if (uk === 0) continue;
        const o = (i1 + k) * rows;
        for (let r = 0; r < rows; r++) Wt[o + r] = fround(Wt[o + r] - fround(E[i * rows + r] * uk));
      }
    }
    if (i2 < cols) {
      // Wt[i2:, :] −= U[i1:i2, i2:]ᵀ · E, as GPTQ's lazy batch update.
      const rest = cols - i2;
      const ublock = matrix(count, rest);
      for (let i = 0; i < count; i++) {
        for (let k = 0; k < rest; k++) ublock.data[i * rest + k] = U[(i1 + i) * cols + i2 + k];
      }
      const update = (await backend.matmul(ublock, matrix(count, rows, E), { transA: true })).data; // [rest, rows]
      const base = i2 * rows;
      for (let t = 0; t < update.length; t++) Wt[base + t] = fround(Wt[base + t] - update[t]);
    }
  }

  // Back to [rows, cols] and the original column order.
  const inv = perm ? invertPermutation(perm) : undefined;
  const dequantized = matrix(rows, cols);
  const codes = new Uint8Array(rows * cols);
  const outRows: number[] = [], outCols: number[] = [], outValues: number[] = [];
  for (let i = 0; i < rows; i++) {
    for (let c = 0; c < cols; c++) {
      const k = inv ? inv[c] : c; // processing position of original column c
      dequantized.data[i * cols + c] = Qt[k * rows + i];
      codes[i * cols + c] = codesT[k * rows + i];
      if (outlierT[k * rows + i]) outRows.push(i), outCols.push(c), outValues.push(Qt[k * rows + i]);
    }
  }
  const groupIndex = Int32Array.from({ length: cols }, (_, c) => Math.floor((inv ? inv[c] : c) / g));
  const outliers: Outliers = {
    rows: Int32Array.from(outRows),
    cols: Int32Array.from(outCols),
    values: Float32Array.from(outValues),
  };

  return {
    method: "spqr",
    dequantized,
    grid: { kind: "uniform", bits },
    codes,
    params,
    groupIndex,
    groupSize,
    permutation: perm,
    outliers,
    outlierThreshold: tau,
    stats: {
      layerLoss: await layerLoss(w, dequantized, h, backend),
      avgBits: spqrAverageBits({ rows, cols, bits, groupSize, statBits, statGroup, roundZero }, outRows.length),
      seconds: (performance.now() - t0) / 1000,
      damping: prepared.damping,
    },
  };
}

/** The storage layout {@link spqrAverageBits} charges for. */
export interface SpqrLayout {
  /** Output rows of the layer. */
  readonly rows: number;
  /** Input columns of the layer. */
  readonly cols: number;
  /** Bits per weight code. */
  readonly bits: number;
  /** Columns per group, 0 = whole rows. */
  readonly groupSize: number;
  /** 0 = unquantized statistics (16 bits each). */
  readonly statBits: number;
  /** Rows per group of the second-level quantization. */
  readonly statGroup: number;
  /** Integer zeros (the reference's `round_zero`); default false. */
  readonly roundZero?: boolean;
}

/**
 * Average bits per weight of a SpQR layer with `outlierCount` outliers; see {@link spqr} for the formula. Groups and
 * statistic groups at the edges may be shorter; every one is charged in full.
 *
 * @example
 * ```ts
 * import { spqrAverageBits } from "./spqr.ts";
 * const b = spqrAverageBits({ rows: 16, cols: 16, bits: 3, groupSize: 16, statBits: 3, statGroup: 16 }, 0);
 * console.assert(b === 3 + 6 / 16 + 64 / 256);
 * ```
 */
export function spqrAverageBits(layout: SpqrLayout, outlierCount: number): number {
  const { rows, cols, bits, groupSize, statBits, statGroup, roundZero = false } = layout;
  const n = rows * cols;
  if (n === 0) return 0;
  const groups = groupSize === 0 ? 1 : Math.ceil(cols / groupSize);
  const statGroups = Math.ceil(rows / statGroup) * groups; // per statistic kind
  const quantized = statBits > 0;
  const zeroQuantized = quantized && !(roundZero && statBits >= bits);
  const scaleBits = quantized ? statBits : SPQR_FULL_STAT_BITS;
  const zeroBits = zeroQuantized ? statBits : roundZero ? bits : SPQR_FULL_STAT_BITS;
  const kinds = (quantized ? 1 : 0) + (zeroQuantized ? 1 : 0);
  const total = n * bits + rows * groups * (scaleBits + zeroBits) +
    kinds * statGroups * 2 * SPQR_FULL_STAT_BITS + outlierCount * SPQR_OUTLIER_BITS;
  return total / n;
}

// ---- internals ----

interface FitSettings {
  readonly maxq: number;
  readonly bits: number;
  readonly roundZero: boolean;
  readonly statBits: number;
  readonly statGroup: number;
}

function checkOptions(options: SpqrOptions, v: Record<string, number>): void {
  const int = (name: string, lo: number, hi = Infinity) => {
    const x = v[name];
    if (!Number.isInteger(x) || x < lo || x > hi) {
      throw new OptionError(`spqr: ${name} must be an integer in ${lo}..${hi}, got ${x}`);
    }
  };
  int("bits", 2, 8), int("groupSize", 0), int("statBits", 0, 8), int("statGroup", 1), int("blockSize", 1);
  if (!(v.damping >= 0)) throw new OptionError(`spqr: damping must be ≥ 0, got ${options.damping}`);
  if (!(v.outlierThreshold >= 0)) {
    throw new OptionError(`spqr: outlierThreshold must be ≥ 0 (Infinity disables), got ${options.outlierThreshold}`);
  }
}

/** `mean_j(Var_i W[:, j] / U_jj²)` with the unbiased variance over rows, as the reference (`weight.var(dim=0)`). */
function outlierScale(w: Matrix, ud: Float64Array): number {
  const [rows, cols] = w.shape;
  if (rows < 2 || cols === 0) return 0;
  let total = 0;
  for (let j = 0; j < cols; j++) {
    let s = 0, s2 = 0;
    for (let i = 0; i < rows; i++) s += w.data[i * cols + j];
    const m = s / rows;
    for (let i = 0; i < rows; i++) s2 += (w.data[i * cols + j] - m) ** 2;
    total += s2 / (rows - 1) / (ud[j] * ud[j]);
  }
  return total / cols;
}

/**
 * The code of `x`: nearest grid point, clamped. An integer zero is added after rounding, exactly as GPTQ
 * (`round(x/s) + z`, so SpQR with integer zeros reproduces GPTQ bit for bit); a real zero is added before
 * (`round(x/s + z)`, the reference's `quantize`).
 */
function gridCode(x: number, scale: number, zero: number, maxq: number): number {
  if (Number.isInteger(zero)) return uniformCode(x, scale, zero, maxq);
  const q = roundHalfEven(fround(x / scale) + zero);
  return q > 0 ? (q < maxq ? q : maxq) : 0;
}

/**
 * Min-max scale and zero of `values[0..n)`: `[min, max]` of the values as the reference (`Quantizer.find_params`),
 * with float32 operations in the order of core's uniform grid. A constant group is widened to contain 0 (so its value
 * stays exact) and an all-zero one becomes `[−1, 1]`, where the reference widens every constant group to `[−1, 1]`.
 */
function minMaxParams(
  values: ArrayLike<number>,
  n: number,
  maxq: number,
  roundZero: boolean,
  skip = -1,
): { scale: number; zero: number } {
  let lo = Infinity, hi = -Infinity;
  for (let k = 0; k < n; k++) {
    if (k === skip) continue;
    const x = values[k];
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  if (!(lo < hi)) {
    lo = Math.min(lo, 0), hi = Math.max(hi, 0);
    if (!(lo < hi)) lo = -1, hi = 1;
  }
  const xmin = fround(lo), xmax = fround(hi);
  const scale = fround(fround(xmax - xmin) / maxq);
  const z = fround(-xmin / scale);
  return { scale, zero: roundZero ? roundHalfEven(z) + 0 : z };
}

/** `Σ_k ((quant(v_k) − v_k)/d_k)²` over `values[0..n)` except `skip`, with the given grid. */
function groupError(
  values: ArrayLike<number>,
  d: ArrayLike<number>,
  n: number,
  p: { scale: number; zero: number },
  maxq: number,
  skip = -1,
): number {
  let err = 0;
  for (let k = 0; k < n; k++) {
    if (k === skip) continue;
    const x = values[k];
    const e = (uniformValue(gridCode(x, p.scale, p.zero, maxq), p.scale, p.zero) - x) / d[k];
    err += e * e;
  }
  return err;
}

/**
 * Fits the scales and zeros of the group of columns `[j, j + width)` for every row, from the current weights `Wt`
 * (`[cols, rows]`), then quantizes them (second level). With a finite `tau`, the reference's leave-one-out test
 * first marks weights whose exclusion lowers the group's `Σ((w − q)/U_kk)²` by more than `tau` as likely outliers
 * and replaces them by their row's mean of the other weights, so they do not stretch the range.
 */
function fitGroup(
  Wt: Float32Array,
  rows: number,
  j: number,
  width: number,
  ud: Float64Array,
  tau: number,
  fit: FitSettings,
  scale: Float32Array,
  zero: Float32Array,
): void {
  const { maxq, roundZero } = fit;
  const v = new Float64Array(width);
  const d = ud.subarray(j, j + width);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < width; k++) v[k] = Wt[(j + k) * rows + r];
    if (tau !== Infinity && width > 1) {
      const base = groupError(v, d, width, minMaxParams(v, width, maxq, roundZero), maxq);
      const likely: number[] = [];
      for (let k = 0; k < width; k++) {
        const loo = groupError(v, d, width, minMaxParams(v, width, maxq, roundZero, k), maxq, k);
        if (base - loo > tau) likely.push(k);
      }
      if (likely.length > 0) {
        let s = 0;
        for (let k = 0; k < width; k++) if (!likely.includes(k)) s += v[k];
        const m = s / Math.max(width - likely.length, 1);
        for (const k of likely) v[k] = m;
      }
    }
    const p = minMaxParams(v, width, maxq, roundZero);
    scale[r] = p.scale, zero[r] = p.zero;
  }
  if (fit.statBits > 0) {
    quantizeStats(scale, fit.statBits, fit.statGroup, 1e-9);
    if (!(roundZero && fit.statBits >= fit.bits)) quantizeStats(zero, fit.statBits, fit.statGroup, -Infinity);
  }
}

/**
 * Second-level quantization, in place: each run of `statGroup` consecutive rows' statistics onto a `statBits`-bit
 * min-max grid with a real zero (the reference's `qq_scale` / `qq_zero` quantizers). A constant run is stored exactly
 * (the reference would widen it to `[−1, 1]` and distort it). Values stay at least `floor` (1e-9 for scales, as the
 * reference's `scale.clamp_min(eps)`).
 */
function quantizeStats(values: Float32Array, statBits: number, statGroup: number, floor: number): void {
  const maxq = 2 ** statBits - 1;
  for (let r0 = 0; r0 < values.length; r0 += statGroup) {
    const r1 = Math.min(r0 + statGroup, values.length);
    let lo = Infinity, hi = -Infinity;
    for (let r = r0; r < r1; r++) lo = Math.min(lo, values[r]), hi = Math.max(hi, values[r]);
    if (!(lo < hi)) continue;
    const s = fround(fround(hi - lo) / maxq), z = fround(-lo / s);
    for (let r = r0; r < r1; r++) {
      const q = Math.min(Math.max(roundHalfEven(fround(values[r] / s) + z), 0), maxq);
      values[r] = Math.max(uniformValue(q, s, z), floor);
    }
  }
}
