import assert from "node:assert/strict";
import { OptionError } from "../core/errors.ts";
import type { Backend } from "../core/backend.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { createWasmBackend } from "../backends/wasm/mod.ts";
import { loadModel } from "./load.ts";
import type { LlamaModel } from "./llama.ts";
import { perplexity } from "./perplexity.ts";
import { evaluatePerplexity, perplexityOnWorkers, shareModel } from "./perplexity_pool.ts";

const DIR = new URL("../examples/data/", import.meta.url);
const { model, tokenizer } = await loadModel(new URL("stories260K/stories260K.bin", DIR).pathname);
const tokens = tokenizer.encode(await Deno.readTextFile(new URL("tinystories/tinystories-valid.txt", DIR)));
const seqLen = 64;

// Worker threads and their ports outlive a test's bookkeeping until terminated; the pool terminates its own.
const poolTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

poolTest("perplexityOnWorkers (wasm) equals perplexity on a two-thread WASM backend to the last bit", async () => {
  const wasm = await createWasmBackend({ threads: 2, parallelThreshold: 0 });
  try {
    // 7 windows in batches of 2: four batches, the last one short, over two workers.
    const opts = { seqLen, batch: 2, windows: 7 };
    const reference = await perplexity(model, tokens, { ...opts, backend: wasm });
    const progress: number[] = [];
    const pooled = await perplexityOnWorkers(model, tokens, {
      ...opts,
      workers: 2,
      onProgress: (p) => progress.push(p.windows),
    });
    assert.equal(pooled.nll, reference.nll);
    assert.equal(pooled.ppl, reference.ppl);
    assert.equal(pooled.windows, 7);
    assert.equal(pooled.tokens, 7 * (seqLen - 1));
    assert.deepEqual(progress.toSorted((a, b) => a - b), progress, "progress only grows");
    assert.equal(progress.at(-1), 7);
  } finally {
    wasm.dispose();
  }
});

poolTest("perplexityOnWorkers (ts) equals perplexity on the TS backend, spread windows too", async () => {
  const opts = { seqLen, batch: 3, windows: 5, spread: true };
  const reference = await perplexity(model, tokens, { ...opts, backend: tsBackend });
  const pooled = await perplexityOnWorkers(model, tokens, { ...opts, workers: 3, backend: "ts" });
  assert.equal(pooled.nll, reference.nll);
  // Spread windows are not the first ones: the first five give another NLL.
  const first = await perplexity(model, tokens, { seqLen, batch: 3, windows: 5, backend: tsBackend });
  assert.notEqual(pooled.nll, first.nll);
});

poolTest("perplexityOnWorkers refuses bad options before starting workers", async () => {
  await assert.rejects(perplexityOnWorkers(model, tokens, { workers: 0 }), OptionError);
  await assert.rejects(perplexityOnWorkers(model, tokens, { workers: 1.5 }), OptionError);
  await assert.rejects(
    perplexityOnWorkers(model, tokens, { backend: "webgpu" as "wasm" }),
    /pool backend must be wasm or ts/,
  );
  await assert.rejects(perplexityOnWorkers(model, tokens.subarray(0, 10), { seqLen }), /fewer than one window/);
  await assert.rejects(perplexityOnWorkers(model, tokens, { seqLen, batch: 0 }), OptionError);
});

poolTest("perplexityOnWorkers stops at an abort and rethrows its reason", async () => {
  const controller = new AbortController();
  const reason = new Error("stop here");
  const run = perplexityOnWorkers(model, tokens, {
    seqLen,
    batch: 1,
    windows: 40,
    workers: 2,
    signal: controller.signal,
    onProgress: (p) => {
      if (p.windows === 2) controller.abort(reason);
    },
  });
  await assert.rejects(run, (e) => e === reason);
});

poolTest("perplexityOnWorkers reports a worker's failure", async () => {
  // A model whose layer-0 query weight has the wrong shape fails inside the workers' forward pass.
  const layers = model.weights.layers.map((l, i) =>
    i === 0 ? { ...l, q: { data: l.q.data.subarray(1), shape: [l.q.shape[0], l.q.shape[1] - 1] as const } } : l
  );
  const broken: LlamaModel = { config: model.config, weights: { ...model.weights, layers } };
  await assert.rejects(
    perplexityOnWorkers(broken, tokens, { seqLen, batch: 1, windows: 4, workers: 2, backend: "ts" }),
    /perplexity worker: /,
  );
});

Deno.test("shareModel: the same values in one SharedArrayBuffer, tied arrays kept as one", () => {
  const tied: LlamaModel = { config: model.config, weights: { ...model.weights, lmHead: model.weights.embed } };
  const shared = shareModel(tied);
  const w = shared.weights;
  assert.ok(w.embed.data.buffer instanceof SharedArrayBuffer);
  assert.equal(w.lmHead, w.embed, "tied embeddings stay one matrix");
  const l0 = w.layers[0], m0 = model.weights.layers[0];
  assert.ok(l0.down.data.buffer === w.embed.data.buffer && l0.inputNorm.buffer === w.embed.data.buffer);
  assert.deepEqual(l0.down.shape, m0.down.shape);
  assert.deepEqual(l0.down.data, m0.down.data);
  assert.deepEqual(w.finalNorm, model.weights.finalNorm);
  assert.notEqual(l0.down.data, m0.down.data, "a copy, not the original");
  assert.equal(shared.config, model.config);
});

poolTest("perplexityOnWorkers runs the WASM build it is given: plain SIMD equals a plain-SIMD backend", async () => {
  const plain = await createWasmBackend({ threads: 2, parallelThreshold: 0, relaxed: false });
  try {
    for (const windows of [1, 5]) { // one batch: in this thread; five: on the pool
      const opts = { seqLen, batch: 1, windows };
      const reference = await perplexity(model, tokens, { ...opts, backend: plain });
      const pooled = await perplexityOnWorkers(model, tokens, { ...opts, workers: 2, relaxed: false });
      assert.equal(pooled.nll, reference.nll, `${windows} windows`);
      // evaluatePerplexity passes the backend's build on.
      assert.equal(
        (await evaluatePerplexity(model, tokens, { ...opts, workers: 2, backend: plain })).nll,
        reference.nll,
      );
    }
  } finally {
    plain.dispose();
  }
});

poolTest("evaluatePerplexity uses the pool only when every worker gets two batches", async () => {
  let calls = 0;
  const counted: Backend = {
    ...tsBackend,
    linearCrossEntropy: (...args) => (calls++, tsBackend.linearCrossEntropy(...args)),
  };
  const opts = { seqLen, batch: 1, backend: counted, workers: 2 };
  const short = await evaluatePerplexity(model, tokens, { ...opts, windows: 3 });
  assert.equal(calls, 3, "three batches for two workers: in this thread, on the given backend");
  const long = await evaluatePerplexity(model, tokens, { ...opts, windows: 4 });
  assert.equal(calls, 3, "four batches: on the pool");
  const reference = await perplexity(model, tokens, { seqLen, windows: 4, backend: tsBackend });
  assert.equal(long.nll, reference.nll);
  assert.ok(short.nll < long.nll);
  await assert.rejects(evaluatePerplexity(model, tokens, { ...opts, workers: 0 }), OptionError);
});

Deno.test("evaluatePerplexity evaluates a backend other than wasm or ts in this thread", async () => {
  let calls = 0;
  const other: Backend = {
    ...tsBackend,
    name: "other",
    linearCrossEntropy: (...args) => (calls++, tsBackend.linearCrossEntropy(...args)),
  };
  const r = await evaluatePerplexity(model, tokens, { seqLen, batch: 2, windows: 4, backend: other, workers: 2 });
  assert.equal(calls, 2);
  const reference = await perplexity(model, tokens, { seqLen, batch: 2, windows: 4, backend: tsBackend });
  assert.equal(r.nll, reference.nll);
});
