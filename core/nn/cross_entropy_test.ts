import assert from "node:assert/strict";
import { assertClose } from "../../tests/assert_close.ts";
import { ShapeError } from "../errors.ts";
import { createRng } from "../random.ts";
import { fromRows, matrix64 } from "../tensor.ts";
import { crossEntropy } from "./cross_entropy.ts";
import { numericGrad } from "../../tests/numeric.ts";

Deno.test("crossEntropy: closed forms, ignored targets, large logits", () => {
  const logits = fromRows([[0, 0, 0, 0], [1, 2, 3, 4], [5, 5, 5, 5], [1000, 0, -1000, 0]]);
  const { losses, dlogits } = crossEntropy(logits, new Int32Array([2, 3, -1, 0]), 0.5);
  const lse = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3) + Math.exp(4));
  assertClose(losses, [Math.log(4), lse - 4, 0, 0], { atol: 1e-6, rtol: 1e-6 });
  assert.ok(dlogits);
  // Row 0: 0.5·(1/4 − onehot(2)); the ignored row has no gradient; row 3 is already certain.
  assertClose(dlogits.data.subarray(0, 4), [0.125, 0.125, -0.375, 0.125], { atol: 1e-7 });
  assert.deepEqual([...dlogits.data.subarray(8, 12)], [0, 0, 0, 0]);
  assertClose(dlogits.data.subarray(12, 16), [0, 0, 0, 0], { atol: 1e-7 });
  assert.equal(crossEntropy(logits, new Int32Array([0, 0, 0, 0])).dlogits, undefined);
});

Deno.test("crossEntropy: rejects bad targets and scales", () => {
  const logits = fromRows([[0, 0], [1, 1]]);
  assert.throws(() => crossEntropy(logits, new Int32Array([0])), ShapeError);
  assert.throws(() => crossEntropy(logits, new Int32Array([0, 2])), ShapeError);
  assert.throws(() => crossEntropy(logits, new Int32Array([0, -2])), ShapeError);
  assert.throws(() => crossEntropy(logits, new Int32Array([0, 1]), new Float32Array(3)), ShapeError);
});

Deno.test("crossEntropy gradient: matches finite differences with per-token scales", () => {
  const rng = createRng(5);
  const z = matrix64(5, 11);
  for (let i = 0; i < z.data.length; i++) z.data[i] = 3 * rng.normal();
  const targets = new Int32Array([3, -1, 0, 10, 7]);
  const scales = new Float64Array([0.5, 2, -1, 0.25, 1]);
  const loss = () => {
    const { losses } = crossEntropy(z, targets);
    let s = 0;
    for (let t = 0; t < losses.length; t++) s += scales[t] * losses[t];
    return s;
  };
  const { dlogits } = crossEntropy(z, targets, scales);
  assert.ok(dlogits);
  assertClose(dlogits.data, numericGrad(z.data, loss), { atol: 1e-7, rtol: 1e-6 });
});
