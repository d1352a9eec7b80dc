/**
 * Host side of the WGSL matrix product: sub-matrix views of GPU buffers, the choice of variant (vec4 when aligned,
 * scalar otherwise), and encoding into a {@link Batch} so that callers chain products without read-backs.
 *
 * @module
 */

import { ShapeError } from "../../core/errors.ts";
import type { Batch, GpuContext } from "./context.ts";
import { MATMUL_TILE, matmulKey, type MatmulVariant, matmulWgsl } from "./shaders/matmul_wgsl.ts";

/** A row-major `[rows, cols]` float32 sub-matrix of a GPU buffer: element `(i, j)` at `offset + i·ld + j`. */
export interface GpuMat {
  readonly buffer: GPUBuffer;
  /** Offset in elements. */
  readonly offset: number;
  readonly rows: number;
  readonly cols: number;
  /** Leading dimension (elements between rows). */
  readonly ld: number;
}

/** A whole-buffer `[rows, cols]` view. */
export function gpuMat(buffer: GPUBuffer, rows: number, cols: number, ld = cols, offset = 0): GpuMat {
  return { buffer, offset, rows, cols, ld };
}

/** The block `[r0, r0 + rows) × [c0, c0 + cols)` of a view. */
export function subMat(m: GpuMat, r0: number, c0: number, rows: number, cols: number): GpuMat {
  if (r0 < 0 || c0 < 0 || r0 + rows > m.rows || c0 + cols > m.cols) {
    throw new ShapeError(`sub-matrix [${r0}+${rows}, ${c0}+${cols}] outside ${m.rows}×${m.cols}`);
  }
  return { buffer: m.buffer, offset: m.offset + r0 * m.ld + c0, rows, cols, ld: m.ld };
}

/** Options of {@link encodeMatmul}: `C = alpha · op(A)·op(B) + beta · C`. */
export interface EncodeMatmulOptions {
  readonly transA?: boolean;
  readonly transB?: boolean;
  /** Default 1. */
  readonly alpha?: number;
  /** Default 0 (C is only written). */
  readonly beta?: number;
  /** Compute only tiles on or below ("lower") or on or above ("upper") the diagonal (square C). */
  readonly triangle?: "none" | "lower" | "upper";
  /** K step; default 8. */
  readonly bk?: 8 | 16;
  /** Force the scalar kernel (tests). */
  readonly scalar?: boolean;
}

const aligned = (...xs: number[]) => xs.every((x) => x % 4 === 0);

/**
 * Records `C = alpha · op(A)·op(B) + beta · C` into `batch`. Operands may live in the same buffer (they then share one
 * binding, so C may be written in the buffer A or B are read from, as long as the regions do not overlap).
 *
 * @throws {ShapeError} when the shapes do not fit.
 */
export function encodeMatmul(
  ctx: GpuContext,
  batch: Batch,
  a: GpuMat,
  b: GpuMat,
  c: GpuMat,
  options: EncodeMatmulOptions = {},
): void {
  const { transA = false, transB = false, alpha = 1, beta = 0, triangle = "none", bk = 8 } = options;
  const M = transA ? a.cols : a.rows, K = transA ? a.rows : a.cols;
  const Kb = transB ? b.cols : b.rows, N = transB ? b.rows : b.cols;
  if (K !== Kb || c.rows !== M || c.cols !== N) {
    throw new ShapeError(`webgpu matmul: op(A) ${M}×${K}, op(B) ${Kb}×${N}, C ${c.rows}×${c.cols}`);
  }
  if (M === 0 || N === 0) return;
  // vec4 needs aligned offsets and leading dimensions, N % 4 for the stores, and K % 4 when an operand is contiguous
  // along K. A vec4 that runs past M (Aᵀ) or N (B) only feeds outputs that are not stored, and stays inside its row
  // because the leading dimension is a multiple of 4.
  const kContiguous = !transA || transB;
  const vec = !options.scalar && aligned(a.offset, a.ld, b.offset, b.ld, c.offset, c.ld, N) &&
    (!kContiguous || aligned(K));
  const buffers: GPUBuffer[] = [];
  const slot = (buf: GPUBuffer) => {
    const i = buffers.indexOf(buf);
    return i >= 0 ? i : buffers.push(buf) - 1;
  };
  const bindings = [slot(a.buffer), slot(b.buffer), slot(c.buffer)] as const;
  const variant: MatmulVariant = { transA, transB, vec, bk, triangle, bindings };
  const pipeline = ctx.pipeline(matmulKey(variant), () => matmulWgsl(variant));
  const params = ctx.uniform([
    M,
    N,
    K,
    a.offset,
    a.ld,
    b.offset,
    b.ld,
    c.offset,
    c.ld,
    { f: alpha },
    { f: beta },
    0,
  ]);
  batch.temp(params);
  // K = 0 with beta = 0 still has to write zeros: the kernel's loop simply runs no step.
  batch.dispatch(pipeline, [...buffers, params], [Math.ceil(N / MATMUL_TILE), Math.ceil(M / MATMUL_TILE)]);
}
