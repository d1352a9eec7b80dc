import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { fitGrid } from "../grids/fit.ts";
import { randomHessian } from "../../tests/numeric.ts";
import { OptionError, ShapeError } from "../errors.ts";
import { reverseCholesky, upperCholeskyOfInverse } from "../linalg/cholesky.ts";
import { createRng, permutation, randomNormal } from "../random.ts";
import { invertPermutation, type Matrix, matrix, matrix64, permuteColumns } from "../tensor.ts";
import { fitUniformRow } from "../grids/uniform.ts";
import { checkPermutation, gptqQuantize } from "./gptq_kernel.ts";

/** A random layer and the factor R of `XᵀX/n + 0.01·I` for random `X`. */
function layer(rows: number, cols: number, seed: number) {
  const rng = createRng(seed);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  return { w, r: reverseCholesky(randomHessian(rng, cols, 0.01)) };
}

Deno.test("gptqQuantize through a permutation equals permuting W first and the results back", () => {
  const { w, r } = layer(13, 41, 3);
  const perm = permutation(createRng(4), 41), inv = invertPermutation(perm);
  const base = {
    r,
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
    r: reverseCholesky(a),
    rowFactor: upperCholeskyOfInverse(b),
    grid,
    blockSize: 3,
    groups: { kind: "fixed", params, groupOfColumn: new Int32Array(cols) },
  });
  const vec = matrix(1, n);
  for (let j = 0; j < cols; j++) for (let i = 0; i < rows; i++) vec.data[j * rows + i] = w.data[i * cols + j];
  const flat = gptqQuantize({
    w: vec,
    r: reverseCholesky(big),
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
    r: reverseCholesky(a),
    grid,
    blockSize: 3,
    groups: { kind: "fixed", params, groupOfColumn: new Int32Array(cols) },
  });
  ok(independent.codes.some((c, t) => c !== coupled.codes[t]));
});

Deno.test("gptqQuantize with a row order equals permuting W's rows (and B) first and the results back", () => {
  const rows = 11, cols = 19;
  const { w, r } = layer(rows, cols, 21);
  const b = randomHessian(createRng(22), rows, 0.05);
  const order = permutation(createRng(23), rows);
  const permutedB = matrix64(rows, rows);
  for (let i = 0; i < rows; i++) {
    for (let k = 0; k < rows; k++) permutedB.data[i * rows + k] = b.data[order[i] * rows + order[k]];
  }
  const rowFactor = upperCholeskyOfInverse(permutedB);
  const base = {
    r,
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
  const { w, r } = layer(9, 20, 5);
  const base = {
    w,
    r,
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

/**
 * GPTQ as the paper writes it, in float64 with the whole `U = R⁻¹` (`upperCholeskyOfInverse`), column by column with
 * every update applied at once (no blocks, no `R`): `q = quant(w_j)`, `e = (w_j − q)/U_jj`, `W[:, j+1:] −= e·U[j, j+1:]`.
 * Dynamic groups are fitted on the weights as they stand at the start of the block holding the group's first column
 * (also on the group's columns past that block's end), the reference's choice, which the kernel's blocks reproduce.
 */
function textbookGptq(
  w: Matrix,
  h: Matrix<Float64Array>,
  bits: number,
  groupSize: number,
  blockSize: number,
): { codes: Uint8Array; energy: number } {
  const [rows, cols] = w.shape;
  const u = upperCholeskyOfInverse(h).data;
  const W = Float64Array.from(w.data), codes = new Uint8Array(rows * cols), maxq = 2 ** bits - 1;
  const scale = new Float64Array(rows), zero = new Float64Array(rows);
  let energy = 0, blockStart = W.slice();
  for (let j = 0; j < cols; j++) {
    if (j % blockSize === 0) blockStart = W.slice();
    if (j % groupSize === 0) {
      for (let i = 0; i < rows; i++) {
        const end = i * cols + Math.min(cols, j + groupSize);
        const p = fitUniformRow(Float32Array.from(blockStart.subarray(i * cols + j, end)), bits);
        scale[i] = p.scale, zero[i] = p.zero;
      }
    }
    for (let i = 0; i < rows; i++) {
      const x = W[i * cols + j];
      const c = Math.min(Math.max(Math.round(x / scale[i]) + zero[i], 0), maxq);
      codes[i * cols + j] = c;
      const e = (x - scale[i] * (c - zero[i])) / u[j * cols + j];
      energy += e * e;
      for (let k = j + 1; k < cols; k++) W[i * cols + k] -= e * u[j * cols + k];
    }
  }
  return { codes, energy };
}

Deno.test("gptqQuantize through R gives the codes of textbook GPTQ through U = R⁻¹ (float64, unblocked)", () => {
  // Groups inside blocks, as long as blocks, and reaching past a block's end (12 in 16, 64 across blocks of 32).
  const cases = [[4, 16, 32, 31], [3, 8, 16, 32], [2, 32, 32, 33], [3, 12, 16, 34], [4, 64, 32, 35]];
  for (const [bits, groupSize, blockSize, seed] of cases) {
    const rows = 24, cols = 96, rng = createRng(seed);
    const w = matrix(rows, cols, randomNormal(rng, rows * cols));
    const h = randomHessian(rng, cols, 0.01);
    const want = textbookGptq(w, h, bits, groupSize, blockSize);
    const got = gptqQuantize({
      w,
      r: reverseCholesky(h),
      grid: { kind: "uniform", bits },
      blockSize,
      groups: { kind: "dynamic", groupSize },
    });
    let same = 0;
    for (let t = 0; t < want.codes.length; t++) same += got.codes[t] === want.codes[t] ? 1 : 0;
    // float32 against float64: a rare near-tie may round the other way (and the feedback carries it along its row).
    ok(same >= 0.99 * want.codes.length, `${bits}-bit g${groupSize}: ${same} of ${want.codes.length} codes agree`);
    ok(Math.abs(got.errorEnergy! - want.energy) <= 1e-3 * want.energy, `Σ e² ${got.errorEnergy} vs ${want.energy}`);
  }
});
