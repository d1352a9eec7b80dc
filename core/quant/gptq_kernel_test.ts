import { deepStrictEqual, throws } from "node:assert/strict";
import { OptionError, ShapeError } from "../errors.ts";
import { upperCholeskyOfInverse } from "../linalg/cholesky.ts";
import { createRng, permutation, randomNormal } from "../random.ts";
import { invertPermutation, matrix, matrix64, permuteColumns } from "../tensor.ts";
import { checkPermutation, gptqQuantize } from "./gptq_kernel.ts";

/** A random layer and the U factor of `XᵀX/n + 0.01·I` for random `X`. */
function layer(rows: number, cols: number, seed: number) {
  const rng = createRng(seed);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  const n = 2 * cols, x = randomNormal(rng, n * cols);
  const h = matrix64(cols, cols);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) h.data[i * cols + j] += x[t * cols + i] * x[t * cols + j] / n;
    }
  }
  for (let i = 0; i < cols; i++) h.data[i * cols + i] += 0.01;
  return { w, u: upperCholeskyOfInverse(h) };
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
