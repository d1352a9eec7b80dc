import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { OptionError } from "../core/errors.ts";
import { rtn } from "../algorithms/rtn.ts";
import { assertClose } from "../tests/assert_close.ts";
import { randomTokens, tinyModel } from "../tests/tiny_llama.ts";
import { forward, type LlamaModel } from "./llama.ts";
import { quantizeModel } from "./quantize_model.ts";
import { foldScales, smoothModel } from "./smooth.ts";

const seqLen = 16;
const calib = randomTokens(4 * seqLen, 19, 5);
const probe = randomTokens(2 * seqLen, 19, 6);

async function logits(m: LlamaModel): Promise<Float32Array> {
  return (await forward(m, probe, { batch: 2, seqLen })).logits.data;
}

/** Every weight array's values, to check that smoothing leaves the original model untouched. */
function snapshot(m: LlamaModel): Float32Array[] {
  return m.weights.layers.flatMap((l) =>
    [l.inputNorm, l.q.data, l.k.data, l.v.data, l.o.data, l.postAttentionNorm, l.gate.data, l.up.data, l.down.data].map(
      (a) => a.slice(),
    )
  );
}

const tolerance = { atol: 2e-5, rtol: 1e-4 };

Deno.test("smoothModel: SmoothQuant's folded model gives the same full-precision logits; the original is unchanged", async () => {
  for (const options of [{}, { pairing: "interleaved" as const, tied: true, layers: 3 }]) {
    const model = tinyModel(options);
    const before = snapshot(model), want = await logits(model);
    const r = await smoothModel(model, calib, { kind: "smoothquant", seqLen, alpha: 0.8 });
    assertClose(await logits(r.model), want, tolerance, "logits");
    deepEqual(snapshot(model), before);
    ok(r.model.weights.layers[0].q !== model.weights.layers[0].q);
    deepEqual(r.layers[0].map((s) => s.site), ["qkv", "gate_up"]);
    ok(r.layers[0][0].scales.some((s) => Math.abs(s - 1) > 0.05), "the scales are not trivial");
  }
});

Deno.test("smoothModel: AWQ (search and fixed α) folds every site exactly, o tied across grouped heads", async () => {
  const model = tinyModel();
  const want = await logits(model);
  const quantize = (_n: string, w: Parameters<typeof rtn>[0], h: Parameters<typeof rtn>[1]) => rtn(w, h, { bits: 2 });
  const searched = await smoothModel(model, calib, { kind: "awq", seqLen, quantize, gridSize: 5, batch: 3 });
  assertClose(await logits(searched.model), want, tolerance, "logits after AWQ's search");
  for (const layer of searched.layers) {
    deepEqual(layer.map((s) => s.site), ["qkv", "o", "gate_up", "down"]);
    for (const s of layer) {
      equal(s.objectives!.length, 5);
      const chosen = s.objectives![s.alphas!.indexOf(s.alpha)];
      ok(chosen <= s.objectives![0], `${s.site}: α = ${s.alpha} gives ${chosen} > ${s.objectives![0]} at α = 0`);
    }
  }
  const fixed = await smoothModel(model, calib, { kind: "awq", seqLen, alpha: 0.7 });
  assertClose(await logits(fixed.model), want, tolerance, "logits after AWQ with α = 0.7");
  const o = fixed.layers[0].find((s) => s.site === "o")!.scales; // 6 query heads of 4 over 2 key/value heads
  for (let h = 0; h < 6; h++) for (let d = 0; d < 4; d++) equal(o[h * 4 + d], o[(h - (h % 3)) * 4 + d]);
});

Deno.test("foldScales: any positive scales are exact; untied o scales and bad scales are refused", async () => {
  const model = tinyModel();
  const want = await logits(model);
  const ramp = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
  const folded = foldScales(
    model,
    new Map([[1, {
      qkv: ramp(16, (i) => 0.5 + i / 8),
      o: ramp(24, (i) => 1 + (i % 4) / 2),
      gate_up: ramp(16, (i) => 2 - i / 16),
      down: ramp(24, (i) => 0.25 + i / 6),
    }]]),
  );
  assertClose(await logits(folded), want, tolerance);
  equal(folded.weights.layers[0], model.weights.layers[0], "layers without scales are shared");
  throws(() => foldScales(model, new Map([[0, { o: ramp(24, (i) => 1 + i) }]])), OptionError);
  throws(() => foldScales(model, new Map([[0, { qkv: ramp(16, (i) => i) }]])), OptionError);
  await smoothModel(model, calib, { kind: "awq", seqLen }).then(
    () => ok(false, "AWQ's search without a quantizer must be refused"),
    (e) => ok(e instanceof OptionError),
  );
});

Deno.test("quantizeModel: smoothing before the method; the original model is unchanged", async () => {
  const model = tinyModel();
  const before = snapshot(model);
  const r = await quantizeModel(model, {
    method: "gptq",
    options: { bits: 3 },
    calibration: calib,
    seqLen,
    smooth: { kind: "awq" },
  });
  equal(r.smoothing!.length, 2);
  ok(r.smoothing!.every((l) => l.length === 4 && l.every((s) => s.objectives!.length === 20)));
  deepEqual(snapshot(model), before);
  const sq = await quantizeModel(model, {
    method: "rtn",
    options: { bits: 4 },
    calibration: calib,
    seqLen,
    smooth: { kind: "smoothquant", alpha: 0.5 },
  });
  ok(sq.smoothing!.every((l) => l.length === 2 && l.every((s) => s.alpha === 0.5)));
  await quantizeModel(model, { method: "rtn", smooth: { kind: "awq" } }).then(
    () => ok(false, "smoothing without calibration must be refused"),
    (e) => ok(e instanceof OptionError),
  );
});
