/**
 * TS references of the backend kernels `fitGrid` and `quantizeGrid` (see `core/backend.ts`): per-row, per-group grid
 * fitting and rounding for every {@link GridSpec}. Groups are runs of `groupSize` consecutive columns of a row
 * (`0` = the whole row), the last one possibly shorter.
 *
 * @module
 */

import { OptionError, ShapeError } from "../errors.ts";
import { assertFinite, type Matrix, matrix } from "../tensor.ts";
import { nearestLevel } from "./tables.ts";
import type { GridParams, GridSpec } from "./types.ts";
import { fitUniformRow, uniformCode, uniformMaxq, uniformValue } from "./uniform.ts";

const fround = Math.fround;

/**
 * Number of groups of a row of `cols` columns: 1 for `groupSize = 0`.
 *
 * @throws {OptionError} on a bad group size.
 */
export function groupCount(cols: number, groupSize: number): number {
  checkGroupSize(groupSize);
  return groupSize === 0 ? 1 : Math.ceil(cols / groupSize);
}

/**
 * The group of each column: `j → floor(j / groupSize)` (all 0 for `groupSize = 0`), the `groupOfColumn` argument of
 * {@link quantizeGrid} for groups fitted by {@link fitGrid}.
 *
 * @throws {OptionError} unless `groupSize` is a non-negative integer.
 * @example
 * ```ts
 * import { groupIndex } from "./fit.ts";
 * console.assert(groupIndex(5, 2).join() === "0,0,1,1,2");
 * ```
 */
export function groupIndex(cols: number, groupSize: number): Int32Array {
  checkGroupSize(groupSize);
  const g = new Int32Array(cols);
  if (groupSize > 0) { for (let j = 0; j < cols; j++) g[j] = Math.floor(j / groupSize); }
  return g;
}

function checkGroupSize(groupSize: number): void {
  if (!Number.isInteger(groupSize) || groupSize < 0) {
    throw new OptionError(`group size must be a non-negative integer (0 = whole row), got ${groupSize}`);
  }
}

/**
 * Checks a grid description.
 *
 * @throws {OptionError} on bits outside 1..8 or a table that is not 2..256 levels.
 */
export function checkGrid(grid: GridSpec): void {
  if (grid.kind === "uniform") {
    uniformMaxq(grid.bits);
  } else if (grid.kind === "table") {
    const n = grid.levels.length;
    if (n < 2 || n > 256) throw new OptionError(`table grid ${grid.name} has ${n} levels, expected 2..256`);
  } else {
    throw new OptionError(`unknown grid kind ${(grid as { kind: unknown }).kind}`);
  }
}

/**
 * Fits `grid` to every row and group of `w`.
 *
 * - uniform: GPTQ's `find_params` on the group's values ({@link fitUniformRow}: min-max, symmetric, MSE);
 * - table: `scale` = the group's absolute maximum (1 when the group is all zeros), `zero` = 0.
 *
 * @param w `[rows, cols]` weights.
 * @param groupSize columns per group; 0 = one group per row.
 * @returns `[rows, groups]` parameters.
 * @throws {OptionError} on a bad grid or group size.
 * @throws {NonFiniteError} on NaN or infinite weights.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { fitGrid } from "./fit.ts";
 * const p = fitGrid(fromRows([[-1, 0.5, 2]]), { kind: "uniform", bits: 2 }, 0);
 * console.assert(p.scale[0] === 1 && p.zero[0] === 1);
 * ```
 */
export function fitGrid(w: Matrix, grid: GridSpec, groupSize: number): GridParams {
  checkGrid(grid);
  assertFinite(w, "fitGrid weights");
  const [rows, cols] = w.shape;
  const groups = groupCount(cols, groupSize);
  const width = groupSize === 0 ? cols : groupSize;
  const scale = new Float32Array(rows * groups), zero = new Float32Array(rows * groups);
  for (let i = 0; i < rows; i++) {
    for (let g = 0; g < groups; g++) {
      const offset = i * cols + g * width, length = Math.min(width, cols - g * width);
      if (grid.kind === "uniform") {
        const p = fitUniformRow(w.data, grid.bits, grid.symmetric ?? false, grid.mse ?? false, { offset, length });
        scale[i * groups + g] = p.scale;
        zero[i * groups + g] = p.zero;
      } else {
        let absmax = 0;
        for (let k = offset; k < offset + length; k++) absmax = Math.max(absmax, Math.abs(w.data[k]));
        scale[i * groups + g] = absmax === 0 ? 1 : absmax;
      }
    }
  }
  return { rows, groups, scale, zero };
}

/**
 * Rounds every weight to its group's grid. Column `j` of row `i` uses parameters `(i, groupOfColumn[j])`.
 *
 * - uniform: `q = clamp(round(w / scale) + zero, 0, 2^bits − 1)` (half to even), `ŵ = scale · (q − zero)`;
 * - table: `q = nearestLevel(levels, w / scale)` (ties to the lower level), `ŵ = scale · levels[q]`;
 *
 * each operation in float32.
 *
 * @param w `[rows, cols]` weights.
 * @param params `[rows, groups]` parameters, from {@link fitGrid} or elsewhere.
 * @param groupOfColumn `cols` group indices, each in `[0, groups)`.
 * @returns `codes` (`rows · cols`, row-major) and the `[rows, cols]` dequantized weights.
 * @throws {ShapeError} when `params` or `groupOfColumn` do not fit `w`.
 * @throws {OptionError} on a bad grid or a group index out of range.
 */
export function quantizeGrid(
  w: Matrix,
  grid: GridSpec,
  params: GridParams,
  groupOfColumn: Int32Array,
): { codes: Uint8Array; dequantized: Matrix } {
  checkGrid(grid);
  const [rows, cols] = w.shape;
  const { groups, scale, zero } = params;
  if (params.rows !== rows || scale.length !== rows * groups || zero.length !== rows * groups) {
    throw new ShapeError(`grid params for ${params.rows}×${groups} groups do not fit ${rows}×${cols} weights`);
  }
  if (groupOfColumn.length !== cols) {
    throw new ShapeError(`groupOfColumn has ${groupOfColumn.length} entries for ${cols} columns`);
  }
  for (let j = 0; j < cols; j++) {
    const g = groupOfColumn[j];
    if (g < 0 || g >= groups) throw new OptionError(`column ${j} is in group ${g}, outside 0..${groups - 1}`);
  }
  const codes = new Uint8Array(rows * cols);
  const out = matrix(rows, cols);
  const W = w.data, D = out.data;
  if (grid.kind === "uniform") {
    const maxq = uniformMaxq(grid.bits);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const p = i * groups + groupOfColumn[j], k = i * cols + j;
        const s = scale[p], z = zero[p];
        const q = uniformCode(W[k], s, z, maxq);
        codes[k] = q;
        D[k] = uniformValue(q, s, z);
      }
    }
  } else {
    const levels = grid.levels;
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const s = scale[i * groups + groupOfColumn[j]], k = i * cols + j;
        const q = nearestLevel(levels, fround(W[k] / s));
        codes[k] = q;
        D[k] = fround(s * levels[q]);
      }
    }
  }
  return { codes, dequantized: out };
}
