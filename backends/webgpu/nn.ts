/**
 * Host side of the transformer kernels (`shaders/nn_wgsl.ts`): argument checks as in `core/nn/`, one upload, one
 * submit and one read-back per call. Inputs of either float type are computed in float32 and returned in the input's
 * element type.
 *
 * @module
 */

import type { AttentionShape, CrossEntropyResult, RopeOptions } from "../../core/backend.ts";
import { OptionError, ShapeError } from "../../core/errors.ts";
import { ropeTables } from "../../core/nn/rope.ts";
import { type FloatArray, type Matrix, zerosLike } from "../../core/tensor.ts";
import type { GpuContext } from "./context.ts";
import {
  attentionBackwardKvWgsl,
  attentionBackwardQWgsl,
  attentionWgsl,
  COLUMN_SUM_WGSL,
  CROSS_ENTROPY_WGSL,
  RMSNORM_BACKWARD_WGSL,
  RMSNORM_WGSL,
  ROPE_WGSL,
  SWIGLU_WGSL,
} from "./shaders/nn_wgsl.ts";
import { grid1d } from "./shaders/util_wgsl.ts";

const f32 = (a: FloatArray) => a instanceof Float32Array ? a : Float32Array.from(a);

/** Workgroups for one workgroup per row, wrapped into y past 65535. */
function perRow(n: number): [number, number] {
  return n <= 65535 ? [n, 1] : [65535, Math.ceil(n / 65535)];
}

function like<A extends FloatArray>(m: Matrix<A>, data: Float32Array, rows = m.shape[0], cols = m.shape[1]): Matrix<A> {
  const out = zerosLike(m, rows, cols);
  out.data.set(data);
  return out;
}

/** Runs one pipeline with freshly uploaded inputs and reads back `outputs` (byte sizes). */
async function run(
  ctx: GpuContext,
  key: string,
  code: () => string,
  inputs: ArrayBufferView[],
  outputs: number[],
  uniform: Parameters<GpuContext["uniform"]>[0],
  groups: readonly number[],
  what: string,
): Promise<ArrayBuffer[]> {
  const ins = inputs.map((d) => ctx.upload(d));
  const outs = outputs.map((b) => ctx.buffer(b));
  const u = ctx.uniform(uniform);
  try {
    const batch = ctx.batch().temp(u).dispatch(ctx.pipeline(key, code), [...ins, ...outs, u], groups);
    const res = await batch.readMany(outs.map((buffer, i) => ({ buffer, bytes: outputs[i] })));
    await ctx.checkErrors(what);
    return res;
  } finally {
    for (const b of [...ins, ...outs]) b.destroy();
  }
}

function checkWeight(x: Matrix<FloatArray>, weight: FloatArray, what: string): void {
  if (weight.length !== x.shape[1]) {
    throw new ShapeError(`${what}: weight of length ${weight.length} for rows of ${x.shape[1]} features`);
  }
}

/** `x / rms(x) · weight` per row. */
export async function gpuRmsNorm<A extends FloatArray>(
  ctx: GpuContext,
  x: Matrix<A>,
  weight: FloatArray,
  eps: number,
): Promise<Matrix<A>> {
  checkWeight(x, weight, "rmsNorm");
  const [n, d] = x.shape;
  if (n * d === 0) return zerosLike(x);
  const [y] = await run(
    ctx,
    "rmsnorm",
    () => RMSNORM_WGSL,
    [f32(x.data), f32(weight)],
    [n * d * 4],
    [n, d, {
      f: eps,
    }, 0],
    perRow(n),
    "rmsNorm",
  );
  return like(x, new Float32Array(y));
}

/** Gradients of RMSNorm with respect to its input and weight. */
export async function gpuRmsNormBackward<A extends FloatArray>(
  ctx: GpuContext,
  x: Matrix<A>,
  weight: FloatArray,
  dy: Matrix<FloatArray>,
  eps: number,
): Promise<{ dx: Matrix<A>; dweight: Float32Array }> {
  checkWeight(x, weight, "rmsNormBackward");
  const [n, d] = x.shape;
  if (dy.shape[0] !== n || dy.shape[1] !== d) {
    throw new ShapeError(`rmsNormBackward: dy ${dy.shape[0]}×${dy.shape[1]} for x ${n}×${d}`);
  }
  if (n * d === 0) return { dx: zerosLike(x), dweight: new Float32Array(d) };
  const xb = ctx.upload(f32(x.data)), wb = ctx.upload(f32(weight)), db = ctx.upload(f32(dy.data));
  const dx = ctx.buffer(n * d * 4), t = ctx.buffer(n * d * 4), dw = ctx.buffer(d * 4);
  const u1 = ctx.uniform([n, d, { f: eps }, 0]), u2 = ctx.uniform([n, d, 0, 0]);
  try {
    const batch = ctx.batch().temp(u1, u2);
    batch.dispatch(ctx.pipeline("rmsnorm-bwd", () => RMSNORM_BACKWARD_WGSL), [xb, wb, db, dx, t, u1], perRow(n));
    batch.dispatch(ctx.pipeline("column-sum", () => COLUMN_SUM_WGSL), [t, dw, u2], [Math.ceil(d / 64)]);
    const [a, b] = await batch.readMany([{ buffer: dx, bytes: n * d * 4 }, { buffer: dw, bytes: d * 4 }]);
    await ctx.checkErrors("rmsNormBackward");
    return { dx: like(x, new Float32Array(a)), dweight: new Float32Array(b) };
  } finally {
    for (const b of [xb, wb, db, dx, t, dw]) b.destroy();
  }
}

/** Rotary position embedding (tables computed in float64 on the host, as the reference). */
export async function gpuRope<A extends FloatArray>(
  ctx: GpuContext,
  x: Matrix<A>,
  options: RopeOptions,
): Promise<Matrix<A>> {
  const { seqLen, headDim, theta, pairing, inverse = false } = options;
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    throw new OptionError(`rope: headDim must be a positive even integer, got ${headDim}`);
  }
  if (!Number.isInteger(seqLen) || seqLen <= 0) throw new OptionError(`rope: seqLen must be positive, got ${seqLen}`);
  if (pairing !== "half" && pairing !== "interleaved") throw new OptionError(`rope: unknown pairing "${pairing}"`);
  const [n, cols] = x.shape;
  if (cols % headDim !== 0) throw new ShapeError(`rope: ${cols} columns are not a multiple of headDim ${headDim}`);
  if (n * cols === 0) return zerosLike(x);
  const positions = Math.min(seqLen, n), half = headDim / 2;
  const { cos, sin } = ropeTables(positions, headDim, theta);
  const cs = new Float32Array(positions * half * 2);
  for (let k = 0; k < positions * half; k++) cs[2 * k] = cos[k], cs[2 * k + 1] = sin[k];
  const [y] = await run(
    ctx,
    "rope",
    () => ROPE_WGSL,
    [f32(x.data), cs],
    [n * cols * 4],
    [
      n,
      cols,
      headDim,
      seqLen,
      pairing === "interleaved" ? 1 : 0,
      { f: inverse ? -1 : 1 },
      positions,
      0,
    ],
    grid1d((n * cols) / 2),
    "rope",
  );
  return like(x, new Float32Array(y));
}

function checkSame(what: string, a: Matrix<FloatArray>, b: Matrix<FloatArray>, names: string): void {
  if (a.shape[0] !== b.shape[0] || a.shape[1] !== b.shape[1] || a.data.length !== b.data.length) {
    throw new ShapeError(`${what}: ${names} differ in shape, ${a.shape.join("×")} vs ${b.shape.join("×")}`);
  }
}

/** `silu(gate) ⊙ up`. */
export async function gpuSwiglu<A extends FloatArray>(
  ctx: GpuContext,
  gate: Matrix<A>,
  up: Matrix<FloatArray>,
): Promise<Matrix<A>> {
  checkSame("swiglu", gate, up, "gate and up");
  const n = gate.data.length;
  if (n === 0) return zerosLike(gate);
  const [a] = await run(
    ctx,
    "swiglu",
    () => SWIGLU_WGSL,
    [f32(gate.data), f32(up.data), new Float32Array(1)],
    [
      n * 4,
      4,
    ],
    [n, 0, 0, 0],
    grid1d(n),
    "swiglu",
  );
  return like(gate, new Float32Array(a));
}

/** Gradients of SwiGLU. */
export async function gpuSwigluBackward<A extends FloatArray>(
  ctx: GpuContext,
  gate: Matrix<A>,
  up: Matrix<FloatArray>,
  dy: Matrix<FloatArray>,
): Promise<{ dgate: Matrix<A>; dup: Matrix<A> }> {
  checkSame("swigluBackward", gate, up, "gate and up");
  checkSame("swigluBackward", gate, dy, "gate and dy");
  const n = gate.data.length;
  if (n === 0) return { dgate: zerosLike(gate), dup: zerosLike(gate) };
  const [a, b] = await run(
    ctx,
    "swiglu",
    () => SWIGLU_WGSL,
    [f32(gate.data), f32(up.data), f32(dy.data)],
    [
      n * 4,
      n * 4,
    ],
    [n, 1, 0, 0],
    grid1d(n),
    "swigluBackward",
  );
  return { dgate: like(gate, new Float32Array(a)), dup: like(gate, new Float32Array(b)) };
}

/** Softmax cross-entropy per token and, with `gradScale`, its gradient. */
export async function gpuCrossEntropy(
  ctx: GpuContext,
  logits: Matrix,
  targets: Int32Array,
  gradScale?: number | Float32Array,
): Promise<CrossEntropyResult> {
  const [n, vocab] = logits.shape;
  if (targets.length !== n) throw new ShapeError(`crossEntropy: ${targets.length} targets for ${n} rows of logits`);
  if (typeof gradScale === "object" && gradScale.length !== n) {
    throw new ShapeError(`crossEntropy: ${gradScale.length} gradient scales for ${n} rows of logits`);
  }
  for (let t = 0; t < n; t++) {
    const target = targets[t];
    if (target !== -1 && (!Number.isInteger(target) || target < 0 || target >= vocab)) {
      throw new ShapeError(`crossEntropy: target ${target} at row ${t} is outside [0, ${vocab})`);
    }
  }
  const withGrad = gradScale !== undefined;
  if (n === 0 || vocab === 0) {
    return withGrad ? { losses: new Float32Array(n), dlogits: zerosLike(logits) } : { losses: new Float32Array(n) };
  }
  const scales = typeof gradScale === "object" ? gradScale : new Float32Array(n).fill(gradScale ?? 0);
  const [losses, d] = await run(
    ctx,
    "cross-entropy",
    () => CROSS_ENTROPY_WGSL,
    [f32(logits.data), targets, scales],
    [
      n * 4,
      withGrad ? n * vocab * 4 : 4,
    ],
    [n, vocab, withGrad ? 1 : 0, 0],
    perRow(n),
    "crossEntropy",
  );
  const out: CrossEntropyResult = { losses: new Float32Array(losses) };
  return withGrad ? { ...out, dlogits: like(logits, new Float32Array(d)) } : out;
}

function checkAttention(
  what: string,
  shape: AttentionShape,
  q: Matrix<FloatArray>,
  k: Matrix<FloatArray>,
  v: Matrix<FloatArray>,
): void {
  const { batch, seqLen, heads, kvHeads, headDim } = shape;
  for (const [name, value] of Object.entries(shape)) {
    if (!Number.isInteger(value) || value <= 0) throw new OptionError(`${what}: ${name} must be a positive integer`);
  }
  if (heads % kvHeads !== 0) throw new OptionError(`${what}: ${heads} heads are not a multiple of ${kvHeads} kv heads`);
  const t = batch * seqLen;
  const expect = (m: Matrix<FloatArray>, cols: number, name: string) => {
    if (m.shape[0] !== t || m.shape[1] !== cols || m.data.length !== t * cols) {
      throw new ShapeError(`${what}: ${name} is ${m.shape[0]}×${m.shape[1]}, expected ${t}×${cols}`);
    }
  };
  expect(q, heads * headDim, "q"), expect(k, kvHeads * headDim, "k"), expect(v, kvHeads * headDim, "v");
}

function attentionUniform(shape: AttentionShape) {
  const { batch, seqLen, heads, kvHeads, headDim } = shape;
  return [batch * seqLen, seqLen, heads, kvHeads, { f: 1 / Math.sqrt(headDim) }, 0, 0, 0] as const;
}

/** Causal grouped-query attention. */
export async function gpuAttention<A extends FloatArray>(
  ctx: GpuContext,
  q: Matrix<A>,
  k: Matrix<FloatArray>,
  v: Matrix<FloatArray>,
  shape: AttentionShape,
): Promise<Matrix<A>> {
  checkAttention("attention", shape, q, k, v);
  const t = shape.batch * shape.seqLen, hd = shape.headDim;
  const [o] = await run(
    ctx,
    `attention:${hd}`,
    () => attentionWgsl(hd),
    [f32(q.data), f32(k.data), f32(v.data)],
    [
      t * shape.heads * hd * 4,
      t * shape.heads * 4,
    ],
    [...attentionUniform(shape)],
    grid1d(t * shape.heads, 64),
    "attention",
  );
  return like(q, new Float32Array(o));
}

/** Gradients of causal grouped-query attention (probabilities recomputed). */
export async function gpuAttentionBackward<A extends FloatArray>(
  ctx: GpuContext,
  q: Matrix<A>,
  k: Matrix<FloatArray>,
  v: Matrix<FloatArray>,
  dout: Matrix<FloatArray>,
  shape: AttentionShape,
): Promise<{ dq: Matrix<A>; dk: Matrix<A>; dv: Matrix<A> }> {
  checkAttention("attentionBackward", shape, q, k, v);
  const t = shape.batch * shape.seqLen, hd = shape.headDim, qCols = shape.heads * hd, kvCols = shape.kvHeads * hd;
  if (dout.shape[0] !== q.shape[0] || dout.shape[1] !== qCols) {
    throw new ShapeError(
      `attentionBackward: dout is ${dout.shape[0]}×${dout.shape[1]}, expected ${q.shape[0]}×${qCols}`,
    );
  }
  const qb = ctx.upload(f32(q.data)), kb = ctx.upload(f32(k.data)), vb = ctx.upload(f32(v.data));
  const dob = ctx.upload(f32(dout.data));
  const ob = ctx.buffer(t * qCols * 4), lse = ctx.buffer(t * shape.heads * 4), dd = ctx.buffer(t * shape.heads * 4);
  const dq = ctx.buffer(t * qCols * 4), dk = ctx.buffer(t * kvCols * 4), dv = ctx.buffer(t * kvCols * 4);
  const u = ctx.uniform([...attentionUniform(shape)]);
  const all = [qb, kb, vb, dob, ob, lse, dd, dq, dk, dv];
  try {
    const batch = ctx.batch().temp(u);
    batch.dispatch(
      ctx.pipeline(`attention:${hd}`, () => attentionWgsl(hd)),
      [qb, kb, vb, ob, lse, u],
      grid1d(t * shape.heads, 64),
    );
    batch.dispatch(
      ctx.pipeline(`attention-bwd-q:${hd}`, () => attentionBackwardQWgsl(hd)),
      [qb, kb, vb, ob, dob, lse, dq, dd, u],
      grid1d(t * shape.heads, 64),
    );
    batch.dispatch(
      ctx.pipeline(`attention-bwd-kv:${hd}`, () => attentionBackwardKvWgsl(hd)),
      [qb, kb, vb, dob, lse, dd, dk, dv, u],
      grid1d(t * shape.kvHeads, 64),
    );
    const [a, b, c] = await batch.readMany([
      { buffer: dq, bytes: t * qCols * 4 },
      { buffer: dk, bytes: t * kvCols * 4 },
      { buffer: dv, bytes: t * kvCols * 4 },
    ]);
    await ctx.checkErrors("attentionBackward");
    return {
      dq: like(q, new Float32Array(a)),
      dk: like(q, new Float32Array(b), t, kvCols),
      dv: like(q, new Float32Array(c), t, kvCols),
    };
  } finally {
    for (const b of all) b.destroy();
  }
}
