import assert from "node:assert/strict";
import { assertClose } from "../../tests/assert_close.ts";
import type { RopeOptions } from "../backend.ts";
import { OptionError, ShapeError } from "../errors.ts";
import { createRng } from "../random.ts";
import { fromRows, type Matrix, matrix64 } from "../tensor.ts";
import { rope } from "./rope.ts";
import { dot } from "../../tests/numeric.ts";

function random64(seed: number, rows: number, cols: number): Matrix<Float64Array> {
  const rng = createRng(seed), m = matrix64(rows, cols);
  for (let i = 0; i < m.data.length; i++) m.data[i] = rng.normal();
  return m;
}

Deno.test("rope: closed form angles for both pairings, positions wrap at seqLen", () => {
  // headDim 4: pair 0 turns by p radians, pair 1 by p/100 (theta 10000: 10000^(-2/4) = 1/100).
  const x = fromRows([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]);
  const rot = (
    a: number,
    b: number,
    ang: number,
  ) => [a * Math.cos(ang) - b * Math.sin(ang), a * Math.sin(ang) + b * Math.cos(ang)];
  const half = rope(x, { seqLen: 2, headDim: 4, theta: 10000, pairing: "half" });
  // Row 2 is position 0 again.
  const [h0, h2] = rot(1, 3, 1), [h1, h3] = rot(2, 4, 0.01);
  assertClose(half.data, [1, 2, 3, 4, h0, h1, h2, h3, 1, 2, 3, 4], { atol: 1e-6 });
  const inter = rope(x, { seqLen: 2, headDim: 4, theta: 10000, pairing: "interleaved" });
  const [i0, i1] = rot(1, 2, 1), [i2, i3] = rot(3, 4, 0.01);
  assertClose(inter.data, [1, 2, 3, 4, i0, i1, i2, i3, 1, 2, 3, 4], { atol: 1e-6 });
});

Deno.test("rope: the pairings agree up to a permutation of each head, and inverse undoes forward", () => {
  const [tokens, heads, hd] = [6, 3, 8];
  const x = random64(1, tokens, heads * hd);
  const opts = { seqLen: 3, headDim: hd, theta: 500 } as const;
  // Interleaved index 2i ↔ half index i, 2i+1 ↔ i + hd/2.
  const perm = (m: Matrix<Float64Array>) => {
    const out = matrix64(tokens, heads * hd);
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < hd / 2; i++) {
          const b = t * heads * hd + h * hd;
          out.data[b + 2 * i] = m.data[b + i];
          out.data[b + 2 * i + 1] = m.data[b + i + hd / 2];
        }
      }
    }
    return out;
  };
  const viaHalf = perm(rope(x, { ...opts, pairing: "half" }));
  const viaInterleaved = rope(perm(x), { ...opts, pairing: "interleaved" });
  assertClose(viaHalf.data, viaInterleaved.data, { atol: 1e-12 });
  for (const pairing of ["half", "interleaved"] as const) {
    const back = rope(rope(x, { ...opts, pairing }), { ...opts, pairing, inverse: true });
    assertClose(back.data, x.data, { atol: 1e-12 }, pairing);
  }
});

Deno.test("rope backward: the inverse rotation is the adjoint (⟨dy, R x⟩ = ⟨Rᵀ dy, x⟩) in float64", () => {
  // RoPE is linear in x, so this identity is the exact finite-difference check of its gradient.
  for (const pairing of ["half", "interleaved"] as const) {
    const opts: RopeOptions = { seqLen: 5, headDim: 6, theta: 10000, pairing };
    const x = random64(2, 10, 12), dy = random64(3, 10, 12);
    const lhs = dot(dy.data, rope(x, opts).data);
    const rhs = dot(rope(dy, { ...opts, inverse: true }).data, x.data);
    assertClose([lhs], [rhs], { atol: 1e-12, rtol: 1e-12 }, pairing);
  }
});

Deno.test("rope: rejects bad options", () => {
  const x = fromRows([[1, 2, 3, 4]]);
  assert.throws(() => rope(x, { seqLen: 1, headDim: 3, theta: 1e4, pairing: "half" }), OptionError);
  assert.throws(() => rope(x, { seqLen: 0, headDim: 2, theta: 1e4, pairing: "half" }), OptionError);
  assert.throws(() => rope(x, { seqLen: 1, headDim: 8, theta: 1e4, pairing: "half" }), ShapeError);
});
