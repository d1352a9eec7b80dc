import assert from "node:assert/strict";
import { NonFiniteError, NotPositiveDefiniteError, ShapeError } from "../errors.ts";
import { createRng, type Rng } from "../random.ts";
import { type Matrix, matrix, matrix64, toFloat32 } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { cholesky, choleskyInverse, choleskyWithRetry, reverseCholesky, upperCholeskyOfInverse } from "./cholesky.ts";

// ---- independent float64 references (naive loops) ----

/** `op(A)·op(B)` by the textbook triple loop (as dot products of rows of op(A) and columns of op(B)). */
function mul(a: Matrix<Float64Array>, b: Matrix<Float64Array>, ta = false, tb = false): Matrix<Float64Array> {
  const ar = ta ? transpose64(a) : a; // rows of op(A)
  const bc = tb ? b : transpose64(b); // columns of op(B), as rows
  const [m, k] = ar.shape, n = bc.shape[0];
  const c = matrix64(m, n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += ar.data[i * k + p] * bc.data[j * k + p];
      c.data[i * n + j] = s;
    }
  }
  return c;
}

function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const d = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) d[i] = a[i] - b[i];
  return frob(d) / frob(b);
}

/** A random orthogonal matrix: Gram-Schmidt (twice) on Gaussian columns, stored as rows. */
function randomOrthogonal(n: number, rng: Rng): Matrix<Float64Array> {
  const q = matrix64(n, n);
  const Q = q.data;
  for (let j = 0; j < n; j++) {
    for (let t = 0; t < n; t++) Q[j * n + t] = rng.normal();
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let c = 0;
        for (let t = 0; t < n; t++) c += Q[i * n + t] * Q[j * n + t];
        for (let t = 0; t < n; t++) Q[j * n + t] -= c * Q[i * n + t];
      }
    }
    const nr = frob(Q.subarray(j * n, (j + 1) * n));
    for (let t = 0; t < n; t++) Q[j * n + t] /= nr;
  }
  return q;
}

/** `Qᵀ·diag(values)·Q`, exactly symmetric. */
function withSpectrum(values: ArrayLike<number>, rng: Rng): Matrix<Float64Array> {
  const n = values.length;
  const q = randomOrthogonal(n, rng);
  const a = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += q.data[k * n + i] * values[k] * q.data[k * n + j];
      a.data[i * n + j] = s;
      a.data[j * n + i] = s;
    }
  }
  return a;
}

/** Eigenvalues spread log-uniformly over `cond`, so the condition number is exactly `cond` in exact arithmetic. */
function logSpectrum(n: number, cond: number): Float64Array {
  return Float64Array.from({ length: n }, (_, i) => (n === 1 ? 1 : cond ** (-i / (n - 1))));
}

/** A well-conditioned SPD matrix `X·Xᵀ/n + I`. */
function randomSpd(n: number, rng: Rng): Matrix<Float64Array> {
  const x = matrix64(n, n, Float64Array.from({ length: n * n }, () => rng.normal()));
  const a = mul(x, x, false, true);
  for (let i = 0; i < n * n; i++) a.data[i] /= n;
  for (let i = 0; i < n; i++) a.data[i * n + i] += 1;
  return a;
}

function hilbert(n: number): Matrix<Float64Array> {
  const h = matrix64(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) h.data[i * n + j] = 1 / (i + j + 1);
  return h;
}

function binom(n: number, k: number): number {
  if (k < 0 || k > n) return 0;
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return Math.round(r);
}

/** The exact inverse of the Hilbert matrix (integers; 1-based formula). */
function hilbertInverse(n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= n; j++) {
      out[(i - 1) * n + j - 1] = (-1) ** (i + j) * (i + j - 1) * binom(n + i - 1, n - j) * binom(n + j - 1, n - i) *
        binom(i + j - 2, i - 1) ** 2;
    }
  }
  return out;
}

function isLower(m: Matrix<Float64Array | Float32Array>): boolean {
  const n = m.shape[0];
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (m.data[i * n + j] !== 0) return false;
  return true;
}

function transpose64(m: Matrix<Float64Array>): Matrix<Float64Array> {
  const [r, c] = m.shape;
  const t = matrix64(c, r);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) t.data[j * r + i] = m.data[i * c + j];
  return t;
}

// ---- cholesky ----

Deno.test("cholesky: closed forms (min(i,j)+1 → all-ones L; Pascal → binomial L)", () => {
  for (const n of [1, 7, 40]) {
    const a = matrix64(n, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a.data[i * n + j] = Math.min(i, j) + 1;
    const want = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) want[i * n + j] = 1;
    assertClose(cholesky(a).data, want, { atol: 1e-12, rtol: 0 }, `min-matrix n=${n}`);
  }
  const n = 12; // Pascal P[i][j] = C(i+j, i) = L·Lᵀ with L[i][j] = C(i, j); entries stay exact in float64
  const p = matrix64(n, n);
  const want = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) p.data[i * n + j] = binom(i + j, i);
    for (let j = 0; j <= i; j++) want[i * n + j] = binom(i, j);
  }
  assertClose(cholesky(p).data, want, { atol: 1e-7, rtol: 1e-9 }, "Pascal 12");
});

Deno.test("cholesky: residual ‖A − LLᵀ‖/‖A‖ on random SPD matrices of sizes 1, 7, 64, 385", () => {
  const rng = createRng(1);
  for (const n of [1, 7, 64, 385]) {
    const a = randomSpd(n, rng);
    const l = cholesky(a);
    assert.ok(l.data instanceof Float64Array);
    assert.deepEqual(l.shape, [n, n]);
    assert.ok(isLower(l), "upper triangle is zero");
    for (let i = 0; i < n; i++) assert.ok(l.data[i * n + i] > 0, "positive diagonal");
    const res = relDiff(mul(l, l, false, true).data, a.data);
    assert.ok(res < 1e-14, `n=${n}: residual ${res}`);
  }
});

Deno.test("cholesky: ill-conditioned SPD (cond 1e8, 1e12, Hilbert 10) stays backward stable", () => {
  const rng = createRng(2);
  const cases: [string, Matrix<Float64Array>][] = [
    ["cond 1e8, n=60", withSpectrum(logSpectrum(60, 1e8), rng)],
    ["cond 1e12, n=61", withSpectrum(logSpectrum(61, 1e12), rng)],
    ["Hilbert 10 (cond 1.6e13)", hilbert(10)],
  ];
  for (const [name, a] of cases) {
    const l = cholesky(a);
    const res = relDiff(mul(l, l, false, true).data, a.data);
    assert.ok(res < 1e-14, `${name}: residual ${res}`);
  }
});

Deno.test("cholesky: float32 in, float32 out, equal to the float64 factor of the same values rounded once", () => {
  const rng = createRng(3);
  for (const n of [1, 7, 33]) {
    const a32 = toFloat32(randomSpd(n, rng));
    const l32 = cholesky(a32);
    assert.ok(l32.data instanceof Float32Array);
    const l64 = cholesky(matrix64(n, n, Float64Array.from(a32.data)));
    assert.deepEqual(Array.from(l32.data), Array.from(Float32Array.from(l64.data)));
  }
});

Deno.test("cholesky: reads only the lower triangle", () => {
  const rng = createRng(4);
  const a = randomSpd(9, rng);
  const junk = matrix64(9, 9, a.data.slice());
  for (let i = 0; i < 9; i++) for (let j = i + 1; j < 9; j++) junk.data[i * 9 + j] = 1e6 * (i - j);
  assert.deepEqual(Array.from(cholesky(junk).data), Array.from(cholesky(a).data));
});

Deno.test("cholesky: NotPositiveDefiniteError names size, pivot and value; NaN pivots fail too", () => {
  const a = matrix64(4, 4);
  [1, 2, -3, 4].forEach((v, i) => a.data[i * 4 + i] = v);
  assert.throws(() => cholesky(a), (e: unknown) => {
    assert.ok(e instanceof NotPositiveDefiniteError);
    assert.equal(e.size, 4);
    assert.equal(e.pivot, 2);
    assert.equal(e.value, -3);
    assert.match(e.message, /size 4/);
    assert.match(e.message, /pivot 2 is -3/);
    return true;
  });
  // Singular PSD: [[1, 1], [1, 1]] has a zero second pivot.
  assert.throws(() => cholesky(matrix64(2, 2, new Float64Array([1, 1, 1, 1]))), (e: unknown) => {
    assert.ok(e instanceof NotPositiveDefiniteError);
    assert.equal(e.pivot, 1);
    assert.equal(e.value, 0);
    return true;
  });
  const nan = matrix64(3, 3, new Float64Array([1, 0, 0, 0, NaN, 0, 0, 0, 1]));
  assert.throws(() => cholesky(nan), (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 1);
  // Indefiniteness discovered late in a blocked row (pivot 6 of 7: inside the last partial block).
  const rng = createRng(5);
  const b = withSpectrum([3, 2, 1, 1, 2, 3, -1e-3], rng);
  assert.throws(() => cholesky(b), (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 6);
});

Deno.test("cholesky: ShapeError on a non-square matrix; empty matrix is fine", () => {
  assert.throws(() => cholesky(matrix(2, 3)), ShapeError);
  assert.deepEqual(cholesky(matrix(0, 0)).shape, [0, 0]);
});

// ---- choleskyInverse ----

Deno.test("choleskyInverse: A·X = I on random SPD of sizes 1, 7, 200; exactly symmetric", () => {
  const rng = createRng(6);
  for (const n of [1, 7, 200]) {
    const a = randomSpd(n, rng);
    const x = choleskyInverse(cholesky(a));
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(x.data[i * n + j], x.data[j * n + i]);
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    assertClose(mul(a, x).data, eye, { atol: 1e-12, rtol: 0 }, `A·A⁻¹ n=${n}`);
  }
});

Deno.test("choleskyInverse: Hilbert 8 against its exact integer inverse (cond 1.5e10)", () => {
  const n = 8;
  const x = choleskyInverse(cholesky(hilbert(n)));
  const want = hilbertInverse(n);
  // Forward error ≈ cond·ε ≈ 3e-6 relative to the largest entry.
  const err = relDiff(x.data, want);
  assert.ok(err < 1e-5, `relative error ${err}`);
});

Deno.test("choleskyInverse: closed form of a 2×2 and the typed error on a zero diagonal", () => {
  const x = choleskyInverse(matrix64(2, 2, new Float64Array([2, 0, 1, 2]))); // L·Lᵀ = [[4, 2], [2, 5]], det 16
  assertClose(x.data, [5 / 16, -2 / 16, -2 / 16, 4 / 16], { atol: 1e-15, rtol: 0 });
  // Only the lower triangle of L is read.
  const junk = choleskyInverse(matrix64(2, 2, new Float64Array([2, 99, 1, 2])));
  assert.deepEqual(Array.from(junk.data), Array.from(x.data));
  const f32 = choleskyInverse(matrix(2, 2, new Float32Array([2, 0, 1, 2])));
  assert.ok(f32.data instanceof Float32Array);
  assert.throws(
    () => choleskyInverse(matrix64(3, 3, new Float64Array([1, 0, 0, 1, 0, 0, 1, 1, 1]))),
    (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 1 && e.value === 0,
  );
  assert.throws(() => choleskyInverse(matrix(3, 2)), ShapeError);
});

// ---- upperCholeskyOfInverse ----

Deno.test("upperCholeskyOfInverse: equals the three-step GPTQ route and satisfies Uᵀ·U·H = I", () => {
  const rng = createRng(7);
  for (const n of [1, 2, 7, 130]) {
    const h = randomSpd(n, rng);
    const u = upperCholeskyOfInverse(h);
    // Three-step route: chol(H) → inverse → chol → transpose.
    const want = transpose64(cholesky(choleskyInverse(cholesky(h))));
    assertClose(u.data, want.data, { atol: 1e-12, rtol: 1e-10 }, `U n=${n}`);
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    assertClose(mul(mul(u, u, true, false), h).data, eye, { atol: 1e-12, rtol: 0 }, `UᵀUH n=${n}`);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(u.data[i * n + j], 0);
  }
});

Deno.test("upperCholeskyOfInverse: diagonal closed form, float32 output, ill-conditioned H, error index", () => {
  const h = matrix(3, 3, new Float32Array([4, 0, 0, 0, 16, 0, 0, 0, 0.25]));
  const u = upperCholeskyOfInverse(h);
  assert.ok(u.data instanceof Float32Array);
  assert.deepEqual(Array.from(u.data), [0.5, 0, 0, 0, 0.25, 0, 0, 0, 2]);
  // cond 1e10: the residual of Uᵀ·U as H⁻¹, measured as ‖H·UᵀU − I‖ ≲ cond·ε.
  const rng = createRng(8);
  const a = withSpectrum(logSpectrum(40, 1e10), rng);
  const uu = upperCholeskyOfInverse(a);
  const prod = mul(a, mul(uu, uu, true, false));
  let worst = 0;
  for (let i = 0; i < 40; i++) {
    for (let j = 0; j < 40; j++) worst = Math.max(worst, Math.abs(prod.data[i * 40 + j] - (i === j ? 1 : 0)));
  }
  assert.ok(worst < 1e-4, `‖H·UᵀU − I‖max = ${worst}`);
  // The failing pivot is reported as an index of H (elimination runs from the last row).
  const bad = matrix64(3, 3, new Float64Array([1, 0, 0, 0, -2, 0, 0, 0, 3]));
  assert.throws(() => upperCholeskyOfInverse(bad), (e: unknown) => {
    return e instanceof NotPositiveDefiniteError && e.pivot === 1 && e.value === -2 && e.size === 3;
  });
});

// ---- choleskyWithRetry ----

Deno.test("choleskyWithRetry: no damping when not needed", async () => {
  const rng = createRng(9);
  const a = randomSpd(7, rng);
  const r = await choleskyWithRetry(a);
  assert.equal(r.tries, 1);
  assert.equal(r.damping, 0);
  assert.equal(r.relativeDamping, 0);
  assert.deepEqual(Array.from(r.factor.data), Array.from(cholesky(a).data));
});

Deno.test("choleskyWithRetry: reports the damping it added, and the factor is of A + damping·I", async () => {
  // Rank-1 PSD matrix x·xᵀ: singular, so the undamped try fails and λ = 1e-6 succeeds.
  const n = 6;
  const x = [1, 2, 3, 4, 5, 6];
  const a = matrix64(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a.data[i * n + j] = x[i] * x[j];
  const mean = x.reduce((s, v) => s + v * v, 0) / n;
  const r = await choleskyWithRetry(a);
  assert.equal(r.tries, 2);
  assert.equal(r.relativeDamping, 1e-6);
  assert.equal(r.damping, 1e-6 * mean);
  const damped = matrix64(n, n, a.data.slice());
  for (let i = 0; i < n; i++) damped.data[i * n + i] += r.damping;
  const res = relDiff(mul(r.factor, r.factor, false, true).data, damped.data);
  assert.ok(res < 1e-14, `residual ${res}`);

  // An indefinite matrix needs λ large enough to lift its negative eigenvalue: -0.05 with mean(diag) = 1.
  const rng = createRng(10);
  const b = withSpectrum([2, 1.05, 1, 0.5, 0.5, -0.05], rng); // trace 5 → mean diag 5/6
  const rb = await choleskyWithRetry(b, { initialDamping: 1e-4, growth: 10, maxTries: 10 });
  // λ·(5/6) must exceed 0.05: λ = 0.1 is the first in 1e-4, 1e-3, 1e-2, 1e-1.
  assert.equal(rb.relativeDamping, 0.1);
  assert.equal(rb.tries, 5);
  assertClose([rb.damping], [0.1 * 5 / 6], { atol: 0, rtol: 1e-12 });
});

Deno.test("choleskyWithRetry: injected kernel, exhausted tries rethrow, NaN is not retried, zero matrix", async () => {
  const calls: number[] = [];
  const a = matrix(2, 2, new Float32Array([1, 1, 1, 1]));
  const r = await choleskyWithRetry(a, {}, (m) => {
    calls.push(m.data[0]);
    return Promise.resolve(cholesky(m));
  });
  assert.equal(calls.length, 2);
  assert.ok(r.factor.data instanceof Float32Array);
  assert.ok(calls[1] > 1, "second call saw the damped diagonal");

  const neg = matrix64(2, 2, new Float64Array([1, 0, 0, -100]));
  await assert.rejects(choleskyWithRetry(neg, { maxTries: 3 }), NotPositiveDefiniteError);

  let nanCalls = 0;
  const nan = matrix64(2, 2, new Float64Array([1, 0, NaN, 1]));
  await assert.rejects(
    choleskyWithRetry(nan, {}, (m) => (nanCalls++, cholesky(m))),
    (e: unknown) => e instanceof NotPositiveDefiniteError && Number.isNaN(e.value),
  );
  assert.equal(nanCalls, 1);

  await assert.rejects(choleskyWithRetry(matrix64(1, 1, new Float64Array([Infinity]))), NonFiniteError);

  const zero = await choleskyWithRetry(matrix64(3, 3));
  assert.equal(zero.damping, 1e-6); // mean(diag) = 0: the scale falls back to 1
  assertClose(zero.factor.data, [1e-3, 0, 0, 0, 1e-3, 0, 0, 0, 1e-3], { atol: 1e-15, rtol: 1e-12 });
});

// ---- reverseCholesky ----

Deno.test("reverseCholesky: R·Rᵀ = H, R upper, and R = U⁻¹ for GPTQ's U", () => {
  const rng = createRng(9);
  for (const n of [1, 2, 7, 130]) {
    const h = randomSpd(n, rng);
    const r = reverseCholesky(h);
    assertClose(mul(r, r, false, true).data, h.data, { atol: 1e-12, rtol: 1e-12 }, `RRᵀ n=${n}`);
    for (let i = 0; i < n; i++) {
      assert.ok(r.data[i * n + i] > 0, `positive diagonal n=${n}`);
      for (let j = 0; j < i; j++) assert.equal(r.data[i * n + j], 0);
    }
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    assertClose(mul(r, upperCholeskyOfInverse(h)).data, eye, { atol: 1e-10, rtol: 0 }, `R·U n=${n}`);
  }
});

Deno.test("reverseCholesky: closed form, float32 output, only the lower triangle read, error index", () => {
  const r = reverseCholesky(matrix(2, 2, new Float32Array([5, 99, 2, 4]))); // the upper 99 is ignored
  assert.ok(r.data instanceof Float32Array);
  assert.deepEqual(Array.from(r.data), [2, 1, 0, 2]);
  const bad = matrix64(3, 3, new Float64Array([1, 0, 0, 0, -2, 0, 0, 0, 3]));
  assert.throws(() => reverseCholesky(bad), (e: unknown) => {
    return e instanceof NotPositiveDefiniteError && e.pivot === 1 && e.value === -2 && e.size === 3;
  });
});
