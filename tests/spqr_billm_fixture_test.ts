/**
 * SpQR and BiLLM on a real layer: llama-12m's layer 0 q_proj with its GPTQ Hessian from
 * ../shared/fixtures/llama-12m.safetensors. Prints the layer loss `tr((W − Ŵ)H(W − Ŵ)ᵀ)` and the average bits of RTN,
 * GPTQ, SpQR (its default w3 setting, and settings near 3 and near 2 bits on average) and BiLLM, and asserts the
 * orderings that must hold.
 *
 * @module
 */

import { ok } from "node:assert/strict";
import { billm } from "../algorithms/billm.ts";
import { gptq } from "../algorithms/gptq.ts";
import { layerLoss } from "../algorithms/layer_loss.ts";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { rtn } from "../algorithms/rtn.ts";
import { spqr } from "../algorithms/spqr.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { matrix } from "../core/tensor.ts";
import { openSafetensors } from "../model/safetensors.ts";
import { sharedPath, sharedTest } from "./shared.ts";

const FIXTURE = "fixtures/llama-12m.safetensors";
const LAYER = "model.layers.0.self_attn.q_proj";
const backend = tsBackend;

sharedTest("spqr and billm on llama-12m layer 0 q_proj: losses and bits against RTN and GPTQ", [FIXTURE], async () => {
  using file = await openSafetensors(sharedPath(FIXTURE));
  const read = async (name: string) => {
    const { data, shape } = await file.readF32(name);
    return matrix(shape[0], shape[1], data);
  };
  const w = await read(`weight.${LAYER}`);
  const h = await read(`hessian.${LAYER}`);
  const [rows, cols] = w.shape;

  const lines: string[] = [];
  const report = (name: string, q: QuantizedLayer, extra = "") => {
    lines.push(
      `${name.padEnd(44)} loss ${q.stats.layerLoss.toFixed(4).padStart(8)}  bits ${
        q.stats.avgBits.toFixed(3)
      }  ${extra}`,
    );
    return q;
  };
  const share = (n: number) => `outliers ${(100 * n / (rows * cols)).toFixed(2)}%`;

  const rtn3 = report("rtn w3 per row", await rtn(w, h, { bits: 3, backend }));
  const rtn2 = report("rtn w2 per row", await rtn(w, h, { bits: 2, backend }));
  const gptq3 = report("gptq w3 per row", await gptq(w, h, { bits: 3, backend }));
  const gptq2 = report("gptq w2 per row", await gptq(w, h, { bits: 2, backend }));
  report("gptq w3 g16", await gptq(w, h, { bits: 3, groupSize: 16, backend }));

  const spqrW3 = await spqr(w, h, { backend });
  report("spqr w3 g16 qq3 τ0.2 (defaults)", spqrW3, share(spqrW3.outliers.rows.length));
  // Near 3 bits on average: 2-bit codes in groups of 16, 3-bit statistics, ~0.7% outliers.
  const near3 = await spqr(w, h, { bits: 2, groupSize: 16, outlierThreshold: 2, actOrder: true, backend });
  report("spqr w2 g16 qq3 τ2 act-order (≈3 bits)", near3, share(near3.outliers.rows.length));
  // Near 2 bits on average: 2-bit codes in groups of 128, ~0.1% outliers.
  const near2 = await spqr(w, h, { bits: 2, groupSize: 128, outlierThreshold: 8, actOrder: true, backend });
  report("spqr w2 g128 qq3 τ8 act-order (≈2 bits)", near2, share(near2.outliers.rows.length));

  // Sign binarization, the RTN of one bit: mean|w|·sign(w) per row.
  const sign = matrix(rows, cols);
  for (let i = 0; i < rows; i++) {
    let m = 0;
    for (let j = 0; j < cols; j++) m += Math.abs(w.data[i * cols + j]) / cols;
    for (let j = 0; j < cols; j++) sign.data[i * cols + j] = w.data[i * cols + j] >= 0 ? m : -m;
  }
  const signLoss = await layerLoss(w, sign, h, backend);
  lines.push(`${"sign binarization per row".padEnd(44)} loss ${signLoss.toFixed(4).padStart(8)}  bits 1 (+16/${cols})`);
  const bi = await billm(w, h, { backend });
  const storage = (q: typeof bi) =>
    `all-in ${q.storage.totalBits.toFixed(3)} bits; salient columns per block ${
      q.blocks.map((b) => b.salientColumns.length).join(",")
    }`;
  report("billm (column feedback)", bi, storage(bi));
  const biRef = await billm(w, h, { feedback: "block", backend });
  report("billm (block feedback, as the reference)", biRef, storage(biRef));
  console.log(lines.join("\n"));

  ok(gptq3.stats.layerLoss < rtn3.stats.layerLoss && gptq2.stats.layerLoss < rtn2.stats.layerLoss);
  ok(spqrW3.stats.layerLoss < gptq3.stats.layerLoss, "SpQR w3 beats GPTQ w3 per row");
  ok(near3.stats.avgBits < 3 && near3.stats.layerLoss < gptq3.stats.layerLoss, "SpQR at < 3 bits beats GPTQ w3");
  ok(near2.stats.avgBits < 2.2 && near2.stats.layerLoss < gptq2.stats.layerLoss, "SpQR at ≈ 2.1 bits beats GPTQ w2");
  ok(bi.stats.layerLoss < signLoss && biRef.stats.layerLoss < signLoss, "BiLLM beats sign binarization");
  ok(bi.storage.paramBits > 1 && bi.storage.paramBits < 1.2, `BiLLM's paper bits ${bi.storage.paramBits}`);
});
