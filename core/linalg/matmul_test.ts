import assert from "node:assert/strict";
import { ShapeError } from "../errors.ts";
import { createRng, randomNormal } from "../random.ts";
import { fromRows, type Matrix, matrix } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { matmul } from "./matmul.ts";

/** `op(A)·op(B)` by the textbook triple loop in float64, with `op` applied through index arithmetic. */
function naive(a: Matrix, b: Matrix, transA: boolean, transB: boolean): { c: Float64Array; abs: Float64Array } {
  const m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1];
  const n = transB ? b.shape[0] : b.shape[1];
  const c = new Float64Array(m * n), abs = new Float64Array(m * n); // abs: Σ|a·b|, the scale of rounding errors
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, t = 0;
      for (let p = 0; p < k; p++) {
        const x = transA ? a.data[p * a.shape[1] + i] : a.data[i * a.shape[1] + p];
        const y = transB ? b.data[j * b.shape[1] + p] : b.data[p * b.shape[1] + j];
        s += x * y;
        t += Math.abs(x * y);
      }
      c[i * n + j] = s;
      abs[i * n + j] = t;
    }
  }
  return { c, abs };
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 1],
  [7, 1, 7],
  [1, 385, 1],
  [385, 1, 7],
  [7, 385, 1],
  [7, 7, 7],
  [5, 9, 6],
  [64, 33, 65],
  [385, 7, 385],
  [70, 385, 40],
];

for (const transA of [false, true]) {
  for (const transB of [false, true]) {
    Deno.test(`matmul transA=${transA} transB=${transB}: float64 triple loop, rounded once to float32`, () => {
      const rng = createRng(71);
      for (const [m, k, n] of SHAPES) {
        const a = transA ? matrix(k, m, randomNormal(rng, k * m)) : matrix(m, k, randomNormal(rng, m * k));
        const b = transB ? matrix(n, k, randomNormal(rng, n * k)) : matrix(k, n, randomNormal(rng, k * n));
        const aCopy = a.data.slice(), bCopy = b.data.slice();
        const got = matmul(a, b, { transA, transB });
        assert.ok(got.data instanceof Float32Array);
        assert.deepEqual(got.shape, [m, n]);
        const { c, abs } = naive(a, b, transA, transB);
        // Float64 accumulation in another order differs by ≤ k·ε·Σ|a·b|; the single rounding to float32 adds at most
        // half an ulp (2⁻²⁴ relative).
        for (let i = 0; i < m * n; i++) {
          const allowed = 2 ** -24 * Math.abs(c[i]) + 2 * k * Number.EPSILON * abs[i];
          if (Math.abs(got.data[i] - c[i]) > allowed) {
            assert.fail(`${m}×${k}×${n} [${i}]: ${got.data[i]} vs ${c[i]} (allowed ${allowed})`);
          }
        }
        assert.deepEqual(a.data, aCopy, "A untouched");
        assert.deepEqual(b.data, bCopy, "B untouched");
      }
    });
  }
}

Deno.test("matmul: closed forms (2×2 product, identity, zero inner dimension)", () => {
  const c = matmul(fromRows([[1, 2], [3, 4]]), fromRows([[5, 6], [7, 8]]));
  assert.deepEqual(Array.from(c.data), [19, 22, 43, 50]);
  const ct = matmul(fromRows([[1, 2], [3, 4]]), fromRows([[5, 6], [7, 8]]), { transA: true, transB: true });
  assert.deepEqual(Array.from(ct.data), [23, 31, 34, 46]); // (B·A)ᵀ
  const rng = createRng(72);
  const a = matrix(7, 5, randomNormal(rng, 35));
  const eye = matrix(5, 5);
  for (let i = 0; i < 5; i++) eye.data[i * 5 + i] = 1;
  assert.deepEqual(Array.from(matmul(a, eye).data), Array.from(a.data));
  const eye7 = matrix(7, 7);
  for (let i = 0; i < 7; i++) eye7.data[i * 7 + i] = 1;
  const at = matmul(eye, a, { transB: true }); // Aᵀ two ways
  assertClose(at.data, matmul(a, eye7, { transA: true }).data, { atol: 0, rtol: 0 });
  assert.equal(at.data[1 * 7 + 2], a.data[2 * 5 + 1]);
  const z = matmul(matrix(3, 0), matrix(0, 4));
  assert.deepEqual(z.shape, [3, 4]);
  assert.ok(z.data.every((v) => v === 0));
});

Deno.test("matmul: ShapeError when the inner dimensions differ, naming both operands", () => {
  assert.throws(() => matmul(matrix(2, 3), matrix(4, 2)), (e: unknown) => {
    return e instanceof ShapeError && /2×3 \(A\) times 4×2 \(B\)/.test(e.message);
  });
  assert.throws(() => matmul(matrix(2, 3), matrix(3, 2), { transA: true }), ShapeError);
  assert.throws(() => matmul(matrix(2, 3), matrix(2, 3)), ShapeError);
  assert.throws(() => matmul(matrix(2, 3), matrix(2, 3), { transA: true, transB: true }), ShapeError);
  assert.doesNotThrow(() => matmul(matrix(2, 3), matrix(2, 3), { transB: true }));
  assert.doesNotThrow(() => matmul(matrix(2, 3), matrix(2, 3), { transA: true }));
});
