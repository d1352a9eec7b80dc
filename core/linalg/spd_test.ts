import assert from "node:assert/strict";
import { NonFiniteError, NotPositiveDefiniteError, OptionError, ShapeError } from "../errors.ts";
import { createRng, type Rng } from "../random.ts";
import { type FloatArray, type Matrix, matrix, matrix64 } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { invSqrtSpd, sqrtSpd } from "./spd.ts";

/** A random orthogonal matrix (rows orthonormal): Gram-Schmidt twice on Gaussian rows. */
function randomOrthogonal(n: number, rng: Rng): Float64Array {
  const q = Float64Array.from({ length: n * n }, () => rng.normal());
  for (let j = 0; j < n; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let c = 0;
        for (let t = 0; t < n; t++) c += q[i * n + t] * q[j * n + t];
        for (let t = 0; t < n; t++) q[j * n + t] -= c * q[i * n + t];
      }
    }
    let nr = 0;
    for (let t = 0; t < n; t++) nr += q[j * n + t] ** 2;
    for (let t = 0; t < n; t++) q[j * n + t] /= Math.sqrt(nr);
  }
  return q;
}

/** `Qᵀ·diag(values)·Q`, exactly symmetric. */
function spectral(q: Float64Array, values: ArrayLike<number>): Matrix<Float64Array> {
  const n = values.length;
  const a = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += q[k * n + i] * values[k] * q[k * n + j];
      a.data[i * n + j] = s;
      a.data[j * n + i] = s;
    }
  }
  return a;
}

function mul(a: Matrix<FloatArray>, b: Matrix<FloatArray>): Float64Array {
  const n = a.shape[0];
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += a.data[i * n + k] * b.data[k * n + j];
      out[i * n + j] = s;
    }
  }
  return out;
}

function identity(n: number): Float64Array {
  const e = new Float64Array(n * n);
  for (let i = 0; i < n; i++) e[i * n + i] = 1;
  return e;
}

function assertSymmetric(m: Matrix<FloatArray>): void {
  const n = m.shape[0];
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(m.data[i * n + j], m.data[j * n + i]);
}

Deno.test("sqrtSpd: closed form Qᵀ·diag(√λ)·Q and S·S = A, sizes 1, 7, 100", () => {
  const rng = createRng(51);
  for (const n of [1, 7, 100]) {
    const q = randomOrthogonal(n, rng);
    const values = Float64Array.from({ length: n }, () => 0.1 + 4 * rng.float());
    const a = spectral(q, values);
    const s = sqrtSpd(a);
    assert.ok(s.data instanceof Float64Array);
    assertSymmetric(s);
    assertClose(s.data, spectral(q, values.map(Math.sqrt)).data, { atol: 1e-13, rtol: 0 }, `closed form n=${n}`);
    assertClose(mul(s, s), a.data, { atol: 1e-13, rtol: 0 }, `S·S n=${n}`);
  }
  const d = sqrtSpd(matrix(2, 2, new Float32Array([4, 0, 0, 9])));
  assert.ok(d.data instanceof Float32Array);
  assertClose(d.data, [2, 0, 0, 3], { atol: 1e-6, rtol: 0 });
});

Deno.test("sqrtSpd: semi-definite input with rounding-level negative eigenvalues is clamped to 0", () => {
  const rng = createRng(52);
  const q = randomOrthogonal(6, rng);
  const values = [3, 2, 1, 0, -1e-15, -3e-16];
  const a = spectral(q, values);
  const s = sqrtSpd(a);
  assertClose(s.data, spectral(q, [Math.sqrt(3), Math.SQRT2, 1, 0, 0, 0]).data, { atol: 1e-7, rtol: 0 });
  // The clamped square root squares back to A up to the discarded 1e-15.
  assertClose(mul(s, s), a.data, { atol: 1e-14, rtol: 0 }, "S·S");
  // A clearly indefinite matrix gives the root of its positive part.
  const b = spectral(q, [4, 1, -9, 1, 1, 1]);
  assertClose(sqrtSpd(b).data, spectral(q, [2, 1, 0, 1, 1, 1]).data, { atol: 1e-14, rtol: 0 }, "positive part");
});

Deno.test("invSqrtSpd: closed form and S·A·S = I, sizes 1, 7, 100; ill-conditioned (cond 1e10)", () => {
  const rng = createRng(53);
  for (const n of [1, 7, 100]) {
    const q = randomOrthogonal(n, rng);
    const values = Float64Array.from({ length: n }, () => 0.1 + 4 * rng.float());
    const a = spectral(q, values);
    const s = invSqrtSpd(a);
    assertSymmetric(s);
    assertClose(s.data, spectral(q, values.map((l) => 1 / Math.sqrt(l))).data, { atol: 1e-12, rtol: 0 }, `n=${n}`);
    const sas = mul(matrix64(n, n, mul(s, a)), s);
    assertClose(sas, identity(n), { atol: 1e-12, rtol: 0 }, `S·A·S n=${n}`);
  }
  const n = 30;
  const q = randomOrthogonal(n, rng);
  const values = Float64Array.from({ length: n }, (_, i) => 1e-10 ** (i / (n - 1)));
  const s = invSqrtSpd(spectral(q, values));
  const want = spectral(q, values.map((l) => 1 / Math.sqrt(l)));
  // Forming A rounds it by ≈ ε·‖A‖, which moves λ_min = 1e-10 by ≈ 1e-6 of itself: the closed form of the unrounded
  // matrix is only that close (measured: 6e-8 of the largest entry).
  let maxWant = 0;
  for (const v of want.data) maxWant = Math.max(maxWant, Math.abs(v));
  assertClose(s.data, want.data, { atol: 1e-6 * maxWant, rtol: 0 }, "cond 1e10");
});

Deno.test("invSqrtSpd: eigenvalues below floor·λ_max (zero and negative ones included) are raised to it", () => {
  const rng = createRng(54);
  const q = randomOrthogonal(5, rng);
  const a = spectral(q, [4, 1, 1e-20, 0, -1e-3]);
  const dflt = invSqrtSpd(a); // floor 1e-12·4: λ^{-1/2} = 5e5
  assertClose(dflt.data, spectral(q, [0.5, 1, 5e5, 5e5, 5e5]).data, { atol: 1e-6, rtol: 1e-6 }, "default floor");
  const coarse = invSqrtSpd(a, { floor: 1e-2 }); // floor 0.04: λ^{-1/2} = 5
  assertClose(coarse.data, spectral(q, [0.5, 1, 5, 5, 5]).data, { atol: 1e-12, rtol: 0 }, "floor 1e-2");
  const f32 = invSqrtSpd(matrix(1, 1, new Float32Array([16])));
  assert.ok(f32.data instanceof Float32Array);
  assert.equal(f32.data[0], 0.25);
});

Deno.test("spd: typed errors and the empty matrix", () => {
  assert.throws(() => invSqrtSpd(matrix64(3, 3)), (e: unknown) => {
    return e instanceof NotPositiveDefiniteError && e.size === 3 && e.pivot === 2 && e.value === 0;
  });
  assert.throws(() => invSqrtSpd(matrix64(1, 1, new Float64Array([-2]))), NotPositiveDefiniteError);
  assert.throws(() => invSqrtSpd(matrix64(1, 1, new Float64Array([1])), { floor: 0 }), OptionError);
  assert.throws(() => invSqrtSpd(matrix64(1, 1, new Float64Array([1])), { floor: 2 }), OptionError);
  assert.throws(() => sqrtSpd(matrix64(2, 3)), ShapeError);
  assert.throws(() => sqrtSpd(matrix64(1, 1, new Float64Array([NaN]))), NonFiniteError);
  assert.deepEqual(sqrtSpd(matrix(0, 0)).shape, [0, 0]);
  assert.deepEqual(invSqrtSpd(matrix(0, 0)).shape, [0, 0]);
  // The zero matrix has the zero square root.
  assert.deepEqual(Array.from(sqrtSpd(matrix64(2, 2)).data), [0, 0, 0, 0]);
});
