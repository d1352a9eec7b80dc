/**
 * Reference softmax cross-entropy over the vocabulary, per token, with its gradient with respect to the logits.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import type { Backend } from "../backend.ts";
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

/** The kernels {@link linearCrossEntropyWith} composes. */
export type LinearCrossEntropyKernels = Pick<Backend, "matmul" | "crossEntropy">;

/** Logits (floats) {@link linearCrossEntropyWith} forms at a time by default: 16 MiB. */
export const CLASSIFIER_CHUNK_FLOATS = 2 ** 22;

/**
 * The shape checks of `Backend.linearCrossEntropy`: `x` is `[tokens, hidden]`, `w` is `[vocab, hidden]`, one target
 * per token in `[-1, vocab)`.
 * @throws {ShapeError} otherwise.
 */
export function checkLinearCrossEntropy(x: Matrix, w: Matrix, targets: Int32Array): void {
  const [n, d] = x.shape, [vocab, dw] = w.shape;
  if (d !== dw) throw new ShapeError(`linearCrossEntropy: inputs of ${d} columns for a classifier of ${dw}`);
  if (x.data.length !== n * d || w.data.length !== vocab * d) {
    throw new ShapeError(
      `linearCrossEntropy: data lengths ${x.data.length} and ${w.data.length} do not match the shapes`,
    );
  }
  if (targets.length !== n) throw new ShapeError(`linearCrossEntropy: ${targets.length} targets for ${n} rows`);
  for (let t = 0; t < n; t++) {
    const target = targets[t];
    if (target !== -1 && (!Number.isInteger(target) || target < 0 || target >= vocab)) {
      throw new ShapeError(`linearCrossEntropy: target ${target} at row ${t} is outside [0, ${vocab})`);
    }
  }
}

/**
 * `crossEntropy(x · wᵀ, targets).losses` composed from a backend's `matmul` and `crossEntropy`, the logits formed a
 * chunk of rows at a time (at most `maxLogits` floats, at least one row): the same losses as the whole composition,
 * since each row's logits and loss depend on that row alone, in a fraction of its memory.
 *
 * @param x `[tokens, hidden]` inputs of the classifier.
 * @param w `[vocab, hidden]` the classifier's weight.
 * @throws {ShapeError} as {@link checkLinearCrossEntropy}.
 *
 * @example
 * ```ts
 * import { tsBackend } from "../../backends/ts/mod.ts";
 * import { fromRows } from "../tensor.ts";
 * import { linearCrossEntropyWith } from "./cross_entropy.ts";
 * const losses = await linearCrossEntropyWith(tsBackend, fromRows([[1, 0]]), fromRows([[0, 0], [0, 1]]), new Int32Array([0]));
 * console.assert(Math.abs(losses[0] - Math.LN2) < 1e-6);
 * ```
 */
export async function linearCrossEntropyWith(
  kernels: LinearCrossEntropyKernels,
  x: Matrix,
  w: Matrix,
  targets: Int32Array,
  maxLogits = CLASSIFIER_CHUNK_FLOATS,
): Promise<Float32Array> {
  checkLinearCrossEntropy(x, w, targets);
  const [n, d] = x.shape, vocab = w.shape[0];
  const losses = new Float32Array(n);
  const rows = Math.max(1, Math.floor(maxLogits / Math.max(1, vocab)));
  for (let r0 = 0; r0 < n; r0 += rows) {
    const r1 = Math.min(n, r0 + rows);
    const chunk: Matrix = { data: x.data.subarray(r0 * d, r1 * d), shape: [r1 - r0, d] };
    const logits = await kernels.matmul(chunk, w, { transB: true });
    losses.set((await kernels.crossEntropy(logits, targets.subarray(r0, r1))).losses, r0);
  }
  return losses;
}
