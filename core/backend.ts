/**
 * The kernels every backend implements. Algorithms and model code call these and never know which backend runs.
 *
 * Conventions shared by all kernels:
 * - Matrices are row-major; activations are `[tokens, features]` with tokens ordered batch-major
 *   (`token = b · seqLen + t`).
 * - Kernels return new arrays, except {@link Backend.gramAccumulate}, which adds into the caller's accumulator
 *   (the one piece of streaming state; see `algorithms/hessian.ts`).
 * - Every kernel is async so that GPU backends can run without blocking; CPU backends resolve at once.
 * - Linear-algebra kernels accept float32 or float64 and return the input's element type. The TS reference computes in
 *   float64 internally; a backend may compute in float32 where its conformance tolerances say so.
 *
 * The core never imports a backend: `backends/` implements this interface and `backends/registry.ts` selects one.
 *
 * @module
 */

import type { FloatArray, Matrix } from "./tensor.ts";
import type { GridParams, GridSpec } from "./grids/types.ts";

/** Transposition flags of {@link Backend.matmul}. */
export interface MatmulOptions {
  /** Use `Aᵀ` instead of `A`. */
  readonly transA?: boolean;
  /** Use `Bᵀ` instead of `B`. */
  readonly transB?: boolean;
}

/** Options of {@link Backend.triangularSolve}: solves `op(T) · X = B` for `X`. */
export interface TriangularSolveOptions {
  /** `T` is lower triangular (true) or upper triangular (false). */
  readonly lower: boolean;
  /** Solve with `Tᵀ` instead of `T`. Default false. */
  readonly transpose?: boolean;
  /** Treat the diagonal as ones. Default false. */
  readonly unitDiagonal?: boolean;
}

/** Eigen-decomposition of a symmetric matrix: `A = V · diag(values) · Vᵀ`. */
export interface EighResult<A extends FloatArray> {
  /** Eigenvalues in ascending order. */
  readonly values: Float64Array;
  /** `[n, n]`, column `i` is the unit eigenvector of `values[i]`. */
  readonly vectors: Matrix<A>;
}

/** Thin or truncated SVD: `A ≈ U · diag(s) · Vᵀ`. */
export interface SvdResult<A extends FloatArray> {
  /** `[m, k]` left singular vectors (orthonormal columns). */
  readonly u: Matrix<A>;
  /** `k` singular values, descending, non-negative. */
  readonly s: Float64Array;
  /** `[n, k]` right singular vectors (orthonormal columns). */
  readonly v: Matrix<A>;
}

/** Options of {@link Backend.svd}. */
export interface SvdOptions {
  /** Keep only the top `rank` triplets; default `min(m, n)`. */
  readonly rank?: number;
}

/** Options of {@link Backend.kmeans}. */
export interface KmeansOptions {
  /** Number of centroids. */
  readonly k: number;
  /** Non-negative weight per point; default all ones. */
  readonly weights?: Float32Array;
  /** Seed of the k-means++ initialisation. Same seed, same result. */
  readonly seed?: number;
  /** Lloyd iterations at most; default 25. */
  readonly iterations?: number;
}

/** Result of {@link Backend.kmeans}. */
export interface KmeansResult {
  /** `[k, d]` centroids. */
  readonly centroids: Matrix;
  /** Index of the nearest centroid of each point. */
  readonly assignments: Int32Array;
  /** Weighted sum of squared distances to the assigned centroids. */
  readonly inertia: number;
  /** Lloyd iterations run. */
  readonly iterations: number;
}

/** Arguments of {@link Backend.gptqQuantize}: GPTQ's error-feedback loop over a whole layer. */
export interface GptqKernelArgs {
  /**
   * `[rows, cols]` weights (dead columns zeroed): in processing order, or in their own order with `permutation`.
   */
  readonly w: Matrix;
  /**
   * Act-order: position `k` processes column `permutation[k]` of `w` (a permutation of `0..cols−1`). The kernel reads
   * `w` through it and writes `dequantized` and `codes` back in `w`'s order, so no permuted copy of the layer is made.
   * Everything else (`r`, `groupOfColumn`, the parameters of dynamic groups) is in processing order. Default: none.
   */
  readonly permutation?: Int32Array;
  /**
   * `[cols, cols]` upper factor `R` of the damped Hessian, `H_d = R·Rᵀ` ({@link Backend.reverseCholesky}), in
   * processing order. GPTQ's `U` (`H_d⁻¹ = UᵀU`) is `R⁻¹`. The TS and WASM kernels need only its diagonal blocks
   * (`core/quant/gptq_kernel.ts`'s `gptqBlockInverse`) and carry the lazy batch update through `R` itself; the WebGPU
   * kernel forms `U` by a triangular solve on the GPU.
   */
  readonly r: Matrix<FloatArray>;
  /** The grid every column is rounded to. */
  readonly grid: GridSpec;
  /** Columns per lazy-update block (GPTQ uses 128). */
  readonly blockSize: number;
  /**
   * Where the grid parameters come from:
   * - `{ kind: "dynamic", groupSize }`: refit on the current weights each `groupSize` processed columns, exactly as the
   *   reference does (on the weights as they stand at the start of the current block plus earlier blocks' updates);
   * - `{ kind: "fixed", params, groupOfColumn }`: parameters fitted beforehand (per row, or static groups), and the
   *   group of each processed column.
   */
  readonly groups:
    | { readonly kind: "dynamic"; readonly groupSize: number }
    | { readonly kind: "fixed"; readonly params: GridParams; readonly groupOfColumn: Int32Array };
  /**
   * `[rows, rows]` upper Cholesky factor of the damped inverse of an output-side Hessian `B` (rows in `rowOrder`):
   * each column is then rounded row by row, every row's rounding error fed forward to the later rows of the same
   * column through it (the column's feedback to later columns is unchanged), which minimises
   * `tr(B·(W − Q)·H·(W − Q)ᵀ)` instead of `tr((W − Q)·H·(W − Q)ᵀ)`. Default: none (rows independent).
   */
  readonly rowFactor?: Matrix<FloatArray>;
  /**
   * With `rowFactor`: the order in which each column's rows are rounded, `rowOrder[s]` the row of `w` rounded `s`-th
   * (act-order for rows: `B` permuted by it before its factor is taken). Default: rows in `w`'s order.
   */
  readonly rowOrder?: Int32Array;
}

/** Result of {@link Backend.gptqQuantize}. */
export interface GptqKernelResult {
  /** `[rows, cols]` dequantized weights, in `w`'s column order. */
  readonly dequantized: Matrix;
  /** `[rows, cols]` integer codes (grid indices), in `w`'s column order. */
  readonly codes: Uint8Array;
  /** Grid parameters; for dynamic groups, group `g` covers processed columns `[g·groupSize, (g+1)·groupSize)`. */
  readonly params: GridParams;
  /**
   * `Σ e²` over every scaled error `e = (w − q) / U_jj` (`U_jj = 1 / R_jj`), summed in float64 column by column in
   * processing order, rows in order. GPTQ's exact identity makes it `tr((W − Q)·H_d·(W − Q)ᵀ)` for the damped Hessian `H_d = R·Rᵀ`, so the
   * layer loss needs no `rows × cols²` product. Backends where a dense product is cheap may leave it undefined.
   */
  readonly errorEnergy?: number;
}

/** Dimensions of a batch of causal self-attention. */
export interface AttentionShape {
  readonly batch: number;
  readonly seqLen: number;
  readonly heads: number;
  /** Key/value heads; `heads` must be a multiple (grouped-query attention). */
  readonly kvHeads: number;
  readonly headDim: number;
}

/** Options of {@link Backend.rope}. */
export interface RopeOptions {
  readonly seqLen: number;
  readonly headDim: number;
  /** Base of the rotation frequencies (Llama: 10000). */
  readonly theta: number;
  /** `"half"`: pairs `(i, i + d/2)` as Hugging Face Llama; `"interleaved"`: pairs `(2i, 2i+1)` as llama2.c. */
  readonly pairing: "half" | "interleaved";
  /** Rotate by minus the angle: the backward pass (a rotation's transpose is its inverse). */
  readonly inverse?: boolean;
}

/** Result of {@link Backend.crossEntropy}. */
export interface CrossEntropyResult {
  /** Loss per token (natural log); 0 where the target is ignored. */
  readonly losses: Float32Array;
  /** `[tokens, vocab]` gradient `gradScale[t] · (softmax − onehot)` when requested. */
  readonly dlogits?: Matrix;
}

/**
 * The weights of one Llama decoder layer as {@link Backend.decoderLayer} reads them; linears are `[out, in]` as in a
 * Hugging Face checkpoint, whose tensor names (after `model.layers.N.`) the comments give.
 */
export interface DecoderLayerWeights {
  /** `input_layernorm.weight`, `[hidden]`. */
  readonly inputNorm: Float32Array;
  /** `self_attn.q_proj.weight`, `[heads·headDim, hidden]`. */
  readonly q: Matrix;
  /** `self_attn.k_proj.weight`, `[kvHeads·headDim, hidden]`. */
  readonly k: Matrix;
  /** `self_attn.v_proj.weight`, `[kvHeads·headDim, hidden]`. */
  readonly v: Matrix;
  /** `self_attn.o_proj.weight`, `[hidden, heads·headDim]`. */
  readonly o: Matrix;
  /** `post_attention_layernorm.weight`, `[hidden]`. */
  readonly postAttentionNorm: Float32Array;
  /** `mlp.gate_proj.weight`, `[intermediate, hidden]`. */
  readonly gate: Matrix;
  /** `mlp.up_proj.weight`, `[intermediate, hidden]`. */
  readonly up: Matrix;
  /** `mlp.down_proj.weight`, `[hidden, intermediate]`. */
  readonly down: Matrix;
}

/** The constants of one Llama decoder layer ({@link Backend.decoderLayer}). */
export interface DecoderLayerOptions {
  /** Windows, heads and head size; RoPE positions restart at 0 in every window. */
  readonly attention: AttentionShape;
  /** RMSNorm's epsilon. */
  readonly eps: number;
  /** RoPE's base. */
  readonly ropeTheta: number;
  /** RoPE's pairing of elements (see {@link RopeOptions}). */
  readonly ropePairing: "half" | "interleaved";
}

/** One backend: a complete set of kernels. */
export interface Backend {
  /** Registry name ("ts", "wasm", "webgpu"). */
  readonly name: string;

  // ---- dense linear algebra ----

  /** `op(A) · op(B)` in float32. @throws {ShapeError} when inner dimensions differ. */
  matmul(a: Matrix, b: Matrix, options?: MatmulOptions): Promise<Matrix>;
  /** `acc += alpha · XᵀX`, in place; `acc` is `[d, d]` (float32 or float64), `x` is `[n, d]`. */
  gramAccumulate(acc: Matrix<FloatArray>, x: Matrix, alpha: number): Promise<void>;
  /** Lower `L` with `A = L·Lᵀ`. @throws {NotPositiveDefiniteError} on a non-positive pivot. */
  cholesky<A extends FloatArray>(a: Matrix<A>): Promise<Matrix<A>>;
  /** `X` with `op(T) · X = B`. */
  triangularSolve<A extends FloatArray>(
    t: Matrix<A>,
    b: Matrix<A>,
    options: TriangularSolveOptions,
  ): Promise<Matrix<A>>;
  /** `(L·Lᵀ)⁻¹` from the lower Cholesky factor `L`. */
  choleskyInverse<A extends FloatArray>(l: Matrix<A>): Promise<Matrix<A>>;
  /**
   * GPTQ's `U`: upper triangular with `H⁻¹ = UᵀU` (`core/linalg/cholesky.ts`'s `upperCholeskyOfInverse`, one Cholesky
   * factorisation and one triangular inverse). One kernel so that a backend keeps the factor in its own memory; a
   * backend without one can compose it with `upperCholeskyOfInverseWith`. `h` must be symmetric: which triangle is
   * read is the backend's choice. The arithmetic may follow the element type: the WASM backend factors a float32 `h`
   * in float32 (the reference GPTQ's precision, at half the cost) and a float64 one in float64.
   * @throws {NotPositiveDefiniteError} when `h` is not positive definite.
   */
  upperCholeskyOfInverse<A extends FloatArray>(h: Matrix<A>): Promise<Matrix<A>>;
  /**
   * Upper `R` with `H = R·Rᵀ` (`core/linalg/cholesky.ts`'s `reverseCholesky`, the Cholesky factorisation from the last
   * row up; `R⁻¹` is GPTQ's `U`), what {@link Backend.gptqQuantize} takes. A backend without a kernel of its own can
   * compose it with `reverseCholeskyWith`. `h` must be symmetric; as for `upperCholeskyOfInverse`, the arithmetic may
   * follow the element type (the WASM backend factors a float32 `h` in float32).
   * @throws {NotPositiveDefiniteError} when `h` is not positive definite.
   */
  reverseCholesky<A extends FloatArray>(h: Matrix<A>): Promise<Matrix<A>>;
  /** Symmetric eigendecomposition. @throws {ConvergenceError} if the solver does not converge. */
  eigh<A extends FloatArray>(a: Matrix<A>): Promise<EighResult<A>>;
  /** Singular value decomposition, full or truncated. */
  svd<A extends FloatArray>(a: Matrix<A>, options?: SvdOptions): Promise<SvdResult<A>>;
  /** Weighted k-means with k-means++ seeding; deterministic for a seed. */
  kmeans(points: Matrix, options: KmeansOptions): Promise<KmeansResult>;

  // ---- quantization ----

  /** Fits a grid per row and per group of `groupSize` columns (0 = whole row). */
  fitGrid(w: Matrix, grid: GridSpec, groupSize: number): Promise<GridParams>;
  /** Rounds every weight to its group's grid: codes and dequantized values. */
  quantizeGrid(
    w: Matrix,
    grid: GridSpec,
    params: GridParams,
    groupOfColumn: Int32Array,
  ): Promise<{ codes: Uint8Array; dequantized: Matrix }>;
  /** GPTQ's column loop with error feedback and lazy block updates over a whole layer. */
  gptqQuantize(args: GptqKernelArgs): Promise<GptqKernelResult>;

  // ---- transformer building blocks ----

  /** `x / rms(x) · weight` per row, `rms = sqrt(mean(x²) + eps)`. */
  rmsNorm(x: Matrix, weight: Float32Array, eps: number): Promise<Matrix>;
  /** Gradients of {@link Backend.rmsNorm} with respect to its input and its weight. */
  rmsNormBackward(
    x: Matrix,
    weight: Float32Array,
    dy: Matrix,
    eps: number,
  ): Promise<{ dx: Matrix; dweight: Float32Array }>;
  /** Rotary position embedding of `[tokens, heads · headDim]`; position = token index mod `seqLen`. */
  rope(x: Matrix, options: RopeOptions): Promise<Matrix>;
  /** Causal softmax attention with scale `1/sqrt(headDim)`; q `[T, heads·hd]`, k and v `[T, kvHeads·hd]`. */
  attention(q: Matrix, k: Matrix, v: Matrix, shape: AttentionShape): Promise<Matrix>;
  /** Gradients of {@link Backend.attention} (probabilities recomputed, not stored). */
  attentionBackward(
    q: Matrix,
    k: Matrix,
    v: Matrix,
    dout: Matrix,
    shape: AttentionShape,
  ): Promise<{ dq: Matrix; dk: Matrix; dv: Matrix }>;
  /** `silu(gate) ⊙ up`. */
  swiglu(gate: Matrix, up: Matrix): Promise<Matrix>;
  /** Gradients of {@link Backend.swiglu}. */
  swigluBackward(gate: Matrix, up: Matrix, dy: Matrix): Promise<{ dgate: Matrix; dup: Matrix }>;
  /**
   * `silu(x·gateᵀ) ⊙ (x·upᵀ)` for `[out, in]` weights: a gated MLP's first half in one call, so that a backend need
   * not hand back the two projections (a forward pass that keeps no activations uses it).
   */
  swigluLinear(x: Matrix, gate: Matrix, up: Matrix): Promise<Matrix>;
  /**
   * Softmax cross-entropy per token against `targets` (`-1` = ignored), and optionally its gradient scaled per token
   * by `gradScale` (a single number or one per token).
   */
  crossEntropy(
    logits: Matrix,
    targets: Int32Array,
    gradScale?: number | Float32Array,
  ): Promise<CrossEntropyResult>;
  /**
   * The per-token losses of `crossEntropy(x·wᵀ, targets)` for a `[vocab, hidden]` classifier `w`, without the
   * `[tokens, vocab]` logits in memory at once (an evaluation's largest buffer otherwise). A backend without a fused
   * kernel composes it with `linearCrossEntropyWith` (`core/nn/cross_entropy.ts`).
   * @throws {ShapeError} when the hidden sizes or the target count differ, or a target is outside `[-1, vocab)`.
   */
  linearCrossEntropy(x: Matrix, w: Matrix, targets: Int32Array): Promise<Float32Array>;
  /**
   * One decoder layer's forward pass, `h = x + o(attn(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x))))` and
   * `out = h + down(silu(gate(n₂(h))) ⊙ up(n₂(h)))`, keeping nothing: a backend may hold every intermediate in its own
   * memory (an evaluation's forward pass). The result is that of the other kernels composed by `decoderLayerWith`
   * (`core/nn/decoder_layer.ts`), which a backend without a fused kernel calls.
   * @param x `[batch·seqLen, hidden]`, the residual stream entering the layer.
   * @throws {ShapeError} / {OptionError} as the composed kernels do.
   */
  decoderLayer(x: Matrix, weights: DecoderLayerWeights, options: DecoderLayerOptions): Promise<Matrix>;

  /** Frees device resources; the backend is unusable afterwards. CPU backends may do nothing. */
  dispose?(): void;
}

/** The names of every kernel, for conformance reports and "kernel not implemented" messages. */
export const KERNEL_NAMES = [
  "matmul",
  "gramAccumulate",
  "cholesky",
  "triangularSolve",
  "choleskyInverse",
  "upperCholeskyOfInverse",
  "reverseCholesky",
  "eigh",
  "svd",
  "kmeans",
  "fitGrid",
  "quantizeGrid",
  "gptqQuantize",
  "rmsNorm",
  "rmsNormBackward",
  "rope",
  "attention",
  "attentionBackward",
  "swiglu",
  "swigluBackward",
  "swigluLinear",
  "crossEntropy",
  "linearCrossEntropy",
  "decoderLayer",
] as const satisfies readonly (keyof Backend)[];
