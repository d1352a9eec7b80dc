/**
 * Grid fitting and rounding on the GPU (`Backend.fitGrid`, `Backend.quantizeGrid`), with the float32 operation order of
 * `core/grids/` (see `shaders/grid_wgsl.ts`).
 *
 * @module
 */

import { OptionError, ShapeError } from "../../core/errors.ts";
import { checkGrid, groupCount } from "../../core/grids/fit.ts";
import type { GridParams, GridSpec } from "../../core/grids/types.ts";
import { uniformMaxq } from "../../core/grids/uniform.ts";
import { assertFinite, type Matrix, matrix } from "../../core/tensor.ts";
import type { GpuContext } from "./context.ts";
import { fitGridWgsl, gridKey, gridVariant, quantizeGridWgsl } from "./shaders/grid_wgsl.ts";
import { grid1d } from "./shaders/util_wgsl.ts";

function checkGroupSize(groupSize: number): void {
  if (!Number.isInteger(groupSize) || groupSize < 0) {
    throw new OptionError(`group size must be a non-negative integer (0 = whole row), got ${groupSize}`);
  }
}

/** Fits `grid` per row and group of `groupSize` columns (0 = whole row) on the GPU. */
export async function gpuFitGrid(ctx: GpuContext, w: Matrix, grid: GridSpec, groupSize: number): Promise<GridParams> {
  checkGrid(grid);
  checkGroupSize(groupSize);
  assertFinite(w, "fitGrid weights");
  const [rows, cols] = w.shape;
  const groups = groupCount(cols, groupSize);
  const width = groupSize === 0 ? cols : groupSize;
  const n = rows * groups;
  if (n === 0) return { rows, groups, scale: new Float32Array(n), zero: new Float32Array(n) };
  const v = gridVariant(grid, ctx.fusedFma);
  const pipeline = ctx.pipeline(`fitGrid:${gridKey(v)}`, () => fitGridWgsl(v));
  const levels = grid.kind === "table" ? Float32Array.from(grid.levels) : new Float32Array(1);
  const wBuf = ctx.upload(w.data), out = ctx.buffer(2 * n * 4), lBuf = ctx.upload(levels);
  const params = ctx.uniform([
    rows,
    cols,
    Math.max(width, 1),
    groups,
    { f: grid.kind === "uniform" ? uniformMaxq(grid.bits) : 0 },
    levels.length,
    0,
    0,
  ]);
  try {
    const bytes = await ctx.batch().temp(params).dispatch(pipeline, [wBuf, out, lBuf, params], grid1d(n, 64)).read(
      out,
      2 * n * 4,
    );
    await ctx.checkErrors("fitGrid");
    const all = new Float32Array(bytes);
    return { rows, groups, scale: all.slice(0, n), zero: all.slice(n) };
  } finally {
    wBuf.destroy(), out.destroy(), lBuf.destroy();
  }
}

/** Rounds every weight to its group's grid on the GPU: packed codes and dequantized values. */
export async function gpuQuantizeGrid(
  ctx: GpuContext,
  w: Matrix,
  grid: GridSpec,
  params: GridParams,
  groupOfColumn: Int32Array,
): Promise<{ codes: Uint8Array; dequantized: Matrix }> {
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
  const total = rows * cols;
  if (total === 0) return { codes: new Uint8Array(0), dequantized: matrix(rows, cols) };
  const v = gridVariant(grid, ctx.fusedFma);
  const pipeline = ctx.pipeline(`quantizeGrid:${gridKey(v)}`, () => quantizeGridWgsl(v));
  const levels = grid.kind === "table" ? Float32Array.from(grid.levels) : new Float32Array(0);
  const aux = new Uint32Array(cols + levels.length);
  aux.set(groupOfColumn);
  aux.set(new Uint32Array(levels.buffer), cols);
  const sz = new Float32Array(2 * rows * groups);
  sz.set(scale), sz.set(zero, rows * groups);
  const words = Math.ceil(total / 4);
  const wBuf = ctx.upload(w.data), szBuf = ctx.upload(sz), auxBuf = ctx.upload(aux);
  const deq = ctx.buffer(total * 4), codes = ctx.buffer(words * 4);
  const u = ctx.uniform([
    rows,
    cols,
    groups,
    words,
    { f: grid.kind === "uniform" ? uniformMaxq(grid.bits) : 0 },
    levels.length,
    cols,
    0,
  ]);
  try {
    const batch = ctx.batch().temp(u).dispatch(pipeline, [wBuf, szBuf, auxBuf, deq, codes, u], grid1d(words));
    const [d, c] = await batch.readMany([{ buffer: deq, bytes: total * 4 }, { buffer: codes, bytes: total }]);
    await ctx.checkErrors("quantizeGrid");
    return { codes: new Uint8Array(c), dequantized: matrix(rows, cols, new Float32Array(d)) };
  } finally {
    for (const b of [wBuf, szBuf, auxBuf, deq, codes]) b.destroy();
  }
}
