/**
 * The WASM backend's factorisations against the references in `core/linalg/`: in float64, Cholesky (values and the
 * failing pivot), triangular solves in all eight modes and the inverse from a Cholesky factor; in float32, GPTQ's U
 * (`upperCholeskyOfInverse` of a float32 Hessian); on sizes around the block sizes, one and several threads.
 *
 * @module
 */

import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { NonFiniteError, NotPositiveDefiniteError } from "../../core/errors.ts";
import { cholesky, choleskyInverse, upperCholeskyOfInverse } from "../../core/linalg/cholesky.ts";
import { triangularSolve } from "../../core/linalg/triangular.ts";
import { createRng, randomNormal } from "../../core/random.ts";
import { type FloatArray, type Matrix, matrix, matrix64 } from "../../core/tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { wasmTest, wasmThreadsTest } from "./testing.ts";

function spd(n: number, seed: number): Matrix<Float64Array> {
  const rng = createRng(seed);
  const x = randomNormal(rng, 2 * n * n);
  const a = matrix64(n, n);
  for (let t = 0; t < 2 * n; t++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) a.data[i * n + j] += (x[t * n + i] * x[t * n + j]) / (2 * n);
    }
  }
  for (let i = 0; i < n; i++) {
    a.data[i * n + i] += 0.1;
    for (let j = i + 1; j < n; j++) a.data[i * n + j] = a.data[j * n + i];
  }
  return a;
}

function triangle(n: number, seed: number, lower: boolean): Matrix<Float64Array> {
  const rng = createRng(seed);
  const t = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      // The other triangle holds garbage that must not be read.
      t.data[i * n + j] = i === j ? 2 + rng.float() : (lower ? j < i : j > i) ? rng.normal() / Math.sqrt(n) : 1e30;
    }
  }
  return t;
}

const f32 = (m: Matrix<Float64Array>): Matrix => matrix(m.shape[0], m.shape[1], Float32Array.from(m.data));

for (const threads of [1, 2]) {
  wasmTest(
    `wasm float64 factorisations match core/linalg (${threads} thread${threads > 1 ? "s" : ""})`,
    async (wasm) => {
      for (const n of [1, 5, 129, 300]) {
        const a = spd(n, n);
        const close = (got: Matrix<FloatArray>, want: Matrix<FloatArray>, tol: number, what: string) =>
          assertClose(got.data, want.data, { atol: tol, rtol: tol }, `${what} n=${n}`);
        const l = await wasm.cholesky(a);
        close(l, cholesky(a), 1e-10, "cholesky f64");
        close(await wasm.cholesky(f32(a)), cholesky(f32(a)), 1e-6, "cholesky f32");
        close(await wasm.choleskyInverse(l), choleskyInverse(l), 1e-9, "choleskyInverse");
        for (const lower of [true, false]) {
          const t = triangle(n, n + 1, lower);
          const rng = createRng(n + 2);
          const b = matrix64(n, 37, Float64Array.from(randomNormal(rng, n * 37)));
          for (const transpose of [false, true]) {
            for (const unitDiagonal of [false, true]) {
              const opts = { lower, transpose, unitDiagonal };
              const what = `solve ${JSON.stringify(opts)}`;
              close(await wasm.triangularSolve(t, b, opts), triangularSolve(t, b, opts), 1e-9, what);
            }
          }
        }
      }
      // A matrix that fails at pivot 3 (and would fail later too).
      const bad = spd(200, 9);
      bad.data[3 * 200 + 3] = -1;
      bad.data[150 * 200 + 150] = -1;
      const err = await wasm.cholesky(bad).catch((e) => e);
      strictEqual(err instanceof NotPositiveDefiniteError && err.pivot, 3);
      const sing = triangle(4, 1, true);
      sing.data[2 * 4 + 2] = 0;
      await rejects(wasm.triangularSolve(sing, matrix64(4, 1), { lower: true }), NonFiniteError);
      await rejects(wasm.choleskyInverse(sing), NotPositiveDefiniteError);
    },
    { threads, parallelThreshold: 0 },
  );
}

wasmThreadsTest(
  "wasm upperCholeskyOfInverse in float32: the float64 reference's U, the same bits on 1 and 3 threads, the pivot",
  async (one, many) => {
    // Sizes around the float32 path's 120-row blocks, and one of seven blocks.
    for (const n of [119, 120, 121, 361, 730]) {
      const h = spd(n, n);
      const want = upperCholeskyOfInverse(h);
      const got = await many.upperCholeskyOfInverse(f32(h));
      ok(got.data instanceof Float32Array, "float32 in, float32 out");
      let scale = 0;
      for (const v of want.data) scale = Math.max(scale, Math.abs(v));
      // Float32 arithmetic: the conformance bound 16·√n·u·max|U| (u = 2⁻²⁴) on these well-conditioned matrices.
      assertClose(got.data, want.data, { atol: 16 * Math.sqrt(n) * 2 ** -24 * scale, rtol: 0 }, `U n=${n}`);
      for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) strictEqual(got.data[i * n + j], 0);
      deepStrictEqual((await one.upperCholeskyOfInverse(f32(h))).data, got.data, `threads change U at n=${n}`);
    }
    // J·H·J is factored: a bad pivot late in H fails first, and is reported as an index of H; index 10 of H is
    // row 289 of J·H·J, in its third block of 120.
    for (const [bads, first] of [[[3, 250], 250], [[10], 10]] as const) {
      const bad = spd(300, 9);
      for (const i of bads) bad.data[i * 300 + i] = -1;
      const err = await many.upperCholeskyOfInverse(f32(bad)).catch((e) => e);
      strictEqual(err instanceof NotPositiveDefiniteError && err.pivot, first, `pivots ${bads}`);
    }
  },
);
