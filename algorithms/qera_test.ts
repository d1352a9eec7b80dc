import { ok, rejects } from "node:assert/strict";
import { ShapeError } from "../core/errors.ts";
import { invSqrtSpd, sqrtSpd } from "../core/linalg/spd.ts";
import { svd } from "../core/linalg/svd.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { eye, type FloatArray, fromRows, type Matrix, matrix, toFloat32 } from "../core/tensor.ts";
import { matmul } from "../core/linalg/matmul.ts";
import { assertClose } from "../tests/assert_close.ts";
import { gptq } from "./gptq.ts";
import { hessianOf } from "./hessian.ts";
import { addLowRank, lorc } from "./lorc.ts";
import { qera } from "./qera.ts";
import { correlatedInputs } from "../tests/numeric.ts";

/** ‖X(W − Ŵ)ᵀ‖² in float64. */
function outputError(x: Matrix, w: Matrix, wq: Matrix): number {
  const [n, d] = x.shape, rows = w.shape[0];
  let s = 0;
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < rows; i++) {
      let y = 0;
      for (let j = 0; j < d; j++) y += x.data[t * d + j] * (w.data[i * d + j] - wq.data[i * d + j]);
      s += y * y;
    }
  }
  return s;
}

function product(a: Matrix, b: Matrix): Float32Array {
  return matmul(a, b).data;
}

const rows = 40, cols = 64;
const w = matrix(rows, cols, randomNormal(createRng(3), rows * cols, 0.1));
const x = correlatedInputs(512, cols, 4, (j) => 0.2 + 3 * ((j * 7) % 11) / 11);
const h = await hessianOf(x); // H = 2/N·XᵀX = 2R

Deno.test("qera: output error QERA-exact ≤ QERA-approx ≤ LoRC ≤ none on correlated inputs", async () => {
  for (const [bits, rank] of [[3, 8], [2, 8], [3, 16], [2, 4]]) {
    const base = (await gptq(w, h, { bits, groupSize: 16 })).dequantized;
    const none = outputError(x, w, base);
    const lo = outputError(x, w, await addLowRank(base, await lorc(w, base, rank)));
    const approx = outputError(x, w, await addLowRank(base, await qera(w, base, h, rank, { exact: false })));
    const exact = outputError(x, w, await addLowRank(base, await qera(w, base, h, rank)));
    const what = `${bits} bits, rank ${rank}: exact ${exact}, approx ${approx}, lorc ${lo}, none ${none}`;
    ok(exact <= approx && approx <= lo && lo <= none, what);
  }
});

Deno.test("qera: with R = I, QERA-exact equals LoRC (and so does QERA-approx)", async () => {
  const base = (await gptq(w, h, { bits: 2 })).dequantized;
  const identity = toFloat32(eye(cols));
  for (const rank of [1, 8, 40]) {
    const l = await lorc(w, base, rank, { precision: "f32" });
    for (const exact of [true, false]) {
      const q = await qera(w, base, identity, rank, { exact, precision: "f32" });
      assertClose(product(q.a, q.b), product(l.a, l.b), { atol: 2e-5, rtol: 1e-4 }, `rank ${rank}, exact ${exact}`);
    }
  }
});

Deno.test("qera: the projected form equals the paper's U_r Σ_r V_rᵀ R^{−1/2}", async () => {
  const base = (await gptq(w, h, { bits: 3 })).dequantized;
  const r: Matrix<FloatArray> = { data: Float64Array.from(h.data, (v) => v / 2), shape: [cols, cols] };
  const e = matrix(rows, cols, w.data.map((v, i) => v - base.data[i]));
  const rank = 8;
  const { u, s, v } = svd(matmul(e, toFloat32(sqrtSpd(r))), { rank });
  const usv = matrix(rows, cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let acc = 0;
      for (let k = 0; k < rank; k++) acc += u.data[i * rank + k] * s[k] * v.data[j * rank + k];
      usv.data[i * cols + j] = acc;
    }
  }
  const paper = matmul(usv, toFloat32(invSqrtSpd(r)));
  const q = await qera(w, base, r, rank, { precision: "f32" });
  assertClose(product(q.a, q.b), paper.data, { atol: 2e-4, rtol: 2e-3 });
  // H = 2R gives the same factors' product: QERA is invariant to the scale of R.
  const q2 = await qera(w, base, h, rank, { precision: "f32" });
  assertClose(product(q2.a, q2.b), product(q.a, q.b), { atol: 1e-5, rtol: 1e-4 });
});

Deno.test("qera: singular R (dead and duplicated inputs) gives finite factors that still help", async () => {
  const xd = matrix(256, cols, x.data.slice(0, 256 * cols));
  for (let t = 0; t < 256; t++) {
    xd.data[t * cols + 5] = 0; // dead input
    xd.data[t * cols + 7] = xd.data[t * cols + 6]; // duplicated input
  }
  const hd = await hessianOf(xd);
  const base = (await gptq(w, hd, { bits: 2 })).dequantized;
  for (const exact of [true, false]) {
    const f = await qera(w, base, hd, 8, { exact });
    ok(f.a.data.every(Number.isFinite) && f.b.data.every(Number.isFinite));
    ok(outputError(xd, w, await addLowRank(base, f)) < outputError(xd, w, base));
  }
});

Deno.test("qera: factor shapes, float16 values, rank 0 and clipping; shape errors", async () => {
  const base = (await gptq(w, h, { bits: 3 })).dequantized;
  const f = await qera(w, base, h, 8);
  ok(f.a.shape[0] === rows && f.a.shape[1] === 8 && f.b.shape[0] === 8 && f.b.shape[1] === cols);
  const clipped = await qera(w, base, h, 1000, { exact: false });
  ok(clipped.a.shape[1] === rows);
  const zero = await qera(w, base, h, 0);
  ok(zero.a.shape[1] === 0 && zero.b.shape[0] === 0);
  await rejects(qera(w, base, fromRows([[1]]), 2), ShapeError);
});
