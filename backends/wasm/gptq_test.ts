/**
 * The WASM GPTQ kernel against the reference `core/quant/gptq_kernel.ts` (until the conformance suite's GPTQ part
 * lands): bit-identical within one block (with and without a permutation) (no lazy update, where the only difference, float32 versus float64
 * accumulation of the batch update, cannot arise), and nearly identical over several blocks.
 *
 * @module
 */

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import type { GptqKernelArgs } from "../../core/backend.ts";
import { OptionError, ShapeError } from "../../core/errors.ts";
import { fitGrid } from "../../core/grids/fit.ts";
import { NF4 } from "../../core/grids/tables.ts";
import type { GridSpec } from "../../core/grids/types.ts";
import { gptqQuantize } from "../../core/quant/gptq_kernel.ts";
import { reverseCholesky } from "../../core/linalg/cholesky.ts";
import { createRng, permutation, randomNormal } from "../../core/random.ts";
import { matrix, matrix64, toFloat32 } from "../../core/tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { wasmTest } from "./testing.ts";
import { gptq } from "../../algorithms/gptq.ts";
import { hessianOf } from "../../algorithms/hessian.ts";
import { correlatedInputs, randomHessian } from "../../tests/numeric.ts";

/** A random layer and the factor R of a random well-conditioned Hessian. */
function layer(rows: number, cols: number, seed: number) {
  const rng = createRng(seed);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols));
  return { w, r: reverseCholesky(randomHessian(rng, cols, 0.01)) };
}

const GRIDS: GridSpec[] = [
  { kind: "uniform", bits: 4 },
  { kind: "uniform", bits: 3, symmetric: true },
  { kind: "uniform", bits: 2, mse: true },
  NF4,
];

for (const threads of [1, 2]) {
  wasmTest(`wasm gptqQuantize matches the reference (${threads} thread${threads > 1 ? "s" : ""})`, async (wasm) => {
    for (const grid of GRIDS) {
      // One block (cols ≤ blockSize): bit-identical, dynamic and fixed groups.
      const one = layer(37, 24, 5), odd = layer(37, 25, 7), tall = layer(150, 20, 11);
      const perRow = fitGrid(one.w, grid, 0);
      const cases: GptqKernelArgs[] = [
        { ...one, grid, blockSize: 32, groups: { kind: "dynamic", groupSize: 8 } },
        { ...one, grid, blockSize: 32, groups: { kind: "dynamic", groupSize: 7 } },
        {
          ...one,
          grid,
          blockSize: 24,
          groups: { kind: "fixed", params: perRow, groupOfColumn: new Int32Array(24) },
        },
        // A float32 R (the float32 factorisation's), used as it is (a float64 one is rounded first); 25 columns,
        // so that the rows of R are not whole vectors.
        { ...odd, r: toFloat32(odd.r), grid, blockSize: 32, groups: { kind: "dynamic", groupSize: 8 } },
        // 150 rows: three chunks of rows, the last one partial, each a thread's share.
        {
          ...tall,
          permutation: permutation(createRng(12), 20),
          grid,
          blockSize: 32,
          groups: { kind: "dynamic", groupSize: 8 },
        },
        // W read through a permutation (act-order), 24 and 25 columns: whole and partial column tiles.
        {
          ...one,
          permutation: permutation(createRng(8), 24),
          grid,
          blockSize: 32,
          groups: { kind: "dynamic", groupSize: 8 },
        },
        {
          ...odd,
          permutation: permutation(createRng(9), 25),
          grid,
          blockSize: 32,
          groups: { kind: "fixed", params: fitGrid(odd.w, grid, 0), groupOfColumn: new Int32Array(25) },
        },
      ];
      for (const args of cases) {
        const got = await wasm.gptqQuantize(args);
        const want = gptqQuantize(args);
        deepStrictEqual(got.codes, want.codes, `${grid.kind} codes`);
        deepStrictEqual(got.dequantized.data, want.dequantized.data, `${grid.kind} values`);
        deepStrictEqual(got.params.scale, want.params.scale);
        deepStrictEqual(got.params.zero, want.params.zero);
        deepStrictEqual(got.errorEnergy, want.errorEnergy, `${grid.kind} Σ e²`);
      }
      // Several blocks, group boundaries inside blocks: the lazy update accumulates in float32 here.
      const many = layer(45, 70, 6);
      const args: GptqKernelArgs = {
        ...many,
        permutation: permutation(createRng(10), 70),
        grid,
        blockSize: 16,
        groups: { kind: "dynamic", groupSize: 12 },
      };
      const got = await wasm.gptqQuantize(args);
      const want = gptqQuantize(args);
      let same = 0;
      for (let i = 0; i < want.codes.length; i++) same += got.codes[i] === want.codes[i] ? 1 : 0;
      ok(same >= 0.99 * want.codes.length, `${grid.kind}: ${same} of ${want.codes.length} codes agree`);
      assertClose(got.params.scale, want.params.scale, { atol: 1e-4, rtol: 1e-3 }, "scales");
    }
  }, { threads, parallelThreshold: 0 });
}

wasmTest("wasm gptqQuantize rejects bad arguments as the reference does", async (wasm) => {
  const { w, r } = layer(4, 6, 1);
  const grid: GridSpec = { kind: "uniform", bits: 4 };
  await rejects(
    wasm.gptqQuantize({ w, r: matrix64(5, 5), grid, blockSize: 4, groups: { kind: "dynamic", groupSize: 2 } }),
    ShapeError,
  );
  await rejects(
    wasm.gptqQuantize({ w, r, grid, blockSize: 0, groups: { kind: "dynamic", groupSize: 2 } }),
    OptionError,
  );
  await rejects(
    wasm.gptqQuantize({ w, r, grid, blockSize: 4, groups: { kind: "dynamic", groupSize: 0 } }),
    OptionError,
  );
  await rejects(
    wasm.gptqQuantize({
      w,
      r,
      grid: { kind: "uniform", bits: 9 },
      blockSize: 4,
      groups: { kind: "dynamic", groupSize: 2 },
    }),
    OptionError,
  );
  const dynamic = { kind: "dynamic", groupSize: 2 } as const;
  await rejects(
    wasm.gptqQuantize({ w, r, grid, blockSize: 4, groups: dynamic, permutation: Int32Array.of(0, 1, 2) }),
    ShapeError,
  );
  await rejects(
    wasm.gptqQuantize({ w, r, grid, blockSize: 4, groups: dynamic, permutation: Int32Array.of(0, 1, 2, 3, 4, 4) }),
    /permutation\[5\] = 4 is repeated/,
  );
}, { threads: 1 });

wasmTest(
  "gptq with factorPrecision f32 on wasm: the float64 result to float32 accuracy (few codes differ, same loss)",
  async (wasm) => {
    // 300 columns: three of the float32 path's 120-column blocks, with act-order and correlated inputs.
    const rows = 64, cols = 300;
    const w = matrix(rows, cols, randomNormal(createRng(31), rows * cols, 0.1));
    const h = await hessianOf(correlatedInputs(1200, cols, 32));
    const options = { bits: 3, groupSize: 32, actOrder: true, backend: wasm } as const;
    const f64 = await gptq(w, h, options);
    const f32 = await gptq(w, h, { ...options, factorPrecision: "f32" });
    let differ = 0;
    for (let i = 0; i < rows * cols; i++) if (f64.codes![i] !== f32.codes![i]) differ++;
    ok(differ < 0.01 * rows * cols, `${differ} of ${rows * cols} codes differ`);
    assertClose([f32.stats.layerLoss], [f64.stats.layerLoss], { rtol: 1e-3, atol: 0 }, "layer loss");
  },
);

wasmTest(
  "gptq on wasm leaves the caller's weights and Hessian unchanged, with and without dead columns",
  async (wasm) => {
    const rows = 40, cols = 48;
    const w = matrix(rows, cols, randomNormal(createRng(13), rows * cols, 0.1));
    const h = await hessianOf(correlatedInputs(200, cols, 14));
    const dead = matrix64(cols, cols, Float64Array.from(h.data));
    for (let k = 0; k < cols; k++) dead.data[5 * cols + k] = dead.data[k * cols + 5] = 0; // column 5 never active
    for (const hessian of [h, dead]) {
      for (const factorPrecision of ["f64", "f32"] as const) {
        const [w0, h0] = [w.data.slice(), hessian.data.slice()];
        await gptq(w, hessian, { bits: 3, groupSize: 16, actOrder: true, factorPrecision, backend: wasm });
        deepStrictEqual(w.data, w0, "weights");
        deepStrictEqual(hessian.data, h0, "Hessian");
      }
    }
  },
);

for (const threads of [1, 2]) {
  wasmTest(
    `wasm gptqQuantize, plain SIMD, equals the reference to the bit over many blocks (${threads} thread${
      threads > 1 ? "s" : ""
    })`,
    async (wasm) => {
      // The block starts W + C·U_B and the lazy updates C += (W − Q)·R are float32 gemms here; the reference sums their
      // products in the same order (relaxed SIMD fuses them, so only the plain build can match it bit for bit).
      for (const grid of GRIDS) {
        const many = layer(45, 200, 16);
        for (const groups of [{ kind: "dynamic", groupSize: 12 }, { kind: "dynamic", groupSize: 32 }] as const) {
          const args: GptqKernelArgs = {
            ...many,
            permutation: permutation(createRng(17), 200),
            grid,
            blockSize: 32,
            groups,
          };
          const got = await wasm.gptqQuantize(args), want = gptqQuantize(args);
          deepStrictEqual(got.codes, want.codes, `${grid.kind} codes, groups of ${groups.groupSize}`);
          deepStrictEqual(got.dequantized.data, want.dequantized.data, `${grid.kind} values`);
          deepStrictEqual(got.params.scale, want.params.scale);
          deepStrictEqual(got.errorEnergy, want.errorEnergy, `${grid.kind} Σ e²`);
        }
      }
    },
    { threads, parallelThreshold: 0, relaxed: false },
  );
}
