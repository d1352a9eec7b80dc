import assert from "node:assert/strict";
import { FormatError } from "../core/errors.ts";
import { sharedPath, sharedTest } from "../tests/shared.ts";
import { loadHfConfig, parseHfConfig, supportedModelTypes } from "./config.ts";

const BASE = {
  model_type: "llama",
  hidden_size: 64,
  intermediate_size: 172,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  vocab_size: 100,
};

function rejects(json: unknown, pattern: RegExp): void {
  assert.throws(() => parseHfConfig(json, "cfg.json"), (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.equal(e.path, "cfg.json");
    assert.match(e.message, pattern);
    return true;
  });
}

sharedTest("llama-12m config.json (rope_parameters spelling)", ["models/llama-12m/config.json"], async () => {
  const c = await loadHfConfig(sharedPath("models/llama-12m"));
  assert.deepEqual(c, {
    architecture: "llama",
    hiddenSize: 384,
    intermediateSize: 1024,
    numLayers: 6,
    numHeads: 6,
    numKvHeads: 2,
    headDim: 64,
    vocabSize: 4096,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: false,
    maxPositionEmbeddings: 1024,
    ropePairing: "half",
    bosTokenId: 1,
    eosTokenId: 2,
  });
});

Deno.test("defaults follow transformers' LlamaConfig", () => {
  const c = parseHfConfig(BASE, "cfg.json");
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.headDim, 8);
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.maxPositionEmbeddings, 2048);
  assert.equal(c.bosTokenId, undefined);
  assert.equal(c.eosTokenId, undefined);
});

Deno.test("older spellings: top-level rope_theta, rope_scaling null, eos list, architectures without model_type", () => {
  const { model_type: _, ...noType } = BASE;
  const c = parseHfConfig({
    ...noType,
    architectures: ["LlamaForCausalLM"],
    rope_theta: 500000,
    rope_scaling: null,
    num_key_value_heads: 2,
    head_dim: 16, // explicit head_dim need not be hidden / heads
    tie_word_embeddings: true,
    eos_token_id: [128001, 128009],
    bos_token_id: null,
  }, "cfg.json");
  assert.equal(c.ropeTheta, 500000);
  assert.equal(c.numKvHeads, 2);
  assert.equal(c.headDim, 16);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.eosTokenId, 128001);
  assert.equal(c.bosTokenId, undefined);
  assert.equal(
    parseHfConfig({ ...BASE, rope_parameters: { rope_type: "default", rope_theta: 1e6 } }, "c").ropeTheta,
    1e6,
  );
  assert.equal(parseHfConfig({ ...BASE, rope_theta: 7, rope_parameters: { rope_theta: 7 } }, "c").ropeTheta, 7);
});

Deno.test("invalid configs are FormatErrors naming the field", () => {
  rejects([], /config must be a JSON object/);
  rejects(null, /config must be a JSON object/);
  rejects({ ...BASE, hidden_size: undefined }, /"hidden_size" must be a positive integer, got missing/);
  rejects({ ...BASE, hidden_size: "64" }, /"hidden_size" must be a positive integer, got "64"/);
  rejects({ ...BASE, num_hidden_layers: 0 }, /"num_hidden_layers" must be a positive integer/);
  rejects({ ...BASE, vocab_size: 10.5 }, /"vocab_size"/);
  rejects({ ...BASE, num_key_value_heads: 3 }, /8 attention heads are not divisible by 3 key\/value heads/);
  rejects({ ...BASE, num_attention_heads: 5 }, /hidden_size 64 is not divisible by 5 attention heads/);
  rejects({ ...BASE, head_dim: 7 }, /head dimension 7 must be even/);
  rejects({ ...BASE, rms_norm_eps: -1 }, /"rms_norm_eps" must be a positive number/);
  rejects({ ...BASE, rope_theta: "big" }, /rope_theta must be a positive number/);
  rejects({ ...BASE, tie_word_embeddings: "yes" }, /"tie_word_embeddings" must be true or false/);
  rejects({ ...BASE, bos_token_id: -1 }, /"bos_token_id" must be a token id/);
  rejects({ ...BASE, rope_theta: 10000, rope_parameters: { rope_theta: 500000 } }, /disagrees/);
  rejects({ ...BASE, rope_parameters: "x" }, /"rope_parameters" must be an object/);
});

Deno.test("unsupported features are refused rather than run wrong", () => {
  rejects({ ...BASE, rope_scaling: { type: "linear", factor: 2 } }, /rope_scaling type "linear" is not supported/);
  rejects({ ...BASE, rope_scaling: { rope_type: "llama3", factor: 8 } }, /rope_scaling type "llama3"/);
  rejects({ ...BASE, rope_parameters: { rope_type: "yarn", rope_theta: 1e4 } }, /rope_parameters type "yarn"/);
  rejects({ ...BASE, attention_bias: true }, /"attention_bias": true is not supported/);
  rejects({ ...BASE, mlp_bias: true }, /"mlp_bias": true/);
  rejects({ ...BASE, hidden_act: "gelu" }, /hidden_act "gelu" is not supported/);
});

Deno.test("an unsupported architecture lists the supported ones", () => {
  assert.deepEqual(supportedModelTypes(), ["llama"]);
  rejects({ ...BASE, model_type: "gpt2" }, /unsupported architecture "gpt2"; supported model_type values: llama/);
  rejects({ hidden_size: 4 }, /unsupported architecture \(no model_type\)/);
});

Deno.test("loadHfConfig: missing folder or bad JSON", async () => {
  await assert.rejects(
    loadHfConfig("/nonexistent/model"),
    (e) => e instanceof FormatError && /not found/.test(e.message),
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{oops");
    await assert.rejects(loadHfConfig(dir), (e) => e instanceof FormatError && /not valid JSON/.test(e.message));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
