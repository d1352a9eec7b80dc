/**
 * BiLLM (Huang et al., arXiv 2402.04291): post-training binarization at about one bit per weight.
 *
 * ```
 * W: [rows, cols]   H: [cols, cols]
 * dead columns (H_jj = 0) → H_jj = 1, W[:, j] = 0;  H += λ·mean(diag H)·I;  U = upper Cholesky factor of H⁻¹
 * for each block of 128 columns (on the weights as earlier blocks' error feedback left them):
 *   salience s_ij = w_ij² / U_jj²; column salience S_j = Σ_i s_ij
 *   k* = argmin_k ‖W_b − B₂(top-k columns) − B₂(other columns)‖²      (B₂: two residual binary terms per row)
 *   salient columns:  w ≈ α₁·sign(w − μ₁) + μ₁ + α₂·sign(r − μ₂) + μ₂,  r = w − (α₁·sign(w − μ₁) + μ₁)
 *   other weights: split at |w| = p* (p* searched over quantiles of |w|) into a concentrated group (|w| < p*) and a
 *   sparse group (|w| ≥ p*), each  w ≈ α·sign(w − μ) + μ  per row
 *   error feedback: e_j = (w_j − q_j)/U_jj,  W[:, j+1:] −= e_j ⊗ U[j, j+1:]   (within the block and to later blocks)
 * ```
 *
 * Every binary term is fitted per row over its group: `μ = mean(w)`, `α = mean|w − μ|` (the least-squares `α` for
 * fixed signs). Where the paper and the reference code (`bigptq.py`, `binary.py`, `utils/autosearch.py`) differ:
 * - salience uses U's diagonal (`W² / diag(Hinv1)²` in the reference, `Hinv1` being U), not `[H⁻¹]_jj`;
 * - the salient-column count is searched as the reference does (k = 1..49, the non-salient part approximated by two
 *   residual terms during that search), the split point over 81 quantiles 0.10…0.90 of the non-salient `|w|`;
 * - both searches minimise the error of the *weights*, as the paper's equations write it; the reference runs them on
 *   the salience matrix (`W²/U_jj²`) instead, and takes quantiles over the whole block with salient entries zeroed;
 * - `feedback: "column"` (default) feeds errors forward column by column inside the block as GPTQ does, each weight
 *   re-binarized with its group's signs on the updated value (the fitted `α`, `μ` and groups stay those of the block
 *   start); `feedback: "block"` is the reference: the block is binarized at once and `E = (W − Q)/diag(U)` updates
 *   later blocks only;
 * - `sign(0) = +1` (a binary code has no zero; `torch.sign(0) = 0`).
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { assertFinite, type FloatArray, type Matrix, matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { type FactorPrecision, prepareHessian, prepareLayer, prepareOutputHessian } from "./prepare.ts";
import { layerLoss } from "./layer_loss.ts";
import type { QuantizedLayer } from "./result.ts";

/** The reference's split candidates: 81 quantiles 0.10, 0.11, …, 0.90 of the non-salient magnitudes. */
export const BILLM_SPLIT_QUANTILES: Float64Array = Float64Array.from({ length: 81 }, (_, i) => 0.1 + i * 0.01);

/** Statistics stored per row and block in {@link BillmLayer.rowStats}: μ₁ α₁ μ₂ α₂ (salient), μ α (concentrated), μ α (sparse). */
export const BILLM_ROW_STATS = 8;

/** Options of {@link billm}. Defaults follow the reference implementation. */
export interface BillmOptions {
  /** Columns per block (the reference's `blocksize`, also the unit of the salient-column search); default 128. */
  readonly blockSize?: number;
  /** Fewest salient columns per block the search considers; default 1 (the reference's `range(1, 50)`). */
  readonly minSalientColumns?: number;
  /** Most salient columns per block the search considers; default 49 (the reference's `up_lim = 50`, exclusive). */
  readonly maxSalientColumns?: number;
  /** Quantiles of the non-salient `|w|` tried as the split point, each in [0, 1]; default {@link BILLM_SPLIT_QUANTILES}. */
  readonly splitQuantiles?: ArrayLike<number>;
  /** Error feedback inside blocks (`"column"`, default) or only across blocks as the reference (`"block"`). */
  readonly feedback?: "column" | "block";
  /** Relative damping `λ`: `H += λ·mean(diag H)·I`; default 0.01. */
  readonly damping?: number;
  /** Precision of the factorisation of `H` into `U` ({@link FactorPrecision}); default "f64". */
  readonly factorPrecision?: FactorPrecision;
  /**
   * A second `[cols, cols]` Hessian that only chooses the salient columns (their salience `Σ_r W_rc² / U_cc²` taken
   * from its own factor), while `h` drives the error feedback; default `h` for both. OAC's "salience" role.
   */
  readonly salienceHessian?: Matrix<FloatArray>;
  /**
   * `[rows, rows]` output-side Hessian `B`: with column feedback, each column is binarized row by row, every row's
   * error fed to the later rows of the column through the factor of `(B + λ_B·mean(diag B)·I)⁻¹`, as
   * `GptqOptions.outputHessian` does (the block's groups, `α` and `μ` stay those fitted at its start). Default: none.
   */
  readonly outputHessian?: Matrix<FloatArray>;
  /** Relative damping of `outputHessian`; default 0.1. */
  readonly outputDamping?: number;
  /** With `outputHessian`: round each column's rows by descending `B_ii`, as `GptqOptions.outputOrder`; default false. */
  readonly outputOrder?: boolean;
  /** Kernels; default the current backend. */
  readonly backend?: Backend;
}

/** What BiLLM chose for one block of columns. */
export interface BillmBlock {
  /** First column of the block. */
  readonly start: number;
  /** One past the last column. */
  readonly end: number;
  /** Salient columns (layer column indices), by descending salience. */
  readonly salientColumns: Int32Array;
  /** Split point on `|w|` of the non-salient weights: below it concentrated, at or above it sparse. */
  readonly splitThreshold: number;
}

/**
 * Storage per weight under two accountings. The paper reports `paramBits` (its `N_param = 2·r + 1·(1 − r)`, `r` the
 * salient share: 1.08-1.1 bits in its tables) and lists the flags apart (`N_storing = 1 + 1/blockSize`).
 * `totalBits` charges everything a checkpoint must hold.
 */
export interface BillmStorage {
  /** `1 + r`: one sign per weight plus a second sign per salient weight (the paper's headline bit-width). */
  readonly paramBits: number;
  /** The paper's flag bits `1 + 1/blockSize`: the concentrated/sparse bitmap and the salient-column marks. */
  readonly flagBits: number;
  /** 16-bit `α` and `μ` per row, block and group, per weight (not counted by the paper). */
  readonly statBits: number;
  /** Everything: signs, second signs, one group bit per non-salient weight, one bit per column, 16-bit statistics. */
  readonly totalBits: number;
}

/** A layer binarized by {@link billm}. */
export interface BillmLayer extends QuantizedLayer {
  /** Always "billm". */
  readonly method: "billm";
  /**
   * `[rows, cols]` sign bits: bit 0 is the first term's sign (1 = +), bit 1 the second term's (salient columns only).
   * With {@link rowStats} and {@link groupMask} they give `dequantized` back.
   */
  readonly codes: Uint8Array;
  /** `[rows, cols]` group of each weight: 0 concentrated, 1 sparse, 2 salient. */
  readonly groupMask: Uint8Array;
  /** `cols` flags, 1 where the column is salient in its block. */
  readonly salientMask: Uint8Array;
  /** `[blocks, rows, 8]` per-row statistics, see {@link BILLM_ROW_STATS}. */
  readonly rowStats: Float32Array;
  /** The choices made per block. */
  readonly blocks: readonly BillmBlock[];
  /** Bit accounting; `stats.avgBits` is `storage.totalBits` (everything stored), `paramBits` the paper's figure. */
  readonly storage: BillmStorage;
}

/**
 * Binarizes one linear layer with BiLLM.
 *
 * `stats.avgBits` charges everything a checkpoint must hold ({@link BillmStorage.totalBits}), as every method's
 * statistics do. The paper's headline figure is `storage.paramBits`: `1 + r`, `r` the share of weights in salient
 * columns (their second binary term costs one more bit); it does not charge the group bitmap (one bit per non-salient
 * weight), the salient-column marks, or the per-row `α`, `μ` (eight 16-bit values per row and block: one bit per
 * weight for 128-column blocks).
 *
 * @param w `[rows, cols]` weights (out × in).
 * @param h `[cols, cols]` Hessian of the layer's inputs, not yet damped.
 * @throws {ShapeError} when `h` does not match `w`; {NonFiniteError} on NaN/Inf inputs; {OptionError} on bad options;
 *   {NotPositiveDefiniteError} when even heavy extra damping cannot make `H` positive definite.
 *
 * @example
 * ```ts
 * import { billm } from "./billm.ts";
 * import { eye, matrix, toFloat32 } from "../core/tensor.ts";
 * const w = matrix(4, 8, Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)));
 * const q = await billm(w, toFloat32(eye(8)));
 * console.assert(q.storage.paramBits > 1 && q.storage.paramBits <= 2 && q.stats.avgBits > q.storage.paramBits);
 * ```
 */
export async function billm(w: Matrix, h: Matrix<FloatArray>, options: BillmOptions = {}): Promise<BillmLayer> {
  const t0 = performance.now();
  const {
    blockSize = 128,
    minSalientColumns = 1,
    maxSalientColumns = 49,
    splitQuantiles = BILLM_SPLIT_QUANTILES,
    feedback = "column",
    damping = 0.01,
    backend = getBackend(),
  } = options;
  const [rows, cols] = w.shape;
  if (h.shape[0] !== cols || h.shape[1] !== cols) {
    throw new ShapeError(`billm: Hessian is ${h.shape.join("×")} for a layer with ${cols} input columns`);
  }
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new OptionError(`billm: blockSize ${blockSize}`);
  if (
    !Number.isInteger(minSalientColumns) || !Number.isInteger(maxSalientColumns) || minSalientColumns < 0 ||
    maxSalientColumns < minSalientColumns
  ) {
    throw new OptionError(`billm: salient columns ${minSalientColumns}..${maxSalientColumns}`);
  }
  if (feedback !== "column" && feedback !== "block") throw new OptionError(`billm: feedback "${feedback}"`);
  if (!(damping >= 0)) throw new OptionError(`billm: damping must be ≥ 0, got ${damping}`);
  for (const q of Array.from(splitQuantiles)) {
    if (!(q >= 0 && q <= 1)) throw new OptionError(`billm: split quantile ${q} outside [0, 1]`);
  }
  assertFinite(w, "billm weights");
  assertFinite(h, "billm Hessian");

  const prepared = await prepareLayer(w, h, { damping, factorPrecision: options.factorPrecision, backend });
  const W = prepared.w; // [rows, cols], a copy: updated in place by the error feedback
  const { u } = prepared;
  const U = u.data; // [cols, cols], upper
  const sh = options.salienceHessian;
  if (sh && (sh.shape[0] !== cols || sh.shape[1] !== cols)) {
    throw new ShapeError(`billm: salience Hessian is ${sh.shape.join("×")} for a layer with ${cols} input columns`);
  }
  if (sh) assertFinite(sh, "billm salience Hessian");
  // The diagonal of the factor that weighs each column's salience: U's, or the salience Hessian's own.
  const US = sh ? (await prepareHessian(sh, { damping, factorPrecision: options.factorPrecision, backend })).u.data : U;
  if (options.outputHessian && feedback !== "column") {
    throw new OptionError('billm: an output Hessian needs feedback "column"');
  }
  // The rows' factor (upper, of the damped inverse of B): each row's error moves the later rows of its column.
  const coupled = await prepareOutputHessian("billm", rows, options, {
    factorPrecision: options.factorPrecision,
    backend,
  });
  const V = coupled?.u.data, rowOrder = coupled?.permutation;
  const target = new Float64Array(rows);

  const Wd = W.data;
  const dequantized = matrix(rows, cols);
  const codes = new Uint8Array(rows * cols);
  const groupMask = new Uint8Array(rows * cols);
  const salientMask = new Uint8Array(cols);
  const nBlocks = Math.ceil(cols / blockSize);
  const rowStats = new Float32Array(nBlocks * rows * BILLM_ROW_STATS);
  const blocks: BillmBlock[] = [];
  let salientCount = 0, statCount = 0;

  for (let c0 = 0, b = 0; c0 < cols; c0 += blockSize, b++) {
    const c1 = Math.min(c0 + blockSize, cols), n = c1 - c0;
    const block = new Float64Array(rows * n); // [rows, n] block-start weights
    for (let r = 0; r < rows; r++) for (let c = 0; c < n; c++) block[r * n + c] = Wd[r * cols + c0 + c];
    const colSalience = new Float64Array(n);
    for (let c = 0; c < n; c++) {
      const d = US[(c0 + c) * cols + c0 + c];
      let s = 0;
      for (let r = 0; r < rows; r++) s += block[r * n + c] ** 2;
      colSalience[c] = s / (d * d);
    }
    const bin = binarizeBlock(block, rows, n, colSalience, {
      minSalientColumns,
      maxSalientColumns,
      splitQuantiles,
    });
    const stats = rowStats.subarray(b * rows * BILLM_ROW_STATS, (b + 1) * rows * BILLM_ROW_STATS);
    stats.set(bin.rowStats);
    const salientColumns = Int32Array.from(bin.salientColumns, (c) => c0 + c);
    for (const c of salientColumns) salientMask[c] = 1;
    blocks.push({ start: c0, end: c1, salientColumns, splitThreshold: bin.splitThreshold });
    salientCount += salientColumns.length;
    statCount += rows * ((salientColumns.length > 0 ? 4 : 0) + (salientColumns.length < n ? 4 : 0));

    // Column loop: groups, α and μ stay those fitted on the block-start weights (as GPTQ's fixed grids); with column
    // feedback the signs are taken on the weights as the block's earlier columns' errors left them.
    const E = new Float32Array(rows * n); // [rows, n] scaled errors
    for (let c = 0; c < n; c++) {
      const j = c0 + c, d = U[j * cols + j];
      if (V) { for (let r = 0; r < rows; r++) target[r] = Wd[r * cols + j]; }
      for (let s = 0; s < rows; s++) {
        const r = rowOrder ? rowOrder[s] : s;
        const x = feedback === "column" ? Wd[r * cols + j] : block[r * n + c];
        const group = bin.groupOf[r * n + c];
        const { value, code } = binarizeWith(V ? target[r] : x, group, stats, r * BILLM_ROW_STATS);
        dequantized.data[r * cols + j] = value;
        codes[r * cols + j] = code;
        groupMask[r * cols + j] = group;
        if (V) {
          const er = (target[r] - value) / V[s * rows + s];
          for (let k = s + 1; k < rows; k++) target[rowOrder ? rowOrder[k] : k] -= er * V[s * rows + k];
        }
        // Measured from the value before the rows' feedback, as GPTQ's coupled rows (the later columns carry its share).
        E[r * n + c] = (x - value) / d;
      }
      if (feedback === "column") {
        for (let r = 0; r < rows; r++) {
          const e = E[r * n + c], o = r * cols;
          for (let k = j + 1; k < c1; k++) Wd[o + k] -= e * U[j * cols + k];
        }
      }
    }
    if (c1 < cols) {
      // W[:, c1:] −= E · U[c0:c1, c1:]
      const rest = cols - c1;
      const ublock = matrix(n, rest);
      for (let c = 0; c < n; c++) {
        for (let k = 0; k < rest; k++) ublock.data[c * rest + k] = U[(c0 + c) * cols + c1 + k];
      }
      const update = (await backend.matmul(matrix(rows, n, E), ublock)).data; // [rows, rest]
      for (let r = 0; r < rows; r++) {
        for (let k = 0; k < rest; k++) Wd[r * cols + c1 + k] -= update[r * rest + k];
      }
    }
  }

  const total = rows * cols;
  const paramBits = total === 0 ? 0 : 1 + salientCount / cols;
  const storage: BillmStorage = {
    paramBits,
    flagBits: 1 + 1 / blockSize,
    statBits: total === 0 ? 0 : 16 * statCount / total,
    totalBits: total === 0
      ? 0
      : (total + rows * salientCount + rows * (cols - salientCount) + cols + 16 * statCount) / total,
  };
  return {
    method: "billm",
    dequantized,
    codes,
    groupMask,
    salientMask,
    rowStats,
    blocks,
    storage,
    stats: {
      layerLoss: await layerLoss(w, dequantized, h, backend),
      avgBits: storage.totalBits,
      seconds: (performance.now() - t0) / 1000,
      damping: prepared.damping,
    },
  };
}

// ---- binarization helpers ----

/** One binary term `α·sign(x − μ) + μ`. */
export interface BinaryTerm {
  /** `μ`: the mean of the values. */
  readonly mean: number;
  /** `α`: the mean of `|x − μ|`, the least-squares scale for the signs `sign(x − μ)`. */
  readonly alpha: number;
}

/** `sign` of a binary code: +1 for `x ≥ 0`, −1 below (no zero level). */
export function binarySign(x: number): number {
  return x >= 0 ? 1 : -1;
}

/**
 * The binary term fitted to `values`: `μ = mean(x)`, `α = mean|x − μ|`. For fixed signs `sᵢ = sign(xᵢ − μ)`,
 * `Σ(xᵢ − μ − α·sᵢ)²` is minimised by `α = mean(sᵢ·(xᵢ − μ)) = mean|xᵢ − μ|`. Empty input gives `μ = α = 0`.
 *
 * @example
 * ```ts
 * import { fitBinaryTerm } from "./billm.ts";
 * const t = fitBinaryTerm([1, 3]);
 * console.assert(t.mean === 2 && t.alpha === 1);
 * ```
 */
export function fitBinaryTerm(values: ArrayLike<number>): BinaryTerm {
  const n = values.length;
  if (n === 0) return { mean: 0, alpha: 0 };
  let s = 0;
  for (let i = 0; i < n; i++) s += values[i];
  const mean = s / n;
  let a = 0;
  for (let i = 0; i < n; i++) a += Math.abs(values[i] - mean);
  return { mean, alpha: a / n };
}

/**
 * BiLLM's residual approximation with `order` binary terms: the first term is fitted to the values, each next one to
 * what the previous terms left (`r = x − Σ terms`), so `x ≈ Σ_t (α_t·sign(r_t − μ_t) + μ_t)`.
 *
 * @returns the terms and the approximation of each value.
 * @example
 * ```ts
 * import { residualBinarize } from "./billm.ts";
 * const { approx } = residualBinarize([1, 2, 4, 7], 2);
 * console.assert(approx.length === 4);
 * ```
 */
export function residualBinarize(
  values: ArrayLike<number>,
  order: number,
): { terms: BinaryTerm[]; approx: Float64Array } {
  const n = values.length;
  const residual = Float64Array.from(values);
  const approx = new Float64Array(n);
  const terms: BinaryTerm[] = [];
  for (let t = 0; t < order; t++) {
    const term = fitBinaryTerm(residual);
    for (let i = 0; i < n; i++) {
      const b = term.alpha * binarySign(residual[i] - term.mean) + term.mean;
      approx[i] += b;
      residual[i] -= b;
    }
    terms.push(term);
  }
  return { terms, approx };
}

/** Options of {@link binarizeBlock}. */
export interface BlockSearchOptions {
  /** Fewest salient columns tried (clamped to the block width). */
  readonly minSalientColumns: number;
  /** Most salient columns tried (clamped to the block width). */
  readonly maxSalientColumns: number;
  /** Quantiles of the non-salient `|w|` tried as the split point. */
  readonly splitQuantiles: ArrayLike<number>;
}

/** BiLLM's choices and result for one block; see {@link binarizeBlock}. */
export interface BlockBinarization {
  /** Salient columns (block-local), by descending salience. */
  readonly salientColumns: Int32Array;
  /** Split point on `|w|` of the non-salient weights (concentrated below, sparse at or above). */
  readonly splitThreshold: number;
  /** `[rows, n]` group of each weight: 0 concentrated, 1 sparse, 2 salient. */
  readonly groupOf: Uint8Array;
  /** `[rows, 8]` statistics, see {@link BILLM_ROW_STATS}. */
  readonly rowStats: Float64Array;
  /** `[rows, n]` binarized block. */
  readonly approx: Float64Array;
  /** `‖block − approx‖²`. */
  readonly error: number;
}

/**
 * BiLLM's structural search on one block: the number of salient columns (top columns by `colSalience`) minimising the
 * block's error with two residual terms on both parts, then the split point of the other weights
 * ({@link searchSplit}), then the binarization.
 *
 * @param block `[rows, n]` row-major weights.
 * @param colSalience `n` column saliences (`Σ_i w_ij² / U_jj²`).
 */
export function binarizeBlock(
  block: Float64Array,
  rows: number,
  n: number,
  colSalience: Float64Array,
  options: BlockSearchOptions,
): BlockBinarization {
  const order = Int32Array.from({ length: n }, (_, c) => c).sort((a, b) => colSalience[b] - colSalience[a] || a - b);
  const rank = new Int32Array(n);
  for (let i = 0; i < n; i++) rank[order[i]] = i;
  const kMin = Math.min(options.minSalientColumns, n), kMax = Math.min(options.maxSalientColumns, n);
  const sal = new Float64Array(n), rest = new Float64Array(n), scratch = new Float64Array(n);
  let bestK = kMin, best = Infinity;
  for (let k = kMin; k <= kMax; k++) {
    let err = 0;
    for (let r = 0; r < rows; r++) {
      let ns = 0, nr = 0;
      for (let c = 0; c < n; c++) {
        const x = block[r * n + c];
        if (rank[c] < k) sal[ns++] = x;
        else rest[nr++] = x;
      }
      err += residualError(sal, ns, 2, scratch) + residualError(rest, nr, 2, scratch);
    }
    if (err < best) best = err, bestK = k;
  }
  const isSalient = new Uint8Array(n);
  for (let i = 0; i < bestK; i++) isSalient[order[i]] = 1;
  const { threshold } = searchSplit(block, rows, n, isSalient, options.splitQuantiles);

  const groupOf = new Uint8Array(rows * n);
  const rowStats = new Float64Array(rows * BILLM_ROW_STATS);
  const approx = new Float64Array(rows * n);
  let error = 0;
  const buf = new Float64Array(n);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < n; c++) {
      groupOf[r * n + c] = isSalient[c] ? 2 : Math.abs(block[r * n + c]) < threshold ? 0 : 1;
    }
    const s = r * BILLM_ROW_STATS;
    for (const [group, slot, terms] of [[2, 0, 2], [0, 4, 1], [1, 6, 1]] as const) {
      let m = 0;
      for (let c = 0; c < n; c++) if (groupOf[r * n + c] === group) buf[m++] = block[r * n + c];
      const fitted = residualBinarize(buf.subarray(0, m), terms).terms;
      fitted.forEach((t, i) => (rowStats[s + slot + 2 * i] = t.mean, rowStats[s + slot + 2 * i + 1] = t.alpha));
    }
    for (let c = 0; c < n; c++) {
      const k = r * n + c;
      approx[k] = binarizeWith(block[k], groupOf[k], rowStats, s).value;
      error += (block[k] - approx[k]) ** 2;
    }
  }
  return {
    salientColumns: Int32Array.from(order.subarray(0, bestK)),
    splitThreshold: threshold,
    groupOf,
    rowStats,
    approx,
    error,
  };
}

/**
 * BiLLM's split search over the non-salient weights of a block: for each candidate `p` (a quantile of their `|w|`,
 * linear interpolation as `numpy.quantile`), the weights with `|w| < p` form the concentrated group and the others the
 * sparse group, each binarized with one term per row; the `p` with the least squared error wins (the first on ties).
 *
 * @param block `[rows, n]` row-major weights.
 * @param isSalient `n` flags; salient columns are left out.
 * @returns the threshold and the non-salient squared error it gives (`threshold = 0` and error 0 when nothing is left).
 */
export function searchSplit(
  block: Float64Array,
  rows: number,
  n: number,
  isSalient: Uint8Array,
  quantiles: ArrayLike<number>,
): { threshold: number; error: number } {
  const mags: number[] = [];
  for (let r = 0; r < rows; r++) for (let c = 0; c < n; c++) if (!isSalient[c]) mags.push(Math.abs(block[r * n + c]));
  if (mags.length === 0) return { threshold: 0, error: 0 };
  const sorted = Float64Array.from(mags).sort();
  const low = new Float64Array(n), high = new Float64Array(n), scratch = new Float64Array(n);
  let best = { threshold: 0, error: Infinity };
  for (let qi = 0; qi < quantiles.length; qi++) {
    const t = quantile(sorted, quantiles[qi]);
    let err = 0;
    for (let r = 0; r < rows; r++) {
      let nl = 0, nh = 0;
      for (let c = 0; c < n; c++) {
        if (isSalient[c]) continue;
        const x = block[r * n + c];
        if (Math.abs(x) < t) low[nl++] = x;
        else high[nh++] = x;
      }
      err += residualError(low, nl, 1, scratch) + residualError(high, nh, 1, scratch);
    }
    if (err < best.error) best = { threshold: t, error: err };
  }
  return best;
}

/** `numpy.quantile(values, q)` (linear interpolation) of ascending `sorted`. */
function quantile(sorted: Float64Array, q: number): number {
  const pos = q * (sorted.length - 1), lo = Math.floor(pos), hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

/** Squared error of {@link residualBinarize} on `values[0..n)`; residuals go to `r` (length ≥ n), not allocated. */
function residualError(values: Float64Array, n: number, order: number, r: Float64Array): number {
  if (n === 0) return 0;
  for (let i = 0; i < n; i++) r[i] = values[i];
  for (let t = 0; t < order; t++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += r[i];
    const mean = s / n;
    let a = 0;
    for (let i = 0; i < n; i++) a += Math.abs(r[i] - mean);
    const alpha = a / n;
    for (let i = 0; i < n; i++) r[i] -= alpha * binarySign(r[i] - mean) + mean;
  }
  let err = 0;
  for (let i = 0; i < n; i++) err += r[i] * r[i];
  return err;
}

/** One weight through its group's fitted terms: the value and its sign bits. */
function binarizeWith(
  x: number,
  group: number,
  stats: ArrayLike<number>,
  s: number,
): { value: number; code: number } {
  if (group === 2) {
    const s1 = binarySign(x - stats[s]);
    const b1 = stats[s + 1] * s1 + stats[s];
    const s2 = binarySign(x - b1 - stats[s + 2]);
    return { value: b1 + stats[s + 3] * s2 + stats[s + 2], code: (s1 > 0 ? 1 : 0) | (s2 > 0 ? 2 : 0) };
  }
  const o = s + (group === 0 ? 4 : 6);
  const s1 = binarySign(x - stats[o]);
  return { value: stats[o + 1] * s1 + stats[o], code: s1 > 0 ? 1 : 0 };
}
