/**
 * The dense kernels of the WebGPU backend: `matmul` and `gramAccumulate`, CPU matrices in and out, one submit and one
 * read-back per call (per chunk when an operand exceeds the device's largest storage binding).
 *
 * @module
 */

import type { MatmulOptions } from "../../core/backend.ts";
import { BackendError, ShapeError } from "../../core/errors.ts";
import { type FloatArray, type Matrix, matrix } from "../../core/tensor.ts";
import type { GpuContext } from "./context.ts";
import { encodeMatmul, gpuMat } from "./matmul.ts";

/** `op(A)·op(B)` on the GPU. @throws {ShapeError} when inner dimensions differ. */
export async function gpuMatmul(ctx: GpuContext, a: Matrix, b: Matrix, options: MatmulOptions = {}): Promise<Matrix> {
  const { transA = false, transB = false } = options;
  const m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1];
  const kb = transB ? b.shape[1] : b.shape[0], n = transB ? b.shape[0] : b.shape[1];
  if (k !== kb) {
    throw new ShapeError(
      `matmul: ${m}×${k} (A${transA ? "ᵀ" : ""}) times ${kb}×${n} (B${transB ? "ᵀ" : ""}): inner dimensions differ`,
    );
  }
  const out = matrix(m, n);
  if (m === 0 || n === 0) return out;
  if (k === 0) return out;
  const limit = ctx.maxBinding;
  if (b.data.byteLength > limit) {
    throw new BackendError(
      `webgpu matmul: B (${b.data.byteLength} bytes) exceeds the largest binding (${limit} bytes)`,
    );
  }
  // Chunks of output rows, so that A's chunk and C's chunk each fit a binding.
  const rowBytes = Math.max(n, k) * 4;
  let chunk = Math.max(1, Math.floor(limit / rowBytes));
  if (transA && a.data.byteLength > limit) {
    throw new BackendError(
      `webgpu matmul: Aᵀ (${a.data.byteLength} bytes) exceeds the largest binding (${limit} bytes)`,
    );
  }
  if (transA) chunk = Math.max(1, Math.floor(limit / (n * 4)));
  if (chunk >= m) chunk = m;
  else chunk = Math.max(4, chunk - (chunk % 4));
  const bBuf = ctx.upload(b.data);
  const aBufFull = transA ? ctx.upload(a.data) : undefined;
  try {
    for (let r0 = 0; r0 < m; r0 += chunk) {
      const rows = Math.min(chunk, m - r0);
      const batch = ctx.batch();
      let aView;
      if (transA) aView = gpuMat(aBufFull!, k, rows, m, r0);
      else {
        const aBuf = ctx.upload(a.data.subarray(r0 * k, (r0 + rows) * k));
        batch.temp(aBuf);
        aView = gpuMat(aBuf, rows, k);
      }
      const cBuf = ctx.buffer(rows * n * 4);
      encodeMatmul(ctx, batch, aView, gpuMat(bBuf, b.shape[0], b.shape[1]), gpuMat(cBuf, rows, n), { transA, transB });
      const bytes = await batch.read(cBuf, rows * n * 4);
      cBuf.destroy();
      out.data.set(new Float32Array(bytes), r0 * n);
    }
  } finally {
    bBuf.destroy();
    aBufFull?.destroy();
  }
  await ctx.checkErrors("matmul");
  return out;
}

/**
 * `acc += alpha · XᵀX` with the product computed on the GPU in float32 (only the upper triangle of tiles; mirrored
 * here) and added into the caller's float32 or float64 accumulator on the CPU.
 */
export async function gpuGramAccumulate(
  ctx: GpuContext,
  acc: Matrix<FloatArray>,
  x: Matrix,
  alpha: number,
): Promise<void> {
  const [n, d] = x.shape;
  if (acc.shape[0] !== d || acc.shape[1] !== d) {
    throw new ShapeError(`gramAccumulate: accumulator ${acc.shape[0]}×${acc.shape[1]} for inputs with ${d} columns`);
  }
  if (n === 0 || d === 0) return;
  const g = await gpuGram(ctx, x);
  const H = acc.data;
  for (let i = 0; i < d; i++) {
    const row = i * d;
    H[row + i] += alpha * g[row + i];
    for (let j = i + 1; j < d; j++) {
      const v = alpha * g[row + j];
      H[row + j] += v;
      H[j * d + i] += v;
    }
  }
}

/** `XᵀX` (upper triangle valid) as float32, accumulated over row chunks that fit a binding. */
export async function gpuGram(ctx: GpuContext, x: Matrix): Promise<Float32Array> {
  const [n, d] = x.shape;
  if (d * d * 4 > ctx.maxBinding) {
    throw new BackendError(`webgpu gramAccumulate: a ${d}×${d} accumulator exceeds the largest binding`);
  }
  const chunk = Math.max(1, Math.floor(ctx.maxBinding / (d * 4)));
  const gBuf = ctx.buffer(d * d * 4);
  const batch = ctx.batch();
  for (let r0 = 0; r0 < n; r0 += chunk) {
    const rows = Math.min(chunk, n - r0);
    const xBuf = ctx.upload(x.data.subarray(r0 * d, (r0 + rows) * d));
    batch.temp(xBuf);
    const xv = gpuMat(xBuf, rows, d);
    encodeMatmul(ctx, batch, xv, xv, gpuMat(gBuf, d, d), { transA: true, beta: r0 === 0 ? 0 : 1, triangle: "upper" });
  }
  const g = new Float32Array(await batch.read(gBuf, d * d * 4));
  gBuf.destroy();
  await ctx.checkErrors("gramAccumulate");
  return g;
}
