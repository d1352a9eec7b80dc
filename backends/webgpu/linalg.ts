/**
 * Blocked Cholesky, triangular solves and the inverse from a Cholesky factor on the GPU, in float32. The `nb × nb`
 * diagonal blocks are factored and inverted in workgroup memory (`shaders/linalg_wgsl.ts`); panels, trailing updates
 * and substitutions are tiled matmuls. Each call uploads once, records every step into one command buffer, and reads
 * back once. Float64 inputs are rounded to float32 on the way in and widened on the way out.
 *
 * @module
 */

import type { TriangularSolveOptions } from "../../core/backend.ts";
import { NonFiniteError, NotPositiveDefiniteError, ShapeError } from "../../core/errors.ts";
import { type FloatArray, type Matrix, zerosLike } from "../../core/tensor.ts";
import type { Batch, GpuContext } from "./context.ts";
import { encodeMatmul, type GpuMat, gpuMat, subMat } from "./matmul.ts";
import { IDENTITY_WGSL, potrfWgsl, trtriBlocksWgsl, ZERO_TRIANGLE_WGSL } from "./shaders/linalg_wgsl.ts";
import { uploadF32 } from "./upload.ts";

const up4 = (n: number) => Math.ceil(n / 4) * 4;

/** Diagonal block size: 64 where two 64×64 float32 tiles fit in workgroup memory, else 32. */
function blockSize(ctx: GpuContext): number {
  return ctx.maxWorkgroupStorage >= 2 * 64 * 64 * 4 ? 64 : 32;
}

function squareSize(a: Matrix<FloatArray>, what: string): number {
  const [r, c] = a.shape;
  if (r !== c || a.data.length !== r * c) {
    throw new ShapeError(`${what}: expected a square matrix, got ${r}×${c} (${a.data.length} values)`);
  }
  return r;
}

/** A matrix of `like`'s element type from a float32 buffer with leading dimension `ld`. */
function unpad<A extends FloatArray>(
  like: Matrix<A>,
  rows: number,
  cols: number,
  data: Float32Array,
  ld: number,
): Matrix<A> {
  const out = zerosLike(like, rows, cols);
  if (ld === cols) out.data.set(data.subarray(0, rows * cols));
  else for (let i = 0; i < rows; i++) out.data.set(data.subarray(i * ld, i * ld + cols), i * cols);
  return out;
}

function isIdentity(b: Matrix<FloatArray>): boolean {
  const [r, c] = b.shape;
  if (r !== c) return false;
  const d = b.data;
  for (let i = 0; i < r; i++) {
    const row = i * c;
    for (let j = 0; j < c; j++) if (d[row + j] !== (i === j ? 1 : 0)) return false;
  }
  return true;
}

/**
 * Records the blocked right-looking Cholesky of `A` (`[n, n]`, leading dimension `ld`, lower triangle read) in place.
 * `status` (2 u32, first `0xffffffff`) receives the first failing pivot and its value.
 */
export function encodeCholesky(ctx: GpuContext, batch: Batch, a: GpuMat, status: GPUBuffer): void {
  const n = a.rows, nb = blockSize(ctx);
  const potrf = ctx.pipeline(`potrf:${nb}`, () => potrfWgsl(nb));
  const linv = ctx.buffer(nb * nb * 4);
  batch.temp(linv);
  for (let k = 0; k < n; k += nb) {
    const b = Math.min(nb, n - k);
    const params = ctx.uniform([a.ld, k, b, 0]);
    batch.temp(params).dispatch(potrf, [a.buffer, linv, status, params], [1]);
    const m = n - k - b;
    if (m > 0) {
      const panel = subMat(a, k + b, k, m, b);
      // L[k+b:, k:k+b] = A[k+b:, k:k+b] · L_kk⁻ᵀ, in place (each workgroup reads its rows before writing them).
      encodeMatmul(ctx, batch, panel, gpuMat(linv, b, b, nb), panel, { transB: true });
      // A[k+b:, k+b:] −= L_panel · L_panelᵀ, lower tiles only.
      encodeMatmul(ctx, batch, panel, panel, subMat(a, k + b, k + b, m, m), {
        transB: true,
        alpha: -1,
        beta: 1,
        triangle: "lower",
      });
    }
  }
  const zp = ctx.uniform([n, a.ld, 1, 0]);
  batch.temp(zp).dispatch(ctx.pipeline("zero-triangle", () => ZERO_TRIANGLE_WGSL), [a.buffer, zp], [
    Math.ceil(n / 16),
    Math.ceil(n / 16),
  ]);
}

/** Lower `L` with `A = L·Lᵀ`, factored on the GPU in float32. @throws {NotPositiveDefiniteError} on a bad pivot. */
export async function gpuCholesky<A extends FloatArray>(ctx: GpuContext, a: Matrix<A>): Promise<Matrix<A>> {
  const n = squareSize(a, "cholesky");
  if (n === 0) return zerosLike(a);
  const ld = up4(n);
  const batch = ctx.batch();
  const aBuf = uploadF32(ctx, batch, a, ld);
  const status = ctx.upload(new Uint32Array([0xffffffff, 0, 0, 0]));
  try {
    encodeCholesky(ctx, batch, gpuMat(aBuf, n, n, ld), status);
    const [lBytes, sBytes] = await batch.readMany([{ buffer: aBuf, bytes: n * ld * 4 }, { buffer: status, bytes: 8 }]);
    await ctx.checkErrors("cholesky");
    const s = new Uint32Array(sBytes);
    if (s[0] !== 0xffffffff) throw new NotPositiveDefiniteError(n, s[0], new Float32Array(sBytes, 4, 1)[0]);
    return unpad(a, n, n, new Float32Array(lBytes), ld);
  } finally {
    aBuf.destroy(), status.destroy();
  }
}

/**
 * Records `op(T)·X = B` solved in place in `B` (`[n, k]`). `T` is `[n, n]`. When `identity` is set, `B` holds the
 * identity and only the columns that can be non-zero are computed (a third of the work).
 */
export function encodeTriangularSolve(
  ctx: GpuContext,
  batch: Batch,
  t: GpuMat,
  b: GpuMat,
  options: TriangularSolveOptions,
  identity = false,
): void {
  const { lower, transpose = false, unitDiagonal = false } = options;
  const n = t.rows, k = b.cols, nb = blockSize(ctx);
  const blocks = Math.ceil(n / nb);
  const tinv = ctx.buffer(blocks * nb * nb * 4);
  const params = ctx.uniform([t.ld, n, lower ? 1 : 0, unitDiagonal ? 1 : 0]);
  batch.temp(tinv, params);
  const tt = t.offset === 0 ? t.buffer : undefined;
  if (!tt) throw new ShapeError("triangular solve: T must start at offset 0 of its buffer");
  batch.dispatch(ctx.pipeline(`trtri:${nb}`, () => trtriBlocksWgsl(nb)), [tt, tinv, params], [blocks]);
  const forward = lower !== transpose; // op(T) is lower triangular
  for (let s = 0; s < blocks; s++) {
    const bi = forward ? s : blocks - 1 - s;
    const r0 = bi * nb, rb = Math.min(nb, n - r0);
    // Columns of X that can be non-zero when B = I: op(T)⁻¹ is lower (forward) or upper triangular.
    const c0 = identity && !forward ? r0 : 0;
    const c1 = identity && forward ? r0 + rb : k;
    const inv = gpuMat(tinv, rb, rb, nb, bi * nb * nb);
    const xi = subMat(b, r0, c0, rb, c1 - c0);
    // X_i = op(T_ii)⁻¹ · B_i in place: one tile row, each workgroup reads its columns before writing them.
    encodeMatmul(ctx, batch, inv, xi, xi, { transA: transpose });
    // B_rest −= op(T)_{rest,i} · X_i.
    const rest0 = forward ? r0 + rb : 0, restN = forward ? n - r0 - rb : r0;
    if (restN > 0) {
      const tBlock = transpose ? subMat(t, r0, rest0, rb, restN) : subMat(t, rest0, r0, restN, rb);
      encodeMatmul(ctx, batch, tBlock, xi, subMat(b, rest0, c0, restN, c1 - c0), {
        transA: transpose,
        alpha: -1,
        beta: 1,
      });
    }
  }
}

function checkDiagonal(t: Matrix<FloatArray>, n: number, what: string): void {
  for (let i = 0; i < n; i++) {
    const d = t.data[i * n + i];
    if (d === 0 || !Number.isFinite(d)) {
      throw new NonFiniteError(`${what}: diagonal entry ${i} is ${d}; the system is singular`);
    }
  }
}

/** `X` with `op(T)·X = B`, on the GPU in float32. */
export async function gpuTriangularSolve<A extends FloatArray>(
  ctx: GpuContext,
  t: Matrix<A>,
  b: Matrix<A>,
  options: TriangularSolveOptions,
): Promise<Matrix<A>> {
  const n = t.shape[0];
  if (t.shape[1] !== n || t.data.length !== n * n) {
    throw new ShapeError(`triangularSolve: T must be square, got ${t.shape[0]}×${t.shape[1]}`);
  }
  const [br, k] = b.shape;
  if (br !== n || b.data.length !== br * k) throw new ShapeError(`triangularSolve: T is ${n}×${n} but B is ${br}×${k}`);
  if (!options.unitDiagonal) checkDiagonal(t, n, "triangularSolve");
  if (n === 0 || k === 0) return zerosLike(b);
  const ldt = up4(n), ldb = up4(k);
  const identity = isIdentity(b);
  const batch = ctx.batch();
  const tBuf = uploadF32(ctx, batch, t, ldt);
  const bBuf = identity ? ctx.buffer(n * ldb * 4) : uploadF32(ctx, batch, b, ldb);
  try {
    if (identity) {
      const ip = ctx.uniform([n, ldb, 0, 0]);
      batch.temp(ip).dispatch(ctx.pipeline("identity", () => IDENTITY_WGSL), [bBuf, ip], [
        Math.ceil(ldb / 16),
        Math.ceil(n / 16),
      ]);
    }
    encodeTriangularSolve(ctx, batch, gpuMat(tBuf, n, n, ldt), gpuMat(bBuf, n, k, ldb), options, identity);
    const x = new Float32Array(await batch.read(bBuf, n * ldb * 4));
    await ctx.checkErrors("triangularSolve");
    return unpad(b, n, k, x, ldb);
  } finally {
    tBuf.destroy(), bBuf.destroy();
  }
}

/** `(L·Lᵀ)⁻¹ = L⁻ᵀ·L⁻¹` on the GPU in float32, exactly symmetric (lower triangle mirrored). */
export async function gpuCholeskyInverse<A extends FloatArray>(ctx: GpuContext, l: Matrix<A>): Promise<Matrix<A>> {
  const n = squareSize(l, "choleskyInverse");
  for (let i = 0; i < n; i++) {
    const d = l.data[i * n + i];
    if (d === 0 || !Number.isFinite(d)) throw new NotPositiveDefiniteError(n, i, d);
  }
  if (n === 0) return zerosLike(l);
  const ld = up4(n);
  const batch = ctx.batch();
  const lBuf = uploadF32(ctx, batch, l, ld);
  const xBuf = ctx.buffer(n * ld * 4), rBuf = ctx.buffer(n * ld * 4);
  try {
    const ip = ctx.uniform([n, ld, 0, 0]);
    batch.temp(ip).dispatch(ctx.pipeline("identity", () => IDENTITY_WGSL), [xBuf, ip], [
      Math.ceil(ld / 16),
      Math.ceil(n / 16),
    ]);
    const X = gpuMat(xBuf, n, n, ld);
    encodeTriangularSolve(ctx, batch, gpuMat(lBuf, n, n, ld), X, { lower: true }, true);
    encodeMatmul(ctx, batch, X, X, gpuMat(rBuf, n, n, ld), { transA: true, triangle: "lower" });
    const r = new Float32Array(await batch.read(rBuf, n * ld * 4));
    await ctx.checkErrors("choleskyInverse");
    const out = zerosLike(l);
    const o = out.data;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) {
        const v = r[i * ld + j];
        o[i * n + j] = v;
        o[j * n + i] = v;
      }
    }
    return out;
  } finally {
    lBuf.destroy(), xBuf.destroy(), rBuf.destroy();
  }
}
