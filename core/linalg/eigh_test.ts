import assert from "node:assert/strict";
import { ConvergenceError, NonFiniteError, ShapeError } from "../errors.ts";
import { createRng, type Rng } from "../random.ts";
import { type FloatArray, type Matrix, matrix, matrix64, toFloat32 } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { eigh } from "./eigh.ts";

/** A random orthogonal matrix: Gram-Schmidt (twice) on Gaussian rows. */
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

/** `Qᵀ·diag(values)·Q` (exactly symmetric) for a random orthogonal `Q`. */
function withSpectrum(values: ArrayLike<number>, rng: Rng): Matrix<Float64Array> {
  const n = values.length;
  const q = randomOrthogonal(n, rng);
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

function randomSymmetric(n: number, rng: Rng): Matrix<Float64Array> {
  const a = matrix64(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const v = rng.normal();
      a.data[i * n + j] = v;
      a.data[j * n + i] = v;
    }
  }
  return a;
}

function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

/** ‖A − V·diag(λ)·Vᵀ‖_F / ‖A‖_F and max |VᵀV − I|, by naive float64 loops. */
function residuals(a: Matrix<FloatArray>, values: Float64Array, v: Matrix<FloatArray>): [number, number] {
  const n = a.shape[0];
  const V = v.data;
  const diff = new Float64Array(n * n);
  let orth = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, o = 0;
      for (let k = 0; k < n; k++) {
        s += V[i * n + k] * values[k] * V[j * n + k];
        o += V[k * n + i] * V[k * n + j];
      }
      diff[i * n + j] = a.data[i * n + j] - s;
      orth = Math.max(orth, Math.abs(o - (i === j ? 1 : 0)));
    }
  }
  const na = frob(a.data);
  return [na === 0 ? frob(diff) : frob(diff) / na, orth];
}

/** Residual bound of a backward-stable O(n³) solver: `4·n·ε` (n ≥ 4). */
function bound(n: number): number {
  return 4 * Math.max(n, 4) * Number.EPSILON;
}

function assertAscending(values: Float64Array): void {
  for (let i = 1; i < values.length; i++) assert.ok(values[i - 1] <= values[i], `values[${i}] out of order`);
}

Deno.test("eigh: closed form of the (−1, 2, −1) tridiagonal matrix: values and vectors (up to sign)", () => {
  for (const n of [1, 2, 7, 60]) {
    const a = matrix64(n, n);
    for (let i = 0; i < n; i++) {
      a.data[i * n + i] = 2;
      if (i > 0) a.data[i * n + i - 1] = a.data[(i - 1) * n + i] = -1;
    }
    const { values, vectors } = eigh(a);
    // λ_k = 2 − 2·cos(kπ/(n+1)), ascending in k; v_k[j] = √(2/(n+1))·sin((j+1)kπ/(n+1)).
    const want = Float64Array.from({ length: n }, (_, i) => 2 - 2 * Math.cos(((i + 1) * Math.PI) / (n + 1)));
    assertClose(values, want, { atol: 1e-13, rtol: 0 }, `values n=${n}`);
    for (let k = 0; k < n; k++) {
      const exact = Array.from(
        { length: n },
        (_, j) => Math.sqrt(2 / (n + 1)) * Math.sin(((j + 1) * (k + 1) * Math.PI) / (n + 1)),
      );
      const col = Array.from({ length: n }, (_, j) => vectors.data[j * n + k]);
      const sign = Math.sign(col.reduce((s, x, j) => s + x * exact[j], 0));
      assertClose(col.map((x) => x * sign), exact, { atol: 1e-12, rtol: 0 }, `vector ${k} n=${n}`);
    }
  }
});

Deno.test("eigh: random symmetric matrices of sizes 1, 2, 7, 385: reconstruction and orthogonality", () => {
  const rng = createRng(31);
  for (const n of [1, 2, 3, 7, 385]) {
    const a = randomSymmetric(n, rng);
    const { values, vectors } = eigh(a);
    assert.ok(vectors.data instanceof Float64Array);
    assert.deepEqual(vectors.shape, [n, n]);
    assertAscending(values);
    const [rec, orth] = residuals(a, values, vectors);
    // Backward stability: both at a small multiple of n·ε.
    assert.ok(rec < bound(n), `n=${n}: reconstruction ${rec}`);
    assert.ok(orth < bound(n), `n=${n}: orthogonality ${orth}`);
    // The trace is the sum of the eigenvalues.
    let tr = 0, sum = 0;
    for (let i = 0; i < n; i++) tr += a.data[i * n + i], sum += values[i];
    assertClose([sum], [tr], { atol: 1e-11, rtol: 0 }, "trace");
  }
});

Deno.test("eigh: prescribed spectra (ill-conditioned 1e-12…1, negative, repeated) are recovered", () => {
  const rng = createRng(32);
  const spectra: [string, number[]][] = [
    ["cond 1e12", Array.from({ length: 40 }, (_, i) => 1e-12 ** (i / 39))],
    ["mixed signs", Array.from({ length: 33 }, (_, i) => (i - 16) * 0.37)],
    ["repeated", [5, 5, 5, 1, 1, -2, -2, -2, -2, 0, 0, 3]],
  ];
  for (const [name, spectrum] of spectra) {
    const a = withSpectrum(spectrum, rng);
    const { values, vectors } = eigh(a);
    const want = Float64Array.from(spectrum).sort();
    // Weyl: each eigenvalue is within ‖ΔA‖₂ of the exact one; ΔA (rounding of A and of the solver) ≈ n·ε·‖A‖.
    const scale = Math.max(...spectrum.map(Math.abs));
    assertClose(values, want, { atol: 1e-13 * scale, rtol: 0 }, name);
    const [rec, orth] = residuals(a, values, vectors);
    assert.ok(rec < bound(a.shape[0]) && orth < bound(a.shape[0]), `${name}: reconstruction ${rec}, orth ${orth}`);
  }
});

Deno.test("eigh: Hilbert 10 (cond 1.6e13) and structured inputs: diagonal, zero, block-diagonal", () => {
  const n = 10;
  const h = matrix64(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) h.data[i * n + j] = 1 / (i + j + 1);
  const eh = eigh(h);
  const [rec, orth] = residuals(h, eh.values, eh.vectors);
  assert.ok(rec < bound(n) && orth < bound(n), `Hilbert: ${rec}, ${orth}`);
  assert.ok(eh.values[0] > 0 && eh.values[0] < 1e-12, `smallest Hilbert eigenvalue ${eh.values[0]}`);
  // det(H_n) = c_n⁴ / c_{2n} with c_n = Π_{i<n} i!, against the product of the eigenvalues. λ_min ≈ 1e-13 carries an
  // absolute error of ≈ ε·‖H‖, so the product is only good to a few parts in 1e3.
  const c = (m: number) => {
    let p = 1, f = 1;
    for (let i = 1; i < m; i++) f *= i, p *= f;
    return p;
  };
  let det = 1;
  for (const v of eh.values) det *= v;
  assertClose([det], [c(n) ** 4 / c(2 * n)], { atol: 0, rtol: 1e-2 }, "det");

  const d = matrix64(4, 4);
  [3, -1, 2, 0].forEach((v, i) => d.data[i * 4 + i] = v);
  const ed = eigh(d);
  assert.deepEqual(Array.from(ed.values), [-1, 0, 2, 3]);
  assertClose(ed.vectors.data.map(Math.abs), [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0], { atol: 0, rtol: 0 });

  const z = eigh(matrix64(5, 5));
  assert.deepEqual(Array.from(z.values), [0, 0, 0, 0, 0]);
  assert.ok(residuals(matrix64(5, 5), z.values, z.vectors)[1] === 0);

  // Two decoupled blocks: some Householder steps find an already reduced column.
  const b = matrix64(6, 6);
  const blk = [[2, 1, 0], [1, 2, 1], [0, 1, 2]];
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) b.data[i * 6 + j] = b.data[(i + 3) * 6 + j + 3] = blk[i][j];
  }
  const eb = eigh(b);
  const s2 = Math.SQRT2;
  assertClose(eb.values, [2 - s2, 2 - s2, 2, 2, 2 + s2, 2 + s2], { atol: 1e-14, rtol: 0 });
  const [rb, ob] = residuals(b, eb.values, eb.vectors);
  assert.ok(rb < bound(6) && ob < bound(6), `blocks: ${rb}, ${ob}`);
});

Deno.test("eigh: float32 in gives float32 vectors, equal to the float64 result rounded once", () => {
  const rng = createRng(33);
  const a32 = toFloat32(randomSymmetric(12, rng));
  const r32 = eigh(a32);
  assert.ok(r32.vectors.data instanceof Float32Array);
  const r64 = eigh(matrix64(12, 12, Float64Array.from(a32.data)));
  assert.deepEqual(Array.from(r32.values), Array.from(r64.values));
  assert.deepEqual(Array.from(r32.vectors.data), Array.from(Float32Array.from(r64.vectors.data)));
});

Deno.test("eigh: reads only the lower triangle", () => {
  const rng = createRng(34);
  const a = randomSymmetric(8, rng);
  const junk = matrix64(8, 8, a.data.slice());
  for (let i = 0; i < 8; i++) for (let j = i + 1; j < 8; j++) junk.data[i * 8 + j] = 99;
  assert.deepEqual(Array.from(eigh(junk).values), Array.from(eigh(a).values));
});

Deno.test("eigh: typed errors (shape, non-finite, convergence limit) and the empty matrix", () => {
  assert.throws(() => eigh(matrix(2, 3)), ShapeError);
  assert.throws(() => eigh(matrix64(2, 2, new Float64Array([1, NaN, NaN, 1]))), NonFiniteError);
  const rng = createRng(35);
  assert.throws(() => eigh(randomSymmetric(30, rng), { maxIterations: 1 }), (e: unknown) => {
    return e instanceof ConvergenceError && /did not converge in 1 QL iterations/.test(e.message);
  });
  const empty = eigh(matrix(0, 0));
  assert.equal(empty.values.length, 0);
  assert.deepEqual(empty.vectors.shape, [0, 0]);
});
