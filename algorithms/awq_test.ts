import { equal, ok, rejects } from "node:assert/strict";
import { OptionError } from "../core/errors.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { type Matrix, matrix } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { awqScales, awqSearch, scaleColumns } from "./awq.ts";
import { gptq } from "./gptq.ts";
import { hessianOf } from "./hessian.ts";
import { rtn } from "./rtn.ts";

/** Activations with a few outlier channels (10-30× the others), as AWQ's salient channels. */
function outlierInputs(n: number, d: number, seed: number): Matrix {
  const rng = createRng(seed);
  const x = matrix(n, d, randomNormal(rng, n * d));
  for (let t = 0; t < n; t++) for (const [j, f] of [[3, 30], [11, 10], [20, 15]]) x.data[t * d + j] *= f;
  return x;
}

const d = 32;
const x = outlierInputs(256, d, 1);
const h = await hessianOf(x);
const mean = new Float32Array(d);
for (let t = 0; t < 256; t++) for (let j = 0; j < d; j++) mean[j] += Math.abs(x.data[t * d + j]) / 256;
const layers = [
  { name: "a", w: matrix(24, d, randomNormal(createRng(2), 24 * d, 0.1)) },
  { name: "b", w: matrix(8, d, randomNormal(createRng(3), 8 * d, 0.1)) },
];

Deno.test("awqScales: mean|X|^α normalised by sqrt(max·min), α = 0 gives ones", () => {
  const s = awqScales(new Float32Array([9, 1, 4]), 0.5);
  assertClose(s, [3 / Math.sqrt(3), 1 / Math.sqrt(3), 2 / Math.sqrt(3)], { atol: 1e-7, rtol: 1e-6 });
  ok(awqScales(new Float32Array([9, 0, 4]), 0).every((v) => v === 1));
  ok(awqScales(new Float32Array([9, 0, 4]), 1).every((v) => v > 0 && Number.isFinite(v)), "zero means are clamped");
});

Deno.test("awqSearch: never worse than α = 0, better with RTN on outlier channels", async () => {
  for (
    const [what, quantize] of [
      ["rtn 3-bit", (_n: string, w: Matrix, hh: Matrix<Float32Array | Float64Array>) => rtn(w, hh, { bits: 3 })],
      [
        "gptq 2-bit g16",
        (_n: string, w: Matrix, hh: Matrix<Float32Array | Float64Array>) => gptq(w, hh, { bits: 2, groupSize: 16 }),
      ],
    ] as const
  ) {
    const r = await awqSearch(layers, mean, { hessian: h, quantize });
    equal(r.alphas.length, 20);
    equal(r.alphas[0], 0);
    ok(r.alpha >= 0 && r.alpha < 1);
    const chosen = r.objectives[r.alphas.indexOf(r.alpha)];
    ok(chosen <= r.objectives[0], `${what}: ${chosen} > ${r.objectives[0]}`);
    for (const o of r.objectives) ok(chosen <= o, `${what}: the minimum is chosen`);
    if (what === "rtn 3-bit") ok(chosen < 0.8 * r.objectives[0], `${what}: ${chosen} vs ${r.objectives[0]}`);
  }
});

Deno.test("awqSearch: the objective is the output error of the folded layer, from activations", async () => {
  const quantize = (_n: string, w: Matrix, hh: Matrix<Float32Array | Float64Array>) => rtn(w, hh, { bits: 3 });
  const r = await awqSearch(layers, mean, { hessian: h, quantize, gridSize: 4 });
  const i = 2;
  const s = awqScales(mean, r.alphas[i]);
  let direct = 0;
  for (const { w } of layers) {
    const q = (await rtn(scaleColumns(w, s), undefined, { bits: 3 })).dequantized;
    const rows = w.shape[0];
    for (let t = 0; t < 256; t++) {
      for (let o = 0; o < rows; o++) {
        let y = 0;
        for (let j = 0; j < d; j++) y += x.data[t * d + j] * (w.data[o * d + j] - q.data[o * d + j] / s[j]);
        direct += y * y;
      }
    }
  }
  assertClose([r.objectives[i]], [direct * 2 / 256], { atol: 0, rtol: 1e-3 });
});

Deno.test("awqSearch: a fixed α quantizes nothing; ties share a scale; errors", async () => {
  const tie = Int32Array.from({ length: d }, (_, j) => j >> 1);
  const r = await awqSearch(layers, mean, { alpha: 0.5, tie });
  equal(r.objectives.length, 0);
  equal(r.slotScales.length, d / 2);
  for (let j = 0; j < d; j += 2) equal(r.scales[j], r.scales[j + 1]);
  assertClose([r.slotScales[1]], [
    awqScales(Float32Array.from({ length: d / 2 }, (_, t) => (mean[2 * t] + mean[2 * t + 1]) / 2), 0.5)[1],
  ]);
  await rejects(awqSearch(layers, mean, {}), OptionError);
  await rejects(awqSearch(layers, mean, { alpha: 0.5, tie: new Int32Array(3) }), OptionError);
  await rejects(awqSearch(layers, mean, { alpha: 0.5, gridSize: 0 }), OptionError);
});
