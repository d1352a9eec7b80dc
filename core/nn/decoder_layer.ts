/**
 * One Llama decoder layer's forward pass composed from a backend's kernels: the definition every
 * `Backend.decoderLayer` is checked against, and the implementation of the backends without a fused one.
 *
 * @module
 */

import type { Backend, DecoderLayerOptions, DecoderLayerWeights, RopeOptions } from "../backend.ts";
import { OptionError, ShapeError } from "../errors.ts";
import type { Matrix } from "../tensor.ts";

/** The kernels {@link decoderLayerWith} composes. */
export type DecoderLayerKernels = Pick<Backend, "rmsNorm" | "matmul" | "rope" | "attention" | "swigluLinear">;

/** RoPE's options for the queries and keys of a layer. */
export function layerRopeOptions(options: DecoderLayerOptions): RopeOptions {
  const { attention: { seqLen, headDim }, ropeTheta: theta, ropePairing: pairing } = options;
  return { seqLen, headDim, theta, pairing };
}

/**
 * `h = x + o(attn(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x))))`, `out = h + down(silu(gate(n₂(h))) ⊙ up(n₂(h)))`, each
 * step one of `kernels`' calls and the residual adds in float32.
 *
 * @param x `[batch·seqLen, hidden]`, the residual stream entering the layer.
 * @returns the residual stream leaving it.
 * @throws as {@link checkDecoderLayer}.
 *
 * @example
 * ```ts ignore
 * const out = await decoderLayerWith(tsBackend, x, model.weights.layers[0], options);
 * ```
 */
export async function decoderLayerWith(
  kernels: DecoderLayerKernels,
  x: Matrix,
  w: DecoderLayerWeights,
  options: DecoderLayerOptions,
): Promise<Matrix> {
  checkDecoderLayer(x, w, options);
  const { eps, attention: shape } = options;
  const rope = layerRopeOptions(options);
  const linear = (input: Matrix, weight: Matrix) => kernels.matmul(input, weight, { transB: true });
  const xn = await kernels.rmsNorm(x, w.inputNorm, eps);
  const q = await kernels.rope(await linear(xn, w.q), rope);
  const k = await kernels.rope(await linear(xn, w.k), rope);
  const v = await linear(xn, w.v);
  const h = addResidual(x, await linear(await kernels.attention(q, k, v, shape), w.o));
  const act = await kernels.swigluLinear(await kernels.rmsNorm(h, w.postAttentionNorm, eps), w.gate, w.up);
  return addResidual(h, await linear(act, w.down));
}

/**
 * The shapes a decoder layer needs: positive integer attention sizes with `heads` a multiple of `kvHeads`, `x` of
 * `batch·seqLen` rows of the hidden size, and every weight the size those imply.
 * @throws {OptionError} for a bad attention shape; {@link ShapeError} for a mismatched input or weight.
 */
export function checkDecoderLayer(x: Matrix, w: DecoderLayerWeights, options: DecoderLayerOptions): void {
  const { batch, seqLen, heads, kvHeads, headDim } = options.attention;
  for (const [name, value] of Object.entries(options.attention)) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new OptionError(`decoderLayer: ${name} must be a positive integer`);
    }
  }
  if (heads % kvHeads !== 0) {
    throw new OptionError(`decoderLayer: ${heads} heads are not a multiple of ${kvHeads} kv heads`);
  }
  const hidden = w.inputNorm.length, f = w.gate.shape[0], qCols = heads * headDim, kvCols = kvHeads * headDim;
  const expect = (m: Matrix, rows: number, cols: number, name: string) => {
    if (m.shape[0] !== rows || m.shape[1] !== cols || m.data.length !== rows * cols) {
      throw new ShapeError(`decoderLayer: ${name} is ${m.shape[0]}×${m.shape[1]}, expected ${rows}×${cols}`);
    }
  };
  expect(x, batch * seqLen, hidden, "the input");
  if (w.postAttentionNorm.length !== hidden) {
    throw new ShapeError(`decoderLayer: post-attention norm of ${w.postAttentionNorm.length} for ${hidden} features`);
  }
  expect(w.q, qCols, hidden, "q"), expect(w.k, kvCols, hidden, "k"), expect(w.v, kvCols, hidden, "v");
  expect(w.o, hidden, qCols, "o"), expect(w.gate, f, hidden, "gate"), expect(w.up, f, hidden, "up");
  expect(w.down, hidden, f, "down");
}

/** `a + b` elementwise in float32: a residual connection (shapes checked by the caller). */
export function addResidual(a: Matrix, b: Matrix): Matrix {
  const out = new Float32Array(a.data.length);
  const A = a.data, B = b.data;
  for (let i = 0; i < out.length; i++) out[i] = A[i] + B[i];
  return { data: out, shape: [a.shape[0], a.shape[1]] };
}
