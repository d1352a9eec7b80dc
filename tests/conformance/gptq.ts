/**
 * Conformance of `gptqQuantize`: the backend's error-feedback loop against the reference kernel on the same inputs.
 * Rounding near-ties may flip a code, and the error feedback then carries the flip along the row, so the check is the
 * one the reference-agreement test uses: nearly all codes equal, and the layer loss (`‖E‖` under the Hessian) close.
 * Backends that form the lazy update in float32 (the reference accumulates in float64) stay within these bounds.
 *
 * @module
 */

import { ok } from "node:assert/strict";
import type { GptqKernelArgs } from "../../core/backend.ts";
import { fitGrid } from "../../core/grids/fit.ts";
import { NF4 } from "../../core/grids/tables.ts";
import { gramAccumulate } from "../../core/linalg/gram.ts";
import { reverseCholesky, upperCholeskyOfInverse } from "../../core/linalg/cholesky.ts";
import { gptqQuantize } from "../../core/quant/gptq_kernel.ts";
import { createRng, permutation as randomPermutation, randomNormal } from "../../core/random.ts";
import { type Matrix, matrix, matrix64, permuteColumns } from "../../core/tensor.ts";
import type { ConformanceCase } from "./case.ts";

/** A damped Hessian of correlated inputs, its factor R and GPTQ's U for it. */
function problem(
  rows: number,
  cols: number,
  seed: number,
): { w: Matrix; h: Matrix<Float64Array>; r: Matrix; u: Matrix } {
  const rng = createRng(seed);
  const n = 2 * cols + 8;
  const x = matrix(n, cols);
  for (let i = 0; i < n; i++) {
    let prev = rng.normal();
    for (let j = 0; j < cols; j++) x.data[i * cols + j] = prev = 0.8 * prev + 0.6 * rng.normal();
  }
  const h = matrix64(cols, cols);
  gramAccumulate(h, x, 2 / n);
  let mean = 0;
  for (let j = 0; j < cols; j++) mean += h.data[j * cols + j] / cols;
  for (let j = 0; j < cols; j++) h.data[j * cols + j] += 0.01 * mean;
  const r = reverseCholesky(h), u = upperCholeskyOfInverse(h);
  return {
    w: matrix(rows, cols, randomNormal(rng, rows * cols, 0.1)),
    h,
    r: { data: Float32Array.from(r.data), shape: r.shape },
    u: { data: Float32Array.from(u.data), shape: u.shape },
  };
}

/** `tr(E H Eᵀ)` with `E = W − Ŵ`. */
function loss(w: Matrix, q: Matrix, h: Matrix<Float64Array>): number {
  const [rows, cols] = w.shape;
  let total = 0;
  const e = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) e[j] = w.data[i * cols + j] - q.data[i * cols + j];
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let k = 0; k < cols; k++) s += h.data[j * cols + k] * e[k];
      total += e[j] * s;
    }
  }
  return total;
}

type Case = [
  string,
  number,
  number,
  (w: Matrix) => GptqKernelArgs["groups"],
  GptqKernelArgs["grid"],
  boolean?,
  boolean?,
];

/** Name, rows, columns, groups, grid, whether W is read through a permutation, whether rows are coupled. */
const CASES: Case[] = [
  [
    "4-bit per row",
    24,
    70,
    (w) => ({
      kind: "fixed",
      params: fitGrid(w, { kind: "uniform", bits: 4 }, 0),
      groupOfColumn: new Int32Array(w.shape[1]),
    }),
    { kind: "uniform", bits: 4 },
  ],
  ["3-bit groups of 16", 17, 96, () => ({ kind: "dynamic", groupSize: 16 }), { kind: "uniform", bits: 3 }],
  ["2-bit symmetric groups of 32", 9, 150, () => ({ kind: "dynamic", groupSize: 32 }), {
    kind: "uniform",
    bits: 2,
    symmetric: true,
  }],
  ["NF4 groups of 64", 12, 130, () => ({ kind: "dynamic", groupSize: 64 }), NF4],
  ["4-bit groups of 16 through a permutation", 19, 90, () => ({ kind: "dynamic", groupSize: 16 }), {
    kind: "uniform",
    bits: 4,
  }, true],
  [
    "3-bit groups of 16, rows coupled by a row factor, in a row order",
    21,
    70,
    () => ({ kind: "dynamic", groupSize: 16 }),
    {
      kind: "uniform",
      bits: 3,
    },
    false,
    true,
  ],
];

export const gptqCases: ConformanceCase[] = CASES.map(([name, rows, cols, groups, grid, permute, coupled], i) => ({
  name: `gptqQuantize ${name} (${rows}×${cols}, blocks of 32)`,
  async run({ backend, toleranceScale }) {
    const { w, h, r } = problem(rows, cols, 40 + i);
    const permutation = permute ? randomPermutation(createRng(60 + i), cols) : undefined;
    // A row factor (the U of another correlated Hessian, over the rows) and an order to round the rows in.
    const rowFactor = coupled ? problem(1, rows, 80 + i).u : undefined;
    const rowOrder = coupled ? randomPermutation(createRng(90 + i), rows) : undefined;
    const args: GptqKernelArgs = { w, r, grid, blockSize: 32, groups: groups(w), permutation, rowFactor, rowOrder };
    const want = gptqQuantize(args);
    const got = await backend.gptqQuantize(args);
    let same = 0;
    for (let k = 0; k < want.codes.length; k++) if (got.codes[k] === want.codes[k]) same++;
    const agreement = same / want.codes.length;
    ok(agreement >= 1 - 0.01 * toleranceScale, `${name}: ${(agreement * 100).toFixed(2)}% of codes agree`);
    // H (and R) are in processing order: the loss is taken on the columns in that order.
    const inOrder = (m: Matrix) => permutation ? permuteColumns(m, permutation) : m;
    const lw = loss(inOrder(w), inOrder(want.dequantized), h), lg = loss(inOrder(w), inOrder(got.dequantized), h);
    ok(Math.abs(lg - lw) <= 0.01 * toleranceScale * lw, `${name}: layer loss ${lg} vs reference ${lw}`);
    if (got.errorEnergy !== undefined) {
      const we = want.errorEnergy!, ge = got.errorEnergy;
      ok(Math.abs(ge - we) <= 0.01 * toleranceScale * we, `${name}: Σ e² ${ge} vs reference ${we}`);
    }
    // Every returned value sits on its group's grid: the result is internally consistent.
    ok(got.params.scale.every((s) => s > 0), `${name}: scales are positive`);
  },
}));
