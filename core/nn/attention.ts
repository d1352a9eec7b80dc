/**
 * Reference causal softmax attention with grouped-query heads, forward and backward. The backward pass recomputes the
 * probabilities one query row at a time instead of storing the `[heads, seqLen, seqLen]` tensor, so memory stays
 * linear in the sequence length (the FlashAttention trade: a second pass of `q·kᵀ` for O(T) instead of O(T²) memory).
 *
 * Layout (see `core/backend.ts`): q `[batch·seqLen, heads·headDim]`, k and v `[batch·seqLen, kvHeads·headDim]`,
 * query head `h` reads key/value head `floor(h / (heads/kvHeads))` (Hugging Face's `repeat_kv`, llama2.c's `kv_mul`).
 *
 * @module
 */

import type { AttentionShape } from "../backend.ts";
import { OptionError, ShapeError } from "../errors.ts";
import { type FloatArray, type Matrix, zerosLike } from "../tensor.ts";

/** Validates the shape record against the operands; returns the column counts of q and k/v. */
function checkShapes(
  what: string,
  shape: AttentionShape,
  q: Matrix<FloatArray>,
  k: Matrix<FloatArray>,
  v: Matrix<FloatArray>,
): { qCols: number; kvCols: number } {
  const { batch, seqLen, heads, kvHeads, headDim } = shape;
  for (const [name, value] of Object.entries(shape)) {
    if (!Number.isInteger(value) || value <= 0) throw new OptionError(`${what}: ${name} must be a positive integer`);
  }
  if (heads % kvHeads !== 0) throw new OptionError(`${what}: ${heads} heads are not a multiple of ${kvHeads} kv heads`);
  const t = batch * seqLen, qCols = heads * headDim, kvCols = kvHeads * headDim;
  const expect = (m: Matrix<FloatArray>, cols: number, name: string) => {
    if (m.shape[0] !== t || m.shape[1] !== cols || m.data.length !== t * cols) {
      throw new ShapeError(`${what}: ${name} is ${m.shape[0]}×${m.shape[1]}, expected ${t}×${cols}`);
    }
  };
  expect(q, qCols, "q"), expect(k, kvCols, "k"), expect(v, kvCols, "v");
  return { qCols, kvCols };
}

/** Copies one head of one sequence (`[seqLen, headDim]`) into a contiguous float64 buffer, for cache-friendly loops. */
function gatherHead(
  src: FloatArray,
  dst: Float64Array,
  row0: number,
  seqLen: number,
  cols: number,
  col0: number,
  hd: number,
): void {
  for (let j = 0; j < seqLen; j++) {
    const o = (row0 + j) * cols + col0;
    for (let c = 0; c < hd; c++) dst[j * hd + c] = src[o + c];
  }
}

/**
 * Softmax probabilities of query row `i` over keys `0..i` into `p` (numerically stable: the row maximum is
 * subtracted before `exp`); `qi` is the query already multiplied by the scale.
 */
function probabilities(qi: Float64Array, keys: Float64Array, i: number, hd: number, p: Float64Array): void {
  let max = -Infinity;
  for (let j = 0; j <= i; j++) {
    const o = j * hd;
    let s = 0;
    for (let c = 0; c < hd; c++) s += qi[c] * keys[o + c];
    p[j] = s;
    if (s > max) max = s;
  }
  let sum = 0;
  for (let j = 0; j <= i; j++) {
    const e = Math.exp(p[j] - max);
    p[j] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let j = 0; j <= i; j++) p[j] *= inv;
}

/**
 * Causal attention `softmax(q·kᵀ/sqrt(headDim) + mask)·v` per sequence and head.
 *
 * @returns `[batch·seqLen, heads·headDim]` in the element type of `q`.
 * @throws {OptionError} for non-positive dimensions or heads not a multiple of kvHeads.
 * @throws {ShapeError} when an operand's shape does not match `shape`.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { attention } from "./attention.ts";
 * // The first position can only attend to itself: the output is its own value.
 * const q = fromRows([[1, 0]]), k = fromRows([[0, 1]]), v = fromRows([[5, 6]]);
 * const y = attention(q, k, v, { batch: 1, seqLen: 1, heads: 1, kvHeads: 1, headDim: 2 });
 * console.assert(y.data[0] === 5 && y.data[1] === 6);
 * ```
 */
export function attention<A extends FloatArray>(
  q: Matrix<A>,
  k: Matrix<FloatArray>,
  v: Matrix<FloatArray>,
  shape: AttentionShape,
): Matrix<A> {
  const { qCols, kvCols } = checkShapes("attention", shape, q, k, v);
  const { batch, seqLen: S, heads, kvHeads, headDim: hd } = shape;
  const group = heads / kvHeads, scale = 1 / Math.sqrt(hd);
  const out = zerosLike(q);
  const Q = q.data, O = out.data;
  const K = new Float64Array(S * hd), V = new Float64Array(S * hd);
  const qi = new Float64Array(hd), p = new Float64Array(S), acc = new Float64Array(hd);
  for (let b = 0; b < batch; b++) {
    const row0 = b * S;
    for (let g = 0; g < kvHeads; g++) {
      gatherHead(k.data, K, row0, S, kvCols, g * hd, hd);
      gatherHead(v.data, V, row0, S, kvCols, g * hd, hd);
      for (let h = g * group; h < (g + 1) * group; h++) {
        for (let i = 0; i < S; i++) {
          const qo = (row0 + i) * qCols + h * hd;
          for (let c = 0; c < hd; c++) qi[c] = Q[qo + c] * scale;
          probabilities(qi, K, i, hd, p);
          acc.fill(0);
          for (let j = 0; j <= i; j++) {
            const pj = p[j], o = j * hd;
            for (let c = 0; c < hd; c++) acc[c] += pj * V[o + c];
          }
          for (let c = 0; c < hd; c++) O[qo + c] = acc[c];
        }
      }
    }
  }
  return out;
}

/**
 * Gradients of {@link attention}. Per query row `i`, with probabilities `p` recomputed:
 * `dv_j += p_j·dout_i`, `dp_j = dout_i·v_j`, `ds_j = p_j·(dp_j − Σ_k p_k·dp_k)`,
 * `dq_i = scale·Σ_j ds_j·k_j`, `dk_j += scale·ds_j·q_i`.
 *
 * @param dout `[batch·seqLen, heads·headDim]` gradient of the output.
 * @returns `dq` like `q`; `dk`, `dv` like `k`, all in the element type of `q`.
 * @throws {OptionError} / {ShapeError} as {@link attention}.
 */
export function attentionBackward<A extends FloatArray>(
  q: Matrix<A>,
  k: Matrix<FloatArray>,
  v: Matrix<FloatArray>,
  dout: Matrix<FloatArray>,
  shape: AttentionShape,
): { dq: Matrix<A>; dk: Matrix<A>; dv: Matrix<A> } {
  const { qCols, kvCols } = checkShapes("attentionBackward", shape, q, k, v);
  if (dout.shape[0] !== q.shape[0] || dout.shape[1] !== qCols) {
    throw new ShapeError(
      `attentionBackward: dout is ${dout.shape[0]}×${dout.shape[1]}, expected ${q.shape[0]}×${qCols}`,
    );
  }
  const { batch, seqLen: S, heads, kvHeads, headDim: hd } = shape;
  const group = heads / kvHeads, scale = 1 / Math.sqrt(hd);
  const dq = zerosLike(q), dk = zerosLike(q, q.shape[0], kvCols), dv = zerosLike(q, q.shape[0], kvCols);
  const Q = q.data, DO = dout.data;
  const K = new Float64Array(S * hd), V = new Float64Array(S * hd);
  const dK = new Float64Array(S * hd), dV = new Float64Array(S * hd);
  const qi = new Float64Array(hd), gi = new Float64Array(hd), acc = new Float64Array(hd);
  const p = new Float64Array(S), dp = new Float64Array(S);
  for (let b = 0; b < batch; b++) {
    const row0 = b * S;
    for (let g = 0; g < kvHeads; g++) {
      gatherHead(k.data, K, row0, S, kvCols, g * hd, hd);
      gatherHead(v.data, V, row0, S, kvCols, g * hd, hd);
      dK.fill(0), dV.fill(0);
      for (let h = g * group; h < (g + 1) * group; h++) {
        for (let i = 0; i < S; i++) {
          const qo = (row0 + i) * qCols + h * hd;
          for (let c = 0; c < hd; c++) qi[c] = Q[qo + c] * scale, gi[c] = DO[qo + c];
          probabilities(qi, K, i, hd, p);
          let pdp = 0;
          for (let j = 0; j <= i; j++) {
            const o = j * hd, pj = p[j];
            let s = 0;
            for (let c = 0; c < hd; c++) {
              s += gi[c] * V[o + c];
              dV[o + c] += pj * gi[c];
            }
            dp[j] = s;
            pdp += pj * s;
          }
          acc.fill(0);
          for (let j = 0; j <= i; j++) {
            const ds = p[j] * (dp[j] - pdp), o = j * hd;
            // qi already carries the scale, so dk_j += ds·(scale·q_i) needs no further factor.
            for (let c = 0; c < hd; c++) {
              acc[c] += ds * K[o + c];
              dK[o + c] += ds * qi[c];
            }
          }
          for (let c = 0; c < hd; c++) dq.data[qo + c] = acc[c] * scale;
        }
      }
      for (let j = 0; j < S; j++) {
        const o = (row0 + j) * kvCols + g * hd;
        for (let c = 0; c < hd; c++) dk.data[o + c] = dK[j * hd + c], dv.data[o + c] = dV[j * hd + c];
      }
    }
  }
  return { dq, dk, dv };
}
