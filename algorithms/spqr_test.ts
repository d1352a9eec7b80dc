import { deepEqual, equal, notDeepEqual, ok, rejects } from "node:assert/strict";
import { OptionError } from "../core/errors.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { eye, matrix, toFloat32 } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { gptq } from "./gptq.ts";
import { hessianOf } from "./hessian.ts";
import { rtn } from "./rtn.ts";
import { spqr, spqrAverageBits } from "./spqr.ts";
import { correlatedInputs, kroneckerLoss } from "../tests/numeric.ts";

const rows = 32, cols = 64;
const w = matrix(rows, cols, randomNormal(createRng(5), rows * cols, 0.1));
const h = await hessianOf(correlatedInputs(512, cols, 6));
const identity = toFloat32(eye(cols));
/** SpQR without its extras: no outliers, unquantized statistics, integer zeros. */
const plain = { statBits: 0, outlierThreshold: Infinity, roundZero: true } as const;

/** A few huge weights at known places. */
const planted: [number, number][] = [[0, 3], [5, 17], [5, 40], [12, 0], [31, 63], [20, 33]];
const wPlanted = matrix(rows, cols, w.data.slice());
for (const [i, j] of planted) wPlanted.data[i * cols + j] = (i % 2 ? -1 : 1) * 2.5;

Deno.test("spqr: without outliers and with unquantized statistics it is GPTQ with the same groups", async () => {
  // Groups of random normal weights always hold both signs, so GPTQ's range (widened to contain 0) and SpQR's
  // (the true min-max) coincide; with blockSize = groupSize both refit each group on fully updated weights. GPTQ's
  // kernel forms those weights through R and SpQR's loop through U = R⁻¹, so values and scales agree to float32
  // rounding, not to the bit.
  for (const actOrder of [false, true]) {
    const g = await gptq(w, h, { bits: 3, groupSize: 16, blockSize: 16, actOrder });
    const s = await spqr(w, h, { ...plain, bits: 3, groupSize: 16, blockSize: 16, actOrder });
    deepEqual(s.codes, g.codes, `codes, actOrder ${actOrder}`);
    assertClose(s.dequantized.data, g.dequantized.data, { atol: 0, rtol: 1e-6 });
    assertClose(s.params.scale, g.params!.scale, { atol: 0, rtol: 1e-6 });
    deepEqual(s.params.zero, g.params!.zero);
    deepEqual(s.groupIndex, g.groupIndex);
    deepEqual(s.permutation, g.permutation);
    equal(s.outliers.rows.length, 0);
    // GPTQ's loss comes from its kernel's Σ e² (an identity), SpQR's from the direct product: equal up to rounding.
    assertClose([s.stats.layerLoss], [g.stats.layerLoss], { atol: 0, rtol: 1e-6 });
  }
});

Deno.test("spqr: coupled rows are GPTQ's coupled rows without the extras; with outliers they lower tr(B·E·H·Eᵀ)", async () => {
  const b = await hessianOf(correlatedInputs(256, rows, 8));
  const coupling = { outputHessian: b, outputDamping: 0.01 };
  const same = { bits: 2, groupSize: 16, blockSize: 16, damping: 0.1, actOrder: true };
  for (const outputOrder of [true, false]) {
    const g = await gptq(w, h, { ...same, ...coupling, outputOrder });
    const s = await spqr(w, h, { ...plain, ...same, ...coupling, outputOrder });
    deepEqual(s.codes, g.codes, `outputOrder ${outputOrder}`);
    notDeepEqual(s.codes, (await spqr(w, h, { ...plain, ...same })).codes, "the row factor changed no code");
  }
  // With outliers and quantized statistics: an outlier moves no later row, and the loss drops.
  const full = { bits: 2, groupSize: 16, damping: 0.1 };
  const independent = await spqr(wPlanted, h, full), coupled = await spqr(wPlanted, h, { ...full, ...coupling });
  const li = kroneckerLoss(wPlanted, independent.dequantized, h, b);
  const lc = kroneckerLoss(wPlanted, coupled.dequantized, h, b);
  ok(lc < 0.9 * li, `coupled ${lc} vs independent rows ${li}`);
  const kept = new Set(Array.from(coupled.outliers.rows, (i, k) => `${i},${coupled.outliers.cols[k]}`));
  for (const [i, j] of planted) ok(kept.has(`${i},${j}`), `planted outlier (${i}, ${j}) not kept`);
  // SpQR is invariant to scaling rows, its outlier test included: a diagonal B changes nothing.
  const diagonal = matrix(rows, rows);
  for (let i = 0; i < rows; i++) diagonal.data[i * rows + i] = b.data[i * rows + i];
  deepEqual((await spqr(wPlanted, h, { ...full, outputHessian: diagonal })).codes, independent.codes);
  await rejects(spqr(w, h, { outputHessian: matrix(rows - 1, rows - 1) }), /output Hessian is 31×31/);
  await rejects(spqr(w, h, { outputHessian: b, outputDamping: -1 }), OptionError);
});

Deno.test("spqr: the block size changes nothing but rounding (groups are fitted on the current weights)", async () => {
  const a = await spqr(w, h, { bits: 3, blockSize: 16 }), b = await spqr(w, h, { bits: 3, blockSize: 128 });
  let same = 0;
  for (let i = 0; i < a.codes.length; i++) if (a.codes[i] === b.codes[i]) same++;
  ok(same / a.codes.length > 0.99, `only ${same} of ${a.codes.length} codes agree`);
  assertClose([b.stats.layerLoss], [a.stats.layerLoss], { atol: 0, rtol: 1e-2 });
});

Deno.test("spqr: planted outliers are found and restored exactly", async () => {
  for (const [hessian, exact] of [[identity, true], [h, false]] as const) {
    const s = await spqr(wPlanted, hessian, { bits: 3, damping: exact ? 0 : 0.01 });
    const { rows: r, cols: c, values } = s.outliers;
    const found = new Set(Array.from(r, (i, k) => `${i},${c[k]}`));
    for (const [i, j] of planted) ok(found.has(`${i},${j}`), `planted outlier (${i}, ${j}) not kept`);
    for (let k = 0; k < r.length; k++) {
      equal(s.dequantized.data[r[k] * cols + c[k]], values[k], "the dequantized layer holds the outlier's value");
      if (k > 0) ok(r[k - 1] < r[k] || (r[k - 1] === r[k] && c[k - 1] < c[k]), "sorted by row, then column");
    }
    for (const [i, j] of planted) {
      const got = s.dequantized.data[i * cols + j], want = wPlanted.data[i * cols + j];
      // With H = I no error is fed forward, so the kept value is the original weight; otherwise the weight as the
      // earlier columns' feedback left it.
      if (exact) equal(got, want);
      else ok(Math.abs(got - want) < 0.05 * Math.abs(want), `(${i}, ${j}): ${got} vs ${want}`);
    }
  }
});

Deno.test("spqr: the leave-one-out fit keeps planted outliers from stretching their groups", async () => {
  const loo = await spqr(wPlanted, h, { bits: 3 });
  const simple = await spqr(wPlanted, h, { bits: 3, simplifiedOutliers: true });
  // Each planted weight sits in its own (row, group): with leave-one-out its group's scale is that of ordinary weights.
  for (const [i, j] of planted) {
    const p = i * loo.params.groups + loo.groupIndex[j];
    ok(
      loo.params.scale[p] < simple.params.scale[p] / 4,
      `(${i}, ${j}): ${loo.params.scale[p]} vs ${simple.params.scale[p]}`,
    );
  }
  ok(loo.stats.layerLoss < simple.stats.layerLoss);
});

Deno.test("spqr: a lower outlier threshold keeps more outliers and never a higher loss", async () => {
  let lastCount = -1, lastLoss = Infinity;
  for (const outlierThreshold of [Infinity, 4, 1, 0.5, 0.2, 0.1, 0.05]) {
    const s = await spqr(w, h, { bits: 3, outlierThreshold });
    const count = s.outliers.rows.length;
    ok(count >= lastCount, `τ ${outlierThreshold}: ${count} outliers after ${lastCount}`);
    ok(s.stats.layerLoss <= lastLoss, `τ ${outlierThreshold}: loss ${s.stats.layerLoss} after ${lastLoss}`);
    lastCount = count, lastLoss = s.stats.layerLoss;
  }
  ok(lastCount > 0);
});

Deno.test("spqr: average bits, checked by hand", async () => {
  // 32 × 64, groups of 16, 3-bit codes, 3-bit scales and zeros in groups of 16 rows:
  // 3 + (3 + 3)/16 + 2·(16 + 16)/(16·16) = 3.625 bits, plus 32 bits per outlier over 2048 weights.
  const s = await spqr(wPlanted, h, { bits: 3 });
  const n = s.outliers.rows.length;
  ok(n >= planted.length);
  assertClose([s.stats.avgBits], [3.625 + 32 * n / 2048], { atol: 1e-12, rtol: 0 });
  const layout = { rows: 32, cols: 64, bits: 3, groupSize: 16, statBits: 3, statGroup: 16 };
  equal(spqrAverageBits(layout, 0), 3.625);
  equal(spqrAverageBits({ ...layout, statBits: 0 }, 0), 3 + 32 / 16); // fp16 scale and zero per group
  equal(spqrAverageBits({ ...layout, roundZero: true }, 0), 3 + 6 / 16 + 32 / 256); // integer zeros stay 3-bit codes
  equal(spqrAverageBits({ ...layout, bits: 2, groupSize: 0 }, 64), 2 + 6 / 64 + 64 / (64 * 16) + 1);
  // Ragged edges are charged in full: 20 columns are two groups, 20 rows two statistic groups.
  equal(spqrAverageBits({ ...layout, rows: 20, cols: 20 }, 0), (400 * 3 + 20 * 2 * 6 + 2 * 2 * 2 * 32) / 400);
});

Deno.test("spqr: quantized statistics take at most 2^statBits values per group of rows, and codes decode", async () => {
  const s = await spqr(w, h, { bits: 3, statBits: 2, statGroup: 8, actOrder: true });
  const { scale, zero, groups } = s.params;
  for (let g = 0; g < groups; g++) {
    for (let r0 = 0; r0 < rows; r0 += 8) {
      const scales = new Set<number>(), zeros = new Set<number>();
      for (let r = r0; r < r0 + 8; r++) scales.add(scale[r * groups + g]), zeros.add(zero[r * groups + g]);
      ok(scales.size <= 4 && zeros.size <= 4, `group ${g}, rows ${r0}+: ${scales.size} scales, ${zeros.size} zeros`);
    }
  }
  const isOutlier = new Set(Array.from(s.outliers.rows, (i, k) => i * cols + s.outliers.cols[k]));
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      if (isOutlier.has(i * cols + j)) continue;
      const p = i * groups + s.groupIndex[j];
      const v = Math.fround(scale[p] * Math.fround(s.codes[i * cols + j] - zero[p]));
      equal(s.dequantized.data[i * cols + j], v);
    }
  }
  const perm = s.permutation!;
  for (let k = 0; k < cols; k++) equal(s.groupIndex[perm[k]], Math.floor(k / 16));
});

Deno.test("spqr: layer loss below RTN's with the same groups on correlated inputs", async () => {
  for (const bits of [2, 3, 4]) {
    const r = await rtn(w, h, { bits, groupSize: 16 });
    for (const options of [{}, plain]) {
      const s = await spqr(w, h, { bits, groupSize: 16, ...options });
      ok(s.stats.layerLoss < r.stats.layerLoss, `w${bits} ${JSON.stringify(options)}: ${s.stats.layerLoss}`);
    }
  }
});

Deno.test("spqr: dead inputs stay finite; bad options are refused", async () => {
  const dead = Float32Array.from(h.data);
  for (const j of [0, 7, cols - 1]) for (let k = 0; k < cols; k++) dead[j * cols + k] = dead[k * cols + j] = 0;
  const s = await spqr(w, matrix(cols, cols, dead), { bits: 3, actOrder: true });
  ok(Number.isFinite(s.stats.layerLoss) && s.dequantized.data.every(Number.isFinite));
  for (const bad of [{ bits: 1 }, { statBits: 9 }, { groupSize: -1 }, { statGroup: 0 }, { outlierThreshold: -1 }]) {
    await rejects(spqr(w, h, bad), OptionError, JSON.stringify(bad));
  }
});
