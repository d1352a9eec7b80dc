/**
 * Uploads of float32 or float64 matrices as float32 GPU matrices with a chosen leading dimension. Float64 data goes up
 * as raw bytes and is narrowed on the GPU (`F64_TO_F32_WGSL`): a CPU conversion loop costs more than the extra bytes.
 *
 * @module
 */

import type { FloatArray, Matrix } from "../../core/tensor.ts";
import type { Batch, GpuContext } from "./context.ts";
import { F64_TO_F32_WGSL } from "./shaders/util_wgsl.ts";

/** A float32 copy with leading dimension `ld` (zero padding), or the data itself when it already is one. */
export function toF32Padded(m: Matrix<FloatArray>, ld: number): Float32Array {
  const [r, c] = m.shape;
  if (ld === c && m.data instanceof Float32Array) return m.data;
  const out = new Float32Array(r * ld);
  if (ld === c) out.set(m.data);
  else for (let i = 0; i < r; i++) out.set(m.data.subarray(i * c, (i + 1) * c), i * ld);
  return out;
}

/**
 * A new float32 buffer holding `m` with leading dimension `ld`. Float64 input is narrowed on the GPU by a dispatch
 * recorded into `batch` (so the buffer is ready for the batch's later dispatches); the raw upload is a temporary of
 * the batch.
 */
export function uploadF32(ctx: GpuContext, batch: Batch, m: Matrix<FloatArray>, ld: number, label?: string): GPUBuffer {
  const [rows, cols] = m.shape;
  if (!(m.data instanceof Float64Array) || m.data.byteLength > ctx.maxBinding || rows * cols === 0) {
    return ctx.upload(toF32Padded(m, ld), rows * ld * 4, label);
  }
  const raw = ctx.upload(m.data);
  const out = ctx.buffer(rows * ld * 4, label);
  const u = ctx.uniform([rows, cols, ld, 0]);
  batch.temp(raw, u).dispatch(ctx.pipeline("f64-to-f32", () => F64_TO_F32_WGSL), [raw, out, u], [
    Math.ceil(cols / 16),
    Math.ceil(rows / 16),
  ]);
  return out;
}
