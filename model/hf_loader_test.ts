import assert from "node:assert/strict";
import { join } from "node:path";
import { FormatError, ShapeError } from "../core/errors.ts";
import { createRng } from "../core/random.ts";
import { sharedPath, sharedTest } from "../tests/shared.ts";
import type { LlamaConfig } from "./config.ts";
import { getWeight, llamaLinearNames, llamaWeightShapes, loadHfModel } from "./hf_loader.ts";
import { openSafetensors, type TensorToWrite, writeSafetensors } from "./safetensors.ts";

sharedTest("llama-12m loads as float32 under Hugging Face names", [
  "models/llama-12m/config.json",
  "fixtures/llama-12m.safetensors",
], async () => {
  const t0 = performance.now();
  const { config, weights } = await loadHfModel(sharedPath("models/llama-12m"));
  const ms = performance.now() - t0;
  assert.equal(config.numKvHeads, 2);
  assert.equal(weights.size, 2 + 9 * 6 + 1);
  const shapes = llamaWeightShapes(config);
  assert.deepEqual([...weights.keys()], [...shapes.keys()]);
  for (const [name, shape] of shapes) assert.deepEqual(weights.get(name)!.shape, shape, name);
  assert.deepEqual(getWeight(weights, "model.layers.0.self_attn.k_proj.weight").shape, [128, 384]);
  assert.deepEqual(getWeight(weights, "model.norm.weight").shape, [1, 384]);
  assert.notEqual(weights.get("lm_head.weight"), weights.get("model.embed_tokens.weight"));
  let params = 0;
  for (const w of weights.values()) params += w.data.length;
  assert.equal(params, 12_587_904);
  // The PyTorch fixture stores layer 0's q_proj as float32 from the same bf16 file: the values must agree exactly.
  using fx = await openSafetensors(sharedPath("fixtures/llama-12m.safetensors"));
  const ref = await fx.readF32("weight.model.layers.0.self_attn.q_proj");
  assert.deepEqual(getWeight(weights, "model.layers.0.self_attn.q_proj.weight").data, ref.data);
  assert.throws(() => getWeight(weights, "model.layers.9.mlp.up_proj.weight"), ShapeError);
  assert.equal(llamaLinearNames(config).length, 42);
  assert.ok(ms < 5000, `loading took ${ms.toFixed(0)} ms`);
});

const TINY: LlamaConfig = {
  architecture: "llama",
  hiddenSize: 8,
  intermediateSize: 12,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 2,
  vocabSize: 10,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  tieWordEmbeddings: false,
  maxPositionEmbeddings: 32,
  ropePairing: "half",
};

const TINY_JSON = {
  model_type: "llama",
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 10,
  max_position_embeddings: 32,
};

/** Writes a tiny Llama checkpoint (bf16 weights) and returns the float32 values expected back. */
async function writeTiny(
  dir: string,
  edit: (tensors: TensorToWrite[]) => TensorToWrite[] = (t) => t,
  config: Record<string, unknown> = TINY_JSON,
): Promise<Map<string, Float32Array>> {
  const rng = createRng(3);
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
  const tensors: TensorToWrite[] = [];
  const values = new Map<string, Float32Array>();
  for (const [name, [r, c]] of llamaWeightShapes(TINY)) {
    // Values exactly representable in bf16, so the float32 read-back is exact.
    const v = Float32Array.from({ length: r * c }, () => Math.round(rng.normal() * 16) / 16);
    values.set(name, v);
    tensors.push({ name, dtype: "BF16", shape: r === 1 ? [c] : [r, c], data: v });
  }
  await writeSafetensors(join(dir, "model.safetensors"), edit(tensors), { format: "pt" });
  return values;
}

async function inTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ptq-hf-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function rejectsFormat(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("a single-file bf16 checkpoint loads exactly; 1-D weights are [1, n]", async () => {
  await inTemp(async (dir) => {
    const values = await writeTiny(dir);
    const { config, weights } = await loadHfModel(dir);
    assert.deepEqual(config, { ...TINY, rmsNormEps: 1e-6, bosTokenId: undefined, eosTokenId: undefined });
    for (const [name, v] of values) assert.deepEqual(weights.get(name)!.data, v, name);
    assert.deepEqual(weights.get("model.layers.1.input_layernorm.weight")!.shape, [1, 8]);
  });
});

Deno.test("tied embeddings: lm_head is the embedding (a stored lm_head is ignored)", async () => {
  await inTemp(async (dir) => {
    await writeTiny(dir, (t) => t, { ...TINY_JSON, tie_word_embeddings: true });
    const { weights } = await loadHfModel(dir);
    assert.equal(weights.get("lm_head.weight"), weights.get("model.embed_tokens.weight"));
  });
  await inTemp(async (dir) => {
    await writeTiny(dir, (t) => t.filter((x) => x.name !== "lm_head.weight"), {
      ...TINY_JSON,
      tie_word_embeddings: true,
    });
    const { weights } = await loadHfModel(dir);
    assert.equal(weights.size, llamaWeightShapes(TINY).size);
  });
});

Deno.test("RoPE inv_freq buffers of old checkpoints are skipped", async () => {
  await inTemp(async (dir) => {
    await writeTiny(dir, (t) => [...t, {
      name: "model.layers.0.self_attn.rotary_emb.inv_freq",
      dtype: "F32",
      shape: [1],
      data: new Float32Array(1),
    }]);
    assert.equal((await loadHfModel(dir)).weights.size, llamaWeightShapes(TINY).size);
  });
});

Deno.test("missing, misshapen, unexpected and non-float weights are FormatErrors", async () => {
  await inTemp(async (dir) => {
    await writeTiny(dir, (t) => t.filter((x) => x.name !== "lm_head.weight"));
    await rejectsFormat(loadHfModel(dir), /missing weight "lm_head.weight" \(config says tie_word_embeddings: false\)/);
  });
  await inTemp(async (dir) => {
    await writeTiny(dir, (t) => t.filter((x) => x.name !== "model.layers.1.mlp.up_proj.weight"));
    await rejectsFormat(loadHfModel(dir), /missing weight "model.layers.1.mlp.up_proj.weight"/);
  });
  await inTemp(async (dir) => {
    await writeTiny(
      dir,
      (t) =>
        t.map((x) =>
          x.name === "model.layers.0.self_attn.k_proj.weight" ? { ...x, shape: [8, 4], data: new Float32Array(32) } : x
        ),
    );
    await rejectsFormat(
      loadHfModel(dir),
      /"model.layers.0.self_attn.k_proj.weight" has shape \[8,4\], the config implies \[4, 8\]/,
    );
  });
  await inTemp(async (dir) => {
    await writeTiny(dir, (t) => t.map((x) => x.name === "model.norm.weight" ? { ...x, shape: [1, 8] } : x));
    await rejectsFormat(loadHfModel(dir), /"model.norm.weight" has shape \[1,8\], the config implies \[8\]/);
  });
  await inTemp(async (dir) => {
    await writeTiny(
      dir,
      (
        t,
      ) => [...t, {
        name: "model.layers.0.self_attn.q_proj.bias",
        dtype: "F32",
        shape: [8],
        data: new Float32Array(8),
      }],
    );
    await rejectsFormat(loadHfModel(dir), /unexpected tensor "model.layers.0.self_attn.q_proj.bias"/);
  });
  await inTemp(async (dir) => {
    await writeTiny(
      dir,
      (t) => t.map((x) => x.name === "model.norm.weight" ? { ...x, dtype: "I16", data: new Int16Array(8) } : x),
    );
    await rejectsFormat(loadHfModel(dir), /"model.norm.weight" has dtype I16; expected a float type/);
  });
  await inTemp(async (dir) => {
    await writeTiny(dir, (t) => t, { ...TINY_JSON, num_hidden_layers: 3 });
    await rejectsFormat(loadHfModel(dir), /missing weight "model.layers.2/);
  });
});

Deno.test("a wrong path or missing files are clear FormatErrors", async () => {
  await rejectsFormat(loadHfModel("/nonexistent/llama"), /config.json: file not found/);
  await inTemp(async (dir) => {
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(TINY_JSON));
    await rejectsFormat(loadHfModel(dir), /has neither model.safetensors.index.json nor model.safetensors/);
  });
});
