import assert from "node:assert/strict";
import { assertClose } from "../../tests/assert_close.ts";
import { ShapeError } from "../errors.ts";
import { createRng } from "../random.ts";
import { fromRows, type Matrix, matrix64 } from "../tensor.ts";
import { rmsNorm, rmsNormBackward } from "./rms_norm.ts";
import { dot, numericGrad } from "../../tests/numeric.ts";

function random64(seed: number, rows: number, cols: number): Matrix<Float64Array> {
  const rng = createRng(seed), m = matrix64(rows, cols);
  for (let i = 0; i < m.data.length; i++) m.data[i] = rng.normal();
  return m;
}

/** Central differences of `f` at every element of `x` (modified in place and restored). */
Deno.test("rmsNorm: closed form on a 3-4 row", () => {
  const y = rmsNorm(fromRows([[3, 4], [0, 0]]), new Float32Array([2, -1]), 0.5);
  const r = 1 / Math.sqrt(12.5 + 0.5);
  assertClose(y.data, [6 * r, -4 * r, 0, 0], { atol: 1e-6, rtol: 1e-6 });
  assert.throws(() => rmsNorm(fromRows([[1, 2]]), new Float32Array(3), 1e-5), ShapeError);
});

Deno.test("rmsNormBackward: matches finite differences in float64", () => {
  const [n, d, eps] = [5, 7, 1e-3];
  const x = random64(1, n, d), dy = random64(2, n, d);
  const w = random64(3, 1, d).data;
  const loss = () => dot(rmsNorm(x, w, eps).data, dy.data);
  const { dx, dweight } = rmsNormBackward(x, w, dy, eps);
  assertClose(dx.data, numericGrad(x.data, loss), { atol: 1e-7, rtol: 1e-6 }, "dx");
  assertClose(dweight, numericGrad(w, loss), { atol: 1e-5, rtol: 1e-5 }, "dweight (float32)");
  assert.throws(() => rmsNormBackward(x, w, matrix64(n, d + 1), eps), ShapeError);
});
