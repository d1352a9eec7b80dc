import assert from "node:assert/strict";
import { NonFiniteError, OptionError, ShapeError } from "../errors.ts";
import { createRng, randomNormal } from "../random.ts";
import { fromRows, matrix } from "../tensor.ts";
import { checkGrid, fitGrid, groupCount, groupIndex, quantizeGrid } from "./fit.ts";
import { BINARY, FP4_E2M1, FP8_E4M3, nearestLevel, NF4, TERNARY } from "./tables.ts";
import type { GridSpec, TableGrid, UniformGrid } from "./types.ts";
import { fitUniformRow, quantizeUniform } from "./uniform.ts";

function randomMatrix(seed: number, rows: number, cols: number) {
  const rng = createRng(seed);
  const m = matrix(rows, cols, randomNormal(rng, rows * cols, 0.05));
  for (let k = 0; k < rows; k++) m.data[rng.int(rows * cols)] *= 10; // outliers
  return m;
}

Deno.test("groupIndex and groupCount", () => {
  assert.deepEqual([...groupIndex(5, 2)], [0, 0, 1, 1, 2]);
  assert.deepEqual([...groupIndex(4, 0)], [0, 0, 0, 0]);
  assert.deepEqual([...groupIndex(3, 128)], [0, 0, 0]);
  assert.equal(groupIndex(0, 4).length, 0);
  assert.deepEqual([groupCount(37, 16), groupCount(32, 16), groupCount(37, 0), groupCount(3, 128)], [3, 2, 1, 1]);
  for (const g of [-1, 1.5, NaN]) {
    assert.throws(() => groupIndex(4, g), OptionError);
    assert.throws(() => groupCount(4, g), OptionError);
  }
});

Deno.test("fitGrid uniform: each group (short last one included) fitted as its own row", () => {
  const w = randomMatrix(1, 5, 37);
  const [rows, cols] = w.shape;
  for (
    const grid of [
      { kind: "uniform", bits: 4 },
      { kind: "uniform", bits: 3, symmetric: true },
      { kind: "uniform", bits: 2, mse: true },
    ] satisfies UniformGrid[]
  ) {
    for (const groupSize of [0, 16, 37, 64, 1]) {
      const p = fitGrid(w, grid, groupSize);
      const groups = groupSize === 0 ? 1 : Math.ceil(cols / groupSize);
      assert.equal(p.rows, rows);
      assert.equal(p.groups, groups);
      const width = groupSize || cols;
      for (let i = 0; i < rows; i++) {
        for (let g = 0; g < groups; g++) {
          const slice = w.data.slice(i * cols + g * width, i * cols + Math.min((g + 1) * width, cols));
          if (groupSize === 16 && g === 2) assert.equal(slice.length, 5);
          const want = fitUniformRow(slice, grid.bits, grid.symmetric ?? false, grid.mse ?? false);
          assert.equal(p.scale[i * groups + g], want.scale);
          assert.equal(p.zero[i * groups + g], want.zero);
        }
      }
    }
  }
});

Deno.test("fitGrid table: scale = group absmax (1 for an all-zero group), zero = 0", () => {
  const w = fromRows([
    [0.5, -2, 1, 0, 0, 0, 3],
    [0, 0, 0, 0, 0, 0, -0.25],
  ]);
  const p = fitGrid(w, NF4, 3);
  assert.equal(p.groups, 3);
  assert.deepEqual([...p.scale], [2, 0, 3, 0, 0, 0.25].map((v) => v || 1));
  assert.deepEqual([...p.zero], [0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...fitGrid(w, BINARY, 0).scale], [3, 0.25]);
});

Deno.test("quantizeGrid uniform: element-wise quantize, error ≤ scale/2 in range, codes round-trip", () => {
  const w = randomMatrix(2, 6, 45);
  const [rows, cols] = w.shape;
  for (const bits of [1, 2, 3, 4, 8]) {
    for (const [symmetric, mse] of [[false, false], [true, false], [false, true]]) {
      const grid: UniformGrid = { kind: "uniform", bits, symmetric, mse };
      const maxq = 2 ** bits - 1;
      const gi = groupIndex(cols, 16);
      const p = fitGrid(w, grid, 16);
      const { codes, dequantized } = quantizeGrid(w, grid, p, gi);
      assert.deepEqual(dequantized.shape, [rows, cols]);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          const k = i * cols + j, s = p.scale[i * p.groups + gi[j]], z = p.zero[i * p.groups + gi[j]];
          const want = quantizeUniform(w.data[k], s, z, maxq);
          assert.equal(codes[k], want.code);
          assert.equal(dequantized.data[k], want.value);
          const x = w.data[k];
          if (!mse && x >= s * -z && x <= s * (maxq - z)) {
            const e = Math.abs(dequantized.data[k] - x);
            // Float32 rounding of x/s and of the product can add an ulp at exact ties.
            assert.ok(
              e <= s / 2 + 2 ** -22 * Math.abs(x),
              `bits ${bits} sym ${symmetric} x ${x} s ${s} z ${z} e ${e} q ${codes[k]}`,
            );
          }
        }
      }
      // The dequantized weights are on the grid: quantizing them again gives the same codes and values.
      const again = quantizeGrid(dequantized, grid, p, gi);
      assert.deepEqual(again.codes, codes);
      assert.deepEqual(again.dequantized.data, dequantized.data);
    }
  }
});

Deno.test("quantizeGrid table: nearest level of w/scale, codes round-trip", () => {
  const w = randomMatrix(3, 7, 33);
  const [rows, cols] = w.shape;
  for (const grid of [NF4, FP4_E2M1, FP8_E4M3, BINARY, TERNARY] satisfies TableGrid[]) {
    for (const groupSize of [0, 8]) {
      const gi = groupIndex(cols, groupSize);
      const p = fitGrid(w, grid, groupSize);
      const { codes, dequantized } = quantizeGrid(w, grid, p, gi);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          const k = i * cols + j, s = p.scale[i * p.groups + gi[j]];
          const t = Math.fround(w.data[k] / s);
          assert.ok(t >= -1 && t <= 1);
          // Linear scan for the nearest level.
          let best = 0;
          for (let l = 1; l < grid.levels.length; l++) {
            if (Math.abs(t - grid.levels[l]) < Math.abs(t - grid.levels[best])) best = l;
          }
          assert.equal(codes[k], best);
          assert.equal(dequantized.data[k], Math.fround(s * grid.levels[best]));
        }
      }
      // The group maximum lands on ±1 exactly.
      for (let i = 0; i < rows; i++) {
        let amax = 0, at = 0;
        for (let j = 0; j < cols; j++) {
          if (Math.abs(w.data[i * cols + j]) > amax) amax = Math.abs(w.data[i * cols + j]), at = j;
        }
        if (groupSize === 0) assert.equal(Math.abs(dequantized.data[i * cols + at]), amax);
      }
      const again = quantizeGrid(dequantized, grid, p, gi);
      assert.deepEqual(again.codes, codes);
    }
  }
  assert.equal(nearestLevel(BINARY.levels, 0), 0);
});

Deno.test("quantizeGrid: arbitrary groupOfColumn (act-order style) uses that group's parameters", () => {
  const w = randomMatrix(4, 3, 10);
  const grid: GridSpec = { kind: "uniform", bits: 3 };
  const p = fitGrid(w, grid, 4); // 3 groups
  const gi = Int32Array.from([2, 0, 1, 1, 0, 2, 2, 0, 1, 0]);
  const { codes } = quantizeGrid(w, grid, p, gi);
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 10; j++) {
      const g = i * 3 + gi[j];
      assert.equal(codes[i * 10 + j], quantizeUniform(w.data[i * 10 + j], p.scale[g], p.zero[g], 7).code);
    }
  }
});

Deno.test("fitGrid / quantizeGrid reject bad arguments", () => {
  const w = randomMatrix(5, 2, 6);
  const u: GridSpec = { kind: "uniform", bits: 4 };
  assert.throws(() => fitGrid(w, { kind: "uniform", bits: 9 }, 0), OptionError);
  assert.throws(() => fitGrid(w, u, -1), OptionError);
  assert.throws(() => fitGrid(matrix(1, 2, new Float32Array([1, NaN])), u, 0), NonFiniteError);
  assert.throws(() => checkGrid({ kind: "table", name: "x", levels: new Float32Array(1), bits: 0 }), OptionError);
  const p = fitGrid(w, u, 3);
  assert.throws(() => quantizeGrid(w, u, p, groupIndex(5, 3)), ShapeError);
  assert.throws(() => quantizeGrid(w, u, fitGrid(randomMatrix(6, 3, 6), u, 3), groupIndex(6, 3)), ShapeError);
  assert.throws(() => quantizeGrid(w, u, p, Int32Array.from([0, 0, 0, 1, 1, 2])), OptionError);
  assert.throws(() => quantizeGrid(w, u, p, Int32Array.from([0, 0, 0, 1, 1, -1])), OptionError);
});

Deno.test("fitGrid on an empty or all-zero matrix", () => {
  const z = matrix(2, 5);
  const p = fitGrid(z, { kind: "uniform", bits: 4 }, 0);
  assert.deepEqual([...p.scale], [Math.fround(2 / 15), Math.fround(2 / 15)]);
  const q = quantizeGrid(z, { kind: "uniform", bits: 4 }, p, groupIndex(5, 0));
  assert.ok(q.dequantized.data.every((v) => v === 0));
  const e = fitGrid(matrix(0, 4), NF4, 2);
  assert.deepEqual([e.rows, e.groups, e.scale.length], [0, 2, 0]);
});
