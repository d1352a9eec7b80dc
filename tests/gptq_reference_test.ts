/**
 * Reference agreement: ptq's GPTQ reproduces the reference PyTorch GPTQ on layer 0's q_proj of llama-12m for the three
 * settings in ../shared/fixtures/llama-12m.safetensors (≥ 99.5% of entries on the same level, loss within 0.5%).
 */

import { ok } from "node:assert/strict";
import { gptq, type GptqOptions } from "../algorithms/gptq.ts";
import { layerLoss } from "../algorithms/layer_loss.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { matrix } from "../core/tensor.ts";
import { openSafetensors } from "../model/safetensors.ts";
import { sharedPath, sharedTest } from "./shared.ts";

const FIXTURE = "fixtures/llama-12m.safetensors";
const LAYER = "model.layers.0.self_attn.q_proj";

const SETTINGS: [string, GptqOptions][] = [
  ["w3_perrow", { bits: 3 }],
  ["w4_g128_act", { bits: 4, groupSize: 128, actOrder: true }],
  ["w2_g64", { bits: 2, groupSize: 64 }],
];

sharedTest("gptq matches the reference implementation on llama-12m layer 0 q_proj", [FIXTURE], async (t) => {
  using file = await openSafetensors(sharedPath(FIXTURE));
  const read = async (name: string) => {
    const { data, shape } = await file.readF32(name);
    return matrix(shape[0], shape[1], data);
  };
  const w = await read(`weight.${LAYER}`);
  const h = await read(`hessian.${LAYER}`);
  for (const [name, options] of SETTINGS) {
    await t.step(name, async () => {
      const ref = await read(`gptq.${name}.dequantized`);
      const got = await gptq(w, h, { ...options, backend: tsBackend });
      let same = 0;
      for (let i = 0; i < ref.data.length; i++) if (Math.abs(got.dequantized.data[i] - ref.data[i]) <= 1e-4) same++;
      const agreement = same / ref.data.length;
      const refLoss = await layerLoss(w, ref, h, tsBackend);
      const relLoss = Math.abs(got.stats.layerLoss - refLoss) / refLoss;
      console.log(`${name}: ${(agreement * 100).toFixed(3)}% same level, loss ${got.stats.layerLoss} vs ${refLoss}`);
      ok(agreement >= 0.995, `${name}: only ${(agreement * 100).toFixed(3)}% of entries on the reference level`);
      ok(relLoss <= 0.005, `${name}: layer loss ${got.stats.layerLoss} vs reference ${refLoss}`);
    });
  }
});
