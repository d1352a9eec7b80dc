/**
 * Reference softmax cross-entropy over the vocabulary, per token, with its gradient with respect to the logits.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import { type FloatArray, type Matrix, zerosLike } from "../tensor.ts";

/** `CrossEntropyResult` of `core/backend.ts` with the gradient in the element type of the logits. */
export interface CrossEntropyOutput<A extends FloatArray> {
  /** Natural-log loss per token, in the element type of the logits; 0 where the target is ignored. */
  readonly losses: A;
  /** `[tokens, vocab]` `gradScale[t]·(softmax − onehot)`, present when a `gradScale` was given. */
  readonly dlogits?: Matrix<A>;
}

/**
 * Loss `logsumexp(z) − z[target]` per row (the maximum is subtracted before `exp`, so large logits do not overflow).
 * Rows whose target is `-1` are ignored: loss 0 and a zero gradient row.
 *
 * @param logits `[tokens, vocab]`.
 * @param targets one class index per token, or `-1`.
 * @param gradScale when given, the gradient is returned, scaled per token by this number or by `gradScale[t]`
 *   (for a mean loss over `n` counted tokens pass `1/n`).
 * @throws {ShapeError} when `targets` (or a per-token `gradScale`) does not have one entry per row, or a target is
 *   outside `[-1, vocab)`.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { crossEntropy } from "./cross_entropy.ts";
 * const { losses } = crossEntropy(fromRows([[0, 0]]), new Int32Array([1]));
 * console.assert(Math.abs(losses[0] - Math.LN2) < 1e-6);
 * ```
 */
export function crossEntropy<A extends FloatArray>(
  logits: Matrix<A>,
  targets: Int32Array,
  gradScale?: number | FloatArray,
): CrossEntropyOutput<A> {
  const [n, vocab] = logits.shape;
  if (targets.length !== n) throw new ShapeError(`crossEntropy: ${targets.length} targets for ${n} rows of logits`);
  if (typeof gradScale === "object" && gradScale.length !== n) {
    throw new ShapeError(`crossEntropy: ${gradScale.length} gradient scales for ${n} rows of logits`);
  }
  const losses = zerosLike(logits, 1, n).data; // float32 or float64 like the logits
  const dlogits = gradScale === undefined ? undefined : zerosLike(logits);
  const Z = logits.data;
  for (let t = 0; t < n; t++) {
    const target = targets[t];
    if (target === -1) continue;
    if (!Number.isInteger(target) || target < 0 || target >= vocab) {
      throw new ShapeError(`crossEntropy: target ${target} at row ${t} is outside [0, ${vocab})`);
    }
    const o = t * vocab;
    let max = -Infinity;
    for (let j = 0; j < vocab; j++) if (Z[o + j] > max) max = Z[o + j];
    let sum = 0;
    for (let j = 0; j < vocab; j++) sum += Math.exp(Z[o + j] - max);
    const lse = max + Math.log(sum);
    losses[t] = lse - Z[o + target];
    if (dlogits) {
      const scale = typeof gradScale === "number" ? gradScale : (gradScale as FloatArray)[t];
      const D = dlogits.data;
      for (let j = 0; j < vocab; j++) D[o + j] = scale * Math.exp(Z[o + j] - lse);
      D[o + target] -= scale;
    }
  }
  return dlogits ? { losses, dlogits } : { losses };
}
