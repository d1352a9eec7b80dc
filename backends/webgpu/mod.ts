/**
 * The WebGPU backend: ptq's kernels as WGSL compute shaders. Tensors go to the GPU once per kernel call and stay there
 * through the whole call (a whole layer for GPTQ): no read-back per column or per dispatch.
 *
 * Kernels not (yet) native delegate explicitly to the TS reference backend; each one says so below.
 *
 * @example
 * ```ts ignore
 * import { createWebGpuBackend } from "./mod.ts";
 * const gpu = await createWebGpuBackend({ adapter: "auto", log: console.log });
 * ```
 * @module
 */

import type { Backend } from "../../core/backend.ts";
import type { FloatArray, Matrix } from "../../core/tensor.ts";
import { reverseCholeskyWith, upperCholeskyOfInverseWith } from "../../core/linalg/cholesky.ts";
import { linearCrossEntropyWith } from "../../core/nn/cross_entropy.ts";
import { decoderLayerWith } from "../../core/nn/decoder_layer.ts";
import { checkSwigluLinear } from "../../core/nn/swiglu.ts";
import { tsBackend } from "../ts/mod.ts";
import { type AdapterChoice, openGpu } from "./adapter.ts";
import type { GpuContext } from "./context.ts";
import { gpuGramAccumulate, gpuMatmul } from "./dense.ts";
import {
  type GptqFromHessianOptions,
  type GptqFromHessianResult,
  gpuGptqFromHessian,
  gpuGptqQuantize,
} from "./gptq.ts";
import { gpuFitGrid, gpuQuantizeGrid } from "./grid.ts";
import {
  gpuAttention,
  gpuAttentionBackward,
  gpuCrossEntropy,
  gpuRmsNorm,
  gpuRmsNormBackward,
  gpuRope,
  gpuSwiglu,
  gpuSwigluBackward,
} from "./nn.ts";
import { gpuCholesky, gpuCholeskyInverse, gpuTriangularSolve } from "./linalg.ts";

/** Options of {@link createWebGpuBackend}. */
export interface WebGpuBackendOptions {
  /**
   * `"auto"` (default) or `"hardware"`: a hardware adapter, refusing software ones; `"software"`: the software
   * (fallback) adapter explicitly, such as Mesa's lavapipe in CI.
   */
  readonly adapter?: AdapterChoice;
  /** Receives the adapter description and limits at start-up. */
  readonly log?: (msg: string) => void;
}

/** A WebGPU backend and the context it runs on (for benchmarks and tests that encode kernels directly). */
export interface WebGpuBackend extends Backend {
  readonly context: GpuContext;
  /**
   * All of GPTQ for one layer on the GPU, from the undamped Hessian (what `algorithms/gptq.ts` does through several
   * kernels and CPU passes): one upload of W and H, one read-back of the results.
   */
  gptqFromHessian(w: Matrix, h: Matrix<FloatArray>, options?: GptqFromHessianOptions): Promise<GptqFromHessianResult>;
}

/**
 * Opens a GPU adapter, checks it with a numeric smoke test, and returns the backend.
 *
 * @throws {BackendError} when there is no WebGPU, no suitable adapter, or the adapter computes wrong numbers.
 */
export async function createWebGpuBackend(options: WebGpuBackendOptions = {}): Promise<WebGpuBackend> {
  const ctx = await openGpu(options);
  const ts = tsBackend;
  const backend: WebGpuBackend = {
    name: "webgpu",
    context: ctx,
    matmul: (a, b, opts) => gpuMatmul(ctx, a, b, opts),
    gramAccumulate: (acc, x, alpha) => gpuGramAccumulate(ctx, acc, x, alpha),
    cholesky: (a) => gpuCholesky(ctx, a),
    triangularSolve: (t, b, o) => gpuTriangularSolve(ctx, t, b, o),
    choleskyInverse: (l) => gpuCholeskyInverse(ctx, l),
    // Composed from the two kernels above (each uploads and reads back once).
    upperCholeskyOfInverse: (h) =>
      upperCholeskyOfInverseWith(h, {
        cholesky: (a) => gpuCholesky(ctx, a),
        triangularSolve: (t, b, o) => gpuTriangularSolve(ctx, t, b, o),
      }),
    reverseCholesky: (h) => reverseCholeskyWith(h, { cholesky: (a) => gpuCholesky(ctx, a) }),
    // Delegated: iterative Jacobi/QR sweeps with data-dependent convergence; rare and small (d ≤ a few thousand).
    eigh: (a) => ts.eigh(a),
    // Delegated: as eigh, used on small matrices (LoRC/QERA ranks), not on the hot path.
    svd: (a, o) => ts.svd(a, o),
    // Delegated: the reference's seeding and update rules take a synchronous assignment step; `gpuNearestCentroids`
    // (kmeans.ts) is the native assignment, to be injected once core/linalg/kmeans.ts accepts an async one.
    kmeans: (p, o) => ts.kmeans(p, o),
    fitGrid: (w, g, s) => gpuFitGrid(ctx, w, g, s),
    quantizeGrid: (w, g, p, c) => gpuQuantizeGrid(ctx, w, g, p, c),
    gptqQuantize: (args) => gpuGptqQuantize(ctx, args),
    gptqFromHessian: (w, h, o) => gpuGptqFromHessian(ctx, w, h, o),
    rmsNorm: (x, w, eps) => gpuRmsNorm(ctx, x, w, eps),
    rmsNormBackward: (x, w, dy, eps) => gpuRmsNormBackward(ctx, x, w, dy, eps),
    rope: (x, o) => gpuRope(ctx, x, o),
    attention: (q, k, v, s) => gpuAttention(ctx, q, k, v, s),
    attentionBackward: (q, k, v, d, s) => gpuAttentionBackward(ctx, q, k, v, d, s),
    swiglu: (g, u) => gpuSwiglu(ctx, g, u),
    swigluBackward: (g, u, d) => gpuSwigluBackward(ctx, g, u, d),
    // Composed from the matmul and swiglu kernels (the projections come back to the CPU in between).
    swigluLinear: async (x, g, u) => {
      checkSwigluLinear(x, g, u);
      const [gate, up] = [await gpuMatmul(ctx, x, g, { transB: true }), await gpuMatmul(ctx, x, u, { transB: true })];
      return gpuSwiglu(ctx, gate, up);
    },
    crossEntropy: (l, t, s) => gpuCrossEntropy(ctx, l, t, s),
    // Composed from the matmul and cross-entropy kernels. The matmul uploads the classifier at each call, so the
    // chunks are large (256 Mi logits): one call per batch of evaluation windows, as before this kernel existed.
    linearCrossEntropy: (x, w, t) =>
      linearCrossEntropyWith(
        { matmul: (a, b, o) => gpuMatmul(ctx, a, b, o), crossEntropy: (l, tt) => gpuCrossEntropy(ctx, l, tt) },
        x,
        w,
        t,
        2 ** 28,
      ),
    // Composed from the kernels above: each step's result comes back to the CPU.
    decoderLayer: (x, w, o) => decoderLayerWith(backend, x, w, o),
    dispose: () => ctx.destroy(),
  };
  return backend;
}
