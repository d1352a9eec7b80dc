import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { OptionError } from "../core/errors.ts";
import { matmul } from "../core/linalg/matmul.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { randomTokens, tinyModel } from "../tests/tiny_llama.ts";
import { quantizeSequential } from "../model/calibrate.ts";
import { linearWeight } from "../model/llama.ts";
import { quantizeModel } from "../model/quantize_model.ts";
import { hessianOf } from "./hessian.ts";
import { lowRankBitsPerWeight } from "./lorc.ts";
import { withLowRank } from "./low_rank.ts";
import { layerQuantizer } from "./methods.ts";

const rows = 16, cols = 32;
const w = matrix(rows, cols, randomNormal(createRng(1), rows * cols, 0.1));
const h = await hessianOf(matrix(128, cols, randomNormal(createRng(2), 128 * cols)));

Deno.test("withLowRank: dequantized = base + A·B, bits and loss updated, method named", async () => {
  const base = layerQuantizer("gptq", { bits: 2 });
  for (const kind of ["lorc", "qera", "qera-approx"] as const) {
    const q = await withLowRank(base, { kind, rank: 4 })("layer", w, h);
    const b = await base("layer", w, h);
    const ab = matmul(q.lowRank.a, q.lowRank.b);
    assertClose(q.dequantized.data, b.dequantized.data.map((x, i) => x + ab.data[i]), { atol: 1e-7, rtol: 1e-6 });
    equal(q.method, `gptq+${kind}`);
    equal(q.lowRank.rank, 4);
    equal(q.stats.avgBits, b.stats.avgBits + lowRankBitsPerWeight(rows, cols, 4));
    ok(q.stats.layerLoss < b.stats.layerLoss, `${kind}: ${q.stats.layerLoss} ≥ ${b.stats.layerLoss}`);
  }
});

Deno.test("withLowRank: LoRC works after RTN without a Hessian; QERA asks for one", async () => {
  const base = layerQuantizer("rtn", { bits: 3 });
  const q = await withLowRank(base, { kind: "lorc", rank: 2 })("layer", w, undefined);
  equal(q.stats.layerLoss, 0);
  await rejects(withLowRank(base, { kind: "qera", rank: 2 })("layer", w, undefined), OptionError);
  throws(() => withLowRank(base, { kind: "svd" as "lorc", rank: 2 }), OptionError);
  throws(() => withLowRank(base, { kind: "lorc", rank: -1 }), OptionError);
});

Deno.test("withLowRank: the calibration driver propagates through the corrected layers", async () => {
  const model = tinyModel();
  const tokens = randomTokens(2 * 16, model.config.vocabSize);
  const quantize = withLowRank(layerQuantizer("gptq", { bits: 2 }), { kind: "qera", rank: 2 });
  const { model: out, layers } = await quantizeSequential(model, tokens, {
    seqLen: 16,
    quantize: (name, wl, hl) => quantize(name, wl, hl),
  });
  equal(layers.size, 14);
  for (const [name, r] of layers) {
    deepEqual(linearWeight(out, name).data, r.dequantized.data, name); // the corrected weights are the model's
    ok(r.lowRank.a.shape[1] === 2);
  }
});

Deno.test("quantizeModel: lowRank wraps every layer (RTN with QERA goes through the driver); vptq is a method", async () => {
  const model = tinyModel();
  const calibration = randomTokens(2 * 16, model.config.vocabSize);
  const base = await quantizeModel(model, { method: "gptq", options: { bits: 2 }, calibration, seqLen: 16 });
  const corrected = await quantizeModel(model, {
    method: "gptq",
    options: { bits: 2 },
    calibration,
    seqLen: 16,
    lowRank: { kind: "qera", rank: 2 },
  });
  let extra = 0, count = 0;
  for (const [name, r] of corrected.layers) {
    equal(r.method, "gptq+qera", name);
    const [rows, cols] = r.dequantized.shape;
    extra += lowRankBitsPerWeight(rows, cols, 2) * rows * cols;
    count += rows * cols;
  }
  ok(Math.abs(corrected.avgBits - (base.avgBits + extra / count)) < 1e-9);
  const rtnQera = await quantizeModel(model, {
    method: "rtn",
    options: { bits: 3 },
    calibration,
    seqLen: 16,
    lowRank: { kind: "qera-approx", rank: 1 },
  });
  ok([...rtnQera.layers.values()].every((r) => r.method === "rtn+qera-approx" && r.stats.layerLoss > 0));
  await rejects(
    quantizeModel(model, { method: "rtn", options: { bits: 3 }, lowRank: { kind: "qera", rank: 1 } }),
    OptionError,
  );
  const v = await quantizeModel(model, {
    method: "oac",
    engine: "vptq",
    options: { codebookSize: 16 },
    oac: { refresh: "once" },
    calibration,
    seqLen: 16,
  });
  ok([...v.layers.values()].every((r) => r.method === "vptq" && Number.isFinite(r.stats.layerLoss)));
});
