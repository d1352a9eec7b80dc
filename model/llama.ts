/**
 * A Llama decoder (RMSNorm, RoPE, grouped-query causal attention, SwiGLU MLP) over a {@link Backend}: every matmul and
 * transformer kernel goes through the backend, so a faster backend speeds the model up unchanged. Only the embedding
 * lookup and the residual additions are plain TS (memory-bound, negligible beside the matmuls).
 *
 * Three entry points, all pure in the model (they never modify weights):
 * - {@link forward}: logits of a batch of windows, optionally hidden states and every linear layer's input
 *   (the GPTQ Hessian hook);
 * - {@link lossAndGradients}: mean next-token loss and the gradient of the loss with respect to every linear weight;
 *   its `onLinear` callback streams, layer by layer during the backward pass, the input `X` (`[T, in]`) and the output
 *   gradient `Γ` (`[T, out]`) of each linear layer: OAC's `G_n = Γ_nᵀ X_n` per sequence;
 * - building blocks ({@link embedTokens}, {@link decoderLayerForward}, {@link finalLogits}) for layer-by-layer
 *   calibration.
 *
 * Memory: a call keeps the activations of one pass (at most `maxBatch` windows) and releases each layer's activations
 * as soon as the backward pass has gone through it.
 *
 * @module
 */

import type { AttentionShape, Backend, DecoderLayerOptions, DecoderLayerWeights } from "../core/backend.ts";
import { FormatError, OptionError, ShapeError } from "../core/errors.ts";
import type { Matrix } from "../core/tensor.ts";
import { addResidual } from "../core/nn/decoder_layer.ts";
import { getBackend } from "../backends/registry.ts";
import type { LlamaConfig } from "./config.ts";

/** The weights of one decoder layer (the kernels' `DecoderLayerWeights`; its fields name the checkpoint's tensors). */
export type LlamaLayerWeights = DecoderLayerWeights;

/** All weights of a Llama model, typed. */
export interface LlamaWeights {
  /** `model.embed_tokens.weight`, `[vocab, hidden]`. */
  readonly embed: Matrix;
  readonly layers: readonly LlamaLayerWeights[];
  /** `model.norm.weight`, `[hidden]`. */
  readonly finalNorm: Float32Array;
  /** `lm_head.weight`, `[vocab, hidden]`; the embedding itself when the embeddings are tied. */
  readonly lmHead: Matrix;
}

/** A configuration and its weights. */
export interface LlamaModel {
  readonly config: LlamaConfig;
  readonly weights: LlamaWeights;
}

/** The seven linear layers of a decoder layer, by their Hugging Face module names. */
export const LINEAR_KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

/** One of {@link LINEAR_KINDS}. */
export type LinearKind = typeof LINEAR_KINDS[number];

const FIELD_OF_KIND: Record<LinearKind, "q" | "k" | "v" | "o" | "gate" | "up" | "down"> = {
  q_proj: "q",
  k_proj: "k",
  v_proj: "v",
  o_proj: "o",
  gate_proj: "gate",
  up_proj: "up",
  down_proj: "down",
};

/** Name of the classifier, as a linear layer (`lm_head`). */
export const LM_HEAD = "lm_head";

/**
 * The Hugging Face module name of a linear layer, e.g. `model.layers.0.self_attn.q_proj` (without `.weight`): the key
 * of gradients, `onLinear` callbacks and the fixtures.
 */
export function linearName(layer: number, kind: LinearKind): string {
  const block = kind === "gate_proj" || kind === "up_proj" || kind === "down_proj" ? "mlp" : "self_attn";
  return `model.layers.${layer}.${block}.${kind}`;
}

/** Every decoder linear layer's name, layer by layer in {@link LINEAR_KINDS} order (the classifier is not included). */
export function linearNames(config: Pick<LlamaConfig, "numLayers">): string[] {
  const names: string[] = [];
  for (let l = 0; l < config.numLayers; l++) for (const kind of LINEAR_KINDS) names.push(linearName(l, kind));
  return names;
}

/** Layer index and kind of a decoder linear name, or undefined for other names. */
export function parseLinearName(name: string): { layer: number; kind: LinearKind } | undefined {
  const m = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$/.exec(name);
  if (!m || !(LINEAR_KINDS as readonly string[]).includes(m[2])) return undefined;
  return { layer: Number(m[1]), kind: m[2] as LinearKind };
}

/** The weight `[out, in]` of a linear layer by name (`lm_head` included). @throws {OptionError} for an unknown name. */
export function linearWeight(model: LlamaModel, name: string): Matrix {
  if (name === LM_HEAD) return model.weights.lmHead;
  const parsed = parseLinearName(name);
  const layer = parsed && model.weights.layers[parsed.layer];
  if (!parsed || !layer) throw new OptionError(`no linear layer named "${name}"`);
  return layer[FIELD_OF_KIND[parsed.kind]];
}

/**
 * A model sharing every weight with `model` except the linear layers named in `replacements` (quantized weights,
 * say). The original is not modified.
 *
 * @throws {OptionError} for an unknown name; {@link ShapeError} for a replacement of another shape.
 */
export function withLinearWeights(model: LlamaModel, replacements: ReadonlyMap<string, Matrix>): LlamaModel {
  const layers: { -readonly [K in keyof LlamaLayerWeights]: LlamaLayerWeights[K] }[] = model.weights.layers.map((
    l,
  ) => ({
    ...l,
  }));
  let lmHead = model.weights.lmHead;
  for (const [name, w] of replacements) {
    const old = linearWeight(model, name);
    if (w.shape[0] !== old.shape[0] || w.shape[1] !== old.shape[1]) {
      throw new ShapeError(`${name}: replacement ${w.shape.join("×")} for a ${old.shape.join("×")} weight`);
    }
    const parsed = parseLinearName(name);
    if (parsed) layers[parsed.layer][FIELD_OF_KIND[parsed.kind]] = w;
    else lmHead = w; // linearWeight accepted the name, so it is the classifier
  }
  return { config: model.config, weights: { ...model.weights, layers, lmHead } };
}

/** A tensor as the loaders return it: float32 data and a shape. */
export interface WeightTensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
}

/** Looks a tensor up by its Hugging Face name (`model.layers.0.self_attn.q_proj.weight`); undefined when absent. */
export type WeightLookup = (name: string) => WeightTensor | undefined;

/**
 * Typed weights from a name → tensor lookup under Hugging Face names, checking every shape against the config.
 * Works with any loader: pass `(n) => map.get(n)`. `lm_head.weight` falls back to the embedding when the config ties
 * them or the checkpoint has no classifier.
 *
 * @param source names the model in error messages (a path).
 * @throws {FormatError} when a tensor is missing or has the wrong shape.
 */
export function llamaFromWeights(config: LlamaConfig, lookup: WeightLookup, source = "model"): LlamaModel {
  const { hiddenSize: d, intermediateSize: f, numHeads, numKvHeads, headDim, vocabSize } = config;
  const get = (name: string, shape: readonly number[]): WeightTensor => {
    const t = lookup(name);
    if (!t) throw new FormatError(source, `missing tensor ${name}`);
    const size = shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== size || t.shape.reduce((a, b) => a * b, 1) !== size || t.shape.at(-1) !== shape.at(-1)) {
      throw new FormatError(source, `tensor ${name} has shape [${t.shape}], expected [${shape}]`);
    }
    return t;
  };
  const mat = (name: string, rows: number, cols: number): Matrix => ({
    data: get(name, [rows, cols]).data,
    shape: [rows, cols],
  });
  const vec = (name: string): Float32Array => get(name, [d]).data;
  const layers: LlamaLayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      inputNorm: vec(`${p}input_layernorm.weight`),
      q: mat(`${p}self_attn.q_proj.weight`, numHeads * headDim, d),
      k: mat(`${p}self_attn.k_proj.weight`, numKvHeads * headDim, d),
      v: mat(`${p}self_attn.v_proj.weight`, numKvHeads * headDim, d),
      o: mat(`${p}self_attn.o_proj.weight`, d, numHeads * headDim),
      postAttentionNorm: vec(`${p}post_attention_layernorm.weight`),
      gate: mat(`${p}mlp.gate_proj.weight`, f, d),
      up: mat(`${p}mlp.up_proj.weight`, f, d),
      down: mat(`${p}mlp.down_proj.weight`, d, f),
    });
  }
  const embed = mat("model.embed_tokens.weight", vocabSize, d);
  const lmHead = config.tieWordEmbeddings || !lookup("lm_head.weight") ? embed : mat("lm_head.weight", vocabSize, d);
  return { config, weights: { embed, layers, finalNorm: vec("model.norm.weight"), lmHead } };
}

/** Batch layout of a token array: `batch` windows of `seqLen` tokens, batch-major. */
export interface BatchShape {
  readonly batch: number;
  readonly seqLen: number;
}

function checkBatch(tokens: Int32Array, { batch, seqLen }: BatchShape, what: string): void {
  if (!Number.isInteger(batch) || !Number.isInteger(seqLen) || batch <= 0 || seqLen <= 0) {
    throw new OptionError(`${what}: batch and seqLen must be positive integers, got ${batch} and ${seqLen}`);
  }
  if (tokens.length !== batch * seqLen) {
    throw new ShapeError(`${what}: ${tokens.length} tokens for batch ${batch} × seqLen ${seqLen}`);
  }
}

/**
 * Rows of the embedding for each token: `[tokens, hidden]`.
 * @throws {OptionError} for a token id outside the vocabulary.
 */
export function embedTokens(model: LlamaModel, tokens: Int32Array): Matrix {
  const { embed } = model.weights;
  const [vocab, d] = embed.shape;
  const out = new Float32Array(tokens.length * d);
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t];
    if (!(id >= 0 && id < vocab)) {
      throw new OptionError(`token ${id} at position ${t} is outside the vocabulary ${vocab}`);
    }
    out.set(embed.data.subarray(id * d, (id + 1) * d), t * d);
  }
  return { data: out, shape: [tokens.length, d] };
}

function addInto(acc: Matrix, b: Matrix): void {
  const A = acc.data, B = b.data;
  for (let i = 0; i < A.length; i++) A[i] += B[i];
}

/** `x · Wᵀ` for a `[out, in]` weight. */
function linear(backend: Backend, x: Matrix, w: Matrix): Promise<Matrix> {
  return backend.matmul(x, w, { transB: true });
}

/** Receives the input of a linear layer during a forward pass (q, k and v share one input: three calls). */
export type LinearInputHook = (name: string, x: Matrix) => void | Promise<void>;

/** What {@link decoderLayerForward} keeps for the backward pass (the cheap-to-recompute norms and SwiGLU are not kept). */
interface LayerActivations {
  readonly x: Matrix;
  /** Post-RoPE queries and keys, values: the operands of attention. */
  readonly q: Matrix;
  readonly k: Matrix;
  readonly v: Matrix;
  readonly attn: Matrix;
  readonly h: Matrix;
  readonly gate: Matrix;
  readonly up: Matrix;
}

function attentionShape(config: LlamaConfig, { batch, seqLen }: BatchShape): AttentionShape {
  return { batch, seqLen, heads: config.numHeads, kvHeads: config.numKvHeads, headDim: config.headDim };
}

function ropeOptions(config: LlamaConfig, seqLen: number, inverse = false) {
  return { seqLen, headDim: config.headDim, theta: config.ropeTheta, pairing: config.ropePairing, inverse } as const;
}

async function layerForwardImpl(
  backend: Backend,
  config: LlamaConfig,
  index: number,
  w: LlamaLayerWeights,
  x: Matrix,
  shape: BatchShape,
  onLinearInput?: LinearInputHook,
  stopAfter?: LinearKind,
  keep = false,
): Promise<{ out: Matrix; acts?: LayerActivations } | undefined> {
  const eps = config.rmsNormEps;
  /** Reports a shared input to each of `kinds`; true when the pass ends there. */
  const report = async (kinds: readonly LinearKind[], input: Matrix): Promise<boolean> => {
    if (onLinearInput) { for (const kind of kinds) await onLinearInput(linearName(index, kind), input); }
    return stopAfter !== undefined && kinds.includes(stopAfter);
  };
  const xn = await backend.rmsNorm(x, w.inputNorm, eps);
  if (await report(["q_proj", "k_proj", "v_proj"], xn)) return undefined;
  const rope = ropeOptions(config, shape.seqLen);
  const q = await backend.rope(await linear(backend, xn, w.q), rope);
  const k = await backend.rope(await linear(backend, xn, w.k), rope);
  const v = await linear(backend, xn, w.v);
  const attn = await backend.attention(q, k, v, attentionShape(config, shape));
  if (await report(["o_proj"], attn)) return undefined;
  const h = addResidual(x, await linear(backend, attn, w.o));
  const hn = await backend.rmsNorm(h, w.postAttentionNorm, eps);
  if (await report(["gate_proj", "up_proj"], hn)) return undefined;
  // The backward pass needs both projections; a pass that keeps nothing lets the backend fuse them with the SwiGLU.
  const gate = keep ? await linear(backend, hn, w.gate) : undefined;
  const up = keep ? await linear(backend, hn, w.up) : undefined;
  const act = gate && up ? await backend.swiglu(gate, up) : await backend.swigluLinear(hn, w.gate, w.up);
  if (await report(["down_proj"], act)) return undefined;
  const out = addResidual(h, await linear(backend, act, w.down));
  return { out, acts: gate && up ? { x, q, k, v, attn, h, gate, up } : undefined };
}

/**
 * One decoder layer: `h = x + o(attn(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x))))`, `out = h + down(silu(gate(n₂(h))) ⊙ up(n₂(h)))`.
 *
 * @param layer index of the layer (names the linear layers passed to `onLinearInput`).
 * @param x `[batch·seqLen, hidden]` the residual stream entering the layer.
 * @returns the residual stream leaving it.
 */
export async function decoderLayerForward(
  backend: Backend,
  config: LlamaConfig,
  layer: number,
  weights: LlamaLayerWeights,
  x: Matrix,
  shape: BatchShape,
  onLinearInput?: LinearInputHook,
): Promise<Matrix> {
  // Without a hook nothing outside needs the intermediates: the backend may keep them in its own memory.
  if (!onLinearInput) return backend.decoderLayer(x, weights, decoderLayerOptions(config, shape));
  return (await layerForwardImpl(backend, config, layer, weights, x, shape, onLinearInput))!.out;
}

/** The constants of a decoder layer of `config` over windows of `shape`, as `Backend.decoderLayer` takes them. */
function decoderLayerOptions(config: LlamaConfig, shape: BatchShape): DecoderLayerOptions {
  return {
    attention: attentionShape(config, shape),
    eps: config.rmsNormEps,
    ropeTheta: config.ropeTheta,
    ropePairing: config.ropePairing,
  };
}

/**
 * The part of {@link decoderLayerForward} that produces the inputs of the decoder linear layers up to `last`
 * (in the order q/k/v, o, gate/up, down), each reported to `onLinearInput`; layers sharing an input are reported
 * together (`last = "q_proj"` reports k and v too). The rest of the layer, whose output nobody reads (a Hessian
 * pass), is not computed.
 *
 * @example
 * ```ts ignore
 * // The attention input only: one RMSNorm, no matmul.
 * await decoderLayerInputs(backend, config, 0, weights, x, { batch: 1, seqLen }, (name, xn) => {}, "v_proj");
 * ```
 */
export async function decoderLayerInputs(
  backend: Backend,
  config: LlamaConfig,
  layer: number,
  weights: LlamaLayerWeights,
  x: Matrix,
  shape: BatchShape,
  onLinearInput: LinearInputHook,
  last: LinearKind = "down_proj",
): Promise<void> {
  await layerForwardImpl(backend, config, layer, weights, x, shape, onLinearInput, last);
}

/** Final RMSNorm and classifier: `{ hidden: norm(x), logits: norm(x)·lm_headᵀ }`. */
export async function finalLogits(
  backend: Backend,
  model: LlamaModel,
  x: Matrix,
): Promise<{ hidden: Matrix; logits: Matrix }> {
  const hidden = await backend.rmsNorm(x, model.weights.finalNorm, model.config.rmsNormEps);
  return { hidden, logits: await linear(backend, hidden, model.weights.lmHead) };
}

/** Options of {@link forward}. */
export interface ForwardOptions extends BatchShape {
  /** Defaults to the current backend ({@link getBackend}). */
  readonly backend?: Backend;
  /** Return the residual stream after these layers (0-based: `[0]` is Hugging Face's `hidden_states[1]`). */
  readonly hiddenAfterLayers?: readonly number[];
  /** Called with the input of every decoder linear layer, layer by layer (GPTQ's calibration hook). */
  readonly onLinearInput?: LinearInputHook;
}

/** Result of {@link forward}. */
export interface ForwardResult {
  /** `[batch·seqLen, vocab]`. */
  readonly logits: Matrix;
  /** The residual stream after each layer asked for in `hiddenAfterLayers`. */
  readonly hidden: ReadonlyMap<number, Matrix>;
  /** `[batch·seqLen, hidden]` after the final RMSNorm (the classifier's input). */
  readonly finalHidden: Matrix;
}

/**
 * Logits of `batch` independent causal windows of `seqLen` tokens (positions restart at 0 in each window).
 *
 * @param tokens `batch·seqLen` token ids, batch-major.
 * @throws {ShapeError} when `tokens.length ≠ batch·seqLen`; {@link OptionError} for a token outside the vocabulary.
 *
 * @example
 * ```ts ignore
 * const { logits } = await forward(model, new Int32Array([1, 403, 9]), { batch: 1, seqLen: 3 });
 * ```
 */
export async function forward(model: LlamaModel, tokens: Int32Array, options: ForwardOptions): Promise<ForwardResult> {
  const { hidden, finalHidden } = await forwardHidden(model, tokens, options);
  const backend = options.backend ?? getBackend();
  return { logits: await linear(backend, finalHidden, model.weights.lmHead), hidden, finalHidden };
}

/**
 * {@link forward} without the classifier: the final RMSNorm's output and the hidden states asked for, for a caller
 * that scores them without the `[tokens, vocab]` logits (`Backend.linearCrossEntropy`).
 * @throws as {@link forward}.
 */
export async function forwardHidden(
  model: LlamaModel,
  tokens: Int32Array,
  options: ForwardOptions,
): Promise<Omit<ForwardResult, "logits">> {
  checkBatch(tokens, options, "forward");
  const backend = options.backend ?? getBackend();
  const capture = new Set(options.hiddenAfterLayers ?? []);
  const hidden = new Map<number, Matrix>();
  let x = embedTokens(model, tokens);
  for (let l = 0; l < model.weights.layers.length; l++) {
    x = await decoderLayerForward(backend, model.config, l, model.weights.layers[l], x, options, options.onLinearInput);
    if (capture.has(l)) hidden.set(l, x);
  }
  const finalHidden = await backend.rmsNorm(x, model.weights.finalNorm, model.config.rmsNormEps);
  return { hidden, finalHidden };
}

/**
 * Next-token targets of batch-major windows: `targets[b·L + t] = tokens[b·L + t + 1]`, and `-1` (ignored) at the
 * last position of each window, whose successor lies outside it.
 */
export function nextTokenTargets(tokens: Int32Array, seqLen: number): Int32Array {
  const targets = new Int32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) targets[i] = (i + 1) % seqLen === 0 ? -1 : tokens[i + 1];
  return targets;
}

/**
 * Receives, during the backward pass, one linear layer's input `x` (`[rows, in]`) and the gradient `gamma` of the loss
 * with respect to its output (`[rows, out]`). Rows are the tokens of windows `firstWindow ..` of the call, `seqLen`
 * rows each, so sequence `n`'s gradient is `G_n = gamma[n rows]ᵀ · x[n rows]`. Layers arrive from the last to the
 * first; within a layer in the order down, gate, up, o, q, k, v. The matrices may be released after the call returns;
 * copy them to keep them.
 */
export type LinearGradientHook = (
  name: string,
  x: Matrix,
  gamma: Matrix,
  firstWindow: number,
) => void | Promise<void>;

/** Options of {@link lossAndGradients}. */
export interface LossOptions extends BatchShape {
  /** Defaults to the current backend. */
  readonly backend?: Backend;
  /** One target per token, `-1` = ignored; default {@link nextTokenTargets} (the empirical Fisher's labels). */
  readonly targets?: Int32Array;
  /**
   * What is differentiated:
   * - `"mean"` (default): the mean loss over every counted token of the call (PyTorch's `loss`);
   * - `"sequence"`: the sum over windows of each window's own mean loss, so that the rows of window `n` in `gamma`
   *   are exactly the gradients of `ℓ_n` alone, whatever the batch (OAC's per-sequence gradients).
   */
  readonly reduction?: "mean" | "sequence";
  /** Which weight gradients to form (names of {@link linearNames}, and `lm_head`); default every decoder linear. */
  readonly gradients?: readonly string[];
  /** Streams each linear layer's input and output gradient (see {@link LinearGradientHook}). */
  readonly onLinear?: LinearGradientHook;
  /** Windows per forward/backward pass (memory bound); default all of them in one pass. */
  readonly maxBatch?: number;
  /**
   * Start at decoder layer `layer` from `hidden`, the residual stream entering it (`[batch·seqLen, hidden]`, e.g. the
   * calibration driver's), instead of the embeddings: the forward pass runs layers `layer..`, the backward pass stops
   * after `layer`, and only those layers' linears are reported and differentiated. Default: the whole model.
   */
  readonly start?: { readonly layer: number; readonly hidden: Matrix };
}

/** Result of {@link lossAndGradients}. */
export interface LossAndGradients {
  /** Mean loss over all counted tokens (natural log). */
  readonly loss: number;
  /** Mean loss of each window (NaN for a window without counted tokens). */
  readonly windowLosses: Float64Array;
  /** Counted (not ignored) tokens. */
  readonly tokens: number;
  /** `[out, in]` gradient of the differentiated loss with respect to each requested weight. */
  readonly gradients: ReadonlyMap<string, Matrix>;
}

/**
 * Forward and backward passes: the loss and its gradient with respect to the linear weights, with every linear
 * layer's `(x, Γ)` streamed to `onLinear`. Windows are processed `maxBatch` at a time; each pass's activations are
 * released before the next.
 *
 * @param tokens `batch·seqLen` token ids, batch-major.
 * @throws {ShapeError} / {@link OptionError} for inconsistent sizes, unknown gradient names or no counted token.
 */
export async function lossAndGradients(
  model: LlamaModel,
  tokens: Int32Array,
  options: LossOptions,
): Promise<LossAndGradients> {
  checkBatch(tokens, options, "lossAndGradients");
  const { batch, seqLen, reduction = "mean", onLinear } = options;
  const backend = options.backend ?? getBackend();
  const targets = options.targets ?? nextTokenTargets(tokens, seqLen);
  if (targets.length !== tokens.length) {
    throw new ShapeError(`lossAndGradients: ${targets.length} targets for ${tokens.length} tokens`);
  }
  if (reduction !== "mean" && reduction !== "sequence") throw new OptionError(`unknown reduction "${reduction}"`);
  const wanted = new Set(options.gradients ?? linearNames(model.config));
  for (const name of wanted) linearWeight(model, name); // fail early on an unknown name
  const maxBatch = options.maxBatch ?? batch;
  if (!Number.isInteger(maxBatch) || maxBatch <= 0) throw new OptionError(`maxBatch must be positive, got ${maxBatch}`);
  const { start } = options;
  const hiddenSize = model.config.hiddenSize;
  const firstLayer = start?.layer ?? 0;
  if (start) {
    if (!Number.isInteger(firstLayer) || firstLayer < 0 || firstLayer >= model.weights.layers.length) {
      throw new OptionError(`start layer ${firstLayer} outside 0..${model.weights.layers.length - 1}`);
    }
    if (start.hidden.shape[0] !== tokens.length || start.hidden.shape[1] !== hiddenSize) {
      throw new ShapeError(
        `start hidden state is ${start.hidden.shape.join("×")}, expected ${tokens.length}×${hiddenSize}`,
      );
    }
    for (const name of wanted) {
      const p = parseLinearName(name);
      if (!p || p.layer < firstLayer) {
        throw new OptionError(`gradient of ${name} asked, but the pass starts at layer ${firstLayer}`);
      }
    }
  }

  // Per-token gradient scales, fixed before any pass so that chunking does not change the result.
  const counts = new Float64Array(batch);
  for (let i = 0; i < targets.length; i++) if (targets[i] !== -1) counts[Math.floor(i / seqLen)]++;
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) throw new OptionError("lossAndGradients: every target is ignored");
  const scales = new Float32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const c = counts[Math.floor(i / seqLen)];
    scales[i] = reduction === "mean" ? 1 / total : c > 0 ? 1 / c : 0;
  }

  const gradients = new Map<string, Matrix>();
  const accumulate = async (name: string, x: Matrix, gamma: Matrix) => {
    if (!wanted.has(name)) return;
    const g = await backend.matmul(gamma, x, { transA: true });
    const prev = gradients.get(name);
    if (prev) addInto(prev, g);
    else gradients.set(name, g);
  };

  const windowSums = new Float64Array(batch);
  for (let b0 = 0; b0 < batch; b0 += maxBatch) {
    const nb = Math.min(maxBatch, batch - b0);
    const r0 = b0 * seqLen, r1 = r0 + nb * seqLen;
    const shape = { batch: nb, seqLen };
    const passTokens = tokens.subarray(r0, r1), passTargets = targets.subarray(r0, r1);

    const acts: (LayerActivations | undefined)[] = [];
    let x = start
      ? { data: start.hidden.data.subarray(r0 * hiddenSize, r1 * hiddenSize), shape: [r1 - r0, hiddenSize] as const }
      : embedTokens(model, passTokens);
    for (let l = firstLayer; l < model.weights.layers.length; l++) {
      const r = (await layerForwardImpl(
        backend,
        model.config,
        l,
        model.weights.layers[l],
        x,
        shape,
        undefined,
        undefined,
        true,
      ))!;
      acts[l] = r.acts;
      x = r.out;
    }
    const { hidden: xf, logits } = await finalLogits(backend, model, x);
    const { losses, dlogits } = await backend.crossEntropy(logits, passTargets, scales.subarray(r0, r1));
    for (let i = 0; i < losses.length; i++) windowSums[b0 + Math.floor(i / seqLen)] += losses[i];
    if (!dlogits) throw new ShapeError("crossEntropy returned no gradient");

    await accumulate(LM_HEAD, xf, dlogits);
    const dxf = await backend.matmul(dlogits, model.weights.lmHead);
    let dx = (await backend.rmsNormBackward(x, model.weights.finalNorm, dxf, model.config.rmsNormEps)).dx;
    for (let l = model.weights.layers.length - 1; l >= firstLayer; l--) {
      const layerActs = acts[l]!;
      acts[l] = undefined; // this layer's activations are dead once its backward pass is done
      dx = await layerBackward(
        backend,
        model.config,
        l,
        model.weights.layers[l],
        layerActs,
        dx,
        shape,
        async (n, xi, g) => {
          if (onLinear) await onLinear(n, xi, g, b0);
          await accumulate(n, xi, g);
        },
      );
    }
  }

  let lossSum = 0;
  const windowLosses = new Float64Array(batch);
  for (let b = 0; b < batch; b++) {
    lossSum += windowSums[b];
    windowLosses[b] = counts[b] > 0 ? windowSums[b] / counts[b] : NaN;
  }
  return { loss: lossSum / total, windowLosses, tokens: total, gradients };
}

/** Backward pass of one decoder layer: returns the gradient of its input, reports each linear's `(x, Γ)`. */
async function layerBackward(
  backend: Backend,
  config: LlamaConfig,
  index: number,
  w: LlamaLayerWeights,
  a: LayerActivations,
  dout: Matrix,
  shape: BatchShape,
  report: (name: string, x: Matrix, gamma: Matrix) => Promise<void>,
): Promise<Matrix> {
  const eps = config.rmsNormEps;
  // MLP branch: out = h + down(act), act = swiglu(gate, up), gate/up = n₂(h)·Wᵀ. The norm and SwiGLU are recomputed
  // (O(T·d)) rather than stored for every layer.
  const act = await backend.swiglu(a.gate, a.up);
  await report(linearName(index, "down_proj"), act, dout);
  const dact = await backend.matmul(dout, w.down);
  const { dgate, dup } = await backend.swigluBackward(a.gate, a.up, dact);
  const hn = await backend.rmsNorm(a.h, w.postAttentionNorm, eps);
  await report(linearName(index, "gate_proj"), hn, dgate);
  await report(linearName(index, "up_proj"), hn, dup);
  const dhn = await backend.matmul(dgate, w.gate);
  addInto(dhn, await backend.matmul(dup, w.up));
  const dh = addResidual(dout, (await backend.rmsNormBackward(a.h, w.postAttentionNorm, dhn, eps)).dx);

  // Attention branch: h = x + o(attn), attn = attention(rope(q), rope(k), v) of n₁(x).
  await report(linearName(index, "o_proj"), a.attn, dh);
  const dattn = await backend.matmul(dh, w.o);
  const { dq, dk, dv } = await backend.attentionBackward(a.q, a.k, a.v, dattn, attentionShape(config, shape));
  const inverse = ropeOptions(config, shape.seqLen, true);
  const dq0 = await backend.rope(dq, inverse), dk0 = await backend.rope(dk, inverse);
  const xn = await backend.rmsNorm(a.x, w.inputNorm, eps);
  await report(linearName(index, "q_proj"), xn, dq0);
  await report(linearName(index, "k_proj"), xn, dk0);
  await report(linearName(index, "v_proj"), xn, dv);
  const dxn = await backend.matmul(dq0, w.q);
  addInto(dxn, await backend.matmul(dk0, w.k));
  addInto(dxn, await backend.matmul(dv, w.v));
  return addResidual(dh, (await backend.rmsNormBackward(a.x, w.inputNorm, dxn, eps)).dx);
}
