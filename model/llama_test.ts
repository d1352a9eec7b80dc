import assert from "node:assert/strict";
import { tsBackend } from "../backends/ts/mod.ts";
import { createWasmBackend } from "../backends/wasm/mod.ts";
import { FormatError, OptionError, ShapeError } from "../core/errors.ts";
import { crossEntropy } from "../core/nn/cross_entropy.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { type Matrix, matrix } from "../core/tensor.ts";
import { assertClose, maxRelativeError } from "../tests/assert_close.ts";
import { randomTokens, tinyConfig, tinyModel, tinyWeights } from "../tests/tiny_llama.ts";
import {
  decoderLayerForward,
  decoderLayerInputs,
  embedTokens,
  forward,
  LINEAR_KINDS,
  linearNames,
  linearWeight,
  llamaFromWeights,
  lossAndGradients,
  nextTokenTargets,
  parseLinearName,
  withLinearWeights,
} from "./llama.ts";
import { perplexity } from "./perplexity.ts";

const backend = tsBackend;

Deno.test("llamaFromWeights: checks names and shapes, ties the classifier", () => {
  const config = tinyConfig({ tied: true });
  const w = tinyWeights(config);
  const model = llamaFromWeights(config, (n) => w.get(n));
  assert.equal(model.weights.lmHead, model.weights.embed);
  assert.throws(() => llamaFromWeights(config, (n) => (n === "model.norm.weight" ? undefined : w.get(n))), FormatError);
  const bad = new Map(w).set("model.layers.1.mlp.up_proj.weight", matrix(3, 16));
  assert.throws(() => llamaFromWeights(config, (n) => bad.get(n)), FormatError);
  assert.equal(linearNames(config).length, 14);
  assert.deepEqual(parseLinearName("model.layers.1.mlp.down_proj"), { layer: 1, kind: "down_proj" });
  assert.equal(parseLinearName("model.layers.1.mlp.act"), undefined);
});

Deno.test("forward: windows of a batch are independent and causal", async () => {
  const model = tinyModel();
  const V = model.config.vocabSize, L = 7;
  const tokens = randomTokens(3 * L, V);
  const { logits } = await forward(model, tokens, { batch: 3, seqLen: L, backend });
  assert.deepEqual(logits.shape, [3 * L, V]);
  // Each window alone gives the same logits; a prefix gives the logits of its positions (causality).
  for (let b = 0; b < 3; b++) {
    const one = await forward(model, tokens.slice(b * L, (b + 1) * L), { batch: 1, seqLen: L, backend });
    assertClose(one.logits.data, logits.data.subarray(b * L * V, (b + 1) * L * V), { atol: 1e-6 });
  }
  const prefix = await forward(model, tokens.slice(0, 3), { batch: 1, seqLen: 3, backend });
  assertClose(prefix.logits.data, logits.data.subarray(0, 3 * V), { atol: 1e-6 });
  await assert.rejects(() => forward(model, tokens, { batch: 2, seqLen: L, backend }), ShapeError);
  await assert.rejects(() => forward(model, new Int32Array([V]), { batch: 1, seqLen: 1, backend }), OptionError);
});

Deno.test("decoderLayerInputs: the full pass's linear inputs up to `last`, and no kernel past them", async () => {
  const model = tinyModel();
  const L = 5, shape = { batch: 2, seqLen: L };
  const x = embedTokens(model, randomTokens(2 * L, model.config.vocabSize));
  const full: [string, Matrix][] = [];
  await decoderLayerForward(backend, model.config, 1, model.weights.layers[1], x, shape, (n, m) => {
    full.push([n, m]);
  });
  assert.deepEqual(full.map(([n]) => n.slice(n.lastIndexOf(".") + 1)), [...LINEAR_KINDS]);
  // Counts the backend's projections (a swigluLinear is two): stopping at the attention input needs none, at
  // down_proj's input all but one.
  let matmuls = 0;
  const counting = {
    ...backend,
    matmul: (...a: Parameters<typeof backend.matmul>) => (matmuls++, backend.matmul(...a)),
    swigluLinear: (...a: Parameters<typeof backend.swigluLinear>) => (matmuls += 2, backend.swigluLinear(...a)),
  };
  const expectedMatmuls = [0, 0, 0, 3, 4, 4, 6];
  for (const [i, last] of LINEAR_KINDS.entries()) {
    const seen: [string, Matrix][] = [];
    matmuls = 0;
    await decoderLayerInputs(counting, model.config, 1, model.weights.layers[1], x, shape, (n, m) => {
      seen.push([n, m]);
    }, last);
    // A group of layers sharing an input is reported whole.
    const upTo = [2, 2, 2, 3, 5, 5, 6][i];
    assert.deepEqual(seen.map(([n]) => n), full.slice(0, upTo + 1).map(([n]) => n));
    for (const [j, [, m]] of seen.entries()) assert.deepEqual(m.data, full[j][1].data);
    assert.equal(matmuls, expectedMatmuls[i], `matmuls stopping after ${last}`);
  }
});

Deno.test("forward: interleaved pairing equals half pairing with q/k rows permuted", async () => {
  // The Hugging Face conversion of llama2.c checkpoints permutes q/k rows so that (2i, 2i+1) becomes (i, i + d/2).
  const half = tinyConfig({ pairing: "half" }), inter = tinyConfig({ pairing: "interleaved" });
  const w = tinyWeights(half);
  const permuted = new Map(w);
  const hd = half.headDim;
  for (let l = 0; l < half.numLayers; l++) {
    for (const kind of ["q_proj", "k_proj"]) {
      const name = `model.layers.${l}.self_attn.${kind}.weight`;
      const m = w.get(name)!, [r, c] = m.shape;
      const out = matrix(r, c);
      for (let head = 0; head < r / hd; head++) {
        for (let i = 0; i < hd / 2; i++) {
          const b = head * hd;
          out.data.set(m.data.subarray((b + i) * c, (b + i + 1) * c), (b + 2 * i) * c);
          out.data.set(m.data.subarray((b + i + hd / 2) * c, (b + i + hd / 2 + 1) * c), (b + 2 * i + 1) * c);
        }
      }
      permuted.set(name, out);
    }
  }
  const tokens = randomTokens(9, half.vocabSize);
  const a = await forward(llamaFromWeights(half, (n) => w.get(n)), tokens, { batch: 1, seqLen: 9, backend });
  const b = await forward(llamaFromWeights(inter, (n) => permuted.get(n)), tokens, { batch: 1, seqLen: 9, backend });
  assertClose(b.logits.data, a.logits.data, { atol: 1e-5, rtol: 1e-5 });
});

Deno.test("lossAndGradients: directional derivatives match central differences", async () => {
  const model = tinyModel({ pairing: "interleaved", tied: true });
  const L = 6, tokens = randomTokens(2 * L, model.config.vocabSize, 3);
  const names = [...linearNames(model.config), "lm_head"];
  const { loss, gradients } = await lossAndGradients(model, tokens, { batch: 2, seqLen: L, backend, gradients: names });
  const { logits } = await forward(model, tokens, { batch: 2, seqLen: L, backend });
  const { losses } = crossEntropy(logits, nextTokenTargets(tokens, L));
  assertClose([loss], [losses.reduce((a, b) => a + b, 0) / 10], { atol: 1e-6 });
  const rng = createRng(4);
  for (const name of names) {
    // float32 forward passes: a large step along a random direction keeps the rounding noise small beside the slope.
    const w = linearWeight(model, name), g = gradients.get(name)!;
    const dir = randomNormal(rng, w.data.length);
    let slope = 0;
    for (let i = 0; i < dir.length; i++) slope += dir[i] * g.data[i];
    const h = 1e-2;
    const at = async (s: number) => {
      const shifted = matrix(w.shape[0], w.shape[1], w.data.map((v, i) => v + s * dir[i]));
      const m = withLinearWeights(model, new Map([[name, shifted]]));
      return (await lossAndGradients(m, tokens, { batch: 2, seqLen: L, backend, gradients: [] })).loss;
    };
    // Richardson extrapolation of two central differences cancels their O(h²) error.
    const d1 = (await at(h) - await at(-h)) / (2 * h), d2 = (await at(h / 2) - await at(-h / 2)) / h;
    const numeric = (4 * d2 - d1) / 3;
    assertClose([slope], [numeric], { atol: 2e-4, rtol: 2e-3 }, `${name} directional derivative`);
  }
});

Deno.test("lossAndGradients: onLinear streams Γ and X whose products are the gradients; chunking changes nothing", async () => {
  const model = tinyModel();
  const L = 5, B = 3, tokens = randomTokens(B * L, model.config.vocabSize, 5);
  const products = new Map<string, Float64Array>();
  const order: string[] = [];
  const full = await lossAndGradients(model, tokens, {
    batch: B,
    seqLen: L,
    backend,
    onLinear: async (name, x, gamma, firstWindow) => {
      assert.equal(firstWindow, 0);
      assert.equal(gamma.shape[0], B * L);
      order.push(name);
      const g = await backend.matmul(gamma, x, { transA: true });
      products.set(name, Float64Array.from(g.data));
    },
  });
  assert.equal(order[0], "model.layers.1.mlp.down_proj");
  assert.equal(order.at(-1), "model.layers.0.self_attn.v_proj");
  assert.equal(order.length, 14);
  for (const [name, g] of full.gradients) assertClose(g.data, products.get(name)!, { atol: 1e-7 }, name);
  const chunked = await lossAndGradients(model, tokens, { batch: B, seqLen: L, backend, maxBatch: 2 });
  assertClose([chunked.loss], [full.loss], { atol: 1e-6 });
  for (const [name, g] of full.gradients) {
    assert.ok(maxRelativeError(chunked.gradients.get(name)!.data, g.data) < 1e-5, name);
  }
});

Deno.test("lossAndGradients: reduction 'sequence' gives each window the gradient of its own mean loss", async () => {
  const model = tinyModel();
  const L = 6, tokens = randomTokens(2 * L, model.config.vocabSize, 6);
  const name = "model.layers.0.self_attn.k_proj";
  const gammas: Matrix[] = [];
  const both = await lossAndGradients(model, tokens, {
    batch: 2,
    seqLen: L,
    backend,
    reduction: "sequence",
    gradients: [],
    onLinear: (n, _x, gamma) =>
      void (n === name && gammas.push(matrix(gamma.shape[0], gamma.shape[1], gamma.data.slice()))),
  });
  for (let b = 0; b < 2; b++) {
    let alone: Matrix | undefined;
    const r = await lossAndGradients(model, tokens.slice(b * L, (b + 1) * L), {
      batch: 1,
      seqLen: L,
      backend,
      gradients: [],
      onLinear: (n, _x, gamma) => void (n === name && (alone = gamma)),
    });
    assertClose([both.windowLosses[b]], [r.loss], { atol: 1e-6 });
    const cols = gammas[0].shape[1];
    assertClose(gammas[0].data.subarray(b * L * cols, (b + 1) * L * cols), alone!.data, { atol: 1e-8, rtol: 1e-5 });
  }
});

Deno.test("lossAndGradients: rejects bad options", async () => {
  const model = tinyModel();
  const tokens = randomTokens(4, model.config.vocabSize);
  const opts = { batch: 1, seqLen: 4, backend };
  await assert.rejects(() => lossAndGradients(model, tokens, { ...opts, gradients: ["model.layers.9.mlp.up_proj"] }));
  await assert.rejects(() => lossAndGradients(model, tokens, { ...opts, targets: new Int32Array(4).fill(-1) }));
  await assert.rejects(() => lossAndGradients(model, tokens, { ...opts, targets: new Int32Array(3) }), ShapeError);
});

Deno.test("perplexity: windows, batches, limits and spread windows as ALGORITHMS.md defines them", async () => {
  const model = tinyModel();
  const L = 8, tokens = randomTokens(4 * L + 5, model.config.vocabSize, 7);
  // By hand: the cross-entropy of positions 1..L−1 of each of the 4 full windows.
  const perWindow: number[] = [];
  for (let w = 0; w < 4; w++) {
    const ids = tokens.slice(w * L, (w + 1) * L);
    const { logits } = await forward(model, ids, { batch: 1, seqLen: L, backend });
    perWindow.push(crossEntropy(logits, nextTokenTargets(ids, L)).losses.reduce((a, b) => a + b, 0));
  }
  const nll = perWindow.reduce((a, b) => a + b, 0);
  const progress: number[] = [];
  const r = await perplexity(model, tokens, {
    seqLen: L,
    batch: 3,
    backend,
    onProgress: (p) => progress.push(p.windows),
  });
  assert.deepEqual([r.windows, r.tokens], [4, 28]);
  assert.deepEqual(progress, [3, 4]);
  assertClose([r.nll, r.ppl], [nll, Math.exp(nll / 28)], { rtol: 1e-6 });
  const first = await perplexity(model, tokens, { seqLen: L, windows: 2, backend });
  assert.equal(first.windows, 2);
  assertClose([first.nll], [perWindow[0] + perWindow[1]], { rtol: 1e-6 });
  // Spread: windows ⌊i·4/2⌋ = 0 and 2.
  const spread = await perplexity(model, tokens, { seqLen: L, windows: 2, spread: true, batch: 2, backend });
  assert.equal(spread.windows, 2);
  assertClose([spread.nll], [perWindow[0] + perWindow[2]], { rtol: 1e-6 });
  await assert.rejects(() => perplexity(model, tokens.slice(0, 5), { seqLen: L, backend }), OptionError);
  await assert.rejects(() => perplexity(model, tokens, { seqLen: 1, backend }), OptionError);
});

Deno.test("lossAndGradients: starting at layer l from its input stream gives the same gradients there and after", async () => {
  const model = tinyModel({ layers: 3 });
  const seqLen = 5, batch = 3;
  const tokens = randomTokens(seqLen * batch, model.config.vocabSize, 9);
  const names = linearNames(model.config).filter((n) => !n.startsWith("model.layers.0."));
  const full = await lossAndGradients(model, tokens, { batch, seqLen, gradients: names });
  const streams = new Map<number, Matrix>();
  await forward(model, tokens, { batch, seqLen, hiddenAfterLayers: [0] }).then((r) => streams.set(1, r.hidden.get(0)!));
  const part = await lossAndGradients(model, tokens, {
    batch,
    seqLen,
    gradients: names,
    maxBatch: 2,
    start: { layer: 1, hidden: streams.get(1)! },
  });
  assert.ok(Math.abs(part.loss - full.loss) < 1e-6);
  for (const n of names) {
    assertClose(part.gradients.get(n)!.data, full.gradients.get(n)!.data, { atol: 1e-7, rtol: 1e-5 }, n);
  }
  await assert.rejects(
    lossAndGradients(model, tokens, { batch, seqLen, start: { layer: 1, hidden: streams.get(1)! } }),
    OptionError,
  );
});

Deno.test({
  name: "decoderLayerForward: with a hook (the kernels one by one) and without (Backend.decoderLayer) the same bits",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const wasm = await createWasmBackend({ threads: 2, parallelThreshold: 0 });
    try {
      for (const pairing of ["half", "interleaved"] as const) {
        const m = tinyModel({ pairing });
        const ids = randomTokens(3 * 11, m.config.vocabSize);
        const x = embedTokens(m, ids), shape = { batch: 3, seqLen: 11 };
        for (const backend of [tsBackend, wasm]) {
          const fused = await decoderLayerForward(backend, m.config, 1, m.weights.layers[1], x, shape);
          const hooked = await decoderLayerForward(backend, m.config, 1, m.weights.layers[1], x, shape, () => {});
          assert.deepEqual(fused.data, hooked.data, `${backend.name} ${pairing}`);
        }
      }
    } finally {
      wasm.dispose();
    }
  },
});
