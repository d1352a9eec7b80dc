/**
 * Loads a Hugging Face Llama-family model folder (`config.json` + safetensors, sharded or not) into float32 weights
 * under their Hugging Face names.
 *
 * Weights are a `Map<string, Matrix>`: linear layers and embeddings keep the safetensors layout `[out, in]` /
 * `[vocab, hidden]`, and 1-D tensors (the RMSNorm gains) are `[1, n]` matrices, so every weight has one type.
 * With tied embeddings, `lm_head.weight` is the same object as `model.embed_tokens.weight` (shared storage: replace
 * the map entry, never write into it, to change one without the other).
 *
 * @module
 */

import { FormatError, ShapeError } from "../core/errors.ts";
import { type Matrix, matrix } from "../core/tensor.ts";
import { type LlamaConfig, loadHfConfig } from "./config.ts";
import { openSafetensorsFolder } from "./safetensors.ts";

/** Weights by Hugging Face name, all float32; 1-D tensors are `[1, n]`. */
export type ModelWeights = Map<string, Matrix>;

/** A model ready for the forward pass. */
export interface LoadedModel {
  /** The architecture's hyper-parameters. */
  readonly config: LlamaConfig;
  /** Every weight of the model, float32, under Hugging Face names. */
  readonly weights: ModelWeights;
}

/**
 * The weights a Llama model of `config` has, with their shapes, in a stable order: embeddings, then each layer's
 * attention norm, q, k, v, o, MLP norm, gate, up, down, then the final norm and `lm_head.weight`.
 */
export function llamaWeightShapes(config: LlamaConfig): Map<string, readonly [number, number]> {
  const { hiddenSize: h, intermediateSize: f, numHeads, numKvHeads, headDim, vocabSize: v } = config;
  const m = new Map<string, readonly [number, number]>();
  m.set("model.embed_tokens.weight", [v, h]);
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    m.set(`${p}input_layernorm.weight`, [1, h]);
    m.set(`${p}self_attn.q_proj.weight`, [numHeads * headDim, h]);
    m.set(`${p}self_attn.k_proj.weight`, [numKvHeads * headDim, h]);
    m.set(`${p}self_attn.v_proj.weight`, [numKvHeads * headDim, h]);
    m.set(`${p}self_attn.o_proj.weight`, [h, numHeads * headDim]);
    m.set(`${p}post_attention_layernorm.weight`, [1, h]);
    m.set(`${p}mlp.gate_proj.weight`, [f, h]);
    m.set(`${p}mlp.up_proj.weight`, [f, h]);
    m.set(`${p}mlp.down_proj.weight`, [h, f]);
  }
  m.set("model.norm.weight", [1, h]);
  m.set("lm_head.weight", [v, h]);
  return m;
}

/** The names of the linear layers of a Llama model (the matrices quantizers act on), layer by layer. */
export function llamaLinearNames(config: LlamaConfig): string[] {
  const out: string[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    for (const n of ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]) {
      out.push(`model.layers.${i}.${n}.weight`);
    }
    for (const n of ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]) out.push(`model.layers.${i}.${n}.weight`);
  }
  return out;
}

/**
 * A weight by name.
 *
 * @throws {ShapeError} when the model has no weight of that name.
 */
export function getWeight(weights: ModelWeights, name: string): Matrix {
  const w = weights.get(name);
  if (!w) throw new ShapeError(`model has no weight "${name}"`);
  return w;
}

/**
 * Checks that `weights` holds exactly the tensors a Llama model of `config` needs, with the right shapes.
 *
 * @param path Names the source in errors.
 * @throws {FormatError} on a missing, unexpected or misshapen weight.
 */
export function checkLlamaWeights(config: LlamaConfig, weights: ModelWeights, path: string): void {
  const expected = llamaWeightShapes(config);
  for (const [name, [r, c]] of expected) {
    const w = weights.get(name);
    if (!w) throw new FormatError(path, `missing weight "${name}"`);
    if (w.shape[0] !== r || w.shape[1] !== c || w.data.length !== r * c) {
      throw new FormatError(path, `weight "${name}" has shape [${w.shape}], the config implies [${r}, ${c}]`);
    }
  }
  for (const name of weights.keys()) {
    if (!expected.has(name)) throw new FormatError(path, `unexpected weight "${name}" for this config`);
  }
}

/**
 * Loads `config.json` and every weight of a Hugging Face Llama model folder as float32 (bf16, f16 and f64 are
 * converted). Checks each tensor's shape against the config before reading it.
 *
 * @example
 * ```ts ignore
 * const { config, weights } = await loadHfModel("../shared/models/llama-12m");
 * const q = weights.get("model.layers.0.self_attn.q_proj.weight")!; // [numHeads·headDim, hidden]
 * ```
 * @param dir The model folder.
 * @throws {FormatError} when the folder, `config.json` or a shard is missing or malformed, a weight is missing or
 *   has a shape the config does not imply, or the checkpoint holds tensors a Llama model does not have.
 */
export async function loadHfModel(dir: string): Promise<LoadedModel> {
  const config = await loadHfConfig(dir);
  const expected = llamaWeightShapes(config);
  using st = await openSafetensorsFolder(dir);
  for (const name of st.names) {
    // Old checkpoints store RoPE's inverse frequencies as a buffer; the forward pass recomputes them.
    if (name.endsWith(".rotary_emb.inv_freq")) continue;
    if (name === "lm_head.weight" && config.tieWordEmbeddings) continue;
    if (!expected.has(name)) throw new FormatError(st.path, `unexpected tensor "${name}" for a Llama model`);
  }
  const weights: ModelWeights = new Map();
  for (const [name, [r, c]] of expected) {
    if (name === "lm_head.weight" && config.tieWordEmbeddings) continue;
    if (!st.has(name)) {
      throw new FormatError(
        st.path,
        `missing weight "${name}"` + (name === "lm_head.weight" ? " (config says tie_word_embeddings: false)" : ""),
      );
    }
    const info = st.info(name);
    const n = info.shape.reduce((a, d) => a * d, 1);
    const shapeOk = r === 1 ? info.shape.length === 1 && n === c : info.shape.length === 2 && info.shape[0] === r &&
      info.shape[1] === c;
    if (!shapeOk) {
      throw new FormatError(
        info.file,
        `weight "${name}" has shape [${info.shape}], the config implies [${r === 1 ? c : `${r}, ${c}`}]`,
      );
    }
    if (info.dtype !== "F32" && info.dtype !== "BF16" && info.dtype !== "F16" && info.dtype !== "F64") {
      throw new FormatError(info.file, `weight "${name}" has dtype ${info.dtype}; expected a float type`);
    }
    weights.set(name, matrix(r, c, (await st.readF32(name)).data));
  }
  if (config.tieWordEmbeddings) weights.set("lm_head.weight", weights.get("model.embed_tokens.weight")!);
  return { config, weights };
}
