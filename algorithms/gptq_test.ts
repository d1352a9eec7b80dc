import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { OptionError } from "../core/errors.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { eye, matrix, toFloat32 } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import { NF4 } from "../core/grids/tables.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";
import { gptq, type GptqOptions } from "./gptq.ts";
import { layerLoss } from "./layer_loss.ts";
import { prepareLayer } from "./prepare.ts";
import { hessianOf } from "./hessian.ts";
import { rtn } from "./rtn.ts";
import { correlatedInputs, kroneckerLoss } from "../tests/numeric.ts";

const rows = 24, cols = 48;
const w = matrix(rows, cols, randomNormal(createRng(5), rows * cols, 0.1));
const h = await hessianOf(correlatedInputs(512, cols, 6));

Deno.test("gptq: layer loss below RTN's on correlated inputs, for every setting", async () => {
  for (
    const options of [{ bits: 2 }, { bits: 3 }, { bits: 4, groupSize: 16 }, { bits: 3, groupSize: 16, actOrder: true }]
  ) {
    const g = await gptq(w, h, options), r = await rtn(w, h, options);
    ok(
      g.stats.layerLoss < r.stats.layerLoss,
      `${JSON.stringify(options)}: ${g.stats.layerLoss} ≥ ${r.stats.layerLoss}`,
    );
  }
});

Deno.test("gptq: an unknown factorPrecision is refused", async () => {
  await rejects(gptq(w, h, { factorPrecision: "fp32" as "f32" }), OptionError);
});

Deno.test("gptq: with H = I and no damping it equals RTN", async () => {
  const identity = toFloat32(eye(cols));
  for (const options of [{ bits: 3 }, { bits: 4, groupSize: 16 }, { bits: 2, groupSize: 8, actOrder: true }]) {
    const g = await gptq(w, identity, { ...options, damping: 0 });
    const r = await rtn(w, identity, options);
    deepEqual(g.codes, r.codes, JSON.stringify(options));
    assertClose(g.dequantized.data, r.dequantized.data, { atol: 0, rtol: 0 });
  }
});

Deno.test("gptq: act-order's permutation is undone and g_idx names each column's group", async () => {
  const g = await gptq(w, h, { bits: 4, groupSize: 16, actOrder: true });
  const perm = g.permutation!;
  deepEqual([...perm].sort((a, b) => a - b), Array.from({ length: cols }, (_, j) => j));
  // Processing order is by descending diagonal.
  for (let k = 1; k < cols; k++) ok(h.data[perm[k - 1] * cols + perm[k - 1]] >= h.data[perm[k] * cols + perm[k]]);
  // Every weight sits on its group's grid: recomputing it from codes, scales and zeros gives it back.
  const { scale, zero, groups } = g.params!;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const p = i * groups + g.groupIndex![j];
      const v = Math.fround(scale[p] * Math.fround(g.codes![i * cols + j] - zero[p]));
      equal(g.dequantized.data[i * cols + j], v);
    }
  }
  // Group k holds the columns processed k·16 … k·16+15.
  for (let k = 0; k < cols; k++) equal(g.groupIndex![perm[k]], Math.floor(k / 16));
});

Deno.test("gptq: static groups with act-order keep contiguous groups", async () => {
  const g = await gptq(w, h, { bits: 3, groupSize: 16, actOrder: true, staticGroups: true });
  for (let j = 0; j < cols; j++) equal(g.groupIndex![j], Math.floor(j / 16));
  const r = await rtn(w, h, { bits: 3, groupSize: 16 });
  deepEqual(g.params!.scale, r.params!.scale, "static groups are fitted on the original weights");
});

Deno.test("gptq: dead inputs give zero columns and a finite result", async () => {
  const dead = Float32Array.from(h.data);
  for (const j of [0, 7, cols - 1]) for (let k = 0; k < cols; k++) dead[j * cols + k] = dead[k * cols + j] = 0;
  const g = await gptq(w, matrix(cols, cols, dead), { bits: 3, groupSize: 16, actOrder: true });
  for (const j of [0, 7, cols - 1]) for (let i = 0; i < rows; i++) equal(g.dequantized.data[i * cols + j], 0);
  ok(Number.isFinite(g.stats.layerLoss));
});

Deno.test("gptq: the layer loss from the kernel's Σ e² equals tr(E·H·Eᵀ) computed directly", async () => {
  const deadH = Float32Array.from(h.data);
  for (const j of [3, 20]) for (let k = 0; k < cols; k++) deadH[j * cols + k] = deadH[k * cols + j] = 0;
  const cases: [string, Matrix<FloatArray>, GptqOptions][] = [
    ["3-bit per row", h, { bits: 3 }],
    ["2-bit g16 act-order", h, { bits: 2, groupSize: 16, actOrder: true }],
    ["4-bit g8 static, λ = 1", h, { bits: 4, groupSize: 8, actOrder: true, staticGroups: true, damping: 1 }],
    ["NF4 g16, λ = 0.1", h, { grid: NF4, groupSize: 16, damping: 0.1 }],
    ["dead columns, act-order", matrix(cols, cols, deadH), { bits: 3, groupSize: 16, actOrder: true }],
  ];
  for (const [name, hess, options] of cases) {
    const g = await gptq(w, hess, options);
    const direct = await layerLoss(w, g.dequantized, hess, tsBackend);
    assertClose([g.stats.layerLoss], [direct], { rtol: 1e-5, atol: 0 }, name);
  }
});

Deno.test("gptq kernel: Σ e² equals tr(E·H_d·Eᵀ) for the damped Hessian R factors (GPTQ's identity)", async () => {
  for (const damping of [0.01, 1]) {
    const prepared = await prepareLayer(w, h, { damping, order: true, backend: tsBackend });
    const out = await tsBackend.gptqQuantize({
      w: prepared.w,
      r: await tsBackend.reverseCholesky(prepared.h),
      grid: { kind: "uniform", bits: 2 },
      blockSize: 16,
      groups: { kind: "dynamic", groupSize: 16 },
    });
    const direct = await layerLoss(prepared.w, out.dequantized, prepared.h, tsBackend);
    assertClose([out.errorEnergy!], [direct], { rtol: 1e-6, atol: 0 }, `λ = ${damping}`);
  }
});

Deno.test("gptq: an output-side Hessian couples the rows and lowers tr(B·E·H·Eᵀ); a diagonal one changes nothing", async () => {
  const b = await hessianOf(correlatedInputs(256, rows, 8));
  const options = { bits: 2, groupSize: 16, damping: 0.1 };
  const plain = await gptq(w, h, options);
  const coupled = await gptq(w, h, { ...options, outputHessian: b, outputDamping: 0.01 });
  const lp = kroneckerLoss(w, plain.dequantized, h, b), lc = kroneckerLoss(w, coupled.dequantized, h, b);
  ok(lc < 0.9 * lp, `coupled ${lc} vs independent rows ${lp}`);
  // GPTQ is invariant to scaling rows: a diagonal B leaves every code as it was.
  const diagonal = matrix(rows, rows);
  for (let i = 0; i < rows; i++) diagonal.data[i * rows + i] = b.data[i * rows + i];
  deepEqual((await gptq(w, h, { ...options, outputHessian: diagonal })).codes, plain.codes);
  // Rounding the rows the loss weighs most first (by descending B_ii) lowers the loss further when B_ii vary.
  const uneven = await hessianOf(correlatedInputs(256, rows, 8, (i) => 0.3 + (i % 7) / 2));
  const ordered = await gptq(w, h, { ...options, outputHessian: uneven, outputOrder: true });
  const stored = await gptq(w, h, { ...options, outputHessian: uneven });
  const lo = kroneckerLoss(w, ordered.dequantized, h, uneven), ls = kroneckerLoss(w, stored.dequantized, h, uneven);
  ok(lo < 0.9 * ls, `rows by descending B_ii ${lo} vs in stored order ${ls}`);
  await rejects(gptq(w, h, { ...options, outputHessian: matrix(rows - 1, rows - 1) }), /output Hessian is 23×23/);
  await rejects(gptq(w, h, { ...options, outputHessian: b, outputDamping: -1 }), OptionError);
});
