/**
 * AWQ's activation-aware scales (Lin et al., arXiv 2306.00978): weights of input channels with large activations matter
 * more, so scale them up before quantization (`W → W·diag(s)`, `X → X/s`, exact in full precision) with
 *
 * `s = mean_t|X_tj|^α`, normalised by `sqrt(max s · min s)`,
 *
 * and choose `α` on a grid of 20 points in [0, 1) by the output error of the layers *after quantization with the chosen
 * quantizer*. With the Hessian `H = (2/N)·XᵀX` that error needs no activations: the scaled layer sees
 * `H' = S⁻¹ H S⁻¹`, and `tr((W·S − Q) H' (W·S − Q)ᵀ) = tr((W − Q·S⁻¹) H (W − Q·S⁻¹)ᵀ)` is the output MSE (×2/N) of the
 * layer as the model computes it after folding. Layers that share an input (q/k/v, gate/up) share `s` and their errors
 * are summed, as AWQ's block-output loss does.
 *
 * `α = 0` gives `s = 1`, the unscaled quantizer; it is on the grid and ties go to the smaller `α`, so the search never
 * returns a scale worse than none on this objective. AWQ's weight-clipping search is not implemented.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { layerLoss } from "./layer_loss.ts";

/** Options of {@link awqScales}. */
export interface AwqScaleOptions {
  /** Lower bound before normalisation (the reference clamps at 1e-4); default 1e-4. */
  readonly minScale?: number;
}

/**
 * AWQ's scales for one `α`: `s_j = max(mean|X_j|, …)^α`, then divided by `sqrt(max s · min s)` so that they straddle 1.
 *
 * @param actAbsMean `mean_t |X_tj|` per input channel (or per tied slot).
 * @param alpha exponent, `≥ 0`.
 * @throws {OptionError} on a negative or non-finite `α`.
 *
 * @example
 * ```ts
 * import { awqScales } from "./awq.ts";
 * const s = awqScales(new Float32Array([4, 1]), 1);
 * console.assert(s[0] === 2 && s[1] === 0.5); // [4, 1] / sqrt(4·1)
 * ```
 */
export function awqScales(actAbsMean: Float32Array, alpha: number, options: AwqScaleOptions = {}): Float32Array {
  const { minScale = 1e-4 } = options;
  if (!(alpha >= 0 && Number.isFinite(alpha))) throw new OptionError(`AWQ: alpha must be ≥ 0, got ${alpha}`);
  const s = new Float64Array(actAbsMean.length);
  let max = 0, min = Infinity;
  for (let j = 0; j < s.length; j++) {
    s[j] = Math.max(actAbsMean[j], minScale) ** alpha;
    max = Math.max(max, s[j]);
    min = Math.min(min, s[j]);
  }
  const norm = s.length ? Math.sqrt(max * min) : 1;
  return Float32Array.from(s, (x) => x / norm);
}

/** One layer that reads the shared input. */
export interface AwqLayer {
  readonly name: string;
  /** `[out, in]`. */
  readonly w: Matrix;
}

/** Quantizes one (scaled) layer: the chosen quantizer, as the calibration driver calls it. */
export type AwqQuantizer = (name: string, w: Matrix, h: Matrix<FloatArray>) => Promise<{ dequantized: Matrix }>;

/** Options of {@link awqSearch}. */
export interface AwqSearchOptions extends AwqScaleOptions {
  /** `[in, in]` Hessian of the shared input (`2/N·XᵀX`); required for the search. */
  readonly hessian?: Matrix<FloatArray>;
  /** The quantizer the model will be quantized with; required for the search. */
  readonly quantize?: AwqQuantizer;
  /** Grid points: `α = i/gridSize` for `i = 0 … gridSize−1`; default 20. */
  readonly gridSize?: number;
  /** A fixed `α` instead of the search (nothing is quantized, no objective reported). */
  readonly alpha?: number;
  /**
   * Scales shared between columns: column `j` uses slot `tie[j]` (slots `0 … max`), whose statistic is the mean over
   * its columns. The attention output under grouped-query attention needs this: its scale is folded into `v_proj`'s
   * rows, one per key/value channel, so the query heads of a group must share it. Default: one slot per column.
   */
  readonly tie?: Int32Array;
  /** Kernels; default the current backend. */
  readonly backend?: Backend;
}

/** Result of {@link awqSearch}. */
export interface AwqSearchResult {
  /** The chosen `α`. */
  readonly alpha: number;
  /** Scale per input column. */
  readonly scales: Float32Array;
  /** Scale per tied slot (equal to `scales` without `tie`). */
  readonly slotScales: Float32Array;
  /** The grid searched (one entry, the fixed `α`, without a search). */
  readonly alphas: Float64Array;
  /** Summed output error `Σ tr((W − Q·S⁻¹) H (W − Q·S⁻¹)ᵀ)` per grid point; empty without a search. */
  readonly objectives: Float64Array;
}

/**
 * AWQ's grid search of `α` for the layers sharing one input (or the scales of a fixed `α`).
 *
 * @param layers the layers reading the input, `[out_i, in]` each.
 * @param actAbsMean `mean_t |X_tj|`, length `in`.
 * @param options the Hessian and quantizer of the search, or a fixed `alpha`; the grid; ties.
 * @throws {ShapeError} when widths differ; {OptionError} on a bad grid, `α` or `tie`, or a search without a Hessian
 *   or quantizer.
 *
 * @example
 * ```ts
 * import { awqSearch } from "./awq.ts";
 * import { rtn } from "./rtn.ts";
 * import { eye, fromRows, toFloat32 } from "../core/tensor.ts";
 * const w = fromRows([[0.3, -0.2, 0.05], [0.1, 0.4, -0.3]]);
 * const r = await awqSearch([{ name: "fc", w }], new Float32Array([5, 1, 0.2]), {
 *   hessian: toFloat32(eye(3)),
 *   quantize: (_name, ws, h) => rtn(ws, h, { bits: 2 }),
 * });
 * console.assert(r.objectives[r.alphas.indexOf(r.alpha)] <= r.objectives[0]);
 * ```
 */
export async function awqSearch(
  layers: readonly AwqLayer[],
  actAbsMean: Float32Array,
  options: AwqSearchOptions,
): Promise<AwqSearchResult> {
  const { gridSize = 20, backend = getBackend(), hessian: h, quantize } = options;
  const cols = actAbsMean.length;
  for (const { name, w } of layers) {
    if (w.shape[1] !== cols) throw new ShapeError(`AWQ: ${name} has ${w.shape[1]} input columns, expected ${cols}`);
  }
  if (!Number.isInteger(gridSize) || gridSize < 1) throw new OptionError(`AWQ: gridSize must be ≥ 1, got ${gridSize}`);
  const tie = options.tie ?? Int32Array.from({ length: cols }, (_, j) => j);
  if (tie.length !== cols) throw new OptionError(`AWQ: tie has ${tie.length} entries for ${cols} columns`);
  let slots = 0;
  for (const t of tie) {
    if (!(t >= 0)) throw new OptionError(`AWQ: tie slots must be ≥ 0`);
    slots = Math.max(slots, t + 1);
  }
  const slotMean = new Float32Array(slots), count = new Float64Array(slots);
  const acc = new Float64Array(slots);
  for (let j = 0; j < cols; j++) acc[tie[j]] += actAbsMean[j], count[tie[j]]++;
  for (let t = 0; t < slots; t++) slotMean[t] = count[t] ? acc[t] / count[t] : 0;

  const expand = (slot: Float32Array) => Float32Array.from(tie, (t) => slot[t]);
  if (options.alpha !== undefined) {
    const slotScales = awqScales(slotMean, options.alpha, options);
    return {
      alpha: options.alpha,
      scales: expand(slotScales),
      slotScales,
      alphas: Float64Array.of(options.alpha),
      objectives: new Float64Array(0),
    };
  }
  if (!h || !quantize) throw new OptionError(`AWQ: the α search needs the input's Hessian and the quantizer`);
  if (h.shape[0] !== cols || h.shape[1] !== cols) {
    throw new ShapeError(`AWQ: Hessian ${h.shape.join("×")} for statistics of ${cols} channels`);
  }

  const alphas = Float64Array.from({ length: gridSize }, (_, i) => i / gridSize);
  const objectives = new Float64Array(gridSize);
  let best = 0;
  for (let i = 0; i < gridSize; i++) {
    const s = expand(awqScales(slotMean, alphas[i], options));
    const hs = scaleHessian(h, s);
    let total = 0;
    for (const { name, w } of layers) {
      const ws = scaleColumns(w, s);
      const q = await quantize(name, ws, hs);
      total += await layerLoss(ws, q.dequantized, hs, backend);
    }
    objectives[i] = total;
    if (total < objectives[best]) best = i; // strict: ties keep the smaller α (α = 0 is the unscaled quantizer)
  }
  const slotScales = awqScales(slotMean, alphas[best], options);
  return { alpha: alphas[best], scales: expand(slotScales), slotScales, alphas, objectives };
}

/** `W·diag(s)`. */
export function scaleColumns(w: Matrix, s: Float32Array): Matrix {
  const [rows, cols] = w.shape;
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * cols + j] = w.data[i * cols + j] * s[j];
  return { data: out, shape: [rows, cols] };
}

/** `S⁻¹ H S⁻¹`: the Hessian of the inputs `X/s`. */
function scaleHessian(h: Matrix<FloatArray>, s: Float32Array): Matrix<FloatArray> {
  const n = h.shape[0];
  const out = h.data instanceof Float64Array ? new Float64Array(n * n) : new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) out[i * n + j] = h.data[i * n + j] / (s[i] * s[j]);
  return { data: out, shape: [n, n] };
}
