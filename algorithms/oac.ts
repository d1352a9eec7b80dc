/**
 * OAC, output-adaptive calibration (Edalati et al., arXiv 2405.15025): the Hessian of each linear layer is taken from
 * the gradients of the model's final cross-entropy loss instead of the layer's own output error.
 *
 * Per calibration sequence `n` and linear layer, `G_n = ∂ℓ_n/∂W = Γ_nᵀ X_n` (`[out, in]`, `Γ_n` the per-token output
 * gradients, `X_n` the inputs); then `H_OAC = (1/N) Σ_n G_nᵀ G_n` (`[in, in]`). It replaces GPTQ's `2XᵀX/N` in any
 * engine: damping, act-order, error feedback, SpQR's outliers, BiLLM's salience.
 *
 * The variants of ALGORITHMS.md are options: the labels (`"data"`: the text's next tokens, the empirical Fisher;
 * `"sampled"`: tokens drawn from the model, the true Fisher), the form (`"sequence"`: `G_nᵀG_n`; `"token-diagonal"`:
 * `Σ_t ‖γ_t‖² x_t x_tᵀ`, cross-token terms dropped), when gradients are taken (`"once"` on the full-precision model,
 * or `"per-layer"`: recomputed on the partly quantized model before each decoder layer), and mixing with GPTQ's
 * Hessian (`H = Ĥ_OAC + α·Ĥ_GPTQ`, each divided by the mean of its diagonal so that `α` is scale-free); and its role
 * (the engine's Hessian everywhere, or, in BiLLM, only the choice of salient weights).
 *
 * Beyond the paper: `rows: "coupled"` drops its independence of the rows. The loss's Fisher is taken in K-FAC's
 * Kronecker form `B ⊗ A` (Martens and Grosse, arXiv 1503.05671), `A = XᵀX/N` the inputs' (GPTQ's) Hessian and
 * `B = (1/N) Σ_n Σ_t γ_t γ_tᵀ` the covariance of the loss gradients of the layer's outputs, and GPTQ (or SpQR, or
 * BiLLM) rounds each column row by row through `B` (see `GptqOptions.outputHessian`). It is what a model run
 * (`quantizeModel`, the CLI, the server) uses unless the engine is VPTQ or its options build on the paper's `H_OAC`
 * ({@link defaultOacRows}). With it a model run also keeps the loss's first-order term ({@link defaultOacStep}): with
 * gradients recomputed on the partly quantized model, their change since the full-precision model says what the
 * earlier layers' rounding lost, and each layer is rounded from the weights K-FAC's damped Newton step moves towards
 * making it up ({@link kroneckerFirstOrderTarget}).
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError } from "../core/errors.ts";
import { createRng } from "../core/random.ts";
import { type FloatArray, type Matrix, matrix, matrix64 } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import type { HessianSource } from "../model/calibrate.ts";
import { addRelativeDamping } from "./prepare.ts";
import {
  forward,
  LINEAR_KINDS,
  linearName,
  linearWeight,
  type LlamaModel,
  lossAndGradients,
  nextTokenTargets,
} from "../model/llama.ts";

/**
 * The engine damping OAC runs with unless told otherwise: `λ = 0.1` of the mean diagonal, ten times GPTQ's 0.01.
 * `H_OAC` averages one gradient product per sequence, so with few sequences it is a far noisier, worse-conditioned
 * estimate than `XᵀX` over every token. On llama-12m at 2-bit group 128, each OAC variant run at both dampings was
 * worse at 0.01 than at 0.1 (bench/results/oac_explore.md), as PyTorch checks on the same model found.
 */
export const OAC_DEFAULT_DAMPING = 0.1;

/** Options of {@link oacHessians} and {@link oacHessianSource}. */
export interface OacOptions {
  /** Window length of the calibration tokens. */
  readonly seqLen: number;
  /** `"data"` (default): the text's next tokens (empirical Fisher); `"sampled"`: drawn from the model (true Fisher). */
  readonly labels?: "data" | "sampled";
  /** `"sequence"` (default): `G_nᵀG_n` per sequence; `"token-diagonal"`: `Σ_t ‖γ_t‖² x_t x_tᵀ`. */
  readonly form?: "sequence" | "token-diagonal";
  /** `"per-layer"` (default): gradients recomputed on the partly quantized model before each layer; `"once"`. */
  readonly refresh?: "once" | "per-layer";
  /**
   * With the `"token-diagonal"` form, weigh each token by `‖γ_t‖^(2p)` instead of `‖γ_t‖²`: `p = 1` (default) is the
   * token-diagonal Fisher, `p = 0` GPTQ's unweighted `XᵀX`; in between tempers the heavy tail of a few high-loss tokens.
   */
  readonly tokenPower?: number;
  /**
   * `"sequence"`: each window's (or chunk's) `G_nᵀG_n` divided by its trace `‖G_n‖²`, so that every window weighs the
   * same in each layer's Hessian instead of a few high-loss windows dominating it (not with `firstOrder`, whose step
   * needs `H` at the gradients' scale); default `"none"`.
   */
  readonly normalize?: "none" | "sequence";
  /** Weight `α` of GPTQ's Hessian mixed in (both normalised by their mean diagonal); default 0 (pure OAC). */
  readonly mix?: number;
  /**
   * `"hessian"` (default): the OAC Hessian replaces GPTQ's everywhere in the engine. `"salience"`: the engine's error
   * feedback keeps GPTQ's Hessian and OAC's only chooses the salient weights (BiLLM's salient columns), testing the
   * paper's case that the output-adaptive Hessian matters most in that choice.
   */
  readonly role?: "hessian" | "salience";
  /**
   * With the `"sequence"` form, cut each window into chunks of this many tokens and take one gradient per chunk
   * (cross-token terms kept only within a chunk; `chunk = 1` is the token-diagonal form); default the whole window.
   */
  readonly chunk?: number;
  /**
   * Keep the first-order term of the loss expansion, scaled by `β`: the engine quantizes `W` moved by `β` times the
   * Newton step from `Ḡ`, the mean calibration gradient, instead of `W`. With the paper's rows the step is
   * `(out/T)·Ḡ·(H + λ·mean(diag H)·I)⁻¹` ({@link firstOrderTarget}, `T` the predicted tokens per window), with coupled
   * rows K-FAC's `(2/T)·B⁻¹·Ḡ·A⁻¹`, both factors damped ({@link kroneckerFirstOrderTarget}). With per-layer refresh
   * the gradient is taken on the partly quantized model, so the step leans towards what the earlier layers' rounding
   * lost. Default 0: the second-order objective alone (a model run's default is {@link defaultOacStep}).
   */
  readonly firstOrder?: number;
  /**
   * The gradient the first-order step follows: `"loss"` (default), the calibration loss's own mean gradient; or
   * `"lost"`, its change since the full-precision model (that model's gradient on the same windows subtracted, taken
   * in the first pass, which starts at layer 0 before anything is rounded), so that the step only makes up for what
   * the earlier layers' rounding lost and does not fit the full-precision model to the calibration windows. Needs
   * per-layer refresh.
   */
  readonly firstOrderGradient?: "loss" | "lost";
  /**
   * Relative damping `λ` of the first-order step's solve (of each factor with coupled rows); default 0.1, and
   * {@link OAC_COUPLED_STEP_DAMPING} with coupled rows.
   */
  readonly firstOrderDamping?: number;
  /**
   * Trust region of the first-order step: each row moves by at most this fraction of its own norm (the quadratic
   * model of the loss holds only near `W`; an undamped Newton step from a few samples can leave that region by orders
   * of magnitude); default 0.05.
   */
  readonly firstOrderTrust?: number;
  /**
   * `"independent"`: the paper's rows, independent and summed into one `[in, in]` Hessian (the default of
   * {@link oacHessians} and {@link oacHessianSource}). `"coupled"`: GPTQ's input Hessian and an output-side Hessian `B`
   * from the loss gradients, rounding coupled across rows (GPTQ, SpQR and BiLLM engines; not with `mix`, `firstOrder`,
   * `normalize`, the token-diagonal form, chunks or the salience role). A model run (`quantizeModel`, the CLI, the
   * server) that does not say picks {@link defaultOacRows}.
   */
  readonly rows?: "independent" | "coupled";
  /** Seed of the sampled labels; default 0. */
  readonly seed?: number;
  /** Windows per forward/backward pass; default 4. */
  readonly batch?: number;
  /** Accumulate in float64 (default float32). */
  readonly precision?: "f32" | "f64";
  readonly backend?: Backend;
  /** Called after each pass with windows done and in all. */
  readonly onProgress?: (done: number, total: number) => void;
  /** Cancels the work: checked between batches of windows and between layers; the signal's reason is thrown. */
  readonly signal?: AbortSignal;
}

/**
 * Output-adaptive Hessians of the linear layers named in `names` (default: every decoder linear), from one
 * forward/backward pass over the calibration windows. With `start` (the residual stream entering decoder layer
 * `start.layer` for every window), the passes run from that layer on: the same gradients for it and later layers, at
 * a fraction of the cost.
 *
 * @param tokens calibration windows, `windows·seqLen` ids.
 * @returns `[in, in]` float32 (or float64) Hessians by layer name, `(1/N) Σ_n G_nᵀ G_n`.
 * @throws {OptionError} for a bad window layout or an unknown option value.
 */
export async function oacHessians(
  model: LlamaModel,
  tokens: Int32Array,
  options: OacOptions,
  names?: readonly string[],
  start?: { readonly layer: number; readonly hidden: Matrix },
): Promise<Map<string, Matrix<FloatArray>>> {
  return (await oacStatistics(model, tokens, options, names, start, false)).hessians;
}

/**
 * Output-adaptive Hessians (or, with `rows: "coupled"`, output-side Hessians) and, when asked, the mean loss gradient
 * `Ḡ = (1/N) Σ_n G_n` of each layer.
 */
export interface OacStatistics {
  /** `[in, in]` `H_OAC`, or with `rows: "coupled"` `[out, out]` `B = (1/N) Σ_n Σ_t γ_t γ_tᵀ`, by layer name. */
  readonly hessians: Map<string, Matrix<FloatArray>>;
  /** `[out, in]` mean gradients (present when requested). */
  readonly gradients: Map<string, Matrix>;
}

/**
 * {@link oacHessians}, and with `withGradients` the mean gradient of each layer's weight over the calibration
 * windows (the first-order term of the loss expansion): of the layers in `names` with `true`, of every layer the pass
 * reaches with `"all"` (Hessians still only of `names`).
 */
export async function oacStatistics(
  model: LlamaModel,
  tokens: Int32Array,
  options: OacOptions,
  names: readonly string[] | undefined,
  start: { readonly layer: number; readonly hidden: Matrix } | undefined,
  withGradients: boolean | "all",
): Promise<OacStatistics> {
  const { seqLen, labels = "data", form = "sequence", seed = 0, batch = 4, precision = "f32", onProgress, signal } =
    options;
  const chunk = options.chunk ?? seqLen;
  if (!Number.isInteger(chunk) || chunk < 1) {
    throw new OptionError(`OAC: chunk must be a positive integer, got ${chunk}`);
  }
  const backend = options.backend ?? getBackend();
  if (!Number.isInteger(seqLen) || seqLen < 2 || tokens.length % seqLen !== 0 || tokens.length === 0) {
    throw new OptionError(`OAC: ${tokens.length} tokens are not a whole number of windows of ${seqLen}`);
  }
  if (labels !== "data" && labels !== "sampled") throw new OptionError(`OAC: unknown labels "${labels}"`);
  if (form !== "sequence" && form !== "token-diagonal") throw new OptionError(`OAC: unknown form "${form}"`);
  const normalize = options.normalize ?? "none";
  if (normalize !== "none" && normalize !== "sequence") {
    throw new OptionError(`OAC: unknown normalisation "${normalize}"`);
  }
  const coupled = options.rows === "coupled";
  const windows = tokens.length / seqLen;
  const wanted = new Set(names ?? allLinearNames(model));
  const hessians = new Map<string, Matrix<FloatArray>>();
  const acc = (name: string, cols: number) => {
    let h = hessians.get(name);
    if (!h) hessians.set(name, h = precision === "f64" ? matrix64(cols, cols) : matrix(cols, cols));
    return h;
  };
  const scale = 1 / windows;
  const gradients = new Map<string, Matrix>();

  for (let w0 = 0; w0 < windows; w0 += batch) {
    const nb = Math.min(batch, windows - w0);
    const passTokens = tokens.subarray(w0 * seqLen, (w0 + nb) * seqLen);
    const passStart = start && {
      layer: start.layer,
      hidden: {
        data: start.hidden.data.subarray(
          w0 * seqLen * start.hidden.shape[1],
          (w0 + nb) * seqLen * start.hidden.shape[1],
        ),
        shape: [nb * seqLen, start.hidden.shape[1]] as const,
      },
    };
    const targets = labels === "data"
      ? nextTokenTargets(passTokens, seqLen)
      : await sampledTargets(model, passTokens, seqLen, seed + w0, backend);
    await lossAndGradients(model, passTokens, {
      batch: nb,
      seqLen,
      backend,
      targets,
      reduction: "sequence",
      gradients: [],
      start: passStart,
      onLinear: async (name, x, gamma) => {
        const hessian = wanted.has(name);
        if (!hessian && withGradients !== "all") return;
        const [rows, cols] = x.shape, out = gamma.shape[1];
        if (withGradients) {
          // Σ_n G_n = Γᵀ X over every row of the pass.
          const g = await backend.matmul(gamma, x, { transA: true });
          const prev = gradients.get(name);
          if (prev) { for (let i = 0; i < g.data.length; i++) prev.data[i] += g.data[i] * scale; }
          else gradients.set(name, { data: g.data.map((v) => v * scale), shape: g.shape });
        }
        if (!hessian) return;
        if (coupled) {
          // K-FAC's output factor: every token's output gradient is a sample of its Gram matrix.
          await backend.gramAccumulate(acc(name, out), gamma, scale);
          return;
        }
        const h = acc(name, cols);
        // Gradients of each window (or of each chunk of one): rows [r, r + len) of the pass.
        const size = form === "sequence" ? chunk : seqLen;
        for (let r = 0, len = 0; r < rows; r += len) {
          len = Math.min(size, seqLen - (r % seqLen), rows - r); // a chunk never crosses into the next window
          const xn: Matrix = { data: x.data.subarray(r * cols, (r + len) * cols), shape: [len, cols] };
          const gn: Matrix = { data: gamma.data.subarray(r * out, (r + len) * out), shape: [len, out] };
          // The rows whose Gram is this window's term: the factor route pays an eigendecomposition of len×len, worth
          // it only well below `out` rows.
          const samples = form === "sequence" && 4 * len > out
            // G_n = Γ_nᵀ X_n, then H += G_nᵀ G_n / N: the rows of G_n are the "samples" of a Gram accumulation.
            ? await backend.matmul(gn, xn, { transA: true })
            : form === "sequence"
            // Far fewer tokens than outputs: G_nᵀG_n = X_nᵀ·K·X_n with K = Γ_nΓ_nᵀ [len, len]; with K = FᵀF, the Gram
            // of the `len` rows of F·X_n is the same matrix at `len/out` of the cost.
            ? await backend.matmul(await gramFactor(gn, backend), xn)
            : rowsScaledByNorm(xn, gn, options.tokenPower ?? 1);
          let weight = scale;
          if (normalize === "sequence") {
            // The trace of the term is the sum of squares of its samples.
            let trace = 0;
            for (const v of samples.data) trace += v * v;
            weight = trace > 0 ? scale / trace : 0;
          }
          await backend.gramAccumulate(h, samples, weight);
        }
      },
    });
    onProgress?.(w0 + nb, windows);
    signal?.throwIfAborted();
  }
  for (const name of wanted) if (!hessians.has(name)) throw new OptionError(`OAC: no gradient reached ${name}`);
  return { hessians, gradients };
}

/**
 * The weights whose GPTQ-style quantization minimises the loss expansion with its first-order term:
 * `Δℓ ≈ ⟨Ḡ, ΔW⟩ + ½·tr(ΔW·H·ΔWᵀ)` is, up to a constant, `½·tr((ΔW + Ḡ·H⁻¹)·H·(ΔW + Ḡ·H⁻¹)ᵀ)`, so quantizing
 * `W* = W − Ḡ·H⁻¹` under `H` minimises it. `H_OAC` is the row-aggregated Fisher of the *mean* loss of a window, about
 * `out/T` times one row's Hessian of that loss when rows are alike (`T` predicted tokens, `out` rows sharing the
 * aggregate), hence the scale `β·out/T`; `β = 1` is the Newton step under that approximation, the damping keeps the
 * step off directions the calibration set barely determines, and `trust` caps each row's step at that fraction of the
 * row's norm.
 */
export async function firstOrderTarget(
  w: Matrix,
  gradient: Matrix,
  h: Matrix<FloatArray>,
  options: { beta: number; damping: number; tokensPerWindow: number; trust?: number; backend: Backend },
): Promise<Matrix> {
  const { beta, damping, tokensPerWindow, trust = Infinity, backend } = options;
  const rows = w.shape[0];
  // X = Ḡ·H⁻¹ ⇔ H·Xᵀ = Ḡᵀ.
  const xt = await dampedSolve(h, transposed64(gradient), damping, backend);
  return steppedWeights(w, transposed64(xt), beta * rows / tokensPerWindow, trust);
}

/**
 * The first-order target under coupled rows: with the loss's Fisher in K-FAC's form `A_tok ⊗ B_tok` per predicted
 * token, `Δℓ ≈ ⟨Ḡ, ΔW⟩ + ½·tr(B_tok·ΔW·A_tok·ΔWᵀ)` is, up to a constant, the `A ⊗ B` norm of `ΔW + B_tok⁻¹·Ḡ·A_tok⁻¹`,
 * so the engine quantizes `W* = W − β·B_tok⁻¹·Ḡ·A_tok⁻¹` under `A` and `B`. With GPTQ's `A = 2XᵀX/N` (`A_tok = A/2`)
 * and `B = (1/N) Σ_n Σ_t γ_t γ_tᵀ` of each window's mean loss (`B_tok = T·B`, `T` predicted tokens per window), the
 * step is `β·(2/T)·B⁻¹·Ḡ·A⁻¹`, both factors damped by `λ` of their mean diagonal; `trust` caps each row's step at that
 * fraction of the row's norm. Upstream layers already quantized make `Ḡ` point at what this layer can win back.
 */
export async function kroneckerFirstOrderTarget(
  w: Matrix,
  gradient: Matrix,
  a: Matrix<FloatArray>,
  b: Matrix<FloatArray>,
  options: { beta: number; damping: number; tokensPerWindow: number; trust?: number; backend: Backend },
): Promise<Matrix> {
  const { beta, damping, tokensPerWindow, trust = Infinity, backend } = options;
  // Y = Ḡ·A⁻¹ ⇔ A·Yᵀ = Ḡᵀ; then Z = B⁻¹·Y.
  const yt = await dampedSolve(a, transposed64(gradient), damping, backend);
  const z = await dampedSolve(b, transposed64(yt), damping, backend);
  return steppedWeights(w, z, beta * 2 / tokensPerWindow, trust);
}

/** `(H + λ·mean(diag H)·I)⁻¹·R` in float64, by a Cholesky factorisation and two triangular solves. */
async function dampedSolve(
  h: Matrix<FloatArray>,
  rhs: Matrix<Float64Array>,
  damping: number,
  backend: Backend,
): Promise<Matrix<Float64Array>> {
  const n = h.shape[0];
  const hd = matrix64(n, n, Float64Array.from(h.data));
  addRelativeDamping(hd, damping);
  const l = await backend.cholesky(hd);
  const y = await backend.triangularSolve(l, rhs, { lower: true });
  return await backend.triangularSolve(l, y, { lower: true, transpose: true });
}

/** `G − G₀` where a baseline `G₀` is given, `G` otherwise. */
function lostGradient(g: Matrix, g0: Matrix | undefined): Matrix {
  return g0 ? { data: Float32Array.from(g.data, (v, i) => v - g0.data[i]), shape: g.shape } : g;
}

/** `Mᵀ` in float64. */
function transposed64(m: Matrix<FloatArray>): Matrix<Float64Array> {
  const [r, c] = m.shape;
  const t = matrix64(c, r);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) t.data[j * r + i] = m.data[i * c + j];
  return t;
}

/** `W − s·X`, each row's step shortened to at most `trust` times the row's norm. */
function steppedWeights(w: Matrix, x: Matrix<FloatArray>, step: number, trust: number): Matrix {
  const [rows, cols] = w.shape;
  const out = matrix(rows, cols);
  for (let i = 0; i < rows; i++) {
    let stepNorm = 0, rowNorm = 0;
    for (let j = 0; j < cols; j++) stepNorm += (step * x.data[i * cols + j]) ** 2, rowNorm += w.data[i * cols + j] ** 2;
    const limit = trust * Math.sqrt(rowNorm), norm = Math.sqrt(stepNorm);
    const s = norm > limit ? step * limit / norm : step;
    for (let j = 0; j < cols; j++) out.data[i * cols + j] = w.data[i * cols + j] - s * x.data[i * cols + j];
  }
  return out;
}

/** `F` with `FᵀF = Γ·Γᵀ` (`[len, len]`), from the symmetric eigendecomposition: `F = Λ^{1/2}·Vᵀ`. */
async function gramFactor(gamma: Matrix, backend: Backend): Promise<Matrix> {
  const len = gamma.shape[0];
  const k = await backend.matmul(gamma, gamma, { transB: true });
  const { values, vectors } = await backend.eigh(k);
  const f = matrix(len, len);
  for (let i = 0; i < len; i++) {
    const root = Math.sqrt(Math.max(values[i], 0)); // rounding can leave tiny negative eigenvalues of a PSD matrix
    for (let j = 0; j < len; j++) f.data[i * len + j] = root * vectors.data[j * len + i];
  }
  return f;
}

/** `x_t · ‖γ_t‖^p` per row: their Gram matrix is the token-diagonal form `Σ_t ‖γ_t‖^(2p) x_t x_tᵀ`. */
function rowsScaledByNorm(x: Matrix, gamma: Matrix, power: number): Matrix {
  const [t, d] = x.shape, out = gamma.shape[1];
  const y = matrix(t, d);
  for (let i = 0; i < t; i++) {
    let s = 0;
    for (let j = 0; j < out; j++) s += gamma.data[i * out + j] ** 2;
    const norm = s ** (power / 2);
    for (let j = 0; j < d; j++) y.data[i * d + j] = x.data[i * d + j] * norm;
  }
  return y;
}

/** Targets drawn from the model's own next-token distribution at each position (`-1` at each window's end). */
async function sampledTargets(
  model: LlamaModel,
  tokens: Int32Array,
  seqLen: number,
  seed: number,
  backend: Backend,
): Promise<Int32Array> {
  const { logits } = await forward(model, tokens, { batch: tokens.length / seqLen, seqLen, backend });
  const vocab = logits.shape[1];
  const rng = createRng(seed);
  const targets = new Int32Array(tokens.length);
  const p = new Float64Array(vocab);
  for (let t = 0; t < tokens.length; t++) {
    if ((t + 1) % seqLen === 0) {
      targets[t] = -1;
      continue;
    }
    const o = t * vocab;
    let max = -Infinity;
    for (let j = 0; j < vocab; j++) max = Math.max(max, logits.data[o + j]);
    let sum = 0;
    for (let j = 0; j < vocab; j++) sum += p[j] = Math.exp(logits.data[o + j] - max);
    let u = rng.float() * sum, j = 0;
    while (j < vocab - 1 && (u -= p[j]) > 0) j++;
    targets[t] = j;
  }
  return targets;
}

function allLinearNames(model: LlamaModel): string[] {
  const names: string[] = [];
  for (let l = 0; l < model.weights.layers.length; l++) for (const k of LINEAR_KINDS) names.push(linearName(l, k));
  return names;
}

/** `H / mean(diag H)` as float32, the normalisation that makes mixing weights scale-free. */
export function normalizeByMeanDiagonal(h: Matrix<FloatArray>): Matrix {
  const n = h.shape[0];
  let mean = 0;
  for (let i = 0; i < n; i++) mean += h.data[i * n + i];
  mean /= n;
  const s = mean > 0 ? 1 / mean : 1;
  return matrix(n, n, Float32Array.from(h.data, (v) => v * s));
}

/** `Ĥ_OAC + α·Ĥ_GPTQ`, each divided by the mean of its diagonal. */
function mixed(oac: Matrix<FloatArray>, gptq: Matrix<FloatArray>, alpha: number): Matrix<FloatArray> {
  const a = normalizeByMeanDiagonal(oac), b = normalizeByMeanDiagonal(gptq);
  for (let i = 0; i < a.data.length; i++) a.data[i] += alpha * b.data[i];
  return a;
}

/**
 * The rows of a model run's OAC when its options do not say: `"coupled"`, which beat the paper's form on llama-12m in
 * every engine measured (README, "Coupled rows"), where `engine` rounds rows coupled (GPTQ, SpQR, BiLLM) and no option
 * built on the paper's `H_OAC` is set (`mix`, `firstOrder`, `normalize`, the token-diagonal form, `chunk`, the salience
 * role); `"independent"` otherwise.
 *
 * @example
 * ```ts
 * import { defaultOacRows } from "./oac.ts";
 * console.assert(defaultOacRows({}, "gptq") === "coupled");
 * console.assert(defaultOacRows({ mix: 1 }, "gptq") === "independent");
 * console.assert(defaultOacRows({}, "vptq") === "independent");
 * ```
 */
export function defaultOacRows(options: Omit<OacOptions, "seqLen">, engine: string): "independent" | "coupled" {
  return !buildsOnHOac(options) && (engine === "gptq" || engine === "spqr" || engine === "billm")
    ? "coupled"
    : "independent";
}

/** OAC's first-order step, as {@link OacOptions} spells it (see there). */
export interface OacStep {
  /** `β`; 0: no step. */
  readonly firstOrder: number;
  /** The gradient the step follows. */
  readonly firstOrderGradient: "loss" | "lost";
  /** Relative damping of the step's solve. */
  readonly firstOrderDamping: number;
  /** Each row's step at most this fraction of its norm. */
  readonly firstOrderTrust: number;
}

/**
 * Relative damping of the coupled first-order step's solve: 10 of each factor's mean diagonal. Less damping lets the
 * directions the calibration set barely determines dominate the step (llama-12m, BiLLM, one seed: 23.54 at 10, 25.92
 * at 1, both against 26.23 without the step).
 */
export const OAC_COUPLED_STEP_DAMPING = 10;

/**
 * The first-order step of a model run's OAC where its options do not say. With coupled rows and per-layer refresh:
 * `β = 1` along the lost gradient, K-FAC's Newton step damped by {@link OAC_COUPLED_STEP_DAMPING}, each row moved by at
 * most 5 % of its norm, which wins in all four engine settings of the ablation (2-bit group 128, 3-bit per row, SpQR
 * and BiLLM) on llama-12m with 128 calibration windows, three seeds each (with 16 it loses inside SpQR and at 3-bit
 * per row; README, "First-order step").
 * Otherwise none: the paper's rows' first-order variants lost (bench/results/oac_explore.md), and with gradients taken
 * once nothing is lost yet. A step asked for follows the lost gradient wherever the refresh is per-layer.
 *
 * @example
 * ```ts
 * import { defaultOacStep } from "./oac.ts";
 * console.assert(defaultOacStep("coupled", "per-layer").firstOrder === 1);
 * console.assert(defaultOacStep("coupled", "once").firstOrder === 0);
 * console.assert(defaultOacStep("independent", "per-layer").firstOrder === 0);
 * ```
 */
export function defaultOacStep(rows: "independent" | "coupled", refresh: "once" | "per-layer"): OacStep {
  const on = rows === "coupled" && refresh === "per-layer";
  return {
    firstOrder: on ? 1 : 0,
    // With gradients taken once nothing is lost yet; a step asked for with per-layer refresh follows what is.
    firstOrderGradient: refresh === "per-layer" ? "lost" : "loss",
    firstOrderDamping: rows === "coupled" ? OAC_COUPLED_STEP_DAMPING : 0.1,
    firstOrderTrust: 0.05,
  };
}

/** Whether `options` ask for something that only the paper's `H_OAC` has (coupled rows refuse these). */
function buildsOnHOac(options: Omit<OacOptions, "seqLen">): boolean {
  return (options.mix ?? 0) > 0 || (options.normalize ?? "none") !== "none" ||
    (options.form ?? "sequence") !== "sequence" || options.chunk !== undefined ||
    (options.role ?? "hessian") !== "hessian";
}

/**
 * OAC as a {@link HessianSource} for the calibration driver. With `refresh: "once"` every layer's Hessian comes from
 * one pass over the full-precision model; with `"per-layer"` each decoder layer's come from a pass over the model as
 * it stands when that layer's turn comes (earlier layers quantized).
 */
export function oacHessianSource(tokens: Int32Array, options: OacOptions): HessianSource {
  const { refresh = "per-layer", mix = 0, role = "hessian", rows = "independent" } = options;
  if (refresh !== "once" && refresh !== "per-layer") throw new OptionError(`OAC: unknown refresh "${refresh}"`);
  if (rows !== "independent" && rows !== "coupled") throw new OptionError(`OAC: unknown rows "${rows}"`);
  if (rows === "coupled" && buildsOnHOac(options)) {
    throw new OptionError(
      "OAC: rows \"coupled\" takes GPTQ's input Hessian and the loss gradients' output-side one; mix, normalize, " +
        "the token-diagonal form, chunk and the salience role do not apply",
    );
  }
  if (role !== "hessian" && role !== "salience") throw new OptionError(`OAC: unknown role "${role}"`);
  if (!(mix >= 0)) throw new OptionError(`OAC: mix must be ≥ 0, got ${mix}`);
  const beta = options.firstOrder ?? 0;
  if (!(beta >= 0)) throw new OptionError(`OAC: firstOrder must be ≥ 0, got ${beta}`);
  if (beta > 0 && role === "salience") throw new OptionError('OAC: the first-order term needs role "hessian"');
  if (beta > 0 && (options.normalize ?? "none") !== "none") {
    // The step Ḡ·H⁻¹ needs H at the gradient's own scale; a normalised H has unit trace whatever Ḡ's size.
    throw new OptionError('OAC: the first-order term needs unnormalised Hessians (normalize: "none")');
  }
  const defaults = defaultOacStep(rows, refresh);
  const step = {
    beta,
    damping: options.firstOrderDamping ?? defaults.firstOrderDamping,
    tokensPerWindow: options.seqLen - 1,
    trust: options.firstOrderTrust ?? defaults.firstOrderTrust,
  };
  const gradientKind = options.firstOrderGradient ?? "loss";
  if (gradientKind !== "loss" && gradientKind !== "lost") {
    throw new OptionError(`OAC: unknown firstOrderGradient "${gradientKind}"`);
  }
  if (gradientKind === "lost" && refresh === "once") {
    throw new OptionError('OAC: firstOrderGradient "lost" needs refresh "per-layer" (once, nothing is lost yet)');
  }
  let cached: OacStatistics | undefined;
  // The full-precision model's mean gradients by layer name (firstOrderGradient "lost").
  let baseline: Map<string, Matrix> | undefined;
  return async (layer, model, names, { stream, inputHessians }) => {
    let stats: OacStatistics;
    if (refresh === "once") {
      cached ??= await oacStatistics(model, tokens, options, undefined, undefined, beta > 0);
      stats = cached;
    } else if (beta > 0 && gradientKind === "lost" && !baseline) {
      // The first call comes before anything is rounded: one pass from here gives this layer's statistics and every
      // later layer's full-precision gradient.
      stats = await oacStatistics(model, tokens, options, names, { layer, hidden: stream }, "all");
      baseline = new Map(stats.gradients);
    } else {
      // Layers before this one are already quantized and `stream` is their output: start the passes here.
      stats = await oacStatistics(model, tokens, options, names, { layer, hidden: stream }, beta > 0);
    }
    const hessians = new Map<string, Matrix<FloatArray>>();
    if (rows === "coupled") {
      const outputHessians = new Map<string, Matrix<FloatArray>>();
      for (const name of names) {
        const b = stats.hessians.get(name);
        if (!b) throw new OptionError(`OAC: no output-side Hessian for ${name} (layer ${layer})`);
        outputHessians.set(name, b);
      }
      const input = await inputHessians();
      const targets = new Map<string, Matrix>();
      for (const name of beta > 0 ? names : []) {
        targets.set(
          name,
          await kroneckerFirstOrderTarget(
            linearWeight(model, name),
            lostGradient(stats.gradients.get(name)!, baseline?.get(name)),
            input.get(name)!,
            outputHessians.get(name)!,
            { ...step, backend: options.backend ?? getBackend() },
          ),
        );
      }
      for (const name of names) baseline?.delete(name);
      for (const name of refresh === "once" ? names : []) cached?.hessians.delete(name), cached?.gradients.delete(name);
      return { hessians: input, outputHessians, targets };
    }
    const gptq = mix > 0 || role === "salience" ? await inputHessians() : undefined;
    if (role === "salience") {
      // GPTQ's Hessians drive the engine; OAC's (mixed as asked) only choose the salient weights.
      const salience = new Map<string, Matrix<FloatArray>>();
      for (const name of names) {
        const h = stats.hessians.get(name);
        if (!h) throw new OptionError(`OAC: no Hessian for ${name} (layer ${layer})`);
        salience.set(name, mix > 0 ? mixed(h, gptq!.get(name)!, mix) : h);
      }
      for (const name of refresh === "once" ? names : []) cached?.hessians.delete(name);
      return { hessians: new Map(names.map((n) => [n, gptq!.get(n)!])), salience };
    }
    for (const name of names) {
      const h = stats.hessians.get(name);
      if (!h) throw new OptionError(`OAC: no Hessian for ${name} (layer ${layer})`);
      if (!gptq) {
        hessians.set(name, h);
        continue;
      }
      hessians.set(name, mixed(h, gptq.get(name)!, mix));
    }
    const targets = new Map<string, Matrix>();
    for (const name of beta > 0 ? names : []) {
      const w = linearWeight(model, name);
      const backend = options.backend ?? getBackend();
      targets.set(
        name,
        await firstOrderTarget(
          w,
          lostGradient(stats.gradients.get(name)!, baseline?.get(name)),
          stats.hessians.get(name)!,
          { ...step, backend },
        ),
      );
    }
    for (const name of names) baseline?.delete(name);
    // Each layer's statistics are used once.
    for (const name of refresh === "once" ? names : []) cached?.hessians.delete(name), cached?.gradients.delete(name);
    return { hessians, targets };
  };
}
