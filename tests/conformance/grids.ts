/**
 * Conformance of the grid kernels `fitGrid` and `quantizeGrid` against the TS references in `core/grids/`: uniform grids
 * (asymmetric, symmetric, MSE; 2, 3, 4 and 8 bits; groups 0, 16 and 128 on odd column counts, so that last groups are
 * short) and table grids (NF4, FP4, FP8 E4M3 / E5M2, binary, ternary).
 *
 * Inputs include an all-zero row, rows of one sign, a row with an all-zero group, and rows whose values sit exactly on
 * rounding ties.
 *
 * What must agree, and the documented tolerances (`ts` = the backend's tolerance scale):
 * - uniform `fitGrid` without MSE: `scale` bit-exact when `ts = 1` (the GPTQ reference is a fixed sequence of float32
 *   operations, and WASM/CPU float32 arithmetic is correctly rounded), otherwise within `4·ts` ulps; `zero` equal, or off
 *   by one only where `−xmin/scale` is within that many ulps of a half-integer;
 * - uniform `fitGrid` with MSE: the error sum's order is the backend's, so a group may pick another candidate, but only
 *   one whose error `Σ|ŵ − w|^2.4` is within `1e-5·ts` (relative) of the reference's best, and in at most 1% of groups;
 * - table `fitGrid`: `scale` (an absolute maximum, no arithmetic) and `zero = 0` bit-exact;
 * - uniform `quantizeGrid` (given the reference's parameters): codes identical, including exact ties (half to even),
 *   when `ts = 1`; otherwise off by one only where `w/scale` is within `4·ts` ulps of a half-integer;
 * - table `quantizeGrid`: codes identical except where `w/scale` is within `ts` ulps of the midpoint of the two levels
 *   (midpoints of float32 levels are generally not float32 numbers, so a backend comparing in float32 may decide exact
 *   and near ties either way; the reference sends exact ties to the lower level);
 * - dequantized values: `scale·(q − zero)` or `scale·levels[q]` of the backend's own code, bit-exact when `ts = 1`,
 *   otherwise within `4·ts` ulps.
 *
 * @module
 */

import { AssertionError } from "node:assert/strict";
import { fitGrid, groupIndex, quantizeGrid } from "../../core/grids/fit.ts";
import { BINARY, FP4_E2M1, FP8_E4M3, FP8_E5M2, NF4, TERNARY } from "../../core/grids/tables.ts";
import type { GridParams, GridSpec, TableGrid, UniformGrid } from "../../core/grids/types.ts";
import {
  MSE_GRID,
  MSE_STEPS,
  uniformCandidate,
  uniformError,
  uniformMaxq,
  uniformRange,
  uniformValue,
} from "../../core/grids/uniform.ts";
import { createRng, randomNormal } from "../../core/random.ts";
import { type Matrix, matrix } from "../../core/tensor.ts";
import type { ConformanceCase, ConformanceContext } from "./case.ts";

const EPS = 2 ** -24;
const fround = Math.fround;

/** Column counts: odd, with a last group of 13/45 (301), a single column (129) and one short group (45). */
const COLS = [301, 129, 45];
const GROUP_SIZES = [0, 16, 128];
const UNIFORM_BITS = [2, 3, 4, 8];

/** Weights with the awkward rows first: zeros, one sign, a zero group, exact ties of a `bits`-bit grid; then random. */
function testWeights(seed: number, cols: number, bits: number): Matrix {
  const rng = createRng(seed);
  const rows = 10;
  const w = matrix(rows, cols, randomNormal(rng, rows * cols, 0.02));
  const row = (i: number) => w.data.subarray(i * cols, (i + 1) * cols);
  row(0).fill(0);
  row(1).forEach((v, j, r) => r[j] = Math.abs(v));
  row(2).forEach((v, j, r) => r[j] = -Math.abs(v) - 0.001);
  row(3).fill(0, 0, Math.min(16, cols));
  // Row 4: every 16-column block holds −1 and maxq − 1, so that each group (of 0, 16 or 128 columns) has scale 1 and
  // zero 1, and the other values are half-integers: exact ties of round(w/scale).
  const maxq = 2 ** bits - 1;
  row(4).forEach((_, j, r) => r[j] = j % 16 === 0 ? -1 : j % 16 === 1 ? maxq - 1 : (j % maxq) - 0.5);
  // Row 5: exact ties of the small tables (ternary 0|1 at 0.5, binary −1|1 at 0) with absmax 1 in every group.
  row(5).forEach((_, j, r) => r[j] = [1, 0.5, -0.5, 0, 0.25, -1, 0.75][j % 7]);
  // Outliers, as real weight rows have.
  for (let i = 6; i < rows; i++) row(i)[rng.int(cols)] *= 12;
  return w;
}

function fail(message: string): never {
  throw new AssertionError({ message });
}

/** Ulps allowed for float32 results: none for an exact backend. */
function ulpsFor(toleranceScale: number): number {
  return toleranceScale === 1 ? 0 : 4 * toleranceScale;
}

function checkShape(got: GridParams, want: GridParams, what: string): void {
  if (got.rows !== want.rows || got.groups !== want.groups || got.scale.length !== want.scale.length) {
    fail(`${what}: params ${got.rows}×${got.groups} (${got.scale.length}) vs ${want.rows}×${want.groups}`);
  }
  if (got.zero.length !== want.zero.length) fail(`${what}: ${got.zero.length} zeros, expected ${want.zero.length}`);
}

/**
 * Whether `t` is within `ulps` float32 ulps of a half-integer, where a backend whose float32 division is not correctly
 * rounded may round the other way. With `ulps = 0` nothing is: exact ties must go to the even integer, as in PyTorch.
 */
function nearTie(t: number, ulps: number): boolean {
  return ulps > 0 && Math.abs(Math.abs(t - Math.floor(t)) - 0.5) <= ulps * EPS * Math.abs(t);
}

/** The values of group `g` of row `i`. */
function groupValues(w: Matrix, i: number, g: number, groupSize: number): Float32Array {
  const cols = w.shape[1], width = groupSize || cols;
  return w.data.subarray(i * cols + g * width, i * cols + Math.min((g + 1) * width, cols));
}

async function checkUniformFit(ctx: ConformanceContext, grid: UniformGrid): Promise<void> {
  const ulps = ulpsFor(ctx.toleranceScale), maxq = uniformMaxq(grid.bits);
  for (const cols of COLS) {
    const w = testWeights(cols * 10 + grid.bits, cols, grid.bits);
    for (const groupSize of GROUP_SIZES) {
      const what = `fitGrid ${JSON.stringify(grid)} ${w.shape.join("×")} group ${groupSize}`;
      const want = fitGrid(w, grid, groupSize);
      const got = await ctx.backend.fitGrid(w, grid, groupSize);
      checkShape(got, want, what);
      let differing = 0;
      for (let k = 0; k < want.scale.length; k++) {
        const s = got.scale[k], z = got.zero[k], ws = want.scale[k], wz = want.zero[k];
        const i = Math.floor(k / want.groups), g = k % want.groups;
        const values = groupValues(w, i, g, groupSize);
        const scaleOk = Math.abs(s - ws) <= ulps * EPS * Math.abs(ws);
        if (grid.mse) {
          if (scaleOk && z === wz) continue;
          // Another of the 80 candidates: acceptable only if it is as good up to the rounding of the error sum.
          const range = uniformRange(values, grid.symmetric ?? false);
          const isCandidate = Array.from({ length: MSE_STEPS }, (_, c) => c).some((c) => {
            const cand = uniformCandidate(range, maxq, grid.symmetric ?? false, 1 - c / MSE_GRID);
            return cand.zero === z && Math.abs(cand.scale - s) <= ulps * EPS * Math.abs(cand.scale);
          });
          const best = uniformError(values, ws, wz, maxq), theirs = uniformError(values, s, z, maxq);
          if (!isCandidate || !(theirs <= best * (1 + 1e-5 * ctx.toleranceScale))) {
            fail(`${what} [${i}, ${g}]: scale ${s} zero ${z} (error ${theirs}) vs ${ws} ${wz} (error ${best})`);
          }
          differing++;
          continue;
        }
        if (!scaleOk) fail(`${what} [${i}, ${g}]: scale ${s} vs expected ${ws}`);
        if (z !== wz) {
          let xmin = 0;
          for (const v of values) xmin = Math.min(xmin, v);
          const t = fround(-xmin / ws);
          if (grid.symmetric || Math.abs(z - wz) !== 1 || !nearTie(t, ulps)) {
            fail(`${what} [${i}, ${g}]: zero ${z} vs expected ${wz}`);
          }
        }
      }
      if (differing > Math.max(1, 0.01 * want.scale.length)) {
        fail(`${what}: ${differing} of ${want.scale.length} groups chose another MSE candidate`);
      }
    }
  }
}

async function checkUniformQuantize(ctx: ConformanceContext, grid: UniformGrid): Promise<void> {
  const ulps = ulpsFor(ctx.toleranceScale), maxq = uniformMaxq(grid.bits);
  const rng = createRng(grid.bits);
  for (const cols of COLS) {
    const w = testWeights(cols * 10 + grid.bits, cols, grid.bits);
    for (const groupSize of GROUP_SIZES) {
      const params = fitGrid(w, grid, groupSize);
      const sequential = groupIndex(cols, groupSize);
      // Also a shuffled assignment (act-order with static groups), and shrunken scales so that many values clamp.
      const shuffled = Int32Array.from(sequential, () => rng.int(params.groups));
      const shrunk: GridParams = { ...params, scale: params.scale.map((s) => fround(s * 0.5)) };
      for (
        const [p, gi, label] of [[params, sequential, ""], [params, shuffled, " shuffled"], [
          shrunk,
          sequential,
          " clamped",
        ]] as const
      ) {
        const what = `quantizeGrid ${JSON.stringify(grid)} ${w.shape.join("×")} group ${groupSize}${label}`;
        const want = quantizeGrid(w, grid, p, gi);
        const got = await ctx.backend.quantizeGrid(w, grid, p, gi);
        checkQuantized(got, want, w, what, (k, code) => {
          const i = Math.floor(k / cols), g = i * p.groups + gi[k % cols];
          const s = p.scale[g], z = p.zero[g];
          const wc = want.codes[k];
          if (code !== wc) {
            const t = fround(w.data[k] / s);
            const tieOk = Math.abs(code - wc) === 1 && nearTie(t, ulps);
            if (!tieOk || code > maxq) {
              fail(`${what} [${i}, ${k % cols}]: code ${code} vs expected ${wc} (w/scale ${t})`);
            }
          }
          return uniformValue(code, s, z);
        }, ulps);
      }
    }
  }
}

/**
 * Shapes, then each code through `check` (which throws on a bad code and returns the value that code dequantizes to),
 * then the dequantized value against it.
 */
function checkQuantized(
  got: { codes: Uint8Array; dequantized: Matrix },
  want: { codes: Uint8Array; dequantized: Matrix },
  w: Matrix,
  what: string,
  check: (k: number, code: number) => number,
  ulps: number,
): void {
  const [rows, cols] = w.shape;
  if (got.codes.length !== rows * cols) fail(`${what}: ${got.codes.length} codes for ${rows}×${cols}`);
  if (got.dequantized.shape[0] !== rows || got.dequantized.shape[1] !== cols) {
    fail(`${what}: dequantized ${got.dequantized.shape.join("×")} for ${rows}×${cols}`);
  }
  if (want.codes.length !== rows * cols) fail(`${what}: reference returned ${want.codes.length} codes`);
  for (let k = 0; k < rows * cols; k++) {
    const value = check(k, got.codes[k]);
    const d = got.dequantized.data[k];
    if (!(Math.abs(d - value) <= ulps * EPS * Math.abs(value))) {
      fail(`${what} [${Math.floor(k / cols)}, ${k % cols}]: dequantized ${d} vs ${value} for code ${got.codes[k]}`);
    }
  }
}

const TABLES: TableGrid[] = [NF4, FP4_E2M1, FP8_E4M3, FP8_E5M2, BINARY, TERNARY];

async function checkTables(ctx: ConformanceContext, grid: TableGrid): Promise<void> {
  const ulps = ulpsFor(ctx.toleranceScale);
  const rng = createRng(grid.levels.length);
  for (const cols of COLS) {
    const w = testWeights(cols * 7 + grid.levels.length, cols, 4);
    for (const groupSize of [0, 16, 64, 128]) {
      const what = `${grid.name} ${w.shape.join("×")} group ${groupSize}`;
      const want = fitGrid(w, grid, groupSize);
      const got = await ctx.backend.fitGrid(w, grid, groupSize);
      checkShape(got, want, `fitGrid ${what}`);
      for (let k = 0; k < want.scale.length; k++) {
        if (got.scale[k] !== want.scale[k] || got.zero[k] !== 0) {
          fail(`fitGrid ${what} [${k}]: scale ${got.scale[k]} zero ${got.zero[k]} vs ${want.scale[k]} 0`);
        }
      }
      const sequential = groupIndex(cols, groupSize);
      const shuffled = Int32Array.from(sequential, () => rng.int(want.groups));
      for (const [gi, label] of [[sequential, ""], [shuffled, " shuffled"]] as const) {
        const ref = quantizeGrid(w, grid, want, gi);
        const out = await ctx.backend.quantizeGrid(w, grid, want, gi);
        const L = grid.levels;
        checkQuantized(out, ref, w, `quantizeGrid ${what}${label}`, (k, code) => {
          const s = want.scale[Math.floor(k / cols) * want.groups + gi[k % cols]];
          const wc = ref.codes[k];
          if (code !== wc) {
            // Allowed only when the two levels are equally near up to `max(1, ts)` ulps of w/scale.
            const t = fround(w.data[k] / s);
            const slack = Math.max(1, ctx.toleranceScale) * EPS * Math.max(Math.abs(t), Math.abs(L[wc]));
            if (!(code < L.length) || !(Math.abs(Math.abs(t - L[code]) - Math.abs(t - L[wc])) <= 2 * slack)) {
              fail(`quantizeGrid ${what}${label} [${k}]: code ${code} vs expected ${wc} (w/scale ${t})`);
            }
          }
          return fround(s * L[code]);
        }, ulps);
      }
    }
  }
}

const uniformGrids: UniformGrid[] = UNIFORM_BITS.flatMap((bits) => [
  { kind: "uniform", bits },
  { kind: "uniform", bits, symmetric: true },
  { kind: "uniform", bits, mse: true },
  { kind: "uniform", bits, symmetric: true, mse: true },
]);

function label(grid: GridSpec): string {
  if (grid.kind === "table") return grid.name;
  return `uniform ${grid.bits}-bit${grid.symmetric ? " sym" : ""}${grid.mse ? " mse" : ""}`;
}

/** The grid cases: one fit and one quantize case per uniform setting, one case per table. */
export const gridCases: ConformanceCase[] = [
  ...uniformGrids.map((grid): ConformanceCase => ({
    name: `fitGrid ${label(grid)}, groups 0/16/128`,
    run: (ctx) => checkUniformFit(ctx, grid),
  })),
  ...uniformGrids.filter((g) => !g.mse).map((grid): ConformanceCase => ({
    name: `quantizeGrid ${label(grid)}, groups 0/16/128, shuffled groups, clamping`,
    run: (ctx) => checkUniformQuantize(ctx, grid),
  })),
  ...TABLES.map((grid): ConformanceCase => ({
    name: `fitGrid + quantizeGrid ${label(grid)}, groups 0/16/64/128`,
    run: (ctx) => checkTables(ctx, grid),
  })),
];
