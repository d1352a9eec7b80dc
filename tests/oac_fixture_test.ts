/**
 * OAC on llama-12m against the PyTorch fixture: for a single sequence (the first 128 tokens of heldout.txt), the
 * output-adaptive Hessian of a layer equals `GᵀG` of that layer's loss gradient in the fixture.
 */

import assert from "node:assert/strict";
import { oacHessians } from "../algorithms/oac.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { gramAccumulate } from "../core/linalg/gram.ts";
import { matrix, matrix64 } from "../core/tensor.ts";
import { loadHfModel } from "../model/hf_loader.ts";
import { llamaFromWeights } from "../model/llama.ts";
import { openSafetensors } from "../model/safetensors.ts";
import { maxRelativeError } from "./assert_close.ts";
import { sharedPath, sharedTest } from "./shared.ts";

const FIXTURE = "fixtures/llama-12m.safetensors";
const LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.2.self_attn.k_proj", "model.layers.5.mlp.down_proj"];

sharedTest("OAC: H for one sequence equals GᵀG of the PyTorch loss gradients", [
  FIXTURE,
  "models/llama-12m/config.json",
], async () => {
  const { config, weights } = await loadHfModel(sharedPath("models/llama-12m"));
  const model = llamaFromWeights(config, (n) => weights.get(n));
  using fx = await openSafetensors(sharedPath(FIXTURE));
  const tokens = Int32Array.from((await fx.readArray("input_ids")).data as ArrayLike<number>);
  const hessians = await oacHessians(model, tokens, { seqLen: tokens.length, backend: tsBackend }, LAYERS);
  for (const name of LAYERS) {
    const g = await fx.readF32(`grad.${name}`);
    const want = matrix64(g.shape[1], g.shape[1]);
    gramAccumulate(want, matrix(g.shape[0], g.shape[1], g.data), 1);
    const err = maxRelativeError(hessians.get(name)!.data, want.data);
    console.log(`${name}: max relative error ${err.toExponential(2)}`);
    assert.ok(err <= 1e-4, `${name}: relative error ${err}`);
  }
});
