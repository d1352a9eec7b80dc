/**
 * GPU-resident GPTQ.
 *
 * - {@link gpuGptqQuantize} is `Backend.gptqQuantize`: the layer and `R` are uploaded once, `U = R⁻¹` is formed on the
 *   GPU (one triangular solve against the identity: the GPU loop runs the reference's lazy update through `U`), every
 *   block's column loop and lazy update is recorded into one command buffer (one submit), and the dequantized
 *   weights, packed codes and fitted parameters come back with one read-back.
 * - {@link gpuGptqFromHessian} runs all of `algorithms/gptq.ts` on the GPU, from the Hessian to the quantized layer and
 *   its layer loss: dead columns, act-order, damping, the Cholesky (with the same damped retries), the triangular
 *   inverse, the column loop, the inverse permutation and `tr(E·H·Eᵀ)`. W and H are uploaded once and the results
 *   read back once; the only other read-back is the 8-byte Cholesky status.
 *
 * See `shaders/gptq_wgsl.ts` for the kernel and `core/quant/gptq_kernel.ts` for the reference it follows.
 *
 * @module
 */

import type { GptqKernelArgs, GptqKernelResult } from "../../core/backend.ts";
import { NonFiniteError, NotPositiveDefiniteError, OptionError, ShapeError } from "../../core/errors.ts";
import { checkGrid, groupCount } from "../../core/grids/fit.ts";
import type { GridParams, GridSpec } from "../../core/grids/types.ts";
import { uniformMaxq } from "../../core/grids/uniform.ts";
import { checkFactor, checkPermutation, gptqQuantize as referenceGptq } from "../../core/quant/gptq_kernel.ts";
import { type FloatArray, invertPermutation, type Matrix, matrix } from "../../core/tensor.ts";
import type { Batch, GpuContext } from "./context.ts";
import { gpuFitGrid } from "./grid.ts";
import { encodeCholesky, encodeTriangularSolve } from "./linalg.ts";
import { encodeMatmul, type GpuMat, gpuMat, subMat } from "./matmul.ts";
import { gridVariant } from "./shaders/grid_wgsl.ts";
import { GPTQ_ROWS, gptqKey, type GptqVariant, gptqWgsl } from "./shaders/gptq_wgsl.ts";
import { IDENTITY_WGSL } from "./shaders/linalg_wgsl.ts";
import {
  CHECK_FINITE_WGSL,
  DOT_PARTIALS_WGSL,
  GATHER_SYMMETRIC_WGSL,
  GATHER_TRANSPOSE_WGSL,
  grid1d,
  PACK_CODES_MAP_WGSL,
  PERMUTE_TRANSPOSE_WGSL,
  REVERSE_WGSL,
  SUBTRACT_WGSL,
} from "./shaders/util_wgsl.ts";
import { uploadF32 } from "./upload.ts";

const up4 = (n: number) => Math.ceil(n / 4) * 4;
const NONE = 0xffffffff;

/** Groups of the column loop: dynamic (fitted every `groupSize` processed columns) or fixed parameters. */
type Groups = GptqKernelArgs["groups"];

function validateGroups(groups: Groups, rows: number, cols: number): void {
  if (groups.kind === "dynamic") {
    if (groups.groupSize === 0) {
      throw new OptionError("gptq: dynamic groups need a group size ≥ 1 (fit per-row grids up front as fixed params)");
    }
    if (!(Number.isInteger(groups.groupSize) && groups.groupSize > 0)) {
      throw new OptionError(`group size must be a non-negative integer (0 = whole row), got ${groups.groupSize}`);
    }
    return;
  }
  const p = groups.params;
  if (p.rows !== rows || groups.groupOfColumn.length !== cols) {
    throw new ShapeError(`gptq: fixed grid parameters for ${p.rows} rows and ${groups.groupOfColumn.length} columns`);
  }
  for (let j = 0; j < cols; j++) {
    const g = groups.groupOfColumn[j];
    if (g < 0 || g >= p.groups) throw new OptionError(`gptq: column ${j} in group ${g} of ${p.groups}`);
  }
}

/** GPU buffers of one column loop, created by {@link encodeColumnLoop}; the caller destroys them. */
interface LoopBuffers {
  readonly qt: GPUBuffer;
  readonly codesT: GPUBuffer;
  readonly sz: GPUBuffer;
  readonly nGroups: number;
  readonly all: GPUBuffer[];
}

/**
 * Records GPTQ's column loop over `Wt` (`[cols, ld]`, updated in place by the lazy updates) with the upper factor
 * `U` (`[cols, cols]` view). Returns the buffers holding `Qt`, `codesT` (`[cols, ld]`) and the parameters.
 */
function encodeColumnLoop(
  ctx: GpuContext,
  batch: Batch,
  wt: GPUBuffer,
  U: GpuMat,
  rows: number,
  cols: number,
  grid: GridSpec,
  blockSize: number,
  groups: Groups,
): LoopBuffers {
  const ld = up4(rows);
  const dynamic = groups.kind === "dynamic";
  const groupSize = dynamic ? groups.groupSize : 0;
  const nGroups = dynamic ? groupCount(cols, groupSize) : groups.params.groups;
  const variant: GptqVariant = { grid: gridVariant(grid, ctx.fusedFma), dynamic, maxBlock: Math.min(blockSize, cols) };
  const pipeline = ctx.pipeline(gptqKey(variant), () => gptqWgsl(variant));
  const eBuf = ctx.buffer(Math.min(blockSize, cols) * ld * 4, "gptq E");
  const qt = ctx.buffer(cols * ld * 4, "gptq Qt");
  const codesT = ctx.buffer(cols * ld * 4, "gptq codes");
  const sz = new Float32Array(ld * nGroups * 2);
  if (!dynamic) {
    const { scale, zero } = groups.params;
    for (let k = 0; k < rows * nGroups; k++) sz[2 * k] = scale[k], sz[2 * k + 1] = zero[k];
  }
  const szBuf = ctx.upload(sz, 0, "gptq params");
  const levels = grid.kind === "table" ? grid.levels : new Float32Array(0);
  const aux = new Uint32Array(cols + levels.length + 1);
  if (!dynamic) aux.set(groups.groupOfColumn);
  aux.set(new Uint32Array(Float32Array.from(levels).buffer), cols);
  const auxBuf = ctx.upload(aux);
  batch.temp(eBuf, auxBuf);

  const maxq = grid.kind === "uniform" ? uniformMaxq(grid.bits) : 0;
  const E = gpuMat(eBuf, Math.min(blockSize, cols), ld), Wt = gpuMat(wt, cols, ld);
  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, cols), count = i2 - i1;
    const params = ctx.uniform([
      rows,
      ld,
      cols,
      U.ld,
      i1,
      count,
      groupSize,
      nGroups,
      { f: maxq },
      levels.length,
      cols,
      0,
    ]);
    if (U.offset !== 0) throw new ShapeError("gptq: U must start at offset 0 of its buffer");
    batch.temp(params).dispatch(pipeline, [wt, U.buffer, eBuf, qt, codesT, szBuf, auxBuf, params], [
      Math.ceil(ld / GPTQ_ROWS),
    ]);
    if (i2 < cols) {
      // Wt[i2:, :] −= U[i1:i2, i2:]ᵀ · E   (the lazy batch update)
      const rest = cols - i2;
      encodeMatmul(
        ctx,
        batch,
        subMat(U, i1, i2, count, rest),
        subMat(E, 0, 0, count, ld),
        subMat(Wt, i2, 0, rest, ld),
        {
          transA: true,
          alpha: -1,
          beta: 1,
        },
      );
    }
  }
  return { qt, codesT, sz: szBuf, nGroups, all: [qt, codesT, szBuf] };
}

/** Records `dst[r][c] = src[map[c]][r]`: the dequantized weights `[rows, cols]` in the output column order. */
function encodeDequantized(
  ctx: GpuContext,
  batch: Batch,
  loop: LoopBuffers,
  mapBuf: GPUBuffer,
  rows: number,
  cols: number,
): GPUBuffer {
  const q = ctx.buffer(rows * cols * 4, "gptq Q");
  const tp = ctx.uniform([rows, cols, up4(rows), 0]);
  batch.temp(tp).dispatch(ctx.pipeline("gather-transpose", () => GATHER_TRANSPOSE_WGSL), [loop.qt, mapBuf, q, tp], [
    Math.ceil(cols / 16),
    Math.ceil(rows / 16),
  ]);
  return q;
}

/** Records the packed codes `[rows, cols]` (bytes), column `c` taken from processed column `map[c]`. */
function encodePackedCodes(
  ctx: GpuContext,
  batch: Batch,
  loop: LoopBuffers,
  mapBuf: GPUBuffer,
  rows: number,
  cols: number,
): GPUBuffer {
  const words = Math.ceil((rows * cols) / 4);
  const packed = ctx.buffer(words * 4, "gptq packed codes");
  const pp = ctx.uniform([rows, cols, up4(rows), words]);
  batch.temp(pp).dispatch(
    ctx.pipeline("pack-codes-map", () => PACK_CODES_MAP_WGSL),
    [loop.codesT, mapBuf, packed, pp],
    grid1d(words),
  );
  return packed;
}

function readParams(bytes: ArrayBuffer, rows: number, nGroups: number): GridParams {
  const s = new Float32Array(bytes), scale = new Float32Array(rows * nGroups), zero = new Float32Array(rows * nGroups);
  for (let k = 0; k < rows * nGroups; k++) scale[k] = s[2 * k], zero[k] = s[2 * k + 1];
  return { rows, groups: nGroups, scale, zero };
}

function identityMap(n: number): Uint32Array {
  return Uint32Array.from({ length: n }, (_, i) => i);
}

/**
 * GPTQ's error-feedback loop over a whole layer on the GPU (`Backend.gptqQuantize`).
 *
 * @throws {ShapeError} when `r` is not `[cols, cols]` or fixed parameters do not fit.
 * @throws {OptionError} on a bad grid, block size or group size.
 */
export async function gpuGptqQuantize(ctx: GpuContext, args: GptqKernelArgs): Promise<GptqKernelResult> {
  const { w, r, grid, blockSize, groups, permutation } = args;
  const [rows, cols] = w.shape;
  checkFactor(r, cols);
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new OptionError(`gptq: block size ${blockSize}`);
  checkGrid(grid);
  validateGroups(groups, rows, cols);
  if (permutation) checkPermutation(permutation, cols);
  // Delegated to the TS reference: empty layers (nothing to dispatch), blocks whose working copy would not fit in
  // workgroup memory (GPTQ uses 128; the limit is 256 on 32 KiB devices), and rounding coupled across rows (a row
  // factor: a column's rows depend on each other, where the shader gives each thread its own rows).
  if (rows === 0 || cols === 0 || blockSize * GPTQ_ROWS * 4 > ctx.maxWorkgroupStorage || args.rowFactor) {
    return referenceGptq(args);
  }

  const ld = up4(rows), ldu = up4(cols);
  const batch = ctx.batch();
  const wBuf = ctx.upload(w.data);
  // Processing position k reads column permutation[k] of W; output column c is written from position inverse[c].
  const order = permutation ? Uint32Array.from(permutation) : identityMap(cols);
  const inverse = permutation ? Uint32Array.from(invertPermutation(permutation)) : order;
  const mapBuf = ctx.upload(order), invBuf = ctx.upload(inverse);
  const wt = ctx.buffer(cols * ld * 4, "gptq Wt");
  const rBuf = uploadF32(ctx, batch, r, ldu, "gptq R");
  const uBuf = ctx.buffer(cols * ldu * 4, "gptq U");
  const owned = [wBuf, mapBuf, invBuf, wt, rBuf, uBuf];
  try {
    // U = R⁻¹: R·U = I solved in place of the identity.
    const ip = ctx.uniform([cols, ldu, 0, 0]);
    batch.temp(ip).dispatch(ctx.pipeline("identity", () => IDENTITY_WGSL), [uBuf, ip], [
      Math.ceil(ldu / 16),
      Math.ceil(cols / 16),
    ]);
    encodeTriangularSolve(ctx, batch, gpuMat(rBuf, cols, cols, ldu), gpuMat(uBuf, cols, cols, ldu), {
      lower: false,
    }, true);
    const tp = ctx.uniform([rows, cols, ld, 0]);
    batch.temp(tp).dispatch(ctx.pipeline("permute-transpose", () => PERMUTE_TRANSPOSE_WGSL), [wBuf, mapBuf, wt, tp], [
      Math.ceil(ld / 16),
      Math.ceil(cols / 16),
    ]);
    const loop = encodeColumnLoop(ctx, batch, wt, gpuMat(uBuf, cols, cols, ldu), rows, cols, grid, blockSize, groups);
    owned.push(...loop.all);
    const q = encodeDequantized(ctx, batch, loop, invBuf, rows, cols);
    const packed = encodePackedCodes(ctx, batch, loop, invBuf, rows, cols);
    owned.push(q, packed);
    const parts = [{ buffer: q, bytes: rows * cols * 4 }, { buffer: packed, bytes: rows * cols }];
    if (groups.kind === "dynamic") parts.push({ buffer: loop.sz, bytes: rows * loop.nGroups * 2 * 4 });
    const [qBytes, codeBytes, szBytes] = await batch.readMany(parts);
    await ctx.checkErrors("gptqQuantize");
    const params = groups.kind === "dynamic" ? readParams(szBytes, rows, loop.nGroups) : groups.params;
    return { dequantized: matrix(rows, cols, new Float32Array(qBytes)), codes: new Uint8Array(codeBytes), params };
  } finally {
    for (const b of owned) b.destroy();
  }
}

/** Options of {@link gpuGptqFromHessian}: those of `algorithms/gptq.ts`, with the same defaults. */
export interface GptqFromHessianOptions {
  /** Any grid; default the 4-bit asymmetric uniform grid. */
  readonly grid?: GridSpec;
  /** Columns per group, 0 = one grid per row; default 0. */
  readonly groupSize?: number;
  /** Process columns by descending Hessian diagonal; default false. */
  readonly actOrder?: boolean;
  /** Fit all groups on the original weights before quantizing; default false. */
  readonly staticGroups?: boolean;
  /** Relative damping `λ`: `H += λ·mean(diag H)·I`; default 0.01. */
  readonly damping?: number;
  /** Columns per lazy-update block; default 128. */
  readonly blockSize?: number;
}

/** Result of {@link gpuGptqFromHessian}, in the original column order (the fields of a `QuantizedLayer`). */
export interface GptqFromHessianResult {
  readonly dequantized: Matrix;
  readonly codes: Uint8Array;
  readonly params: GridParams;
  /** Group of each column (GPTQ's `g_idx`). */
  readonly groupIndex: Int32Array;
  /** Act-order: `permutation[k]` is the original column processed `k`-th. */
  readonly permutation?: Int32Array;
  /** `tr((W − Ŵ) H (W − Ŵ)ᵀ)` with the undamped Hessian given. */
  readonly layerLoss: number;
  /** Absolute damping added to the diagonal: the requested one plus any retry. */
  readonly damping: number;
}

/** The retry schedule of `choleskyWithRetry` as `algorithms/gptq.ts` calls it. */
const RETRY = { initialDamping: 1e-4, growth: 10, maxTries: 8 };

/**
 * All of GPTQ for one layer on the GPU, from the undamped Hessian; the steps of `algorithms/gptq.ts` (whose `gptq()` it
 * can replace when the backend is WebGPU), except that the lazy updates run through `U = R⁻¹`, formed by the GPU's
 * triangular solve, where `gptq()` carries them through `R` (the same GPTQ up to rounding).
 *
 * @param w `[rows, cols]` weights (out × in).
 * @param h `[cols, cols]` symmetric Hessian (float32 saves a conversion; float64 is rounded to float32).
 * @throws {ShapeError} when `h` does not match `w`; {NonFiniteError} on NaN/Inf inputs; {OptionError} on bad options;
 *   {NotPositiveDefiniteError} when even heavy extra damping cannot make `H` positive definite.
 */
export async function gpuGptqFromHessian(
  ctx: GpuContext,
  w: Matrix,
  h: Matrix<FloatArray>,
  options: GptqFromHessianOptions = {},
): Promise<GptqFromHessianResult> {
  const { groupSize = 0, actOrder = false, staticGroups = false, damping = 0.01, blockSize = 128 } = options;
  const grid: GridSpec = options.grid ?? { kind: "uniform", bits: 4 };
  const [rows, cols] = w.shape;
  if (h.shape[0] !== cols || h.shape[1] !== cols || h.data.length !== cols * cols) {
    throw new ShapeError(`gptq: Hessian is ${h.shape.join("×")} for a layer with ${cols} input columns`);
  }
  if (!(damping >= 0)) throw new OptionError(`gptq: damping must be ≥ 0, got ${damping}`);
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new OptionError(`gptq: block size ${blockSize}`);
  if (!Number.isInteger(groupSize) || groupSize < 0) {
    throw new OptionError(`group size must be a non-negative integer (0 = whole row), got ${groupSize}`);
  }
  checkGrid(grid);
  if (rows === 0 || cols === 0 || blockSize * GPTQ_ROWS * 4 > ctx.maxWorkgroupStorage) {
    throw new OptionError(`gptq on the GPU: empty layer or block size ${blockSize} too large for workgroup memory`);
  }

  // The O(n) part on the CPU: diagonal, dead columns, act-order permutation, damping (float64, as the reference).
  const d = new Float64Array(cols);
  for (let j = 0; j < cols; j++) d[j] = h.data[j * cols + j];
  if (!d.every(Number.isFinite)) throw new NonFiniteError("gptq Hessian has a non-finite value on its diagonal");
  const dead = d.map((v) => v === 0 ? 1 : 0);
  for (let j = 0; j < cols; j++) if (dead[j]) d[j] = 1;
  const perm = actOrder
    ? Int32Array.from({ length: cols }, (_, j) => j).sort((a, b) => d[b] - d[a] || a - b)
    : Int32Array.from({ length: cols }, (_, j) => j);
  let mean = 0;
  for (let j = 0; j < cols; j++) mean += d[perm[j]];
  const damp = damping * mean / cols;
  // Diagonal of J·Pᵀ(H + damp·I)P·J, and the map i ↦ original column of row i of that matrix.
  const dampedDiag = new Float64Array(cols), revMap = new Uint32Array(cols);
  for (let i = 0; i < cols; i++) {
    const c = perm[cols - 1 - i];
    revMap[i] = c;
    dampedDiag[i] = d[c] + damp;
  }
  let rmean = 0;
  for (let i = 0; i < cols; i++) rmean += dampedDiag[i];
  rmean /= cols;
  const retryScale = rmean > 0 ? rmean : 1;

  // Per-row grids are fitted on the weights as given; static groups on the weights with dead columns zeroed.
  const perRow = groupSize === 0 ? await gpuFitGrid(ctx, w, grid, 0) : undefined;
  let staticParams: GridParams | undefined;
  if (staticGroups && groupSize > 0) {
    const wz = matrix(rows, cols, w.data.slice());
    for (let j = 0; j < cols; j++) if (dead[j]) { for (let i = 0; i < rows; i++) wz.data[i * cols + j] = 0; }
    staticParams = await gpuFitGrid(ctx, wz, grid, groupSize);
  }
  const groups: Groups = perRow
    ? { kind: "fixed", params: perRow, groupOfColumn: new Int32Array(cols) }
    : staticParams
    ? {
      kind: "fixed",
      params: staticParams,
      groupOfColumn: Int32Array.from({ length: cols }, (_, k) => Math.floor(perm[k] / groupSize)),
    }
    : { kind: "dynamic", groupSize };

  const n = cols, ldh = up4(n), ld = up4(rows);
  const owned: GPUBuffer[] = [];
  const keep = <T extends GPUBuffer>(b: T) => (owned.push(b), b);
  try {
    const prep = ctx.batch();
    const hBuf = keep(uploadF32(ctx, prep, h, ldh, "gptq H"));
    const wBuf = keep(ctx.upload(w.data, 0, "gptq W"));
    const revBuf = keep(ctx.upload(revMap));
    const wMap = Uint32Array.from(perm, (c) => dead[c] ? NONE : c);
    const wMapBuf = keep(ctx.upload(wMap));
    const inv = Uint32Array.from(invertPermutation(perm));
    const invBuf = keep(ctx.upload(inv));
    const aBuf = keep(ctx.buffer(n * ldh * 4, "gptq chol"));
    const xBuf = keep(ctx.buffer(n * ldh * 4, "gptq inverse"));
    const status = keep(ctx.upload(new Uint32Array([NONE, 0, 0, 0])));
    const A = gpuMat(aBuf, n, n, ldh);

    // Finite inputs (checked on the GPU), then the Cholesky of J·Pᵀ(H + damp)P·J with the reference's retries.
    const flag = keep(ctx.upload(new Uint32Array(4)));
    const check = prep;
    for (const [buf, count] of [[hBuf, n * ldh], [wBuf, rows * cols]] as const) {
      const cp = ctx.uniform([count, 0, 0, 0]);
      check.temp(cp).dispatch(ctx.pipeline("check-finite", () => CHECK_FINITE_WGSL), [buf, flag, cp], grid1d(count));
    }
    if (new Uint32Array(await check.read(flag, 4))[0] !== 0) {
      throw new NonFiniteError("gptq weights or Hessian hold a non-finite value");
    }

    let extra = 0, lambda = 0;
    for (let tries = 1;; tries++) {
      extra = lambda * retryScale;
      const diag = Float32Array.from(dampedDiag, (v) => v + extra);
      const diagBuf = ctx.upload(diag);
      const gp = ctx.uniform([n, ldh, ldh, 0]);
      const batch = ctx.batch().temp(diagBuf, gp);
      batch.dispatch(ctx.pipeline("gather-symmetric", () => GATHER_SYMMETRIC_WGSL), [hBuf, revBuf, diagBuf, aBuf, gp], [
        Math.ceil(n / 16),
        Math.ceil(n / 16),
      ]);
      ctx.device.queue.writeBuffer(status, 0, new Uint32Array([NONE, 0]));
      encodeCholesky(ctx, batch, A, status);
      const s = new Uint32Array(await batch.read(status, 8));
      if (s[0] === NONE) break;
      const value = new Float32Array(s.buffer, 4, 1)[0];
      if (Number.isNaN(value) || tries >= RETRY.maxTries) throw new NotPositiveDefiniteError(n, s[0], value);
      lambda = lambda === 0 ? RETRY.initialDamping : lambda * RETRY.growth;
    }

    // X = L̃⁻¹, U = J·X·J (into A's buffer), then the column loop on the permuted weights.
    const batch = ctx.batch();
    const ip = ctx.uniform([n, ldh, 0, 0]), rp = ctx.uniform([n, ldh, 0, 0]), tp = ctx.uniform([rows, cols, ld, 0]);
    batch.temp(ip, rp, tp);
    batch.dispatch(ctx.pipeline("identity", () => IDENTITY_WGSL), [xBuf, ip], [Math.ceil(ldh / 16), Math.ceil(n / 16)]);
    encodeTriangularSolve(ctx, batch, A, gpuMat(xBuf, n, n, ldh), { lower: true }, true);
    batch.dispatch(ctx.pipeline("reverse", () => REVERSE_WGSL), [xBuf, aBuf, rp], [
      Math.ceil(n / 16),
      Math.ceil(n / 16),
    ]);
    const wt = keep(ctx.buffer(cols * ld * 4, "gptq Wt"));
    batch.dispatch(ctx.pipeline("permute-transpose", () => PERMUTE_TRANSPOSE_WGSL), [wBuf, wMapBuf, wt, tp], [
      Math.ceil(ld / 16),
      Math.ceil(cols / 16),
    ]);
    const loop = encodeColumnLoop(ctx, batch, wt, A, rows, cols, grid, blockSize, groups);
    owned.push(...loop.all);
    const q = keep(encodeDequantized(ctx, batch, loop, invBuf, rows, cols));
    const packed = keep(encodePackedCodes(ctx, batch, loop, invBuf, rows, cols));

    // Layer loss tr(E·H·Eᵀ), E = W − Ŵ, with the undamped H as given.
    const total = rows * cols;
    const eBuf = keep(ctx.buffer(total * 4)), ehBuf = keep(ctx.buffer(total * 4));
    const sp = ctx.uniform([total, 0, 0, 0]);
    batch.temp(sp).dispatch(ctx.pipeline("subtract", () => SUBTRACT_WGSL), [wBuf, q, eBuf, sp], grid1d(total));
    encodeMatmul(ctx, batch, gpuMat(eBuf, rows, cols), gpuMat(hBuf, cols, cols, ldh), gpuMat(ehBuf, rows, cols));
    const partials = Math.min(1024, Math.ceil(total / 256));
    const partBuf = keep(ctx.buffer(partials * 4));
    const dp = ctx.uniform([total, partials, 0, 0]);
    batch.temp(dp).dispatch(ctx.pipeline("dot-partials", () => DOT_PARTIALS_WGSL), [eBuf, ehBuf, partBuf, dp], [
      partials,
    ]);

    const parts = [
      { buffer: q, bytes: total * 4 },
      { buffer: packed, bytes: total },
      { buffer: partBuf, bytes: partials * 4 },
    ];
    if (groups.kind === "dynamic") parts.push({ buffer: loop.sz, bytes: rows * loop.nGroups * 2 * 4 });
    const [qBytes, codeBytes, partBytes, szBytes] = await batch.readMany(parts);
    await ctx.checkErrors("gptq");
    let layerLoss = 0;
    for (const v of new Float32Array(partBytes)) layerLoss += v;

    const params = groups.kind === "dynamic" ? readParams(szBytes, rows, loop.nGroups) : groups.params;
    const groupIndex = groups.kind === "fixed"
      ? (perRow ? groups.groupOfColumn : Int32Array.from({ length: cols }, (_, c) => Math.floor(c / groupSize)))
      : Int32Array.from({ length: cols }, (_, c) => Math.floor(inv[c] / groupSize));
    return {
      dequantized: matrix(rows, cols, new Float32Array(qBytes)),
      codes: new Uint8Array(codeBytes),
      params,
      groupIndex,
      permutation: actOrder ? perm : undefined,
      layerLoss,
      damping: damp + extra,
    };
  } finally {
    for (const b of owned) b.destroy();
  }
}
