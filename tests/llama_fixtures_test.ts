/**
 * The Llama forward and backward passes against PyTorch: llama-12m's fixture (loss, logits, hidden states, weight
 * gradients, GPTQ Hessians on the first 128 tokens of heldout.txt), stories260K's greedy story, and `ptq eval` end to
 * end on one window whose perplexity is `exp(fixture loss)`. Full-file perplexities are measured by
 * `bench/perplexity.ts` (too slow for the test suite on the TS backend).
 *
 * @module
 */

import assert from "node:assert/strict";
import { tsBackend } from "../backends/ts/mod.ts";
import { gramAccumulate } from "../core/linalg/gram.ts";
import { type Matrix, matrix64 } from "../core/tensor.ts";
import { evalCommand } from "../cli/eval.ts";
import { loadHfModel } from "../model/hf_loader.ts";
import { forward, llamaFromWeights, lossAndGradients } from "../model/llama.ts";
import { loadLlama2cModel } from "../model/llama2c.ts";
import { openSafetensors } from "../model/safetensors.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { maxRelativeError } from "./assert_close.ts";
import { sharedPath, sharedTest } from "./shared.ts";

const backend = tsBackend;

const FIXTURE = "fixtures/llama-12m.safetensors";
const LLAMA_12M = "models/llama-12m/config.json";
/** max |Δ| / max |ref| allowed against PyTorch float32. */
const TOLERANCE = 1e-4;

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const err = maxRelativeError(got, want);
  assert.ok(err <= TOLERANCE, `${what}: relative error ${err.toExponential(2)} > ${TOLERANCE}`);
}

sharedTest("llama-12m matches the PyTorch fixture (logits, hidden states, loss, gradients, Hessians)", [
  FIXTURE,
  LLAMA_12M,
], async () => {
  const { config, weights } = await loadHfModel(sharedPath("models/llama-12m"));
  const model = llamaFromWeights(config, (n) => weights.get(n));
  using fx = await openSafetensors(sharedPath(FIXTURE));
  const ref = async (name: string) => (await fx.readF32(name)).data;
  const tokens = Int32Array.from((await fx.readArray("input_ids")).data as ArrayLike<number>);
  const T = tokens.length, V = config.vocabSize, d = config.hiddenSize;
  assert.equal(T, 128);

  // Forward: logits at three positions, the residual stream after layer 0, the final normed hidden state.
  const hessianLayers = ["model.layers.0.self_attn.q_proj", "model.layers.5.mlp.down_proj"];
  const hessians = new Map<string, Matrix<Float64Array>>();
  const out = await forward(model, tokens, {
    batch: 1,
    seqLen: T,
    backend,
    hiddenAfterLayers: [0],
    onLinearInput: (name, x) => {
      if (!hessianLayers.includes(name)) return;
      const h = matrix64(x.shape[1], x.shape[1]);
      gramAccumulate(h, x, 2 / x.shape[0]); // H = 2/N Σ x xᵀ, as the fixture's metadata says
      hessians.set(name, h);
    },
  });
  for (const p of [0, 63, 127]) {
    expectClose(out.logits.data.subarray(p * V, (p + 1) * V), await ref(`logits_pos${p}`), `logits at ${p}`);
  }
  expectClose(out.hidden.get(0)!.data, await ref("hidden_after_layer0"), "hidden state after layer 0");
  expectClose(out.finalHidden.data.subarray(127 * d), await ref("final_hidden_post_norm_pos127"), "final hidden");
  for (const name of hessianLayers) expectClose(hessians.get(name)!.data, await ref(`hessian.${name}`), name);

  // Backward: the mean loss over 127 positions and three weight gradients.
  const gradNames = [
    "model.layers.0.self_attn.q_proj",
    "model.layers.2.self_attn.k_proj",
    "model.layers.5.mlp.down_proj",
  ];
  const r = await lossAndGradients(model, tokens, { batch: 1, seqLen: T, backend, gradients: gradNames });
  expectClose([r.loss], await ref("loss"), "loss");
  assert.equal(r.tokens, 127);
  for (const name of gradNames) expectClose(r.gradients.get(name)!.data, await ref(`grad.${name}`), `grad ${name}`);
});

sharedTest("stories260K: greedy decoding from BOS tells the story of Lily", [
  "models/stories260K/stories260K.bin",
  "models/stories260K/tok512.bin",
], async () => {
  const loaded = await loadLlama2cModel(sharedPath("models/stories260K/stories260K.bin"));
  const model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n));
  const tokenizer = await loadTokenizer(sharedPath("models/stories260K/tok512.bin"));
  const expected = "Once upon a time, there was a little girl named Lily.";
  const ids = [1];
  // No KV cache: each step reruns the prefix, which costs nothing at this size.
  while (tokenizer.decode(ids).length < expected.length && ids.length < 40) {
    const { logits } = await forward(model, Int32Array.from(ids), { batch: 1, seqLen: ids.length, backend });
    const V = model.config.vocabSize, last = logits.data.subarray((ids.length - 1) * V, ids.length * V);
    let best = 0;
    for (let j = 1; j < V; j++) if (last[j] > last[best]) best = j;
    ids.push(best);
  }
  assert.ok(tokenizer.decode(ids).startsWith(expected), `got ${JSON.stringify(tokenizer.decode(ids))}`);
});

sharedTest("ptq eval: one window of 128 heldout tokens has perplexity exp(fixture loss)", [
  FIXTURE,
  LLAMA_12M,
  "data/heldout.txt",
], async () => {
  // The fixture's loss is the mean cross-entropy of positions 1..127 of the first 128 tokens of heldout.txt: exactly
  // the first perplexity window of length 128, through the tokenizer, the loader and the CLI.
  using fx = await openSafetensors(sharedPath(FIXTURE));
  const loss = (await fx.readF32("loss")).data[0];
  // A prefix of the file tokenizes to the same first 128 tokens and saves tokenizing 0.7 MB.
  const data = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(data, (await Deno.readTextFile(sharedPath("data/heldout.txt"))).slice(0, 8000));
  const lines: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => void lines.push(args.join(" "));
  let status: number;
  try {
    status = await evalCommand([
      ...["--model", sharedPath("models/llama-12m"), "--data", data],
      ...["--seqlen", "128", "--windows", "1", "--backend", "ts", "--json"],
    ]);
  } finally {
    console.log = log;
    await Deno.remove(data);
  }
  assert.equal(status, 0);
  const result = JSON.parse(lines.at(-1)!);
  assert.deepEqual([result.windows, result.tokens], [1, 127]);
  expectClose([result.ppl], [Math.exp(loss)], "perplexity");
});

sharedTest("ptq eval: clear errors for wrong paths and options", ["models/llama-12m/config.json"], async () => {
  const errors: string[] = [];
  const error = console.error;
  console.error = (...args: unknown[]) => void errors.push(args.join(" "));
  try {
    const model = sharedPath("models/llama-12m");
    assert.equal(await evalCommand(["--model", "/nonexistent/model", "--data", sharedPath("data/heldout.txt")]), 2);
    assert.match(errors.at(-1)!, /--model \/nonexistent\/model: no such file or folder/);
    assert.equal(await evalCommand(["--model", model, "--data", "/nonexistent.txt"]), 2);
    assert.match(errors.at(-1)!, /--data \/nonexistent.txt: no such file or folder/);
    assert.equal(await evalCommand(["--model", model, "--data", "x", "--seqlen", "1"]), 2);
    assert.equal(await evalCommand(["--model", model, "--data", "x", "--workers", "0"]), 2);
    assert.match(errors.at(-1)!, /--workers must be an integer ≥ 1, got "0"/);
    assert.equal(await evalCommand(["--model", model, "--bogus"]), 2);
    assert.equal(await evalCommand(["--data", "x"]), 2);
    assert.match(errors.at(-1)!, /--model is required/);
  } finally {
    console.error = error;
  }
});
