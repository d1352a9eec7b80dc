import { deepEqual, equal, notDeepEqual, ok, rejects, throws } from "node:assert/strict";
import { OptionError } from "../core/errors.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { gramAccumulate } from "../core/linalg/gram.ts";
import { matmul } from "../core/linalg/matmul.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { type FloatArray, type Matrix, matrix, matrix64 } from "../core/tensor.ts";
import { quantizeSequential } from "../model/calibrate.ts";
import { forward, linearName, linearNames, lossAndGradients } from "../model/llama.ts";
import { quantizeModel } from "../model/quantize_model.ts";
import { assertClose } from "../tests/assert_close.ts";
import { randomTokens, tinyModel } from "../tests/tiny_llama.ts";
import { gptq } from "./gptq.ts";
import {
  defaultOacRows,
  firstOrderTarget,
  kroneckerFirstOrderTarget,
  normalizeByMeanDiagonal,
  OAC_DEFAULT_DAMPING,
  oacHessians,
  oacHessianSource,
  oacStatistics,
} from "./oac.ts";

const model = tinyModel({ layers: 2 });
const seqLen = 6, windows = 5;
const tokens = randomTokens(seqLen * windows, model.config.vocabSize, 3);
const names = [linearName(0, "q_proj"), linearName(1, "down_proj"), linearName(1, "o_proj")];

/** One pass of the whole calibration batch (per-sequence losses): linear `name`'s inputs and output gradients. */
async function streamLinear(name: string, visit: (x: Matrix, gamma: Matrix) => void): Promise<void> {
  await lossAndGradients(model, tokens, {
    batch: windows,
    seqLen,
    reduction: "sequence",
    gradients: [],
    onLinear: (n, x, gamma) => {
      if (n === name) visit(x, gamma);
    },
  });
}

Deno.test("OAC: H = mean over sequences of G_nᵀG_n, each G_n the gradient of that sequence's own loss", async () => {
  const want = new Map(names.map((n) => [n, undefined as Matrix<Float64Array> | undefined]));
  for (let w = 0; w < windows; w++) {
    const one = tokens.subarray(w * seqLen, (w + 1) * seqLen);
    const { gradients } = await lossAndGradients(model, one, { batch: 1, seqLen, gradients: names });
    for (const n of names) {
      const g = gradients.get(n)!;
      const h = want.get(n) ?? matrix64(g.shape[1], g.shape[1]);
      gramAccumulate(h, g, 1 / windows);
      want.set(n, h);
    }
  }
  for (const batch of [1, 2, 5]) {
    const got = await oacHessians(model, tokens, { seqLen, batch }, names);
    for (const n of names) {
      assertClose(got.get(n)!.data, want.get(n)!.data, { atol: 1e-9, rtol: 1e-4 }, `${n} b${batch}`);
    }
  }
});

Deno.test('OAC statistics: "all" gives every layer\'s mean gradient, and Hessians of the named layers only', async () => {
  const every = linearNames(model.config);
  const want = new Map<string, Float64Array>();
  for (let w = 0; w < windows; w++) {
    const one = tokens.subarray(w * seqLen, (w + 1) * seqLen);
    const { gradients } = await lossAndGradients(model, one, { batch: 1, seqLen, gradients: every });
    for (const n of every) {
      const g = gradients.get(n)!, sum = want.get(n) ?? new Float64Array(g.data.length);
      for (let i = 0; i < sum.length; i++) sum[i] += g.data[i] / windows;
      want.set(n, sum);
    }
  }
  for (const rows of ["coupled", "independent"] as const) {
    const stats = await oacStatistics(model, tokens, { seqLen, batch: 2, rows }, [names[1]], undefined, "all");
    deepEqual([...stats.hessians.keys()], [names[1]]);
    deepEqual([...stats.gradients.keys()].sort(), [...every].sort());
    for (const n of every) assertClose(stats.gradients.get(n)!.data, want.get(n)!, { atol: 1e-7, rtol: 1e-4 }, n);
  }
});

Deno.test("OAC: per-sequence normalisation averages G_nᵀG_n / ‖G_n‖² (unit trace)", async () => {
  const want = new Map<string, Matrix<Float64Array>>();
  for (let w = 0; w < windows; w++) {
    const one = tokens.subarray(w * seqLen, (w + 1) * seqLen);
    const { gradients } = await lossAndGradients(model, one, { batch: 1, seqLen, gradients: names });
    for (const n of names) {
      const g = gradients.get(n)!;
      let norm2 = 0;
      for (const v of g.data) norm2 += v * v;
      const h = want.get(n) ?? matrix64(g.shape[1], g.shape[1]);
      gramAccumulate(h, g, 1 / (windows * norm2));
      want.set(n, h);
    }
  }
  const got = await oacHessians(model, tokens, { seqLen, batch: 2, normalize: "sequence" }, names);
  for (const n of names) {
    const h = got.get(n)!, d = h.shape[0];
    let trace = 0;
    for (let j = 0; j < d; j++) trace += h.data[j * d + j];
    assertClose([trace], [1], { atol: 0, rtol: 1e-4 }, `${n}: trace`);
    assertClose(h.data, want.get(n)!.data, { atol: 1e-9, rtol: 1e-3 }, n);
  }
});

Deno.test("OAC: the token-diagonal form is Σ_t ‖γ_t‖² x_t x_tᵀ / N", async () => {
  const name = linearName(1, "o_proj");
  const d = model.config.numHeads * model.config.headDim; // o_proj reads the attention output
  const want = matrix64(d, d);
  await streamLinear(name, (x, gamma) => {
    for (let t = 0; t < x.shape[0]; t++) {
      const g = gamma.data.subarray(t * gamma.shape[1], (t + 1) * gamma.shape[1]);
      const norm2 = g.reduce((s, v) => s + v * v, 0);
      const row = { data: x.data.slice(t * x.shape[1], (t + 1) * x.shape[1]), shape: [1, x.shape[1]] as const };
      gramAccumulate(want, row, norm2 / windows);
    }
  });
  const got = await oacHessians(model, tokens, { seqLen, form: "token-diagonal" }, [name]);
  assertClose(got.get(name)!.data, want.data, { atol: 1e-9, rtol: 1e-4 });
});

Deno.test("OAC: sampled labels are reproducible for a seed and differ from the data labels", async () => {
  const a = await oacHessians(model, tokens, { seqLen, labels: "sampled", seed: 4 }, names);
  const b = await oacHessians(model, tokens, { seqLen, labels: "sampled", seed: 4 }, names);
  const c = await oacHessians(model, tokens, { seqLen }, names);
  for (const n of names) {
    deepEqual(a.get(n)!.data, b.get(n)!.data);
    notDeepEqual(a.get(n)!.data, c.get(n)!.data);
  }
});

Deno.test("OAC inside GPTQ: per-layer refresh uses the partly quantized model; mixing is scale-free", async () => {
  const seen = new Map<string, Matrix>();
  const quantize = async (name: string, w: Matrix, h: Matrix<Float32Array | Float64Array>) => {
    seen.set(name, { data: Float32Array.from(h.data), shape: h.shape });
    return await gptq(w, h, { bits: 3, damping: 0.1 });
  };
  const perLayer = await quantizeSequential(model, tokens, {
    seqLen,
    quantize,
    hessians: oacHessianSource(tokens, { seqLen, refresh: "per-layer" }),
  });
  // Layer 1's Hessians must be those of the model whose layer 0 is already quantized.
  const partly = await oacHessians(
    {
      config: model.config,
      weights: { ...model.weights, layers: [perLayer.model.weights.layers[0], model.weights.layers[1]] },
    },
    tokens,
    { seqLen },
    [linearName(1, "down_proj")],
  );
  assertClose(seen.get(linearName(1, "down_proj"))!.data, partly.get(linearName(1, "down_proj"))!.data, {
    atol: 1e-9,
    rtol: 1e-4,
  });
  const once = await oacHessians(model, tokens, { seqLen }, [linearName(1, "down_proj")]);
  notDeepEqual(
    seen.get(linearName(1, "down_proj"))!.data,
    Float32Array.from(once.get(linearName(1, "down_proj"))!.data),
  );

  // mix: Ĥ_OAC + α·Ĥ_GPTQ with both normalised to a unit mean diagonal, so the mixed diagonal has mean 1 + α.
  seen.clear();
  await quantizeSequential(model, tokens, {
    seqLen,
    quantize,
    hessians: oacHessianSource(tokens, { seqLen, mix: 0.5 }),
  });
  const h = seen.get(linearName(0, "q_proj"))!;
  const n = h.shape[0];
  let mean = 0;
  for (let i = 0; i < n; i++) mean += h.data[i * n + i] / n;
  ok(Math.abs(mean - 1.5) < 1e-5, `mean diagonal ${mean}`);
  const unit = normalizeByMeanDiagonal({ data: new Float32Array([2, 1, 1, 6]), shape: [2, 2] });
  deepEqual(Array.from(unit.data), [0.5, 0.25, 0.25, 1.5]);
});

Deno.test("OAC: chunks of the whole window are the sequence form; chunks of one token the token-diagonal form", async () => {
  const name = linearName(1, "up_proj");
  const seq = await oacHessians(model, tokens, { seqLen }, [name]);
  const whole = await oacHessians(model, tokens, { seqLen, chunk: seqLen }, [name]);
  deepEqual(whole.get(name)!.data, seq.get(name)!.data);
  const diag = await oacHessians(model, tokens, { seqLen, form: "token-diagonal" }, [name]);
  const ones = await oacHessians(model, tokens, { seqLen, chunk: 1 }, [name]);
  assertClose(ones.get(name)!.data, diag.get(name)!.data, { atol: 1e-9, rtol: 1e-4 });
  // Chunks of 4 in windows of 6: each window gives chunks of 4 and 2 tokens.
  const want = matrix64(model.config.hiddenSize, model.config.hiddenSize);
  await lossAndGradients(model, tokens, {
    batch: windows,
    seqLen,
    reduction: "sequence",
    gradients: [],
    onLinear: async (n, x, gamma) => {
      if (n !== name) return;
      for (let w = 0; w < windows; w++) {
        for (const [a, b] of [[0, 4], [4, 6]]) {
          const r0 = w * seqLen + a, r1 = w * seqLen + b;
          const xs = { data: x.data.slice(r0 * x.shape[1], r1 * x.shape[1]), shape: [r1 - r0, x.shape[1]] as const };
          const gs = {
            data: gamma.data.slice(r0 * gamma.shape[1], r1 * gamma.shape[1]),
            shape: [r1 - r0, gamma.shape[1]] as const,
          };
          gramAccumulate(want, matmul(gs, xs, { transA: true }), 1 / windows);
        }
      }
      await Promise.resolve();
    },
  });
  const four = await oacHessians(model, tokens, { seqLen, chunk: 4 }, [name]);
  assertClose(four.get(name)!.data, want.data, { atol: 1e-9, rtol: 1e-4 });
});

Deno.test("OAC first-order target: (W − W*)·(H + λ·mean diag·I) = β·(out/T)·Ḡ", async () => {
  const rng = createRng(3);
  const rows = 5, cols = 7;
  const x = matrix(20, cols, randomNormal(rng, 20 * cols));
  const h = matrix64(cols, cols);
  gramAccumulate(h, x, 0.1);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  const g = matrix(rows, cols, randomNormal(rng, rows * cols));
  const beta = 0.5, damping = 0.2, tokensPerWindow = 9;
  const target = await firstOrderTarget(w, g, h, { beta, damping, tokensPerWindow, backend: tsBackend });
  let mean = 0;
  for (let i = 0; i < cols; i++) mean += h.data[i * cols + i] / cols;
  const step = beta * rows / tokensPerWindow;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let k = 0; k < cols; k++) {
        const hk = h.data[k * cols + j] + (k === j ? damping * mean : 0);
        s += (w.data[i * cols + k] - target.data[i * cols + k]) * hk;
      }
      ok(Math.abs(s - step * g.data[i * cols + j]) < 1e-4, `row ${i} col ${j}: ${s} vs ${step * g.data[i * cols + j]}`);
    }
  }
});

Deno.test("OAC first-order: the driver quantizes the shifted weights", async () => {
  const seen = new Map<string, Matrix>();
  await quantizeSequential(model, tokens, {
    seqLen,
    quantize: (name, w) => {
      seen.set(name, w);
      return Promise.resolve({ dequantized: w });
    },
    hessians: oacHessianSource(tokens, { seqLen, firstOrder: 1 }),
  });
  const name = linearName(0, "q_proj");
  notDeepEqual(seen.get(name)!.data, model.weights.layers[0].q.data);
});

Deno.test("OAC coupled first-order target: (B + λ_B·I)·(W − W*)·(A + λ_A·I) = β·(2/T)·Ḡ", async () => {
  const rng = createRng(5);
  const rows = 5, cols = 7;
  const a = matrix64(cols, cols), b = matrix64(rows, rows);
  gramAccumulate(a, matrix(20, cols, randomNormal(rng, 20 * cols)), 0.1);
  gramAccumulate(b, matrix(20, rows, randomNormal(rng, 20 * rows)), 0.3);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  const g = matrix(rows, cols, randomNormal(rng, rows * cols));
  const beta = 0.5, damping = 0.2, tokensPerWindow = 9;
  const target = await kroneckerFirstOrderTarget(w, g, a, b, { beta, damping, tokensPerWindow, backend: tsBackend });
  const damped = (h: Matrix<Float64Array>) => {
    const n = h.shape[0], d = Float64Array.from(h.data);
    let mean = 0;
    for (let i = 0; i < n; i++) mean += h.data[i * n + i] / n;
    for (let i = 0; i < n; i++) d[i * n + i] += damping * mean;
    return matrix64(n, n, d);
  };
  const product = (x: Matrix<Float64Array>, y: Matrix<Float64Array>) => {
    const [m, k] = x.shape, n = y.shape[1], out = matrix64(m, n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        for (let l = 0; l < k; l++) out.data[i * n + j] += x.data[i * k + l] * y.data[l * n + j];
      }
    }
    return out;
  };
  const diff = matrix64(rows, cols, Float64Array.from(w.data, (v, i) => v - target.data[i]));
  const lhs = product(product(damped(b), diff), damped(a));
  const want = Float64Array.from(g.data, (v) => beta * 2 / tokensPerWindow * v);
  assertClose(lhs.data, want, { atol: 1e-5, rtol: 1e-4 });
});

Deno.test("OAC coupled first-order: the driver quantizes the shifted weights, coupled through B", async () => {
  const seen = new Map<string, { w: Matrix; b?: Matrix<FloatArray> }>();
  await quantizeSequential(model, tokens, {
    seqLen,
    quantize: (name, w, _h, extras) => {
      seen.set(name, { w, b: extras?.outputHessian });
      return Promise.resolve({ dequantized: w });
    },
    hessians: oacHessianSource(tokens, { seqLen, rows: "coupled", firstOrder: 1 }),
  });
  const q = seen.get(linearName(0, "q_proj"))!;
  notDeepEqual(q.w.data, model.weights.layers[0].q.data);
  ok(q.b !== undefined);
});

Deno.test("OAC first-order along the lost gradient: no step before anything is rounded, a step after", async () => {
  const seen = new Map<string, Matrix>();
  await quantizeSequential(model, tokens, {
    seqLen,
    quantize: async (name, w, h, extras) => {
      seen.set(name, w);
      return await gptq(w, h, { bits: 2, damping: 0.1, outputHessian: extras?.outputHessian });
    },
    hessians: oacHessianSource(tokens, { seqLen, rows: "coupled", firstOrder: 1, firstOrderGradient: "lost" }),
  });
  // Layer 0 sees the full-precision model: its gradient is the baseline itself.
  deepEqual(seen.get(linearName(0, "q_proj"))!.data, model.weights.layers[0].q.data);
  deepEqual(seen.get(linearName(0, "down_proj"))!.data, model.weights.layers[0].down.data);
  // Layer 1 comes after layer 0 was rounded to 2 bits.
  notDeepEqual(seen.get(linearName(1, "q_proj"))!.data, model.weights.layers[1].q.data);
  throws(
    () => oacHessianSource(tokens, { seqLen, firstOrder: 1, firstOrderGradient: "lost", refresh: "once" }),
    /lost/,
  );
  throws(() => oacHessianSource(tokens, { seqLen, firstOrderGradient: "other" as "lost" }), OptionError);
});

Deno.test("OAC first-order target: the trust region caps each row's step", async () => {
  const rng = createRng(4);
  const rows = 4, cols = 6;
  const h = matrix64(cols, cols);
  gramAccumulate(h, matrix(12, cols, randomNormal(rng, 12 * cols)), 1e-4); // a tiny Hessian: a huge Newton step
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  const g = matrix(rows, cols, randomNormal(rng, rows * cols));
  const t = await firstOrderTarget(w, g, h, {
    beta: 1,
    damping: 0.1,
    tokensPerWindow: 5,
    trust: 0.01,
    backend: tsBackend,
  });
  for (let i = 0; i < rows; i++) {
    let d = 0, n = 0;
    for (let j = 0; j < cols; j++) {
      d += (t.data[i * cols + j] - w.data[i * cols + j]) ** 2, n += w.data[i * cols + j] ** 2;
    }
    ok(Math.sqrt(d) <= 0.01 * Math.sqrt(n) * (1 + 1e-6) && Math.sqrt(d) > 0.009 * Math.sqrt(n), `row ${i}`);
  }
});

Deno.test("OAC: token power 0 in the token-diagonal form is GPTQ's XᵀX (up to the factor 2)", async () => {
  const name = linearName(1, "gate_proj");
  const got = await oacHessians(model, tokens, { seqLen, form: "token-diagonal", tokenPower: 0 }, [name]);
  const x = new Map<string, Matrix>();
  await forward(model, tokens, { batch: windows, seqLen, onLinearInput: (n, xi) => void (n === name && x.set(n, xi)) });
  const want = matrix64(model.config.hiddenSize, model.config.hiddenSize);
  gramAccumulate(want, x.get(name)!, 1 / windows);
  assertClose(got.get(name)!.data, want.data, { atol: 1e-7, rtol: 1e-4 });
});

Deno.test("OAC through quantizeModel: damping defaults to OAC_DEFAULT_DAMPING, an explicit damping wins", async () => {
  const run = (damping?: number) =>
    quantizeModel(model, {
      method: "oac",
      options: { bits: 2, damping },
      oac: { refresh: "once" },
      calibration: tokens,
      seqLen,
      backend: tsBackend,
    });
  const weights = async (damping?: number) =>
    [...(await run(damping)).layers.values()].map((r) => Array.from(r.dequantized.data));
  const byDefault = await weights();
  deepEqual(byDefault, await weights(OAC_DEFAULT_DAMPING));
  notDeepEqual(byDefault, await weights(0.0001));
});

Deno.test("OAC: bad option combinations are refused up front", () => {
  throws(() => oacHessianSource(tokens, { seqLen, firstOrder: 1, normalize: "sequence" }), OptionError);
  throws(() => oacHessianSource(tokens, { seqLen, mix: -1 }), OptionError);
});

Deno.test("OAC coupled rows: B = Σ_t γ_t γ_tᵀ / N; GPTQ's input Hessian and B reach the engine", async () => {
  const name = linearName(1, "o_proj"), out = model.config.hiddenSize;
  const want = matrix64(out, out);
  await streamLinear(name, (_x, gamma) => {
    for (let t = 0; t < gamma.shape[0]; t++) {
      const g = { data: gamma.data.slice(t * out, (t + 1) * out), shape: [1, out] as const };
      gramAccumulate(want, g, 1 / windows);
    }
  });
  for (const batch of [1, 2]) {
    const got = await oacHessians(model, tokens, { seqLen, batch, rows: "coupled" }, [name]);
    assertClose(got.get(name)!.data, want.data, { atol: 1e-9, rtol: 1e-4 }, `batch ${batch}`);
  }

  // The driver: the quantizer sees GPTQ's own Hessian and, as the output side, B of the model as it stands.
  const seen = new Map<string, { h: Matrix; b?: Matrix<FloatArray> }>();
  const record = (source?: ReturnType<typeof oacHessianSource>) =>
    quantizeSequential(model, tokens, {
      seqLen,
      hessians: source,
      quantize: async (n, w, h, extras) => {
        seen.set(n, { h: { data: Float32Array.from(h.data), shape: h.shape }, b: extras?.outputHessian });
        return await gptq(w, h, { bits: 2, damping: 0.1, outputHessian: extras?.outputHessian });
      },
    });
  await record();
  const plain = new Map(seen);
  seen.clear();
  await record(oacHessianSource(tokens, { seqLen, rows: "coupled", refresh: "once" }));
  const q = linearName(0, "q_proj");
  deepEqual(seen.get(q)!.h, plain.get(q)!.h); // layer 0 sees the full-precision model either way
  const b0 = await oacHessians(model, tokens, { seqLen, rows: "coupled" }, [q]);
  assertClose(seen.get(q)!.b!.data, b0.get(q)!.data, { atol: 1e-9, rtol: 1e-4 });
  equal(plain.get(q)!.b, undefined);
});

Deno.test("OAC: a model run's rows default to coupled, and to the paper's form where an option builds on H_OAC", () => {
  for (const engine of ["gptq", "spqr", "billm"]) equal(defaultOacRows({}, engine), "coupled");
  equal(defaultOacRows({}, "vptq"), "independent");
  for (
    const extra of [{ mix: 1 }, { normalize: "sequence" }, { role: "salience" }, { chunk: 2 }, {
      form: "token-diagonal",
    }] as const
  ) {
    equal(defaultOacRows(extra, "gptq"), "independent", JSON.stringify(extra));
  }
  equal(defaultOacRows({ labels: "sampled", refresh: "once", mix: 0, firstOrder: 1 }, "gptq"), "coupled");
});

Deno.test("OAC coupled rows: the GPTQ, SpQR and BiLLM engines only, and none of the options built on H_OAC", async () => {
  for (
    const extra of [{ mix: 1 }, { normalize: "sequence" }, { role: "salience" }, { chunk: 2 }] as const
  ) {
    throws(() => oacHessianSource(tokens, { seqLen, rows: "coupled", ...extra }), /rows "coupled"/);
  }
  throws(() => oacHessianSource(tokens, { seqLen, rows: "diagonal" as "coupled" }), /unknown rows/);
  const run = (engine: "gptq" | "vptq") =>
    quantizeModel(model, {
      method: "oac",
      engine,
      options: { bits: 2 },
      oac: { rows: "coupled", refresh: "once" },
      calibration: tokens,
      seqLen,
      backend: tsBackend,
    });
  await rejects(run("vptq"), /coupled rows need an engine that rounds rows coupled \(gptq, spqr, billm\)/);
  const coupled = await run("gptq");
  const plain = await quantizeModel(model, {
    method: "gptq",
    options: { bits: 2, damping: OAC_DEFAULT_DAMPING },
    calibration: tokens,
    seqLen,
    backend: tsBackend,
  });
  const values = (r: typeof plain) => [...r.layers.values()].flatMap((l) => Array.from(l.dequantized.data));
  notDeepEqual(values(coupled), values(plain));
  const byDefault = await quantizeModel(model, {
    method: "oac",
    options: { bits: 2 },
    oac: { refresh: "once" },
    calibration: tokens,
    seqLen,
    backend: tsBackend,
  });
  deepEqual(values(byDefault), values(coupled), "a model run's default rows are the coupled ones");
});
