import assert from "node:assert/strict";
import { assertClose } from "../../tests/assert_close.ts";
import type { AttentionShape } from "../backend.ts";
import { OptionError, ShapeError } from "../errors.ts";

import { fromRows, type Matrix, matrix, matrix64 } from "../tensor.ts";
import { attention, attentionBackward } from "./attention.ts";
import { dot, numericGrad, random64 } from "../../tests/numeric.ts";

Deno.test("attention: closed forms (causal mask, uniform weights, batch independence)", () => {
  const shape: AttentionShape = { batch: 2, seqLen: 2, heads: 1, kvHeads: 1, headDim: 2 };
  // Zero queries give uniform weights over the visible prefix: row 0 sees v0, row 1 the mean of v0 and v1.
  const q = matrix(4, 2);
  const k = fromRows([[1, 2], [3, 4], [5, 6], [7, 8]]);
  const v = fromRows([[1, 0], [3, 2], [10, 20], [30, 40]]);
  assertClose(attention(q, k, v, shape).data, [1, 0, 2, 1, 10, 20, 20, 30]);
  // A key far ahead in score takes all the weight; exp must not overflow.
  const q2 = fromRows([[0, 0], [1e4, 0]]), k2 = fromRows([[0, 0], [1e4, 0]]), v2 = fromRows([[1, 1], [5, 7]]);
  const out = attention(q2, k2, v2, { ...shape, batch: 1 });
  assertClose(out.data, [1, 1, 5, 7]);
});

Deno.test("attention: grouped-query heads equal full heads with repeated keys and values", () => {
  const [S, H, KV, hd] = [5, 6, 2, 4];
  const q = random64(1, S, H * hd), k = random64(2, S, KV * hd), v = random64(3, S, KV * hd);
  const repeat = (m: Matrix<Float64Array>) => {
    const out = matrix64(S, H * hd);
    for (let t = 0; t < S; t++) {
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KV));
        out.data.set(m.data.subarray(t * KV * hd + g * hd, t * KV * hd + (g + 1) * hd), t * H * hd + h * hd);
      }
    }
    return out;
  };
  const gqa = attention(q, k, v, { batch: 1, seqLen: S, heads: H, kvHeads: KV, headDim: hd });
  const mha = attention(q, repeat(k), repeat(v), { batch: 1, seqLen: S, heads: H, kvHeads: H, headDim: hd });
  assertClose(gqa.data, mha.data, { atol: 1e-12 });
});

Deno.test("attentionBackward: matches finite differences in float64 (GQA 3:1, two sequences)", () => {
  const shape: AttentionShape = { batch: 2, seqLen: 4, heads: 3, kvHeads: 1, headDim: 3 };
  const T = 8, qc = 9, kc = 3;
  const q = random64(4, T, qc), k = random64(5, T, kc), v = random64(6, T, kc), dout = random64(7, T, qc);
  const loss = () => dot(attention(q, k, v, shape).data, dout.data);
  const { dq, dk, dv } = attentionBackward(q, k, v, dout, shape);
  assertClose(dq.data, numericGrad(q.data, loss), { atol: 1e-8, rtol: 1e-6 }, "dq");
  assertClose(dk.data, numericGrad(k.data, loss), { atol: 1e-8, rtol: 1e-6 }, "dk");
  assertClose(dv.data, numericGrad(v.data, loss), { atol: 1e-8, rtol: 1e-6 }, "dv");
});

Deno.test("attention: rejects inconsistent shapes", () => {
  const q = matrix(4, 4), k = matrix(4, 2);
  assert.throws(() => attention(q, k, k, { batch: 1, seqLen: 4, heads: 3, kvHeads: 2, headDim: 1 }), OptionError);
  assert.throws(() => attention(q, k, k, { batch: 2, seqLen: 4, heads: 2, kvHeads: 1, headDim: 2 }), ShapeError);
  assert.throws(
    () => attentionBackward(q, k, k, matrix(4, 3), { batch: 1, seqLen: 4, heads: 2, kvHeads: 1, headDim: 2 }),
    ShapeError,
  );
});
