/**
 * A tiny random Llama for tests that need a whole model but not a trained one: fast, with every structural feature
 * (grouped-query attention, both RoPE pairings, tied or untied classifier).
 *
 * @module
 */

import { createRng, randomNormal } from "../core/random.ts";
import { type Matrix, matrix } from "../core/tensor.ts";
import type { LlamaConfig } from "../model/config.ts";
import { llamaFromWeights, type LlamaModel } from "../model/llama.ts";

/** Options of {@link tinyConfig}. */
export interface TinyOptions {
  readonly pairing?: "half" | "interleaved";
  readonly tied?: boolean;
  readonly layers?: number;
}

/** hidden 16, 6 heads of 4 over 2 key/value heads, MLP 24, vocabulary 19. */
export function tinyConfig({ pairing = "half", tied = false, layers = 2 }: TinyOptions = {}): LlamaConfig {
  return {
    architecture: "llama",
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: layers,
    numHeads: 6,
    numKvHeads: 2,
    headDim: 4,
    vocabSize: 19,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: tied,
    maxPositionEmbeddings: 64,
    ropePairing: pairing,
  };
}

/** Random weights under Hugging Face names (norm gains near 1, like trained models). */
export function tinyWeights(config: LlamaConfig, seed = 1): Map<string, Matrix> {
  const rng = createRng(seed);
  const { hiddenSize: d, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd, vocabSize: v } = config;
  const w = new Map<string, Matrix>();
  const mat = (name: string, r: number, c: number) =>
    w.set(name, matrix(r, c, randomNormal(rng, r * c, 1 / Math.sqrt(c))));
  const norm = (name: string) => w.set(name, matrix(1, d, randomNormal(rng, d, 0.1).map((x) => 1 + x)));
  mat("model.embed_tokens.weight", v, d);
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    norm(`${p}input_layernorm.weight`);
    mat(`${p}self_attn.q_proj.weight`, h * hd, d);
    mat(`${p}self_attn.k_proj.weight`, kv * hd, d);
    mat(`${p}self_attn.v_proj.weight`, kv * hd, d);
    mat(`${p}self_attn.o_proj.weight`, d, h * hd);
    norm(`${p}post_attention_layernorm.weight`);
    mat(`${p}mlp.gate_proj.weight`, f, d);
    mat(`${p}mlp.up_proj.weight`, f, d);
    mat(`${p}mlp.down_proj.weight`, d, f);
  }
  norm("model.norm.weight");
  if (!config.tieWordEmbeddings) mat("lm_head.weight", v, d);
  return w;
}

/** A tiny random model. */
export function tinyModel(options: TinyOptions = {}, seed = 1): LlamaModel {
  const config = tinyConfig(options);
  const w = tinyWeights(config, seed);
  return llamaFromWeights(config, (n) => w.get(n));
}

/** `n` random token ids below `vocab`. */
export function randomTokens(n: number, vocab: number, seed = 2): Int32Array {
  const rng = createRng(seed);
  return Int32Array.from({ length: n }, () => rng.int(vocab));
}
