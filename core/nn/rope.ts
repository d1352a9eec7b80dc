/**
 * Reference rotary position embedding (RoPE) in both pairings that Llama checkpoints use, forward and inverse.
 *
 * Pair `i` (of `headDim/2`) rotates by the angle `p · theta^(−2i/headDim)` at position `p`:
 * `"half"` pairs element `i` with `i + headDim/2` (Hugging Face), `"interleaved"` pairs `2i` with `2i+1` (llama2.c,
 * Meta's original). The two give the same model once the q/k projection rows are permuted accordingly.
 *
 * @module
 */

import type { RopeOptions } from "../backend.ts";
import { OptionError, ShapeError } from "../errors.ts";
import { type FloatArray, type Matrix, zerosLike } from "../tensor.ts";

/**
 * `cos` and `sin` tables `[seqLen, headDim/2]` in float64: computing them once per call keeps the inner loop free of
 * transcendental functions.
 */
export function ropeTables(seqLen: number, headDim: number, theta: number): { cos: Float64Array; sin: Float64Array } {
  const half = headDim / 2;
  const cos = new Float64Array(seqLen * half), sin = new Float64Array(seqLen * half);
  for (let i = 0; i < half; i++) {
    const freq = Math.pow(theta, (-2 * i) / headDim);
    for (let p = 0; p < seqLen; p++) {
      cos[p * half + i] = Math.cos(p * freq);
      sin[p * half + i] = Math.sin(p * freq);
    }
  }
  return { cos, sin };
}

/**
 * Where {@link rope} finds the pairs of rows of `cols` columns: pair `i` of each head is elements `i·stride` and
 * `i·stride + partner` ("half": element `i` and `i + half`; "interleaved": `2i` and `2i + 1`), rotated by `sign`
 * times the angle.
 * @throws {OptionError} for an odd `headDim`, a non-positive `seqLen` or an unknown pairing.
 * @throws {ShapeError} when `cols` is not a multiple of `headDim`.
 */
export function ropeLayout(
  options: RopeOptions,
  cols: number,
): { seqLen: number; heads: number; half: number; stride: number; partner: number; sign: number } {
  const { seqLen, headDim, pairing, inverse = false } = options;
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    throw new OptionError(`rope: headDim must be a positive even integer, got ${headDim}`);
  }
  if (!Number.isInteger(seqLen) || seqLen <= 0) throw new OptionError(`rope: seqLen must be positive, got ${seqLen}`);
  if (pairing !== "half" && pairing !== "interleaved") throw new OptionError(`rope: unknown pairing "${pairing}"`);
  if (cols % headDim !== 0) throw new ShapeError(`rope: ${cols} columns are not a multiple of headDim ${headDim}`);
  const half = headDim / 2;
  return {
    seqLen,
    heads: cols / headDim,
    half,
    stride: pairing === "half" ? 1 : 2,
    partner: pairing === "half" ? half : 1,
    sign: inverse ? -1 : 1,
  };
}

/**
 * Rotates every head of every token of `x` (`[tokens, heads · headDim]`) by its position `token mod seqLen`;
 * with `inverse`, by minus the angle (the transpose, i.e. the backward pass).
 *
 * @returns a new matrix of the element type of `x`.
 * @throws {OptionError} for an odd `headDim`, a non-positive `seqLen` or an unknown pairing.
 * @throws {ShapeError} when the columns are not a multiple of `headDim`.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { rope } from "./rope.ts";
 * // Position 0 is the identity.
 * const y = rope(fromRows([[1, 2]]), { seqLen: 1, headDim: 2, theta: 10000, pairing: "half" });
 * console.assert(y.data[0] === 1 && y.data[1] === 2);
 * ```
 */
export function rope<A extends FloatArray>(x: Matrix<A>, options: RopeOptions): Matrix<A> {
  const { seqLen, heads, half, stride, partner, sign } = ropeLayout(options, x.shape[1]);
  const [n, cols] = x.shape;
  const { cos, sin: sinTable } = ropeTables(Math.min(seqLen, n), options.headDim, options.theta);
  const out = zerosLike(x);
  const X = x.data, Y = out.data;
  for (let t = 0; t < n; t++) {
    const tab = (t % seqLen) * half;
    for (let h = 0; h < heads; h++) {
      const base = t * cols + h * 2 * half;
      for (let i = 0; i < half; i++) {
        const c = cos[tab + i], s = sign * sinTable[tab + i];
        const ia = base + i * stride, ib = ia + partner;
        const a = X[ia], b = X[ib];
        Y[ia] = a * c - b * s;
        Y[ib] = a * s + b * c;
      }
    }
  }
  return out;
}
