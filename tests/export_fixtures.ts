/**
 * Fixtures for the checkpoint-format tests: a tiny Llama whose dimensions pack into GPTQ's 32-bit words, written as a
 * Hugging Face folder so writers have a source to copy from, and quantized with the library's own methods.
 *
 * @module
 */

import { hessianOf } from "../algorithms/hessian.ts";
import { layerQuantizer, type MethodOptions } from "../algorithms/methods.ts";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import { hfConfigObject, nonLinearWeights } from "../model/checkpoint_files.ts";
import type { LlamaConfig } from "../model/config.ts";
import { linearNames, linearWeight, llamaFromWeights, type LlamaModel, withLinearWeights } from "../model/llama.ts";
import { type TensorToWrite, writeSafetensors } from "../model/safetensors.ts";
import { tinyWeights } from "./tiny_llama.ts";

/** hidden 32, 4 heads of 8 over 2 key/value heads, MLP 64, vocabulary 19: every linear dimension a multiple of 32. */
export function packableConfig(options: { pairing?: "half" | "interleaved"; tied?: boolean } = {}): LlamaConfig {
  return {
    architecture: "llama",
    hiddenSize: 32,
    intermediateSize: 64,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    vocabSize: 19,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: options.tied ?? false,
    maxPositionEmbeddings: 64,
    ropePairing: options.pairing ?? "half",
    bosTokenId: 1,
    eosTokenId: 2,
  };
}

/** A random model of {@link packableConfig}. */
export function packableModel(
  options: { pairing?: "half" | "interleaved"; tied?: boolean } = {},
  seed = 3,
): LlamaModel {
  const config = packableConfig(options);
  const w = tinyWeights(config, seed);
  return llamaFromWeights(config, (n) => w.get(n));
}

/** Writes `model` as a Hugging Face folder (config.json + model.safetensors, float32 unless `dtype`). */
export async function writeHfFolder(dir: string, model: LlamaModel, dtype: "F32" | "BF16" = "F32"): Promise<void> {
  const tensors: TensorToWrite[] = nonLinearWeights(model).map((w) => ({
    name: w.name,
    dtype,
    shape: w.shape,
    data: w.data,
  }));
  for (const name of linearNames(model.config)) {
    const w = linearWeight(model, name);
    tensors.push({ name: `${name}.weight`, dtype, shape: w.shape, data: w.data });
  }
  await Deno.mkdir(dir, { recursive: true });
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(hfConfigObject(model.config)));
}

/**
 * Quantizes every linear layer of `model` with `method` on random calibration inputs (layer by layer, not through
 * the sequential driver: enough for format tests), returning the layers and the model with dequantized weights.
 */
export async function quantizeAll(
  model: LlamaModel,
  method: string,
  options: MethodOptions,
  seed = 5,
): Promise<{ layers: Map<string, QuantizedLayer>; model: LlamaModel }> {
  const rng = createRng(seed);
  const q = layerQuantizer(method, options);
  const layers = new Map<string, QuantizedLayer>();
  for (const name of linearNames(model.config)) {
    const w = linearWeight(model, name);
    const cols = w.shape[1];
    const h = method === "rtn"
      ? undefined
      : await hessianOf(matrix(4 * cols, cols, randomNormal(rng, 4 * cols * cols)));
    layers.set(name, await q(name, w, h));
  }
  return { layers, model: withLinearWeights(model, new Map([...layers].map(([n, l]) => [n, l.dequantized]))) };
}

/** A small byte-level BPE tokenizer.json covering the tiny model's 19 ids. */
export async function writeTinyTokenizer(dir: string): Promise<void> {
  const chars = ["a", "b", "c", "d", "e", "Ġ", "!", ".", "x", "y", "z", "ab", "Ġa", "abc"];
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  chars.forEach((c, i) => vocab[c] = i + 3);
  const json = {
    version: "1.0",
    added_tokens: ["<unk>", "<s>", "</s>"].map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [["a", "b"], ["Ġ", "a"], ["ab", "c"]],
    },
  };
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ bos_token: "<s>", eos_token: "</s>" }));
}

/** A fresh temporary folder (removed by the caller). */
export function tempDir(prefix = "ptq-test-"): Promise<string> {
  return Deno.makeTempDir({ prefix });
}
