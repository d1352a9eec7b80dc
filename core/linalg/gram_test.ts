import assert from "node:assert/strict";
import { ShapeError } from "../errors.ts";
import { createRng, randomNormal } from "../random.ts";
import { fromRows, type Matrix, matrix, matrix64 } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { gramAccumulate } from "./gram.ts";

/** `Σ_t x_t·x_tᵀ` by the textbook triple loop in float64. */
function naiveGram(x: Matrix): Float64Array {
  const [n, d] = x.shape;
  const g = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let t = 0; t < n; t++) s += x.data[t * d + i] * x.data[t * d + j];
      g[i * d + j] = s;
    }
  }
  return g;
}

function assertSymmetric(m: Matrix<Float32Array | Float64Array>): void {
  const d = m.shape[0];
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) assert.equal(m.data[i * d + j], m.data[j * d + i]);
}

const SHAPES: [number, number][] = [[1, 1], [1, 7], [7, 1], [7, 7], [385, 7], [7, 385], [300, 64], [64, 385]];

Deno.test("gramAccumulate: float64 accumulator equals the float64 triple loop (two batches, running mean)", () => {
  const rng = createRng(81);
  for (const [n, d] of SHAPES) {
    const x1 = matrix(n, d, randomNormal(rng, n * d)), x2 = matrix(n, d, randomNormal(rng, n * d));
    const acc = matrix64(d, d);
    gramAccumulate(acc, x1, 2 / n);
    gramAccumulate(acc, x2, 0.5);
    const g1 = naiveGram(x1), g2 = naiveGram(x2);
    const want = g1.map((v, i) => (2 / n) * v + 0.5 * g2[i]);
    assertSymmetric(acc);
    // Different summation order only: a few ε relative to Σ|x_i·x_j| ≤ ‖x_i‖·‖x_j‖ ≈ n.
    assertClose(acc.data, want, { atol: 1e-14 * n, rtol: 1e-13 }, `gram f64 ${n}×${d}`);
  }
});

Deno.test("gramAccumulate: float32 accumulator within float32 rounding of the float64 result, exactly symmetric", () => {
  const rng = createRng(82);
  for (const [n, d] of SHAPES) {
    const x = matrix(n, d, randomNormal(rng, n * d));
    const acc = matrix(d, d);
    gramAccumulate(acc, x, 1 / n);
    gramAccumulate(acc, x, 1 / n);
    assert.ok(acc.data instanceof Float32Array);
    assertSymmetric(acc);
    const want = naiveGram(x).map((v) => (2 * v) / n);
    // Each call rounds its contribution into float32 at least once (an implementation may round per chunk of rows).
    assertClose(acc.data, want, { atol: 1e-6, rtol: 1e-6 }, `gram f32 ${n}×${d}`);
  }
});

Deno.test("gramAccumulate: closed form, adds to what is there, alpha = 0 leaves it unchanged", () => {
  const h = matrix64(2, 2, new Float64Array([1, 0, 0, 1]));
  gramAccumulate(h, fromRows([[1, 2], [3, 4]]), 1); // XᵀX = [[10, 14], [14, 20]]
  assert.deepEqual(Array.from(h.data), [11, 14, 14, 21]);
  gramAccumulate(h, fromRows([[5, 6]]), 0);
  assert.deepEqual(Array.from(h.data), [11, 14, 14, 21]);
  gramAccumulate(h, fromRows([[1, -1]]), -2);
  assert.deepEqual(Array.from(h.data), [9, 16, 16, 19]);
  const empty = matrix64(3, 3);
  gramAccumulate(empty, matrix(0, 3), 1);
  assert.ok(empty.data.every((v) => v === 0));
});

Deno.test("gramAccumulate: ShapeError when the accumulator is not [d, d]", () => {
  assert.throws(() => gramAccumulate(matrix64(3, 3), matrix(2, 4), 1), (e: unknown) => {
    return e instanceof ShapeError && /3×3 for inputs with 4 columns/.test(e.message);
  });
  assert.throws(() => gramAccumulate(matrix64(4, 3), matrix(2, 4), 1), ShapeError);
});
