import assert from "node:assert/strict";
import { NonFiniteError, ShapeError } from "../errors.ts";
import { createRng, type Rng } from "../random.ts";
import { type Matrix, matrix, matrix64, toFloat32 } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { cholesky } from "./cholesky.ts";
import { invertTriangular, triangularSolve } from "./triangular.ts";

const FLAGS = [false, true].flatMap((lower) =>
  [false, true].flatMap((transpose) => [false, true].map((unitDiagonal) => ({ lower, transpose, unitDiagonal })))
);

/**
 * A random triangular matrix with a diagonal in [1, 2] and off-diagonal entries of size `1/n` (well conditioned),
 * and junk of size 1e3 in the other triangle, which the solver must not read.
 */
function randomTriangular(n: number, lower: boolean, rng: Rng): Matrix<Float64Array> {
  const t = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const inside = lower ? j < i : j > i;
      t.data[i * n + j] = i === j ? 1 + rng.float() : inside ? rng.normal() / n : 1e3 * rng.normal();
    }
  }
  return t;
}

/** The matrix the solve really uses: the named triangle, unit diagonal if asked, transposed if asked. */
function effective(t: Matrix<Float64Array>, lower: boolean, transpose: boolean, unit: boolean): Float64Array {
  const n = t.shape[0];
  const e = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const inside = lower ? j <= i : j >= i;
      const v = !inside ? 0 : i === j && unit ? 1 : t.data[i * n + j];
      if (transpose) e[j * n + i] = v;
      else e[i * n + j] = v;
    }
  }
  return e;
}

/** Naive `E·X` for `E` `[n, n]`, `X` `[n, k]`. */
function mulNK(e: Float64Array, x: ArrayLike<number>, n: number, k: number): Float64Array {
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += e[i * n + p] * x[p * k + c];
      out[i * k + c] = s;
    }
  }
  return out;
}

function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
}

Deno.test("triangularSolve: all eight flag combinations recover a known X (sizes 1, 7, 385; 1–5 columns)", () => {
  const rng = createRng(21);
  for (const { lower, transpose, unitDiagonal } of FLAGS) {
    for (const [n, k] of [[1, 1], [1, 4], [7, 1], [7, 3], [385, 5]]) {
      const t = randomTriangular(n, lower, rng);
      const x = Float64Array.from({ length: n * k }, () => rng.normal());
      const b = matrix64(n, k, mulNK(effective(t, lower, transpose, unitDiagonal), x, n, k));
      const got = triangularSolve(t, b, { lower, transpose, unitDiagonal });
      assert.deepEqual(got.shape, [n, k]);
      assert.ok(got.data instanceof Float64Array);
      const what = `lower=${lower} transpose=${transpose} unit=${unitDiagonal} n=${n} k=${k}`;
      assertClose(got.data, x, { atol: 1e-12, rtol: 1e-12 }, what);
    }
  }
});

Deno.test("triangularSolve: backward stable on ill-conditioned factors (Cholesky of cond-1e12 SPD, Hilbert 12)", () => {
  const rng = createRng(22);
  // L = chol(Qᵀ·diag·Q), cond(L) = 1e6; and chol(Hilbert 12), cond ≈ 4e8.
  const n = 50;
  const q = matrix64(n, n, Float64Array.from({ length: n * n }, () => rng.normal()));
  // Orthonormalise the rows of q (Gram-Schmidt twice).
  for (let j = 0; j < n; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let c = 0;
        for (let t = 0; t < n; t++) c += q.data[i * n + t] * q.data[j * n + t];
        for (let t = 0; t < n; t++) q.data[j * n + t] -= c * q.data[i * n + t];
      }
    }
    let nr = 0;
    for (let t = 0; t < n; t++) nr += q.data[j * n + t] ** 2;
    for (let t = 0; t < n; t++) q.data[j * n + t] /= Math.sqrt(nr);
  }
  const spd = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += q.data[p * n + i] * 1e-12 ** (p / (n - 1)) * q.data[p * n + j];
      spd.data[i * n + j] = s;
    }
  }
  const hil = matrix64(12, 12);
  for (let i = 0; i < 12; i++) for (let j = 0; j < 12; j++) hil.data[i * 12 + j] = 1 / (i + j + 1);
  for (const [name, a] of [["cond 1e12", spd], ["Hilbert 12", hil]] as const) {
    const l = cholesky(a);
    const m = l.shape[0], k = 3;
    for (const { lower, transpose } of FLAGS.filter((f) => !f.unitDiagonal)) {
      const t = lower ? l : matrix64(m, m, effective(l, true, true, false)); // upper = Lᵀ
      const b = matrix64(m, k, Float64Array.from({ length: m * k }, () => rng.normal()));
      const x = triangularSolve(t, b, { lower, transpose });
      const r = mulNK(effective(t, lower, transpose, false), x.data, m, k);
      for (let i = 0; i < r.length; i++) r[i] -= b.data[i];
      // Normwise backward error ‖op(T)X − B‖ / (‖T‖·‖X‖) at rounding level, whatever the conditioning.
      const backward = maxAbs(r) / (maxAbs(t.data) * maxAbs(x.data));
      assert.ok(backward < 1e-14, `${name} lower=${lower} transpose=${transpose}: backward error ${backward}`);
    }
  }
});

Deno.test("triangularSolve: float32 in and out, equal to the float64 solve rounded once", () => {
  const rng = createRng(23);
  const t = toFloat32(randomTriangular(9, true, rng));
  const b = matrix(9, 2, Float32Array.from({ length: 18 }, () => rng.normal()));
  const got = triangularSolve(t, b, { lower: true, transpose: true });
  assert.ok(got.data instanceof Float32Array);
  const ref = triangularSolve(
    matrix64(9, 9, Float64Array.from(t.data)),
    matrix64(9, 2, Float64Array.from(b.data)),
    { lower: true, transpose: true },
  );
  assert.deepEqual(Array.from(got.data), Array.from(Float32Array.from(ref.data)));
});

Deno.test("triangularSolve: closed form, singular diagonal, shape errors", () => {
  const x = triangularSolve(matrix64(2, 2, new Float64Array([2, 7, 1, 4])), matrix64(2, 1, new Float64Array([2, 9])), {
    lower: true,
  });
  assert.deepEqual(Array.from(x.data), [1, 2]);
  const zeroDiag = matrix64(2, 2, new Float64Array([1, 0, 3, 0]));
  assert.throws(() => triangularSolve(zeroDiag, matrix64(2, 1), { lower: true }), (e: unknown) => {
    return e instanceof NonFiniteError && /diagonal entry 1 of 2 is 0/.test(e.message);
  });
  // With a unit diagonal the stored zero is never read.
  const unit = triangularSolve(zeroDiag, matrix64(2, 1, new Float64Array([1, 5])), { lower: true, unitDiagonal: true });
  assert.deepEqual(Array.from(unit.data), [1, 2]);
  assert.throws(() => triangularSolve(matrix64(2, 3), matrix64(2, 1), { lower: true }), ShapeError);
  assert.throws(() => triangularSolve(matrix64(2, 2), matrix64(3, 1), { lower: true }), ShapeError);
  assert.deepEqual(triangularSolve(matrix64(0, 0), matrix64(0, 4), { lower: false }).shape, [0, 4]);
});

Deno.test("invertTriangular: T·T⁻¹ = I for lower, upper and unit-diagonal T (sizes 1, 7, 100)", () => {
  const rng = createRng(24);
  for (const lower of [true, false]) {
    for (const unitDiagonal of [false, true]) {
      for (const n of [1, 7, 100]) {
        const t = randomTriangular(n, lower, rng);
        const inv = invertTriangular(t, { lower, unitDiagonal });
        const e = effective(t, lower, false, unitDiagonal);
        const prod = mulNK(e, inv.data, n, n);
        const eye = new Float64Array(n * n);
        for (let i = 0; i < n; i++) eye[i * n + i] = 1;
        const what = `lower=${lower} unit=${unitDiagonal} n=${n}`;
        assertClose(prod, eye, { atol: 1e-13, rtol: 0 }, what);
        // Same triangle as T, the other one exactly zero.
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < n; j++) if (lower ? j > i : j < i) assert.equal(inv.data[i * n + j], 0, what);
        }
      }
    }
  }
  const f32 = invertTriangular(matrix(2, 2, new Float32Array([2, 0, 1, 4])), { lower: true });
  assert.ok(f32.data instanceof Float32Array);
  assert.deepEqual(Array.from(f32.data), [0.5, 0, -0.125, 0.25]);
  assert.throws(() => invertTriangular(matrix64(2, 2), { lower: true }), NonFiniteError);
  assert.throws(() => invertTriangular(matrix64(1, 2), { lower: true }), ShapeError);
});
