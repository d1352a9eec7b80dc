import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { OptionError } from "../core/errors.ts";
import { nearestCentroids } from "../core/linalg/kmeans.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { eye, type Matrix, matrix, toFloat32 } from "../core/tensor.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { hessianOf } from "./hessian.ts";
import { layerLoss } from "./layer_loss.ts";
import { packIndices, unpackIndices, vptq, vptqDequantize, type VqCodebook } from "./vptq.ts";
import { correlatedInputs } from "../tests/numeric.ts";

const rows = 32, cols = 48;
const w = matrix(rows, cols, randomNormal(createRng(5), rows * cols, 0.1));
const h = await hessianOf(correlatedInputs(400, cols, 6, (j) => 1 + (j % 5)));
const small = { vectorSize: 4, codebookSize: 16 };

/** Nearest-centroid reconstruction of the original vectors with a codebook (no error feedback). */
function plainNearest(book: Matrix, v: number): Matrix {
  const groups = rows / v;
  const points = matrix(cols * groups, v);
  for (let c = 0; c < cols; c++) {
    for (let g = 0; g < groups; g++) {
      for (let t = 0; t < v; t++) points.data[(c * groups + g) * v + t] = w.data[(g * v + t) * cols + c];
    }
  }
  const { assignments } = nearestCentroids(points, book);
  const out = matrix(rows, cols);
  for (let c = 0; c < cols; c++) {
    for (let g = 0; g < groups; g++) {
      const a = assignments[c * groups + g];
      for (let t = 0; t < v; t++) out.data[(g * v + t) * cols + c] = book.data[a * v + t];
    }
  }
  return out;
}

Deno.test("vptq: the seeded k-means gives the same codebook and indices twice, another seed another codebook", async () => {
  const a = await vptq(w, h, { ...small, seed: 3 }), b = await vptq(w, h, { ...small, seed: 3 });
  deepEqual(a.vq.main.centroids.data, b.vq.main.centroids.data);
  deepEqual(a.vq.main.packed, b.vq.main.packed);
  deepEqual(a.dequantized.data, b.dequantized.data);
  const c = await vptq(w, h, { ...small, seed: 4 });
  ok(c.vq.main.centroids.data.some((x, i) => x !== a.vq.main.centroids.data[i]));
  // The kernel itself, with Hessian weights.
  const points = matrix(200, 4, randomNormal(createRng(1), 800));
  const weights = Float32Array.from({ length: 200 }, (_, i) => 1 + (i % 7));
  const k1 = await tsBackend.kmeans(points, { k: 8, weights, seed: 9 });
  const k2 = await tsBackend.kmeans(points, { k: 8, weights, seed: 9 });
  deepEqual(k1.centroids.data, k2.centroids.data);
  deepEqual(k1.assignments, k2.assignments);
});

Deno.test("vptq: packed indices round-trip bit-exactly for every width 1-16", () => {
  const rng = createRng(11);
  for (let bits = 1; bits <= 16; bits++) {
    for (const n of [0, 1, 7, 33, 1000]) {
      const idx = Uint16Array.from({ length: n }, () => rng.int(2 ** bits));
      const packed = packIndices(idx, bits);
      equal(packed.length, bits <= 8 ? Math.ceil(n * bits / 8) : n + Math.ceil(n * (bits - 8) / 8));
      deepEqual(unpackIndices(packed, bits, n), idx, `bits ${bits}, n ${n}`);
    }
  }
  let threw = false;
  try {
    packIndices(new Uint16Array([4]), 2);
  } catch (e) {
    threw = e instanceof OptionError;
  }
  ok(threw, "an index that does not fit is refused");
});

Deno.test("vptq: codebooks and packed indices rebuild the dequantized weights exactly", async () => {
  for (
    const options of [
      { ...small, seed: 1 },
      { vectorSize: 2, codebookSize: 8, residualCodebookSize: 4, outlierFraction: 0.1, outlierCodebookSize: 32 },
      { vectorSize: 8, codebookSize: 300, actOrder: true }, // 9-bit indices: two packed streams
    ]
  ) {
    const q = await vptq(w, h, options);
    const v = options.vectorSize;
    for (const b of [q.vq.main, q.vq.outlier, q.vq.residual].filter((x): x is VqCodebook => x !== undefined)) {
      const n = b.columns.length * rows / v;
      equal(b.packed.length, b.bits <= 8 ? Math.ceil(n * b.bits / 8) : n + Math.ceil(n * (b.bits - 8) / 8));
      const idx = unpackIndices(b.packed, b.bits, n);
      deepEqual(packIndices(idx, b.bits), b.packed, "re-packing gives the same bytes");
      ok(idx.every((i) => i < b.centroids.shape[0]));
      ok(b.centroids.data.every((x) => f16BitsToF32(f32ToF16Bits(x)) === x), "centroids are float16 values");
    }
    deepEqual(vptqDequantize(q.vq, rows, cols).data, q.dequantized.data, JSON.stringify(options));
  }
});

Deno.test("vptq: with H = I it is the nearest-centroid assignment of the k-means codebook", async () => {
  const identity = toFloat32(eye(cols));
  const q = await vptq(w, identity, { ...small, seed: 2 });
  deepEqual(q.dequantized.data, plainNearest(q.vq.main.centroids, 4).data);
  // And with act-order (all diagonals equal: the order stays the natural one).
  const a = await vptq(w, identity, { ...small, seed: 2, actOrder: true });
  deepEqual(a.dequantized.data, q.dequantized.data);
});

Deno.test("vptq: error feedback beats plain nearest-centroid on correlated inputs", async () => {
  for (const options of [small, { ...small, actOrder: true }, { vectorSize: 2, codebookSize: 4 }]) {
    const q = await vptq(w, h, options);
    const plain = await layerLoss(w, plainNearest(q.vq.main.centroids, options.vectorSize), h, tsBackend);
    ok(q.stats.layerLoss <= plain, `${JSON.stringify(options)}: ${q.stats.layerLoss} > ${plain}`);
    ok(q.stats.layerLoss < 0.9 * plain, `${JSON.stringify(options)}: only ${q.stats.layerLoss} vs ${plain}`);
  }
});

Deno.test("vptq: a residual codebook lowers the loss; outliers are the largest-H_jj columns", async () => {
  const base = await vptq(w, h, small);
  const res = await vptq(w, h, { ...small, residualCodebookSize: 16 });
  ok(res.stats.layerLoss < base.stats.layerLoss, `${res.stats.layerLoss} ≥ ${base.stats.layerLoss}`);
  const out = await vptq(w, h, { ...small, outlierFraction: 0.125, outlierCodebookSize: 64 });
  const d = Array.from({ length: cols }, (_, j) => h.data[j * cols + j]);
  const top = d.map((x, j) => [x, j]).sort((a, b) => b[0] - a[0]).slice(0, 6).map(([, j]) => j).sort((a, b) => a - b);
  deepEqual([...out.vq.outlier!.columns], top);
  equal(out.vq.main.columns.length, cols - 6);
  deepEqual([...out.permutation!.slice(0, 6)].sort((a, b) => a - b), top, "outlier columns are processed first");
});

Deno.test("vptq: average bits count indices, float16 codebooks and outlier columns", async () => {
  const q = await vptq(w, h, small);
  const n = rows * cols;
  equal(q.stats.avgBits, (n / 4 * 4 + 16 * 4 * 16) / n);
  const r = await vptq(w, h, { ...small, residualCodebookSize: 4, outlierFraction: 0.125, outlierCodebookSize: 32 });
  const expected = ((cols - 6) * 8 * 4 + 16 * 4 * 16 + 6 * 8 * 5 + 32 * 4 * 16 + 6 * 16 + cols * 8 * 2 + 4 * 4 * 16) /
    n;
  ok(Math.abs(r.stats.avgBits - expected) < 1e-12, `${r.stats.avgBits} vs ${expected}`);
});

Deno.test("vptq: dead inputs give a finite result; bad options are refused", async () => {
  const dead = Float32Array.from(h.data);
  for (const j of [0, 9]) for (let k = 0; k < cols; k++) dead[j * cols + k] = dead[k * cols + j] = 0;
  const q = await vptq(w, matrix(cols, cols, dead), small);
  ok(Number.isFinite(q.stats.layerLoss));
  await rejects(vptq(w, h, { vectorSize: 5 }), OptionError);
  await rejects(vptq(w, h, { codebookSize: 1 }), OptionError);
  await rejects(vptq(w, h, { residualCodebookSize: 1 }), OptionError);
  await rejects(vptq(w, h, { outlierFraction: 1 }), OptionError);
});
