import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { createRng, randomNormal } from "../core/random.ts";
import { eye, matrix, toFloat32 } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import {
  billm,
  BILLM_ROW_STATS,
  BILLM_SPLIT_QUANTILES,
  binarizeBlock,
  binarySign,
  fitBinaryTerm,
  residualBinarize,
  searchSplit,
} from "./billm.ts";
import { hessianOf } from "./hessian.ts";
import { layerLoss } from "./layer_loss.ts";
import { getBackend } from "../backends/registry.ts";
import { correlatedInputs, kroneckerLoss } from "../tests/numeric.ts";

/** Σ (x − (α·sign(x − μ) + μ))². */
function termError(x: ArrayLike<number>, mean: number, alpha: number): number {
  let e = 0;
  for (let i = 0; i < x.length; i++) e += (x[i] - (alpha * binarySign(x[i] - mean) + mean)) ** 2;
  return e;
}

const rows = 24, cols = 160; // two blocks of 128 and 32 columns
const rng = createRng(11);
// Weights with a few heavy columns, as in LLMs, so that some columns are clearly salient.
const w = matrix(rows, cols, randomNormal(rng, rows * cols, 0.1));
for (const j of [3, 50, 140]) for (let i = 0; i < rows; i++) w.data[i * cols + j] *= 6;
const h = await hessianOf(correlatedInputs(600, cols, 12));

Deno.test("billm: the fitted α is the least-squares scale of the signs, by brute force", () => {
  const x = randomNormal(createRng(1), 37, 0.3).map((v) => v + 0.05);
  const { mean, alpha } = fitBinaryTerm(x);
  assertClose([mean], [x.reduce((s, v) => s + v, 0) / x.length], { atol: 1e-9, rtol: 0 });
  assertClose([alpha], [x.reduce((s, v) => s + Math.abs(v - mean), 0) / x.length], { atol: 1e-9, rtol: 0 });
  const best = termError(x, mean, alpha);
  for (let a = 0; a <= 1; a += 0.001) ok(best <= termError(x, mean, a) + 1e-12, `α = ${a} beats ${alpha}`);
  deepEqual(fitBinaryTerm([]), { mean: 0, alpha: 0 });
});

Deno.test("billm: the residual approximation's second term binarizes what the first left", () => {
  const x = randomNormal(createRng(2), 40, 0.2);
  const m1 = x.reduce((s, v) => s + v, 0) / x.length;
  const a1 = x.reduce((s, v) => s + Math.abs(v - m1), 0) / x.length;
  const r = Array.from(x, (v) => v - (a1 * binarySign(v - m1) + m1));
  const m2 = r.reduce((s, v) => s + v, 0) / r.length;
  const a2 = r.reduce((s, v) => s + Math.abs(v - m2), 0) / r.length;
  const { terms, approx } = residualBinarize(x, 2);
  assertClose([terms[1].mean, terms[1].alpha], [m2, a2], { atol: 1e-12, rtol: 0 });
  const expected = Array.from(x, (v, i) => v - r[i] + a2 * binarySign(r[i] - m2) + m2);
  assertClose(approx, expected, { atol: 1e-12, rtol: 0 });
  const err = (a: ArrayLike<number>) => Array.from(x, (v, i) => (v - a[i]) ** 2).reduce((s, e) => s + e, 0);
  ok(err(approx) < err(residualBinarize(x, 1).approx), "the second term lowers the error");
});

Deno.test("billm: the split search picks the error-minimising threshold, by brute force", () => {
  const r = 3, n = 7;
  const block = Float64Array.from(randomNormal(createRng(3), r * n, 1));
  const isSalient = Uint8Array.from([0, 1, 0, 0, 0, 0, 0]);
  const mags = Array.from(block).filter((_, k) => !isSalient[k % n]).map(Math.abs).sort((a, b) => a - b);
  // Quantiles i/(N−1) land on every magnitude: the search then tries every possible split.
  const quantiles = Float64Array.from(mags, (_, i) => i / (mags.length - 1));
  let best = { threshold: NaN, error: Infinity };
  for (const t of mags) {
    let error = 0;
    for (let i = 0; i < r; i++) {
      const row = Array.from(block.subarray(i * n, (i + 1) * n)).filter((_, c) => !isSalient[c]);
      for (const part of [row.filter((v) => Math.abs(v) < t), row.filter((v) => Math.abs(v) >= t)]) {
        const { mean, alpha } = fitBinaryTerm(part);
        error += termError(part, mean, alpha);
      }
    }
    if (error < best.error) best = { threshold: t, error };
  }
  const got = searchSplit(block, r, n, isSalient, quantiles);
  assertClose([got.threshold, got.error], [best.threshold, best.error], { atol: 1e-12, rtol: 1e-12 });
});

Deno.test("billm: the salient-column count minimises the block's two-term error, by brute force", () => {
  const r = 6, n = 12;
  const block = Float64Array.from(randomNormal(createRng(4), r * n, 1));
  for (let i = 0; i < r; i++) block[i * n + 5] *= 8, block[i * n + 9] *= 5;
  const salience = new Float64Array(n);
  for (let c = 0; c < n; c++) for (let i = 0; i < r; i++) salience[c] += block[i * n + c] ** 2;
  const bySalience = Array.from({ length: n }, (_, c) => c).sort((a, b) => salience[b] - salience[a]);
  const errorWith = (k: number) => {
    const top = new Set(bySalience.slice(0, k));
    let e = 0;
    for (let i = 0; i < r; i++) {
      const row = Array.from(block.subarray(i * n, (i + 1) * n));
      for (const part of [row.filter((_, c) => top.has(c)), row.filter((_, c) => !top.has(c))]) {
        const { approx } = residualBinarize(part, 2);
        e += part.reduce((s, v, t) => s + (v - approx[t]) ** 2, 0);
      }
    }
    return e;
  };
  const options = { minSalientColumns: 1, maxSalientColumns: 8, splitQuantiles: BILLM_SPLIT_QUANTILES };
  const got = binarizeBlock(block, r, n, salience, options);
  const k = got.salientColumns.length;
  deepEqual(Array.from(got.salientColumns), bySalience.slice(0, k));
  for (let j = 1; j <= 8; j++) ok(errorWith(k) <= errorWith(j) + 1e-12, `k = ${j} beats k = ${k}`);
  ok(got.salientColumns.includes(5) && got.salientColumns.includes(9));
});

Deno.test("billm: layer loss below sign binarization (mean|w|·sign(w) per row) on correlated inputs", async () => {
  const sign = matrix(rows, cols);
  for (let i = 0; i < rows; i++) {
    let m = 0;
    for (let j = 0; j < cols; j++) m += Math.abs(w.data[i * cols + j]) / cols;
    for (let j = 0; j < cols; j++) sign.data[i * cols + j] = w.data[i * cols + j] >= 0 ? m : -m;
  }
  const signLoss = await layerLoss(w, sign, h, getBackend());
  const column = await billm(w, h), block = await billm(w, h, { feedback: "block" });
  ok(column.stats.layerLoss < signLoss, `column feedback ${column.stats.layerLoss} vs ${signLoss}`);
  ok(block.stats.layerLoss < signLoss, `block feedback ${block.stats.layerLoss} vs ${signLoss}`);
  ok(column.stats.layerLoss < block.stats.layerLoss, "feedback inside the block helps");
  for (const j of [3, 50, 140]) equal(column.salientMask[j], 1, `heavy column ${j} is salient`);
});

Deno.test("billm: with H = I there is nothing to feed back: each block is binarized on its own", async () => {
  const identity = toFloat32(eye(cols));
  const a = await billm(w, identity, { damping: 0 });
  const b = await billm(w, identity); // damping scales U uniformly: same salience order, same result
  const c = await billm(w, identity, { feedback: "block" });
  deepEqual(b.dequantized.data, a.dequantized.data);
  deepEqual(c.dequantized.data, a.dequantized.data);
  for (const blk of a.blocks) {
    const n = blk.end - blk.start;
    const block = new Float64Array(rows * n), salience = new Float64Array(n);
    for (let i = 0; i < rows; i++) {
      for (let c = 0; c < n; c++) {
        block[i * n + c] = w.data[i * cols + blk.start + c];
        salience[c] += block[i * n + c] ** 2;
      }
    }
    const ref = binarizeBlock(block, rows, n, salience, {
      minSalientColumns: 1,
      maxSalientColumns: 49,
      splitQuantiles: BILLM_SPLIT_QUANTILES,
    });
    deepEqual(Array.from(blk.salientColumns), Array.from(ref.salientColumns, (c) => c + blk.start));
    for (let i = 0; i < rows; i++) {
      for (let c = 0; c < n; c++) {
        assertClose([a.dequantized.data[i * cols + blk.start + c]], [ref.approx[i * n + c]], {
          atol: 1e-6,
          rtol: 1e-5,
        });
      }
    }
  }
});

Deno.test("billm: average bits as the paper counts them, and the full storage", async () => {
  const q = await billm(w, h);
  const salient = q.blocks.reduce((s, b) => s + b.salientColumns.length, 0);
  equal(q.storage.paramBits, 1 + salient / cols);
  ok(q.storage.paramBits >= 1 + 2 / cols && q.storage.paramBits <= 1 + (49 + 32) / cols, `${q.storage.paramBits}`);
  equal(q.stats.avgBits, q.storage.totalBits, "stats charge everything stored");
  equal(q.storage.flagBits, 1 + 1 / 128);
  // Full storage: a sign per weight, a second per salient weight, a group bit per other weight, a bit per column,
  // eight 16-bit statistics per row and block (both blocks have salient and non-salient columns).
  const n = rows * cols;
  assertClose([q.storage.totalBits], [(n + rows * salient + rows * (cols - salient) + cols + 16 * 8 * rows * 2) / n], {
    atol: 1e-12,
    rtol: 0,
  });
});

Deno.test("billm: codes, groups and row statistics give the dequantized weights back", async () => {
  const q = await billm(w, h);
  for (let b = 0; b < q.blocks.length; b++) {
    const blk = q.blocks[b];
    for (let i = 0; i < rows; i++) {
      const s = q.rowStats.subarray((b * rows + i) * BILLM_ROW_STATS, (b * rows + i + 1) * BILLM_ROW_STATS);
      for (let j = blk.start; j < blk.end; j++) {
        const k = i * cols + j, code = q.codes[k], group = q.groupMask[k];
        const pm = (bit: number) => (code & bit ? 1 : -1);
        const v = group === 2
          ? s[0] + s[1] * pm(1) + s[2] + s[3] * pm(2)
          : group === 0
          ? s[4] + s[5] * pm(1)
          : s[6] + s[7] * pm(1);
        equal(group === 2, q.salientMask[j] === 1);
        assertClose([q.dequantized.data[k]], [v], { atol: 1e-7, rtol: 1e-6 });
      }
    }
  }
});

Deno.test("billm: a salience Hessian only chooses the salient columns; the same Hessian changes nothing", async () => {
  const plain = await billm(w, h);
  const same = await billm(w, h, { salienceHessian: h });
  deepEqual(same.dequantized.data, plain.dequantized.data);
  deepEqual(same.salientMask, plain.salientMask);
  // A diagonal salience Hessian that makes columns 7 and 100 far more sensitive than the rest: they are chosen.
  const favour = matrix(cols, cols);
  for (let j = 0; j < cols; j++) favour.data[j * cols + j] = j === 7 || j === 100 ? 1e6 : 1;
  const chosen = await billm(w, h, { salienceHessian: favour });
  equal(chosen.salientMask[7], 1);
  equal(chosen.salientMask[100], 1);
  ok(chosen.salientMask.some((v, j) => v !== plain.salientMask[j]), "the salient columns did not change");
});

Deno.test("billm: an output-side Hessian couples the rows and lowers tr(B·E·H·Eᵀ); a diagonal one changes nothing", async () => {
  const b = await hessianOf(correlatedInputs(256, rows, 8));
  const plain = await billm(w, h);
  const coupled = await billm(w, h, { outputHessian: b, outputDamping: 0.01 });
  const lp = kroneckerLoss(w, plain.dequantized, h, b), lc = kroneckerLoss(w, coupled.dequantized, h, b);
  ok(lc < 0.97 * lp, `coupled ${lc} vs independent rows ${lp}`);
  const uneven = await hessianOf(correlatedInputs(256, rows, 8, (i) => 0.3 + (i % 7) / 2));
  const ordered = await billm(w, h, { outputHessian: uneven, outputOrder: true });
  const stored = await billm(w, h, { outputHessian: uneven });
  const lo = kroneckerLoss(w, ordered.dequantized, h, uneven), ls = kroneckerLoss(w, stored.dequantized, h, uneven);
  ok(lo < 0.9 * ls, `rows by descending B_ii ${lo} vs in stored order ${ls}`);
  const diagonal = matrix(rows, rows);
  for (let i = 0; i < rows; i++) diagonal.data[i * rows + i] = b.data[i * rows + i];
  deepEqual((await billm(w, h, { outputHessian: diagonal })).dequantized.data, plain.dequantized.data);
  await rejects(billm(w, h, { outputHessian: matrix(3, 3) }), /output Hessian is 3×3/);
  await rejects(billm(w, h, { outputHessian: b, feedback: "block" }), /needs feedback "column"/);
});
