import assert from "node:assert/strict";
import { assertClose } from "../../tests/assert_close.ts";
import { ShapeError } from "../errors.ts";
import { createRng } from "../random.ts";
import { fromRows, type Matrix, matrix64 } from "../tensor.ts";
import { swiglu, swigluBackward } from "./swiglu.ts";

function random64(seed: number, rows: number, cols: number, scale = 1): Matrix<Float64Array> {
  const rng = createRng(seed), m = matrix64(rows, cols);
  for (let i = 0; i < m.data.length; i++) m.data[i] = rng.normal() * scale;
  return m;
}

function numericGrad(x: Float64Array, f: () => number, h = 1e-6): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + h;
    const up = f();
    x[i] = v - h;
    const down = f();
    x[i] = v;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

Deno.test("swiglu: closed form, and no overflow for large |gate|", () => {
  const y = swiglu(fromRows([[0, 1, -800, 800]]), fromRows([[3, 2, 1, 0.5]]));
  assertClose(y.data, [0, 2 / (1 + Math.exp(-1)), 0, 400], { atol: 1e-6, rtol: 1e-6 });
  assert.throws(() => swiglu(fromRows([[1]]), fromRows([[1, 2]])), ShapeError);
});

Deno.test("swigluBackward: matches finite differences in float64", () => {
  const gate = random64(1, 4, 9, 3), up = random64(2, 4, 9), dy = random64(3, 4, 9);
  const loss = () => dot(swiglu(gate, up).data, dy.data);
  const { dgate, dup } = swigluBackward(gate, up, dy);
  assertClose(dgate.data, numericGrad(gate.data, loss), { atol: 1e-7, rtol: 1e-6 }, "dgate");
  assertClose(dup.data, numericGrad(up.data, loss), { atol: 1e-7, rtol: 1e-6 }, "dup");
});
