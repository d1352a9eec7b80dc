/**
 * ptq: post-training quantization of transformer language models, in TypeScript.
 *
 * Pure functions over plain `{ data, shape }` tensors: Hessians, GPTQ's error feedback, grids, and a Llama model to
 * calibrate and evaluate them on, with swappable compute backends.
 *
 * @example
 * ```ts
 * import { fromRows, gptq, hessianOf } from "./mod.ts";
 * const x = fromRows([[1, 0.5, -0.2], [0.3, -1, 0.8], [0.9, 0.1, 0.4], [-0.5, 0.7, 0.2]]);
 * const w = fromRows([[0.2, -0.4, 0.1], [0.05, 0.3, -0.25]]);
 * const q = await gptq(w, await hessianOf(x), { bits: 3 });
 * console.log(q.stats.layerLoss, q.stats.avgBits);
 * ```
 * @module
 */

// core: tensors, errors, backend interface, grids, linear algebra
export * from "./core/tensor.ts";
export * from "./core/errors.ts";
export type * from "./core/backend.ts";
export type * from "./core/grids/types.ts";
export { createRng, permutation, randomNormal, type Rng } from "./core/random.ts";
export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "./core/dtype.ts";
export { BINARY, FP4_E2M1, FP8_E4M3, FP8_E5M2, minifloatGrid, NF4, TERNARY } from "./core/grids/tables.ts";
export { fitGrid, groupIndex, quantizeGrid } from "./core/grids/fit.ts";
export { packBits, packInt32, unpackBits, unpackInt32 } from "./core/grids/pack.ts";
export {
  cholesky,
  choleskyInverse,
  choleskyWithRetry,
  reverseCholesky,
  reverseCholeskyWith,
  upperCholeskyOfInverse,
  upperCholeskyOfInverseWith,
} from "./core/linalg/cholesky.ts";
export { eigh } from "./core/linalg/eigh.ts";
export { kmeans, nearestCentroids } from "./core/linalg/kmeans.ts";
export { invSqrtSpd, sqrtSpd } from "./core/linalg/spd.ts";
export { svd } from "./core/linalg/svd.ts";
export { matmul } from "./core/linalg/matmul.ts";
export { gramAccumulate } from "./core/linalg/gram.ts";
export { invertTriangular, triangularSolve } from "./core/linalg/triangular.ts";
// compositions for a backend without a fused kernel of its own
export { linearCrossEntropyWith } from "./core/nn/cross_entropy.ts";
export { decoderLayerWith } from "./core/nn/decoder_layer.ts";

// backends
export {
  type BackendFactory,
  getBackend,
  listBackends,
  loadBackend,
  registerBackend,
  setBackend,
  setBestBackend,
} from "./backends/registry.ts";
export { tsBackend } from "./backends/ts/mod.ts";

// algorithms
export * from "./algorithms/result.ts";
export { createHessianAccumulator, type HessianAccumulator, hessianOf } from "./algorithms/hessian.ts";
export { layerLoss } from "./algorithms/layer_loss.ts";
export { rtn, type RtnOptions } from "./algorithms/rtn.ts";
export { gptq, type GptqOptions } from "./algorithms/gptq.ts";
export {
  type LayerExtras,
  layerQuantizer,
  type MethodName,
  type MethodOptions,
  METHODS,
} from "./algorithms/methods.ts";

// models
export type { LlamaConfig } from "./model/config.ts";
export * from "./model/llama.ts";
export { perplexity, type PerplexityOptions, type PerplexityResult } from "./model/perplexity.ts";
export { quantizeSequential, type SequentialOptions, type SequentialResult } from "./model/calibrate.ts";
export { consecutiveWindows, sampleWindows } from "./model/windows.ts";
export {
  averageBits,
  type ModelQuantizeOptions,
  type ModelQuantizeResult,
  quantizeModel,
} from "./model/quantize_model.ts";
export {
  defaultOacRows,
  OAC_DEFAULT_DAMPING,
  oacHessians,
  oacHessianSource,
  type OacOptions,
} from "./algorithms/oac.ts";
export { spqr, type SpqrOptions } from "./algorithms/spqr.ts";
export { billm, type BillmOptions } from "./algorithms/billm.ts";
export { vptq, vptqDequantize, type VptqLayer, type VptqOptions } from "./algorithms/vptq.ts";
export { lorc, type LowRankFactors } from "./algorithms/lorc.ts";
export { qera, type QeraOptions } from "./algorithms/qera.ts";
export { type LowRankKind, type LowRankLayer, withLowRank } from "./algorithms/low_rank.ts";
export { smoothQuantScales } from "./algorithms/smoothquant.ts";
export { awqScales, awqSearch } from "./algorithms/awq.ts";
export { foldScales, smoothModel } from "./model/smooth.ts";
export { actOrder, inverseUpperFactor, prepareLayer } from "./algorithms/prepare.ts";
