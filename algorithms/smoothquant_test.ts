import { ok, throws } from "node:assert/strict";
import { OptionError, ShapeError } from "../core/errors.ts";
import { fromRows } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { smoothQuantScales } from "./smoothquant.ts";

Deno.test("smoothQuantScales: max|X|^α / max|W|^(1−α) with the weight maximum over every consumer", () => {
  const x = new Float32Array([8, 2, 1]);
  const a = fromRows([[1, -0.5, 2], [0.25, 1, -1]]), b = fromRows([[-4, 0.1, 0.5]]);
  const s = smoothQuantScales(x, [a, b], { alpha: 0.75 });
  const wmax = [4, 1, 2];
  assertClose(s, [0, 1, 2].map((j) => x[j] ** 0.75 / wmax[j] ** 0.25), { atol: 0, rtol: 1e-6 });
  assertClose(smoothQuantScales(x, [a, b], { alpha: 1 }), x, { atol: 0, rtol: 1e-7 });
  assertClose(smoothQuantScales(x, [a, b], { alpha: 0 }), wmax.map((m) => 1 / m), { atol: 0, rtol: 1e-7 });
});

Deno.test("smoothQuantScales: dead channels get 1, tiny ones are clamped; bad inputs are refused", () => {
  const s = smoothQuantScales(new Float32Array([0, 1e-30, 3]), [fromRows([[1, 1, 0]])]);
  ok(s[0] === 1 && s[2] === 1);
  ok(s[1] === Math.fround(1e-5));
  throws(() => smoothQuantScales(new Float32Array(2), [fromRows([[1, 1, 1]])]), ShapeError);
  throws(() => smoothQuantScales(new Float32Array(3), [], { alpha: 1.5 }), OptionError);
});
