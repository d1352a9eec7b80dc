import assert, { deepEqual, equal, ok } from "node:assert/strict";
import { hessianOf } from "../algorithms/hessian.ts";
import { rtn } from "../algorithms/rtn.ts";
import type { Matrix } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { randomTokens, tinyModel } from "../tests/tiny_llama.ts";
import { calibrationSteps, quantizeSequential } from "./calibrate.ts";
import { forward, linearNames, linearWeight, type LlamaModel, withLinearWeights } from "./llama.ts";

const model = tinyModel({ layers: 3 });
const seqLen = 8, windows = 5;
const tokens = randomTokens(seqLen * windows, model.config.vocabSize);

/** Every linear layer's input over all windows, from one full forward pass of `m`. */
async function linearInputs(m: LlamaModel): Promise<Map<string, Matrix>> {
  const inputs = new Map<string, Matrix>();
  await forward(m, tokens, {
    batch: windows,
    seqLen,
    onLinearInput: (name, x) => void inputs.set(name, { data: x.data.slice(), shape: x.shape }),
  });
  return inputs;
}

Deno.test("quantizeSequential: Hessians are 2/N·XᵀX of each layer's inputs with earlier layers quantized", async () => {
  const seen = new Map<string, Matrix>();
  const result = await quantizeSequential(model, tokens, {
    seqLen,
    batch: 2, // batches split the windows: accumulation across batches must equal one pass
    quantize: async (name, w, h) => {
      seen.set(name, { data: Float32Array.from(h.data), shape: h.shape });
      return await rtn(w, h, { bits: 3 });
    },
  });
  deepEqual([...result.layers.keys()], linearNames(model.config));
  // Layer l's Hessians come from the model whose layers before l are quantized and whose layer l is not yet.
  for (let l = 0; l < model.config.numLayers; l++) {
    const before = new Map(
      [...result.layers].filter(([name]) => Number(name.split(".")[2]) < l).map(([n, r]) => [n, r.dequantized]),
    );
    const inputs = await linearInputs(withLinearWeights(model, before));
    for (const name of linearNames(model.config).filter((n) => n.startsWith(`model.layers.${l}.`))) {
      const want = await hessianOf(inputs.get(name)!);
      assertClose(seen.get(name)!.data, want.data, { atol: 1e-5, rtol: 1e-4 }, name);
    }
  }
});

Deno.test("quantizeSequential: the identity quantizer gives back the model", async () => {
  const { model: same } = await quantizeSequential(model, tokens, {
    seqLen,
    quantize: (_name, w) => Promise.resolve({ dequantized: w }),
  });
  for (const name of linearNames(model.config)) equal(linearWeight(same, name), linearWeight(model, name));
});

Deno.test("quantizeSequential: trueSequential takes o/down inputs after quantizing the groups before them", async () => {
  const order: string[] = [];
  let oHessian: Matrix | undefined;
  const result = await quantizeSequential(model, tokens, {
    seqLen,
    trueSequential: true,
    quantize: async (name, w, h) => {
      order.push(name);
      if (name === "model.layers.0.self_attn.o_proj") oHessian = { data: Float32Array.from(h.data), shape: h.shape };
      return await rtn(w, h, { bits: 2 });
    },
  });
  deepEqual(order, linearNames(model.config));
  const inputs = await linearInputs(result.model);
  const want = await hessianOf(inputs.get("model.layers.0.self_attn.o_proj")!);
  assertClose(oHessian!.data, want.data, { atol: 1e-5, rtol: 1e-4 }, "o_proj Hessian");
  ok(result.layers.size === 7 * 3);
});

Deno.test("quantizeSequential: an aborted signal stops the work with its reason", async () => {
  const controller = new AbortController();
  let calls = 0;
  const reason = new Error("stop");
  const work = quantizeSequential(model, tokens, {
    seqLen,
    signal: controller.signal,
    quantize: (_name, w) => {
      if (++calls === 3) controller.abort(reason);
      return Promise.resolve({ dequantized: w });
    },
  });
  await assert.rejects(work, (e) => e === reason);
  equal(calls, 3);
});

Deno.test("quantizeSequential: progress adds up to calibrationSteps, with no propagation after the last layer", async () => {
  const passes: string[] = [];
  let units = 0, last = 0;
  await quantizeSequential(model, tokens, {
    seqLen,
    batch: 2,
    quantize: (_, w, h) => rtn(w, h, { bits: 4 }),
    onProgress: (p) => {
      // Window stages report running counts that restart every pass; linear layers come one at a time.
      if (p.stage === "quantize") units++;
      else units += p.done - last;
      last = p.stage === "quantize" || p.done === p.total ? 0 : p.done;
      if (p.stage !== "quantize" && p.done === p.total) passes.push(`${p.stage} ${p.layer}`);
    },
  });
  deepEqual(passes, ["hessian 0", "propagate 0", "hessian 1", "propagate 1", "hessian 2"]);
  equal(units, calibrationSteps(model.config.numLayers, windows));
});
