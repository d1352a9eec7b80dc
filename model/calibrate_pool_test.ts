import assert from "node:assert/strict";
import { gptq } from "../algorithms/gptq.ts";
import { createHessianAccumulator } from "../algorithms/hessian.ts";
import { NonFiniteError, OptionError } from "../core/errors.ts";
import { type FloatArray, type Matrix, matrix, matrix64 } from "../core/tensor.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { createWasmBackend } from "../backends/wasm/mod.ts";
import { randomTokens, tinyModel } from "../tests/tiny_llama.ts";
import { type CalibrationProgress, quantizeSequential } from "./calibrate.ts";
import { startCalibrationPool } from "./calibrate_pool.ts";
import { decoderLayerForward, embedTokens, type LlamaModel, withLinearWeights } from "./llama.ts";

const model = tinyModel({ layers: 2 });
const seqLen = 16, windows = 9;
const tokens = randomTokens(seqLen * windows, model.config.vocabSize);

// Worker threads and their ports outlive a test's bookkeeping until terminated; the pool terminates its own.
const poolTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

/** Every layer's dequantized weights and Hessian of a GPTQ run. */
async function run(m: LlamaModel, options: { workers: number; precision: "f32" | "f64"; batch: number }) {
  const wasm = await createWasmBackend({ threads: 2, parallelThreshold: 0 });
  try {
    const hessians = new Map<string, Float32Array | Float64Array>();
    const progress: CalibrationProgress[] = [];
    const { layers } = await quantizeSequential(m, tokens, {
      seqLen,
      ...options,
      backend: wasm,
      onProgress: (p) => progress.push(p),
      quantize: async (name, w, h) => {
        hessians.set(name, h.data.slice());
        return await gptq(w, h, { bits: 3, groupSize: 16, backend: wasm });
      },
    });
    return { layers, hessians, progress };
  } finally {
    wasm.dispose();
  }
}

poolTest("quantizeSequential on workers equals the in-process driver to the bit (WASM, both precisions)", async () => {
  for (const precision of ["f32", "f64"] as const) {
    // 9 windows in batches of 2: five batches, the last one short, over two workers.
    const local = await run(model, { workers: 1, precision, batch: 2 });
    const pooled = await run(model, { workers: 2, precision, batch: 2 });
    for (const [name, h] of local.hessians) assert.deepEqual(pooled.hessians.get(name), h, `${precision} ${name}`);
    for (const [name, r] of local.layers) {
      assert.deepEqual(pooled.layers.get(name)!.dequantized.data, r.dequantized.data, `${precision} ${name}`);
    }
    // Each pass reports its windows, ending at all of them.
    for (const stage of ["hessian", "propagate"] as const) {
      const ends = pooled.progress.filter((p) => p.stage === stage && p.done === windows);
      assert.equal(ends.length, stage === "hessian" ? 2 : 1, stage);
    }
  }
});

poolTest("quantizeSequential on workers: trueSequential groups and the TS backend, to the bit too", async () => {
  const quantize = async (_n: string, w: typeof model.weights.lmHead, h: Parameters<typeof gptq>[1]) =>
    await gptq(w, h, { bits: 3, backend: tsBackend });
  // The passes' kernels, counted in this thread: none run here when the pool does them.
  let here = 0;
  const counted = {
    ...tsBackend,
    decoderLayer: (...a: Parameters<typeof tsBackend.decoderLayer>) => (here++, tsBackend.decoderLayer(...a)),
    gramAccumulate: (...a: Parameters<typeof tsBackend.gramAccumulate>) => (here++, tsBackend.gramAccumulate(...a)),
  };
  const opts = { seqLen, batch: 2, trueSequential: true, backend: counted, quantize };
  const local = await quantizeSequential(model, tokens, { ...opts, workers: 1 });
  assert.ok(here > 0);
  here = 0;
  const pooled = await quantizeSequential(model, tokens, { ...opts, workers: 2 });
  assert.equal(here, 0, "no pass in this thread");
  for (const [name, r] of local.layers) {
    assert.deepEqual(pooled.layers.get(name)!.dequantized.data, r.dequantized.data, name);
  }
});

poolTest(
  "quantizeSequential on workers: a NaN input fails as in this thread (NonFiniteError); bad workers refused",
  async () => {
    const broken = withLinearWeights(model, new Map([["model.layers.1.self_attn.o_proj", poisoned()]]));
    await assert.rejects(
      run(broken, { workers: 2, precision: "f32", batch: 2 }),
      (e: Error) => e instanceof NonFiniteError && e.message.startsWith("calibration worker: "),
    );
    await assert.rejects(
      quantizeSequential(model, tokens, {
        seqLen,
        workers: 0,
        quantize: (_n, w) => Promise.resolve({ dequantized: w }),
      }),
      OptionError,
    );
  },
);

poolTest("startCalibrationPool: a pool where it applies, whose passes equal the kernels run here", async () => {
  const wasm = await createWasmBackend({ threads: 1 });
  const pool = await startCalibrationPool(model.config, wasm, 2, 5);
  try {
    assert.ok(pool, "two workers, five batches, WASM: a pool");
    assert.equal(await startCalibrationPool(model.config, wasm, 2, 3), undefined, "fewer than two batches per worker");
    assert.equal(await startCalibrationPool(model.config, wasm, 1, 5), undefined, "one worker");
    const x = embedTokens(model, tokens), pass = { windows, seqLen, batch: 2 };
    const stream = pool.share(x), w = model.weights.layers[0];
    const out = await pool.propagate(0, w, stream, pass, () => {});
    const shape = { batch: windows, seqLen };
    assert.deepEqual(out.data, (await decoderLayerForward(wasm, model.config, 0, w, x, shape)).data);
    // The attention input's Gram matrix of batch 1 (windows 2 and 3), as gramAccumulate forms it here.
    const grams: Matrix<FloatArray>[] = [];
    await pool.grams(0, w, stream, pass, ["model.layers.0.self_attn.q_proj"], "q_proj", (g) => grams.push(g[0][1]));
    assert.equal(grams.length, 5);
    const d = model.config.hiddenSize, want = matrix64(d, d);
    const rows = x.data.subarray(2 * seqLen * d, 4 * seqLen * d);
    await wasm.gramAccumulate(
      want,
      await wasm.rmsNorm(matrix(2 * seqLen, d, rows), w.inputNorm, model.config.rmsNormEps),
      1,
    );
    assert.deepEqual(grams[1].data, want.data);
  } finally {
    pool?.close();
    wasm.dispose();
  }
});

poolTest("quantizeSequential on workers stops at an abort and rethrows its reason", async () => {
  const controller = new AbortController();
  const opts = {
    seqLen,
    batch: 1,
    workers: 2,
    backend: tsBackend,
    signal: controller.signal,
    onProgress: (p: CalibrationProgress) => {
      if (p.stage === "hessian" && p.done >= 3) controller.abort(new Error("enough"));
    },
    quantize: (_n: string, w: Matrix) => Promise.resolve({ dequantized: w }),
  };
  await assert.rejects(quantizeSequential(model, tokens, opts), /enough/);
});

poolTest("HessianAccumulator.observeGram adds a Gram matrix as observe adds its rows", async () => {
  const x = matrix(3, 2, new Float32Array([1, 2, 3, 4, 5, 6]));
  const a = createHessianAccumulator(2), b = createHessianAccumulator(2);
  await a.observe(x);
  b.observeGram(matrix(2, 2, new Float32Array([35, 44, 44, 56])), 3);
  assert.deepEqual(b.finish(), a.finish());
  // Random data, both precisions: the WASM kernel's Gram matrix into float64 zeros, added, equals observing the rows.
  const wasm = await createWasmBackend({ threads: 1 });
  try {
    const rows = matrix(37, 23, Float32Array.from({ length: 37 * 23 }, (_, i) => Math.sin(i * 1.7) * 3.1));
    for (const precision of ["f32", "f64"] as const) {
      const direct = createHessianAccumulator(23, { precision, backend: wasm });
      const viaGram = createHessianAccumulator(23, { precision, backend: wasm });
      for (let r = 0; r < 3; r++) {
        await direct.observe(rows);
        const g = matrix64(23, 23);
        await wasm.gramAccumulate(g, rows, 1);
        viaGram.observeGram(g, 37);
      }
      assert.deepEqual(viaGram.finish(), direct.finish(), precision);
    }
  } finally {
    wasm.dispose();
  }
  const c = createHessianAccumulator(2);
  assert.throws(() => c.observeGram(matrix(2, 2, new Float32Array([1, NaN, NaN, 1])), 1), NonFiniteError);
  assert.throws(() => c.observeGram(matrix(1, 1), 1), /width 2/);
});

/** The tiny model's layer-1 o projection with one NaN, so that the MLP's inputs are NaN. */
function poisoned() {
  const w = model.weights.layers[1].o;
  const data = w.data.slice();
  data[0] = NaN;
  return { data, shape: w.shape };
}
