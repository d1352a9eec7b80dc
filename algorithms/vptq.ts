/**
 * VPTQ (Liu et al., arXiv 2409.17066): vector post-training quantization. Each weight column is cut into vectors of `v`
 * consecutive output-channel entries; every vector is replaced by the nearest of `k` centroids of a per-layer codebook,
 * and GPTQ's error feedback carries each column's error into the columns not yet quantized.
 *
 * ```
 * W: [rows, cols], vector (c, g) = W[g·v : (g+1)·v, c]          H: [cols, cols]
 * dead columns (H_jj = 0) → H_jj = 1, W[:, j] = 0
 * codebooks: k-means of the vectors weighted by H_jj of their column     (Backend.kmeans, seeded)
 *   optional outlier columns (largest H_jj) get their own codebook
 * order: outlier columns first, then the rest (by descending H_jj with actOrder)
 * H += λ·mean(diag H)·I;   U = upper Cholesky factor of H⁻¹
 * for each block of columns, for each column j:
 *   ŵ_j = nearest centroid per vector (+ nearest residual centroid of what is left)
 *   e_j = (w_j − ŵ_j)/U_jj;  W[:, j+1:block end] −= e_j ⊗ U[j, j+1:block end]
 * after the block: W[:, block end:] −= E_block · U[block, block end:]     (Backend.matmul)
 * residual codebook (k₂): k-means of the errors left by a first pass, then a second pass with both codebooks
 * ```
 *
 * Follows the paper and its reference code (microsoft/VPTQ) in: vectors along the output channels of one column, the
 * Hessian-diagonal weights of the k-means, a residual codebook fitted on the first pass's remaining error and used in a
 * second full pass, outlier columns by Hessian diagonal. Not implemented: the paper's layer-wise fine-tuning of the
 * codebooks and the weight normalisation option. Centroids are rounded to float16, the precision the bit count assumes.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import { packBits, unpackBits } from "../core/grids/pack.ts";
import { assertFinite, diagonal, type FloatArray, type Matrix, matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { type FactorPrecision, prepareLayer } from "./prepare.ts";
import { layerLoss } from "./layer_loss.ts";
import type { QuantizedLayer } from "./result.ts";

/** Options of {@link vptq}. The defaults give 2 index bits per weight (`log2(256)/4`). */
export interface VptqOptions {
  /** Vector length `v`: consecutive output channels of one column per vector; default 4. Must divide the rows. */
  readonly vectorSize?: number;
  /** Centroids `k` of the main codebook, 2 to 65536; default 256. Indices take `⌈log2 k⌉` bits. */
  readonly codebookSize?: number;
  /** Centroids `k₂` of the residual codebook; default 0 (none). Adds `⌈log2 k₂⌉/v` bits per weight. */
  readonly residualCodebookSize?: number;
  /** Fraction of the columns, those of largest `H_jj`, quantized with their own codebook; default 0. */
  readonly outlierFraction?: number;
  /** Centroids of the outlier codebook; default `codebookSize`. */
  readonly outlierCodebookSize?: number;
  /** Quantize the non-outlier columns by descending `H_jj` (GPTQ's act-order); default false. */
  readonly actOrder?: boolean;
  /** Relative damping `λ`: `H += λ·mean(diag H)·I`; default 0.01. */
  readonly damping?: number;
  /** Precision of the factorisation of `H` into `U` ({@link FactorPrecision}); default "f64". */
  readonly factorPrecision?: FactorPrecision;
  /** Columns per lazy-update block; default 128. */
  readonly blockSize?: number;
  /** Seed of the k-means++ initialisations (main `seed`, outliers `seed + 1`, residual `seed + 2`); default 0. */
  readonly seed?: number;
  /** Lloyd iterations of each k-means at most; default 25. */
  readonly kmeansIterations?: number;
  /** Kernels; default the current backend. */
  readonly backend?: Backend;
}

/** One codebook and the indices of the vectors it encodes. */
export interface VqCodebook {
  /** `[k, v]` centroids, float16 values held in float32. */
  readonly centroids: Matrix;
  /** Bits per index, `⌈log2 k⌉`. */
  readonly bits: number;
  /** Original columns whose vectors this codebook encodes, ascending. */
  readonly columns: Int32Array;
  /**
   * The indices packed by {@link packIndices} (read them with {@link unpackIndices}, `columns.length · rows/v` of
   * them): the index of vector `g` of column `columns[c]` is number `c·(rows/v) + g`.
   */
  readonly packed: Uint8Array;
}

/** The vector-quantized form of a layer: enough to rebuild it with {@link vptqDequantize}. */
export interface VqData {
  /** Vector length `v`. */
  readonly vectorSize: number;
  /** The codebook of the ordinary columns. */
  readonly main: VqCodebook;
  /** The codebook of the outlier columns, when there are any. */
  readonly outlier?: VqCodebook;
  /** The residual codebook, over every column: its centroid is added to the main (or outlier) one. */
  readonly residual?: VqCodebook;
}

/** A VPTQ layer: the common record plus its codebooks and indices. `grid`, `codes` and `params` are absent. */
export interface VptqLayer extends QuantizedLayer {
  readonly method: "vptq";
  readonly vq: VqData;
}

/**
 * Quantizes one linear layer with VPTQ.
 *
 * @param w `[rows, cols]` weights (out × in); `rows` must be a multiple of `vectorSize`.
 * @param h `[cols, cols]` Hessian (GPTQ's `2/N·XᵀX` or OAC's), not yet damped.
 * @returns the layer in the original column order, with `tr((W−Ŵ)H(W−Ŵ)ᵀ)` and the average bits per weight
 *   (indices, float16 codebooks and the outlier column list) in its stats.
 * @throws {ShapeError} when `h` does not match `w`; {NonFiniteError} on NaN/Inf inputs; {OptionError} on bad options;
 *   {NotPositiveDefiniteError} when even heavy extra damping cannot make `H` positive definite.
 *
 * @example
 * ```ts
 * import { vptq } from "./vptq.ts";
 * import { eye, matrix, toFloat32 } from "../core/tensor.ts";
 * const w = matrix(8, 4, Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)));
 * const q = await vptq(w, toFloat32(eye(4)), { vectorSize: 4, codebookSize: 4 });
 * console.assert(q.vq.main.packed.length === 2 && q.vq.main.bits === 2); // 8 vectors × 2 bits
 * ```
 */
export async function vptq(w: Matrix, h: Matrix<FloatArray>, options: VptqOptions = {}): Promise<VptqLayer> {
  const t0 = performance.now();
  const {
    vectorSize: v = 4,
    codebookSize: k = 256,
    residualCodebookSize: k2 = 0,
    outlierFraction = 0,
    actOrder = false,
    damping = 0.01,
    blockSize = 128,
    seed = 0,
    kmeansIterations = 25,
    backend = getBackend(),
  } = options;
  const kOut = options.outlierCodebookSize ?? k;
  const [rows, cols] = w.shape;
  if (h.shape[0] !== cols || h.shape[1] !== cols) {
    throw new ShapeError(`vptq: Hessian is ${h.shape.join("×")} for a layer with ${cols} input columns`);
  }
  if (!Number.isInteger(v) || v < 1) throw new OptionError(`vptq: vectorSize must be a positive integer, got ${v}`);
  if (rows % v !== 0) throw new OptionError(`vptq: vectorSize ${v} does not divide the ${rows} rows`);
  for (const [name, value] of [["codebookSize", k], ["outlierCodebookSize", kOut]] as const) {
    if (!Number.isInteger(value) || value < 2 || value > 65536) {
      throw new OptionError(`vptq: ${name} must be an integer in 2..65536, got ${value}`);
    }
  }
  if (!Number.isInteger(k2) || k2 < 0 || k2 === 1 || k2 > 65536) {
    throw new OptionError(`vptq: residualCodebookSize must be 0 or an integer in 2..65536, got ${k2}`);
  }
  if (!(outlierFraction >= 0 && outlierFraction < 1)) {
    throw new OptionError(`vptq: outlierFraction must be in [0, 1), got ${outlierFraction}`);
  }
  if (!(damping >= 0)) throw new OptionError(`vptq: damping must be ≥ 0, got ${damping}`);
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new OptionError(`vptq: blockSize must be ≥ 1`);
  assertFinite(w, "vptq weights");
  assertFinite(h, "vptq Hessian");

  const groups = rows / v; // vectors per column
  const diag = diagonal(h); // the k-means weights: dead columns weigh 0
  // Outlier columns: the largest diagonals (stable: ties keep column order). Processing order: outliers first.
  const byDiag = Int32Array.from({ length: cols }, (_, j) => j).sort((a, b) => diag[b] - diag[a] || a - b);
  const nOut = Math.min(cols - 1, Math.round(outlierFraction * cols));
  const isOutlier = new Uint8Array(cols);
  for (let p = 0; p < nOut; p++) isOutlier[byDiag[p]] = 1;
  const rest = actOrder ? byDiag.filter((j) => !isOutlier[j]) : Int32Array.from({ length: cols }, (_, j) => j)
    .filter((j) => !isOutlier[j]);
  const outlierCols = byDiag.slice(0, nOut);
  const perm = Int32Array.from([...outlierCols, ...rest]); // perm[p] = original column processed p-th
  // Dead columns, the processing order, damping and GPTQ's U, as every Hessian-based method.
  const prepared = await prepareLayer(w, h, {
    damping,
    order: perm,
    factorPrecision: options.factorPrecision,
    backend,
  });
  const W = prepared.deadZeroed; // [rows, cols]

  // Codebooks from Hessian-weighted k-means of the (dead-zeroed) original vectors.
  const fit = async (columns: Int32Array, size: number, s: number, source: Matrix) => {
    const points = vectorsOf(source, columns, v);
    const weights = new Float32Array(points.shape[0]);
    columns.forEach((c, n) => weights.fill(diag[c], n * groups, (n + 1) * groups));
    const { centroids } = await backend.kmeans(points, { k: size, weights, seed: s, iterations: kmeansIterations });
    return roundToHalf(centroids);
  };
  const mainCols = Int32Array.from(rest).sort();
  const mainBook = await fit(mainCols, k, seed, W);
  const outBook = nOut > 0 ? await fit(Int32Array.from(outlierCols).sort(), kOut, seed + 1, W) : undefined;

  const { w: Wp, u } = prepared;
  const bookAt = (p: number) => (p < nOut ? outBook! : mainBook);

  let pass = await errorFeedbackLoop(Wp, u, v, bookAt, undefined, blockSize, backend);
  let resBook: Matrix | undefined;
  if (k2 > 0) {
    // VPTQ's residual stage: k-means of the error the first pass left in each vector (weighted by its column's
    // H_jj), then a second pass that adds the nearest residual centroid to each main centroid.
    const residualPoints = matrix(cols * groups, v);
    const weights = new Float32Array(cols * groups);
    for (let p = 0; p < cols; p++) {
      const c = perm[p];
      for (let g = 0; g < groups; g++) {
        const n = c * groups + g;
        weights[n] = diag[c];
        for (let t = 0; t < v; t++) residualPoints.data[n * v + t] = pass.remaining.data[(g * v + t) * cols + p];
      }
    }
    const { centroids } = await backend.kmeans(residualPoints, {
      k: k2,
      weights,
      seed: seed + 2,
      iterations: kmeansIterations,
    });
    resBook = roundToHalf(centroids);
    pass = await errorFeedbackLoop(Wp, u, v, bookAt, resBook, blockSize, backend);
  }

  // Back to the original column order.
  const dequantized = matrix(rows, cols);
  for (let i = 0; i < rows; i++) {
    for (let p = 0; p < cols; p++) dequantized.data[i * cols + perm[p]] = pass.quantized.data[i * cols + p];
  }
  const positionOf = new Int32Array(cols);
  perm.forEach((c, p) => positionOf[c] = p);
  const book = (centroids: Matrix, columns: Int32Array, from: Uint16Array): VqCodebook => {
    const indices = new Uint16Array(columns.length * groups);
    columns.forEach((c, n) =>
      indices.set(from.subarray(positionOf[c] * groups, (positionOf[c] + 1) * groups), n * groups)
    );
    const bits = indexBits(centroids.shape[0]);
    return { centroids, bits, columns, packed: packIndices(indices, bits) };
  };
  const allCols = Int32Array.from({ length: cols }, (_, j) => j);
  const vq: VqData = {
    vectorSize: v,
    main: book(mainBook, mainCols, pass.indices),
    outlier: outBook && book(outBook, Int32Array.from(outlierCols).sort(), pass.indices),
    residual: resBook && book(resBook, allCols, pass.residualIndices!),
  };

  return {
    method: "vptq",
    dequantized,
    permutation: perm,
    vq,
    stats: {
      layerLoss: await layerLoss(w, dequantized, h, backend),
      avgBits: vqBitsPerWeight(vq, rows, cols),
      seconds: (performance.now() - t0) / 1000,
      damping: prepared.damping,
    },
  };
}

/**
 * Storage of a vector-quantized layer per weight: every index, every codebook as float16 (`k·v·16` bits each) and the
 * outlier column list (16 bits per column).
 */
export function vqBitsPerWeight(vq: VqData, rows: number, cols: number): number {
  const groups = rows / vq.vectorSize;
  let bits = 0;
  for (const b of [vq.main, vq.outlier, vq.residual]) {
    if (!b) continue;
    bits += b.columns.length * groups * b.bits + b.centroids.data.length * 16;
  }
  if (vq.outlier) bits += vq.outlier.columns.length * 16;
  return bits / (rows * cols);
}

/**
 * The dequantized weights `[rows, cols]` from codebooks and packed indices alone (what a checkpoint reader does): each
 * vector is its centroid, plus its residual centroid when there is a residual codebook.
 *
 * @throws {ShapeError} when the packed indices do not cover the layer.
 */
export function vptqDequantize(vq: VqData, rows: number, cols: number): Matrix {
  const v = vq.vectorSize, groups = rows / v;
  const out = matrix(rows, cols);
  const covered = new Uint8Array(cols);
  for (const b of [vq.main, vq.outlier]) {
    if (!b) continue;
    const indices = unpackIndices(b.packed, b.bits, b.columns.length * groups);
    b.columns.forEach((c, n) => {
      covered[c] = 1;
      for (let g = 0; g < groups; g++) {
        const base = indices[n * groups + g] * v;
        for (let t = 0; t < v; t++) out.data[(g * v + t) * cols + c] = b.centroids.data[base + t];
      }
    });
  }
  if (covered.some((x) => x === 0)) throw new ShapeError(`vptq: some columns have no indices`);
  const r = vq.residual;
  if (r) {
    const indices = unpackIndices(r.packed, r.bits, r.columns.length * groups);
    r.columns.forEach((c, n) => {
      for (let g = 0; g < groups; g++) {
        const base = indices[n * groups + g] * v;
        for (let t = 0; t < v; t++) {
          const at = (g * v + t) * cols + c;
          out.data[at] = Math.fround(out.data[at] + r.centroids.data[base + t]);
        }
      }
    });
  }
  return out;
}

/**
 * Packs indices of `bits` bits (1 to 16) LSB-first with `packBits`: one stream for `bits ≤ 8`; for wider indices, the
 * low bytes as one 8-bit stream followed by the high `bits − 8` bits as a second stream (so both halves stay within
 * `packBits`' 1-8-bit widths).
 *
 * @throws {OptionError} on a width outside 1..16 or an index that does not fit.
 */
export function packIndices(indices: Uint16Array, bits: number): Uint8Array {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) {
    throw new OptionError(`can pack 1 to 16-bit indices, got ${bits}`);
  }
  if (bits <= 8) {
    const narrow = new Uint8Array(indices.length);
    for (let i = 0; i < indices.length; i++) {
      if (indices[i] >= 2 ** bits) throw new OptionError(`index ${indices[i]} at ${i} does not fit in ${bits} bits`);
      narrow[i] = indices[i];
    }
    return packBits(narrow, bits);
  }
  const low = new Uint8Array(indices.length), high = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    if (indices[i] >= 2 ** bits) throw new OptionError(`index ${indices[i]} at ${i} does not fit in ${bits} bits`);
    low[i] = indices[i] & 0xff;
    high[i] = indices[i] >>> 8;
  }
  const a = packBits(low, 8), b = packBits(high, bits - 8);
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Unpacks `count` indices from a {@link packIndices} stream.
 *
 * @throws {OptionError} on a width outside 1..16; {ShapeError} when the bytes hold fewer indices.
 */
export function unpackIndices(packed: Uint8Array, bits: number, count: number): Uint16Array {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) {
    throw new OptionError(`can unpack 1 to 16-bit indices, got ${bits}`);
  }
  if (bits <= 8) return Uint16Array.from(unpackBits(packed, bits, count));
  const low = unpackBits(packed.subarray(0, count), 8, count);
  const high = unpackBits(packed.subarray(count), bits - 8, count);
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) out[i] = low[i] | (high[i] << 8);
  return out;
}

/** `⌈log2 k⌉`, at least 1. */
function indexBits(k: number): number {
  return Math.max(1, Math.ceil(Math.log2(k)));
}

/** Result of one error-feedback pass, in processing order. */
interface Pass {
  /** `[rows, cols]` dequantized weights. */
  readonly quantized: Matrix;
  /** `[rows, cols]` updated weights minus their main-codebook reconstruction (the residual stage's data). */
  readonly remaining: Matrix;
  /** Main (or outlier) index of vector `g` of processed column `p` at `p·groups + g`. */
  readonly indices: Uint16Array;
  /** Residual indices, same layout, when a residual codebook is used. */
  readonly residualIndices?: Uint16Array;
}

/**
 * GPTQ's column loop with vector rounding: `w` `[rows, cols]` in processing order (not modified), `u` the upper factor
 * of the damped inverse Hessian in the same order, `bookAt(p)` the codebook of processed column `p`.
 */
async function errorFeedbackLoop(
  w: Matrix,
  u: Matrix<FloatArray>,
  v: number,
  bookAt: (p: number) => Matrix,
  residual: Matrix | undefined,
  blockSize: number,
  backend: Backend,
): Promise<Pass> {
  const [rows, cols] = w.shape;
  const groups = rows / v;
  const W = w.data.slice(); // [rows, cols], updated in place
  const U = u.data;
  const quantized = matrix(rows, cols), remaining = matrix(rows, cols);
  const indices = new Uint16Array(cols * groups);
  const residualIndices = residual ? new Uint16Array(cols * groups) : undefined;
  const vec = new Float32Array(v), left = new Float32Array(v), q = new Float32Array(v);
  for (let b0 = 0; b0 < cols; b0 += blockSize) {
    const b1 = Math.min(cols, b0 + blockSize), width = b1 - b0;
    const err = matrix(rows, width); // [rows, width]: e_j of each column of the block
    for (let j = b0; j < b1; j++) {
      const book = bookAt(j);
      const inv = 1 / U[j * cols + j];
      for (let g = 0; g < groups; g++) {
        for (let t = 0; t < v; t++) vec[t] = W[(g * v + t) * cols + j];
        const c1 = nearest(vec, book.data, book.shape[0], v);
        indices[j * groups + g] = c1;
        for (let t = 0; t < v; t++) {
          q[t] = book.data[c1 * v + t];
          left[t] = vec[t] - q[t];
        }
        if (residual) {
          const c2 = nearest(left, residual.data, residual.shape[0], v);
          residualIndices![j * groups + g] = c2;
          for (let t = 0; t < v; t++) q[t] = Math.fround(q[t] + residual.data[c2 * v + t]);
        }
        for (let t = 0; t < v; t++) {
          const i = g * v + t;
          quantized.data[i * cols + j] = q[t];
          remaining.data[i * cols + j] = left[t];
          err.data[i * width + (j - b0)] = (vec[t] - q[t]) * inv;
        }
      }
      // Feed this column's error into the rest of the block at once (the lazy update covers later blocks).
      for (let i = 0; i < rows; i++) {
        const e = err.data[i * width + (j - b0)];
        if (e === 0) continue;
        const wi = i * cols;
        for (let t = j + 1; t < b1; t++) W[wi + t] -= e * U[j * cols + t];
      }
    }
    if (b1 < cols) {
      const tail = cols - b1;
      const ub = matrix(width, tail);
      for (let r = 0; r < width; r++) {
        for (let t = 0; t < tail; t++) ub.data[r * tail + t] = U[(b0 + r) * cols + b1 + t];
      }
      const delta = await backend.matmul(err, ub); // [rows, tail]
      for (let i = 0; i < rows; i++) {
        const wi = i * cols + b1, di = i * tail;
        for (let t = 0; t < tail; t++) W[wi + t] -= delta.data[di + t];
      }
    }
  }
  return { quantized, remaining, indices, residualIndices };
}

/** Index of the centroid nearest to `x` (squared Euclidean; ties to the lower index). */
function nearest(x: Float32Array, centroids: Float32Array, k: number, v: number): number {
  let best = 0, bestD = Infinity;
  for (let c = 0; c < k; c++) {
    let s = 0;
    const base = c * v;
    for (let t = 0; t < v && s < bestD; t++) {
      const d = x[t] - centroids[base + t];
      s += d * d;
    }
    if (s < bestD) bestD = s, best = c;
  }
  return best;
}

/** The vectors of `columns` as k-means points `[columns·rows/v, v]`: column by column, vectors top to bottom. */
function vectorsOf(w: Matrix, columns: Int32Array, v: number): Matrix {
  const [rows, cols] = w.shape;
  const groups = rows / v;
  const points = matrix(columns.length * groups, v);
  columns.forEach((c, n) => {
    for (let g = 0; g < groups; g++) {
      for (let t = 0; t < v; t++) points.data[(n * groups + g) * v + t] = w.data[(g * v + t) * cols + c];
    }
  });
  return points;
}

/** The same matrix with every value rounded to the nearest float16 (storage precision of the codebooks). */
function roundToHalf(m: Matrix): Matrix {
  return matrix(m.shape[0], m.shape[1], m.data.map((x) => f16BitsToF32(f32ToF16Bits(x))));
}
