import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { fitGrid } from "../grids/fit.ts";
import { randomHessian } from "../../tests/numeric.ts";
import { OptionError, ShapeError } from "../errors.ts";
import { upperCholeskyOfInverse } from "../linalg/cholesky.ts";
import { createRng, permutation, randomNormal } from "../random.ts";
import { invertPermutation, matrix, matrix64, permuteColumns } from "../tensor.ts";
import { checkPermutation, gptqQuantize } from "./gptq_kernel.ts";

/** A random layer and the U factor of `XᵀX/n + 0.01·I` for random `X`. */
function layer(rows: number, cols: number, seed: number) {
  const rng = createRng(seed);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  return { w, u: upperCholeskyOfInverse(randomHessian(rng, cols, 0.01)) };
}

Deno.test("gptqQuantize through a permutation equals permuting W first and the results back", () => {
  const { w, u } = layer(13, 41, 3);
  const perm = permutation(createRng(4), 41), inv = invertPermutation(perm);
  const base = {
    u,
    grid: { kind: "uniform", bits: 3 },
    blockSize: 16,
    groups: { kind: "dynamic", groupSize: 8 },
  } as const;
  const direct = gptqQuantize({ ...base, w, permutation: perm });
  const staged = gptqQuantize({ ...base, w: permuteColumns(w, perm) });
  deepStrictEqual(direct.dequantized, permuteColumns(staged.dequantized, inv));
  const codes = new Uint8Array(13 * 41);
  for (let r = 0; r < 13; r++) for (let c = 0; c < 41; c++) codes[r * 41 + c] = staged.codes[r * 41 + inv[c]];
  deepStrictEqual(direct.codes, codes);
  deepStrictEqual(direct.params, staged.params);
  deepStrictEqual(direct.errorEnergy, staged.errorEnergy);
});

Deno.test("checkPermutation rejects a wrong length, an index out of range and a repeat", () => {
  checkPermutation(Int32Array.of(2, 0, 1), 3);
  throws(() => checkPermutation(Int32Array.of(0, 1), 3), ShapeError);
  throws(() => checkPermutation(Int32Array.of(0, 3, 1), 3), /permutation\[1\] = 3 is out of range/);
  throws(() => checkPermutation(Int32Array.of(0, 1, 0), 3), OptionError);
});

Deno.test("gptqQuantize with a row factor is GPTQ over vec(W) with the Kronecker Hessian A ⊗ B", () => {
  // Column-major vec(W) (index j·rows + i) as a single row, its Hessian A ⊗ B factored as one big matrix: the
  // sequential OBS that the row factor's separable updates must reproduce element by element.
  const rows = 5, cols = 7, rng = createRng(11);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  const a = randomHessian(createRng(12), cols, 0.05), b = randomHessian(createRng(13), rows, 0.05), n = rows * cols;
  const big = matrix64(n, n);
  for (let j = 0; j < cols; j++) {
    for (let i = 0; i < rows; i++) {
      for (let l = 0; l < cols; l++) {
        for (let k = 0; k < rows; k++) {
          big.data[(j * rows + i) * n + l * rows + k] = a.data[j * cols + l] * b.data[i * rows + k];
        }
      }
    }
  }
  const params = fitGrid(w, { kind: "uniform", bits: 3 }, 0); // one grid per row, fixed
  const grid = { kind: "uniform", bits: 3 } as const;
  const coupled = gptqQuantize({
    w,
    u: upperCholeskyOfInverse(a),
    rowFactor: upperCholeskyOfInverse(b),
    grid,
    blockSize: 3,
    groups: { kind: "fixed", params, groupOfColumn: new Int32Array(cols) },
  });
  const vec = matrix(1, n);
  for (let j = 0; j < cols; j++) for (let i = 0; i < rows; i++) vec.data[j * rows + i] = w.data[i * cols + j];
  const flat = gptqQuantize({
    w: vec,
    u: upperCholeskyOfInverse(big),
    grid,
    blockSize: 4,
    groups: {
      kind: "fixed",
      params: { rows: 1, groups: rows, scale: params.scale, zero: params.zero },
      groupOfColumn: Int32Array.from({ length: n }, (_, t) => t % rows),
    },
  });
  const codes = new Uint8Array(n);
  for (let j = 0; j < cols; j++) for (let i = 0; i < rows; i++) codes[j * rows + i] = coupled.codes[i * cols + j];
  deepStrictEqual(codes, flat.codes);
  // Coupled rows do round differently from independent ones here.
  const independent = gptqQuantize({
    w,
    u: upperCholeskyOfInverse(a),
    grid,
    blockSize: 3,
    groups: { kind: "fixed", params, groupOfColumn: new Int32Array(cols) },
  });
  ok(independent.codes.some((c, t) => c !== coupled.codes[t]));
});

Deno.test("gptqQuantize with a row order equals permuting W's rows (and B) first and the results back", () => {
  const rows = 11, cols = 19;
  const { w, u } = layer(rows, cols, 21);
  const b = randomHessian(createRng(22), rows, 0.05);
  const order = permutation(createRng(23), rows);
  const permutedB = matrix64(rows, rows);
  for (let i = 0; i < rows; i++) {
    for (let k = 0; k < rows; k++) permutedB.data[i * rows + k] = b.data[order[i] * rows + order[k]];
  }
  const rowFactor = upperCholeskyOfInverse(permutedB);
  const base = {
    u,
    grid: { kind: "uniform", bits: 2 },
    blockSize: 8,
    groups: { kind: "dynamic", groupSize: 8 },
  } as const;
  const direct = gptqQuantize({ ...base, w, rowFactor, rowOrder: order });
  const wRows = matrix(rows, cols);
  for (let i = 0; i < rows; i++) wRows.data.set(w.data.subarray(order[i] * cols, (order[i] + 1) * cols), i * cols);
  const staged = gptqQuantize({ ...base, w: wRows, rowFactor });
  const groups = staged.params.groups;
  for (let i = 0; i < rows; i++) {
    const r = order[i];
    deepStrictEqual(direct.codes.subarray(r * cols, (r + 1) * cols), staged.codes.subarray(i * cols, (i + 1) * cols));
    deepStrictEqual(
      direct.dequantized.data.subarray(r * cols, (r + 1) * cols),
      staged.dequantized.data.subarray(i * cols, (i + 1) * cols),
    );
    deepStrictEqual(
      direct.params.scale.subarray(r * groups, (r + 1) * groups),
      staged.params.scale.subarray(i * groups, (i + 1) * groups),
    );
  }
  // The order does matter with coupled rows, and a bad order is refused.
  ok(gptqQuantize({ ...base, w, rowFactor }).codes.some((c, t) => c !== direct.codes[t]));
  throws(() => gptqQuantize({ ...base, w, rowFactor, rowOrder: Int32Array.of(0, 1) }), /row order of length 2/);
});

Deno.test("gptqQuantize: a diagonal row factor changes nothing; a wrong-sized one is refused", () => {
  const { w, u } = layer(9, 20, 5);
  const base = {
    w,
    u,
    grid: { kind: "uniform", bits: 2 },
    blockSize: 8,
    groups: { kind: "dynamic", groupSize: 8 },
  } as const;
  const diagonal = matrix64(9, 9);
  for (let i = 0; i < 9; i++) diagonal.data[i * 9 + i] = 0.5 + i;
  const plain = gptqQuantize(base), scaled = gptqQuantize({ ...base, rowFactor: diagonal });
  deepStrictEqual(scaled.codes, plain.codes);
  deepStrictEqual(scaled.errorEnergy, plain.errorEnergy);
  throws(() => gptqQuantize({ ...base, rowFactor: matrix64(8, 8) }), ShapeError);
});
