import { equal, ok, rejects } from "node:assert/strict";
import { OptionError, ShapeError } from "../core/errors.ts";
import { matmul } from "../core/linalg/matmul.ts";
import { svd } from "../core/linalg/svd.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { type Matrix, matrix } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { addLowRank, lorc, lowRankBitsPerWeight } from "./lorc.ts";
import { rtn } from "./rtn.ts";

const rows = 24, cols = 40;
const w = matrix(rows, cols, randomNormal(createRng(8), rows * cols, 0.1));
const wq = (await rtn(w, undefined, { bits: 2 })).dequantized;

function frob2(a: Matrix, b: Matrix): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i] - b.data[i]) ** 2;
  return s;
}

Deno.test("lorc: the residual weight error is the tail of E's singular values (Eckart-Young)", async () => {
  const e = matrix(rows, cols, w.data.map((v, i) => v - wq.data[i]));
  const { s } = svd(e);
  for (const rank of [0, 1, 5, 12, 24]) {
    const f = await lorc(w, wq, rank, { precision: "f32" });
    const tail = s.slice(rank).reduce((acc, x) => acc + x * x, 0);
    const got = frob2(w, await addLowRank(wq, f));
    ok(Math.abs(got - tail) <= 1e-5 * (1 + s[0] * s[0]), `rank ${rank}: ${got} vs ${tail}`);
  }
});

Deno.test("lorc: float16 factors stay within float16 rounding of the exact ones", async () => {
  const exact = await lorc(w, wq, 6, { precision: "f32" });
  const half = await lorc(w, wq, 6);
  ok(half.a.data.every((x, i) => Math.abs(x - exact.a.data[i]) <= 1e-3 * Math.abs(exact.a.data[i]) + 1e-7));
  assertClose(matmul(half.a, half.b).data, matmul(exact.a, exact.b).data, { atol: 1e-3, rtol: 1e-2 });
});

Deno.test("lorc: shapes, clipping, bit count and errors", async () => {
  const f = await lorc(w, wq, 100);
  equal(f.a.shape[1], rows);
  equal(f.b.shape[0], rows);
  equal(lowRankBitsPerWeight(rows, cols, 8), 16 * 8 * (rows + cols) / (rows * cols));
  await rejects(lorc(w, wq, -1), OptionError);
  await rejects(lorc(w, wq, 1.5), OptionError);
  await rejects(lorc(w, matrix(rows, cols - 1), 2), ShapeError);
});
