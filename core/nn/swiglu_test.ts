import assert from "node:assert/strict";
import { assertClose } from "../../tests/assert_close.ts";
import { ShapeError } from "../errors.ts";

import { fromRows } from "../tensor.ts";
import { swiglu, swigluBackward } from "./swiglu.ts";
import { dot, numericGrad, random64 } from "../../tests/numeric.ts";

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
