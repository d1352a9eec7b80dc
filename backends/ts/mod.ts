/**
 * The reference backend: every kernel in plain TypeScript, straight from `core/`. It is the accuracy reference of the
 * conformance suite and the fallback that runs everywhere.
 *
 * @module
 */

import type { Backend } from "../../core/backend.ts";
import { fitGrid, quantizeGrid } from "../../core/grids/fit.ts";
import { cholesky, choleskyInverse, reverseCholesky, upperCholeskyOfInverse } from "../../core/linalg/cholesky.ts";
import { eigh } from "../../core/linalg/eigh.ts";
import { gramAccumulate } from "../../core/linalg/gram.ts";
import { kmeans } from "../../core/linalg/kmeans.ts";
import { svd } from "../../core/linalg/svd.ts";
import { matmul } from "../../core/linalg/matmul.ts";
import { triangularSolve } from "../../core/linalg/triangular.ts";
import { attention, attentionBackward } from "../../core/nn/attention.ts";
import { crossEntropy, linearCrossEntropyWith } from "../../core/nn/cross_entropy.ts";
import { decoderLayerWith } from "../../core/nn/decoder_layer.ts";
import { rmsNorm, rmsNormBackward } from "../../core/nn/rms_norm.ts";
import { rope } from "../../core/nn/rope.ts";
import { swiglu, swigluBackward, swigluLinear } from "../../core/nn/swiglu.ts";
import { gptqQuantize } from "../../core/quant/gptq_kernel.ts";

/** Runs a synchronous reference kernel as the interface's async kernel; a throw becomes a rejection. */
function run<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The reference TS backend. */
export const tsBackend: Backend = {
  name: "ts",
  matmul: (a, b, options) => run(() => matmul(a, b, options)),
  gramAccumulate: (acc, x, alpha) => run(() => gramAccumulate(acc, x, alpha)),
  cholesky: (a) => run(() => cholesky(a)),
  triangularSolve: (t, b, options) => run(() => triangularSolve(t, b, options)),
  choleskyInverse: (l) => run(() => choleskyInverse(l)),
  upperCholeskyOfInverse: (h) => run(() => upperCholeskyOfInverse(h)),
  reverseCholesky: (h) => run(() => reverseCholesky(h)),
  eigh: (a) => run(() => eigh(a)),
  svd: (a, options) => run(() => svd(a, options)),
  kmeans: (points, options) => run(() => kmeans(points, options)),
  fitGrid: (w, grid, groupSize) => run(() => fitGrid(w, grid, groupSize)),
  quantizeGrid: (w, grid, params, groupOfColumn) => run(() => quantizeGrid(w, grid, params, groupOfColumn)),
  gptqQuantize: (args) => run(() => gptqQuantize(args)),
  rmsNorm: (x, weight, eps) => run(() => rmsNorm(x, weight, eps)),
  rmsNormBackward: (x, weight, dy, eps) => run(() => rmsNormBackward(x, weight, dy, eps)),
  rope: (x, options) => run(() => rope(x, options)),
  attention: (q, k, v, shape) => run(() => attention(q, k, v, shape)),
  attentionBackward: (q, k, v, dout, shape) => run(() => attentionBackward(q, k, v, dout, shape)),
  swiglu: (gate, up) => run(() => swiglu(gate, up)),
  swigluBackward: (gate, up, dy) => run(() => swigluBackward(gate, up, dy)),
  swigluLinear: (x, gate, up) => run(() => swigluLinear(x, gate, up)),
  crossEntropy: (logits, targets, gradScale) => run(() => crossEntropy(logits, targets, gradScale)),
  // Composed through `this`, so that a backend spreading this one with kernels of its own composes those.
  linearCrossEntropy(x, w, targets) {
    return linearCrossEntropyWith(this ?? tsBackend, x, w, targets);
  },
  decoderLayer(x, weights, options) {
    return decoderLayerWith(this ?? tsBackend, x, weights, options);
  },
};
