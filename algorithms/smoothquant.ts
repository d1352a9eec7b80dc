/**
 * SmoothQuant's scales (Xiao et al., arXiv 2211.10438): per input channel `j` of the linear layers that read one input,
 *
 * `s_j = max|X_j|^α / max|W_{:,j}|^{1−α}`,   then `X → X/s` (folded into the producer) and `W → W·diag(s)`,
 *
 * which moves the activations' outlier channels into the weights (exactly equivalent in full precision). With several
 * layers on one input (q/k/v, gate/up) the weight maximum runs over all of them, as the reference does. Folding into a
 * model is `model/smooth.ts`'s job; this module only computes scales.
 *
 * @module
 */

import { OptionError, ShapeError } from "../core/errors.ts";
import type { Matrix } from "../core/tensor.ts";

/** Options of {@link smoothQuantScales}. */
export interface SmoothQuantOptions {
  /** Migration strength `α ∈ [0, 1]`; default 0.5 (the paper's default for most models). */
  readonly alpha?: number;
  /** Lower bound of every scale (the reference clamps at 1e-5); default 1e-5. */
  readonly minScale?: number;
}

/**
 * SmoothQuant's per-channel scales for the layers `weights` (each `[out, in]`) that share one input.
 *
 * A channel whose activation or weight maximum is 0 (a dead input or an all-zero column) gets `s = 1`: nothing to
 * migrate, and a 0 or infinite scale could not be folded.
 *
 * @param actAbsMax `max_t |X_tj|` per input channel, length `in`.
 * @param weights the layers reading that input.
 * @returns `s`, length `in`.
 * @throws {ShapeError} when a weight's input width differs from `actAbsMax`; {OptionError} on `α` outside [0, 1].
 *
 * @example
 * ```ts
 * import { smoothQuantScales } from "./smoothquant.ts";
 * import { fromRows } from "../core/tensor.ts";
 * const s = smoothQuantScales(new Float32Array([16, 1]), [fromRows([[1, 4]])], { alpha: 0.5 });
 * console.assert(s[0] === 4 && s[1] === 0.5); // √16/√1, √1/√4
 * ```
 */
export function smoothQuantScales(
  actAbsMax: Float32Array,
  weights: readonly Matrix[],
  options: SmoothQuantOptions = {},
): Float32Array {
  const { alpha = 0.5, minScale = 1e-5 } = options;
  if (!(alpha >= 0 && alpha <= 1)) throw new OptionError(`SmoothQuant: alpha must be in [0, 1], got ${alpha}`);
  const cols = actAbsMax.length;
  const wmax = new Float64Array(cols);
  for (const w of weights) {
    const [rows, c] = w.shape;
    if (c !== cols) throw new ShapeError(`SmoothQuant: a weight has ${c} input columns, the statistics ${cols}`);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) wmax[j] = Math.max(wmax[j], Math.abs(w.data[i * cols + j]));
    }
  }
  const s = new Float32Array(cols);
  for (let j = 0; j < cols; j++) {
    const x = actAbsMax[j];
    s[j] = x > 0 && wmax[j] > 0 && Number.isFinite(x) ? Math.max(minScale, x ** alpha / wmax[j] ** (1 - alpha)) : 1;
  }
  return s;
}
