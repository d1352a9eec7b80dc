/**
 * Reference kernel of GPTQ's error-feedback loop (`Backend.gptqQuantize`), the reference `fasterquant` inner loops with
 * its lazy batch update carried through `R` (`H = R·Rᵀ`, `R` upper; GPTQ's `U` is `R⁻¹`) instead of `U`:
 *
 * ```
 * C = 0                                               feedback of finished blocks, in R's units: C = (W − Q)·R
 * for each block [i1, i2) of B columns:
 *   U_B = R[B, B]⁻¹                                   GPTQ's U on the block's diagonal (float64, rounded)
 *   S = W[:, B] + C[:, B]·U_B                         the block's weights as GPTQ's updates leave them at its start
 *                                                     (B extended to the end of the last group starting in the block)
 *   W1 = S                                            working copy of the block
 *   for column j = i1 + i:
 *     if dynamic groups and j % g == 0: fit the grid on S[:, j:j+g]   (block-start weights, as the reference)
 *     q = quant(W1[:, i]);  e = (W1[:, i] − q) / U_B[i, i];  energy += Σ e²
 *       (with a row factor V: q_r = quant(c_r) row by row, c = W1[:, i], c[r+1:] −= (c_r − q_r)/V[r, r] · V[r, r+1:])
 *     W1[:, i:] −= e ⊗ U_B[i, i:]                      error feedback inside the block, as the reference
 *   C[:, i2:] += (W[:, B] − Q[:, B]) · R[B, i2:]       lazy batch update of the rest
 * ```
 *
 * Why this is GPTQ: its updates give `W − Q = E·U` for the scaled errors `E`, so `E = (W − Q)·R`, and the weights
 * `W − E_{<i1}·U_{<i1,:}` that a block starts from equal `W + C·U_B` on its columns (`R·U = I` on the blocks above it).
 * Nothing needs the off-diagonal blocks of `U`, so no triangular inverse of `H`'s factor is formed.
 *
 * Storage is transposed (`Wt = Wᵀ`, `[cols, rows]`, rows in processing order: with act-order, row `k` is column
 * `permutation[k]` of W) so that a column of W, the unit the loop works on, is contiguous.
 * Everything is float32 as in the reference: `U_B` is computed in float64 from `R` as given and rounded, `R` is rounded
 * for the lazy update, and each feedback step is `fround(w − fround(e·u))`, a float32 product and difference, never
 * fused. The products with `U_B` and `R` sum their float32 products in float32 in ascending order from zero and add
 * the sum to `W` or `C` last: the order of a float32 gemm's micro-kernel (the WASM backend's plain-SIMD build gives the
 * same bits). It matters here more than in the reference's update of `W`, because `C` is large beside `C·U_B`.
 *
 * @module
 */

import type { GptqKernelArgs, GptqKernelResult } from "../backend.ts";
import { OptionError, ShapeError } from "../errors.ts";
import { checkGrid, groupCount } from "../grids/fit.ts";
import { nearestLevel } from "../grids/tables.ts";
import type { GridParams, GridSpec } from "../grids/types.ts";
import { fitUniformRow, uniformCode, uniformMaxq, uniformValue } from "../grids/uniform.ts";
import { type FloatArray, type Matrix, matrix } from "../tensor.ts";

const fround = Math.fround;

/**
 * GPTQ over a whole layer; see the module comment. Dequantized values and codes come back in `w`'s column order,
 * grid parameters in processing order.
 *
 * @throws {ShapeError} when `r` is not `[cols, cols]` or fixed parameters do not fit.
 * @throws {OptionError} on a bad grid, block size or group size.
 */
export function gptqQuantize(args: GptqKernelArgs): GptqKernelResult {
  const { w, r, grid, blockSize, groups, permutation, rowFactor, rowOrder } = args;
  const [rows, cols] = w.shape;
  checkFactor(r, cols);
  if (rowFactor && (rowFactor.shape[0] !== rows || rowFactor.shape[1] !== rows)) {
    throw new ShapeError(`gptq: the row factor is ${rowFactor.shape.join("×")} for ${rows} rows`);
  }
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new OptionError(`gptq: block size ${blockSize}`);
  checkGrid(grid);
  if (permutation) checkPermutation(permutation, cols);
  if (rowOrder) checkPermutation(rowOrder, rows, "row order", "rows");

  const dynamic = groups.kind === "dynamic";
  const groupSize = dynamic ? groups.groupSize : 0;
  const params: GridParams = dynamic
    ? {
      rows,
      groups: groupCount(cols, groupSize === 0 ? 0 : groupSize),
      scale: new Float32Array(rows * groupCount(cols, groupSize)),
      zero: new Float32Array(rows * groupCount(cols, groupSize)),
    }
    : groups.params;
  if (!dynamic) {
    if (params.rows !== rows || groups.groupOfColumn.length !== cols) {
      throw new ShapeError(
        `gptq: fixed grid parameters for ${params.rows} rows and ${groups.groupOfColumn.length} columns`,
      );
    }
  } else if (groupSize === 0) {
    throw new OptionError("gptq: dynamic groups need a group size ≥ 1 (fit per-row grids up front as fixed params)");
  }

  const R = r.data instanceof Float32Array ? r.data : new Float32Array(r.data);
  const Wt = columnsAsRows(w, permutation); // [cols, rows] in processing order, as given
  const Ct = new Float32Array(cols * rows); // [cols, rows] C = (W − Q)·R of the finished blocks
  const Qt = new Float32Array(cols * rows);
  const codesT = new Uint8Array(cols * rows);
  const scale = new Float32Array(rows), zero = new Float32Array(rows); // current group of every row
  const round = rounder(grid);
  const V = rowFactor && (rowFactor.data instanceof Float32Array ? rowFactor.data : new Float32Array(rowFactor.data));
  const target = new Float32Array(rows); // a column's values as its rows' rounding errors move them (row factor only)
  const sum = new Float32Array(rows); // scratch of the float32 products (addProduct32)
  let energy = 0;

  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, cols), count = i2 - i1;
    // A group that starts in the block may reach past its end: it is fitted on those columns' weights as they stand
    // at the block's start too, so S (and the U_B it takes) covers them.
    const ext = dynamic ? fitSpan(i1, i2, cols, groupSize) : count;
    // U_B over the span feeds the block start; the first block starts from W itself and needs U_B on the block only.
    const ldu = i1 === 0 ? count : ext;
    const U = gptqBlockInverse(r, i1, ldu); // [ldu, ldu]
    const start = blockStart(Wt, Ct, U, i1, ext, sum); // [ext, rows] S
    const W1 = start.slice(0, count * rows); // working copy
    const E = new Float32Array(count * rows); // [count, rows] scaled errors
    for (let i = 0; i < count; i++) {
      const j = i1 + i;
      if (dynamic) {
        if (j % groupSize === 0) {
          const g = j / groupSize, length = Math.min(groupSize, cols - j);
          for (let r = 0; r < rows; r++) {
            // Column values j..j+length of row r, from the block-start weights (not W1): the reference's choice.
            const p = fitGroup(grid, start, { offset: i * rows + r, length, stride: rows });
            scale[r] = params.scale[r * params.groups + g] = p.scale;
            zero[r] = params.zero[r * params.groups + g] = p.zero;
          }
        }
      } else {
        const g = groups.groupOfColumn[j];
        if (g < 0 || g >= params.groups) throw new OptionError(`gptq: column ${j} in group ${g} of ${params.groups}`);
        for (let r = 0; r < rows; r++) {
          scale[r] = params.scale[r * params.groups + g], zero[r] = params.zero[r * params.groups + g];
        }
      }
      const d = U[i * ldu + i];
      const col = i * rows;
      if (V) target.set(W1.subarray(col, col + rows));
      for (let s = 0; s < rows; s++) {
        const r = rowOrder ? rowOrder[s] : s;
        const x = W1[col + r];
        const code = round.code(V ? target[r] : x, scale[r], zero[r]);
        const q = round.value(code, scale[r], zero[r]);
        codesT[j * rows + r] = code;
        Qt[j * rows + r] = q;
        if (V) feedLaterRows(target, V, s, target[r] - q, rowOrder);
        // The column's error is measured from its value before the rows' feedback: the later columns' feedback through
        // U then carries the rows' share too (the Kronecker factors' updates are separable).
        const e = fround(fround(x - q) / d);
        E[col + r] = e;
        energy += e * e;
      }
      for (let k = i + 1; k < count; k++) {
        const uk = U[i * ldu + k];
        if (uk === 0) continue;
        const o = k * rows;
        for (let r = 0; r < rows; r++) W1[o + r] = fround(W1[o + r] - fround(E[col + r] * uk));
      }
    }
    if (i2 < cols) {
      // Ct[i2:, :] += R[i1:i2, i2:]ᵀ · (W − Q)[B]ᵀ
      const diff = new Float32Array(count * rows);
      for (let t = 0, o = i1 * rows; t < diff.length; t++) diff[t] = fround(Wt[o + t] - Qt[o + t]);
      for (let k = i2; k < cols; k++) addProduct32(Ct, k * rows, diff, count, sum, (i) => R[(i1 + i) * cols + k]);
    }
  }

  return {
    dequantized: matrix(rows, cols, rowsAsColumns(Qt, rows, cols, permutation, new Float32Array(rows * cols))),
    codes: rowsAsColumns(codesT, rows, cols, permutation, new Uint8Array(rows * cols)),
    params,
    errorEnergy: energy,
  };
}

/**
 * Columns from `i1` that a block `[i1, i2)` fits dynamic groups on: to the end of the last group starting in it (at
 * least the block itself).
 */
export function fitSpan(i1: number, i2: number, cols: number, groupSize: number): number {
  const last = Math.floor((i2 - 1) / groupSize) * groupSize; // the last group start at or before i2 − 1
  return Math.max(i2, last >= i1 ? Math.min(cols, last + groupSize) : i2) - i1;
}

/** Throws unless `r` is a `[cols, cols]` factor (`GptqKernelArgs.r`). */
export function checkFactor(r: Matrix<FloatArray>, cols: number): void {
  if (r.shape[0] !== cols || r.shape[1] !== cols || r.data.length !== cols * cols) {
    throw new ShapeError(`gptq: R is ${r.shape[0]}×${r.shape[1]} for ${cols} columns`);
  }
}

/**
 * GPTQ's `U` on the diagonal block `[i1, i1 + count)`: the inverse of `R`'s diagonal block (upper triangular), by back
 * substitution column by column in float64, rounded to float32. The TS and WASM kernels both take it from here, so
 * that their column loops see the same `U`. It costs `count³/6` multiply-adds: little for a block of 128 columns, but a
 * dynamic group much longer than a block makes the span ({@link fitSpan}), and so `count`, as long as the group.
 *
 * @returns `[count, count]` row-major, zero below the diagonal.
 */
export function gptqBlockInverse(r: Matrix<FloatArray>, i1: number, count: number): Float32Array {
  const n = r.shape[1], R = r.data;
  const x = new Float64Array(count * count), out = new Float32Array(count * count);
  for (let j = 0; j < count; j++) {
    x[j * count + j] = 1 / R[(i1 + j) * n + i1 + j];
    for (let i = j - 1; i >= 0; i--) {
      let s = 0;
      const row = (i1 + i) * n + i1;
      for (let k = i + 1; k <= j; k++) s += R[row + k] * x[k * count + j];
      x[i * count + j] = -s / R[row + i];
    }
  }
  for (let t = 0; t < out.length; t++) out[t] = x[t];
  return out;
}

/**
 * `S = W_B + C_B·U_B` in the transposed layout (`[count, rows]`): the block's weights as it starts. `sum` is
 * {@link addProduct32}'s scratch.
 */
function blockStart(
  Wt: Float32Array,
  Ct: Float32Array,
  U: Float32Array,
  i1: number,
  count: number,
  sum: Float32Array,
): Float32Array {
  const rows = sum.length;
  const v = Wt.slice(i1 * rows, (i1 + count) * rows);
  if (i1 === 0) return v; // nothing fed forward yet
  const c = Ct.subarray(i1 * rows, (i1 + count) * rows);
  for (let k = 0; k < count; k++) addProduct32(v, k * rows, c, k + 1, sum, (l) => U[l * count + k]);
  return v;
}

/**
 * `target[at : at + rows] += Σ_{i < terms} coefficient(i) · x[i·rows : (i + 1)·rows]` in float32: each row's products
 * summed from zero in ascending `i`, every product and sum rounded, then added to the target (see the module comment).
 * `sum` is a scratch row (`rows = sum.length`), reused across calls; its float32 storage rounds each partial sum.
 */
function addProduct32(
  target: Float32Array,
  at: number,
  x: Float32Array,
  terms: number,
  sum: Float32Array,
  coefficient: (i: number) => number,
): void {
  const rows = sum.length;
  sum.fill(0);
  for (let i = 0; i < terms; i++) {
    const a = coefficient(i);
    if (a === 0) continue; // adding a product of zero changes no float32 sum (−0 aside)
    for (let r = 0, o = i * rows; r < rows; r++) sum[r] += fround(a * x[o + r]);
  }
  for (let r = 0; r < rows; r++) target[at + r] = fround(target[at + r] + sum[r]);
}

/** Fits one group (a strided view of `values`) to `grid`. */
function fitGroup(
  grid: GridSpec,
  values: Float32Array,
  view: { offset: number; length: number; stride: number },
): { scale: number; zero: number } {
  if (grid.kind === "uniform") {
    return fitUniformRow(values, grid.bits, grid.symmetric ?? false, grid.mse ?? false, view);
  }
  let absmax = 0;
  for (let k = 0, i = view.offset; k < view.length; k++, i += view.stride) {
    absmax = Math.max(absmax, Math.abs(values[i]));
  }
  return { scale: absmax === 0 ? 1 : absmax, zero: 0 };
}

/** Code and value functions of a grid, with the grid's constants bound once. */
function rounder(grid: GridSpec): {
  code(x: number, scale: number, zero: number): number;
  value(code: number, scale: number, zero: number): number;
} {
  if (grid.kind === "uniform") {
    const maxq = uniformMaxq(grid.bits);
    return { code: (x, s, z) => uniformCode(x, s, z, maxq), value: uniformValue };
  }
  const levels = grid.levels;
  return { code: (x, s) => nearestLevel(levels, fround(x / s)), value: (c, s) => fround(s * levels[c]) };
}

/**
 * Coupled rows' feedback inside one column (float32 steps, as the kernel): the row rounded `s`-th leaves `error`
 * (its value minus its rounding), and every row rounded after it moves by `error/V[s, s] · V[s, k]`. `V` is the
 * `[rows, rows]` upper factor of the damped `B⁻¹` in processing order, `order[k]` the row rounded `k`-th (default `k`).
 */
export function feedLaterRows(
  target: Float32Array,
  V: Float32Array,
  s: number,
  error: number,
  order?: Int32Array,
): void {
  const rows = target.length, er = fround(fround(error) / V[s * rows + s]);
  for (let k = s + 1; k < rows; k++) {
    const t = order ? order[k] : k;
    target[t] = fround(target[t] - fround(er * V[s * rows + k]));
  }
}

/**
 * Throws unless `perm` is a permutation of `0..cols−1` (`GptqKernelArgs.permutation`).
 * @throws {ShapeError} for a wrong length; {OptionError} for an index out of range or repeated.
 */
export function checkPermutation(perm: Int32Array, cols: number, what = "permutation", unit = "columns"): void {
  if (perm.length !== cols) throw new ShapeError(`gptq: ${what} of length ${perm.length} for ${cols} ${unit}`);
  const seen = new Uint8Array(cols);
  for (let k = 0; k < cols; k++) {
    const c = perm[k];
    if (!(c >= 0 && c < cols) || seen[c]) {
      throw new OptionError(`gptq: ${what}[${k}] = ${c} is ${seen[c] ? "repeated" : "out of range"}`);
    }
    seen[c] = 1;
  }
}

/** `[cols, rows]`: row `k` is column `perm[k]` of `w` (column `k` without a permutation). */
function columnsAsRows(w: Matrix, perm: Int32Array | undefined): Float32Array {
  const [rows, cols] = w.shape;
  const out = new Float32Array(cols * rows);
  // 32 columns at a time, so that the reads of a row and the writes of the 32 output rows stay in cache.
  for (let k0 = 0; k0 < cols; k0 += 32) {
    const k1 = Math.min(k0 + 32, cols);
    for (let r = 0; r < rows; r++) {
      for (let k = k0; k < k1; k++) out[k * rows + r] = w.data[r * cols + (perm ? perm[k] : k)];
    }
  }
  return out;
}

/** The inverse of {@link columnsAsRows}: `out[r][perm[k]] = t[k][r]`, into `out` (`[rows, cols]`). */
function rowsAsColumns<A extends Float32Array | Uint8Array>(
  t: A,
  rows: number,
  cols: number,
  perm: Int32Array | undefined,
  out: A,
): A {
  for (let k0 = 0; k0 < cols; k0 += 32) {
    const k1 = Math.min(k0 + 32, cols);
    for (let r = 0; r < rows; r++) {
      for (let k = k0; k < k1; k++) out[r * cols + (perm ? perm[k] : k)] = t[k * rows + r];
    }
  }
  return out;
}
