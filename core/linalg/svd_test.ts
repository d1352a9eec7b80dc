import assert from "node:assert/strict";
import { ConvergenceError, NonFiniteError, OptionError } from "../errors.ts";
import { createRng, type Rng } from "../random.ts";
import { type FloatArray, type Matrix, matrix, matrix64, toFloat32 } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { svd } from "./svd.ts";

/** `[rows, k]` with orthonormal columns: Gram-Schmidt (twice) on Gaussian columns. */
function orthonormalColumns(rows: number, k: number, rng: Rng): Float64Array {
  const q = Float64Array.from({ length: k * rows }, () => rng.normal()); // [k, rows]: column j as row j
  for (let j = 0; j < k; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        let c = 0;
        for (let t = 0; t < rows; t++) c += q[i * rows + t] * q[j * rows + t];
        for (let t = 0; t < rows; t++) q[j * rows + t] -= c * q[i * rows + t];
      }
    }
    let nr = 0;
    for (let t = 0; t < rows; t++) nr += q[j * rows + t] ** 2;
    for (let t = 0; t < rows; t++) q[j * rows + t] /= Math.sqrt(nr);
  }
  const out = new Float64Array(rows * k);
  for (let j = 0; j < k; j++) for (let t = 0; t < rows; t++) out[t * k + j] = q[j * rows + t];
  return out;
}

/** `U·diag(s)·Vᵀ` for random orthonormal `U` `[m, r]`, `V` `[n, r]` (`r = s.length ≤ min(m, n)`). */
function withSingularValues(m: number, n: number, s: ArrayLike<number>, rng: Rng): Matrix<Float64Array> {
  const r = s.length;
  const u = orthonormalColumns(m, r, rng), v = orthonormalColumns(n, r, rng);
  const a = matrix64(m, n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let x = 0;
      for (let c = 0; c < r; c++) x += u[i * r + c] * s[c] * v[j * r + c];
      a.data[i * n + j] = x;
    }
  }
  return a;
}

function gaussian(m: number, n: number, rng: Rng): Matrix<Float64Array> {
  return matrix64(m, n, Float64Array.from({ length: m * n }, () => rng.normal()));
}

function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

/** ‖A − U·diag(s)·Vᵀ‖_F, and max |UᵀU − I|, max |VᵀV − I|, by naive float64 loops. */
function check(a: Matrix<FloatArray>, r: { u: Matrix<FloatArray>; s: Float64Array; v: Matrix<FloatArray> }) {
  const [m, n] = a.shape, k = r.s.length;
  assert.deepEqual(r.u.shape, [m, k]);
  assert.deepEqual(r.v.shape, [n, k]);
  for (let i = 0; i < k; i++) {
    assert.ok(r.s[i] >= 0, `s[${i}] = ${r.s[i]} is negative`);
    if (i > 0) assert.ok(r.s[i] <= r.s[i - 1], `s not descending at ${i}`);
  }
  const diff = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let x = 0;
      for (let c = 0; c < k; c++) x += r.u.data[i * k + c] * r.s[c] * r.v.data[j * k + c];
      diff[i * n + j] = a.data[i * n + j] - x;
    }
  }
  const orth = (q: Matrix<FloatArray>) => {
    const rows = q.shape[0];
    let worst = 0;
    for (let c = 0; c < k; c++) {
      for (let d = 0; d <= c; d++) {
        let x = 0;
        for (let i = 0; i < rows; i++) x += q.data[i * k + c] * q.data[i * k + d];
        worst = Math.max(worst, Math.abs(x - (c === d ? 1 : 0)));
      }
    }
    return worst;
  };
  return { residual: frob(diff), orthU: orth(r.u), orthV: orth(r.v) };
}

const EPS = Number.EPSILON;

Deno.test("svd (full): closed forms of small matrices", () => {
  const r = svd(matrix64(3, 2, new Float64Array([3, 0, 0, -4, 0, 0])));
  assertClose(r.s, [4, 3], { atol: 1e-15, rtol: 0 });
  assertClose(Array.from(r.u.data, Math.abs), [0, 1, 1, 0, 0, 0], { atol: 1e-15, rtol: 0 });
  // [[1, 1], [1, 1]]: singular values 2 and 0, the second left vector completed to an orthonormal pair.
  const ones = matrix64(2, 2, new Float64Array([1, 1, 1, 1]));
  const o = svd(ones);
  assertClose(o.s, [2, 0], { atol: 1e-15, rtol: 0 });
  const c = check(ones, o);
  assert.ok(c.residual < 1e-15 && c.orthU < 1e-15 && c.orthV < 1e-15, JSON.stringify(c));
  // A single row or column: σ = its norm.
  assertClose(svd(matrix64(1, 3, new Float64Array([1, 2, 2]))).s, [3], { atol: 1e-15, rtol: 0 });
  assertClose(svd(matrix64(3, 1, new Float64Array([2, -3, 6]))).s, [7], { atol: 1e-15, rtol: 0 });
  assertClose(svd(matrix64(1, 1, new Float64Array([-5]))).s, [5], { atol: 0, rtol: 0 });
});

Deno.test("svd (full): prescribed singular values on tall, wide and square shapes (1, 7, 385)", () => {
  const rng = createRng(41);
  for (const [m, n] of [[1, 1], [7, 1], [1, 7], [7, 7], [385, 7], [7, 385], [385, 40], [40, 385], [90, 90]]) {
    const k = Math.min(m, n);
    const want = Float64Array.from({ length: k }, (_, i) => 10 * 0.7 ** i + 0.01);
    const a = withSingularValues(m, n, want, rng);
    const r = svd(a);
    assert.ok(r.u.data instanceof Float64Array && r.v.data instanceof Float64Array);
    assertClose(r.s, want, { atol: 10 * k * EPS * want[0], rtol: 0 }, `s ${m}×${n}`);
    const c = check(a, r);
    const tol = 4 * Math.max(m, n) * EPS;
    assert.ok(c.residual < tol * frob(want), `${m}×${n}: residual ${c.residual}`);
    assert.ok(c.orthU < tol && c.orthV < tol, `${m}×${n}: orthogonality ${c.orthU}, ${c.orthV}`);
  }
});

Deno.test("svd (full): random Gaussian, ill-conditioned (σ from 1 to 1e-12), rank-deficient and zero matrices", () => {
  const rng = createRng(42);
  const g = gaussian(60, 45, rng);
  const rg = svd(g);
  const cg = check(g, rg);
  assert.ok(cg.residual < 1e-13 * frob(g.data) && cg.orthU < 1e-13 && cg.orthV < 1e-13, JSON.stringify(cg));

  const ill = Float64Array.from({ length: 30 }, (_, i) => 1e-12 ** (i / 29));
  const ai = withSingularValues(50, 30, ill, rng);
  const ri = svd(ai);
  // Forming A rounds it by ≈ ε·‖A‖, so each σ is known to ≈ n·ε absolutely (Weyl), not relatively.
  assertClose(ri.s, ill, { atol: 100 * EPS, rtol: 0 }, "ill-conditioned");
  const ci = check(ai, ri);
  assert.ok(ci.residual < 1e-14 && ci.orthU < 1e-13 && ci.orthV < 1e-13, JSON.stringify(ci));

  // Exact rank 5 of 30: 25 zero singular values, and U, V still orthonormal.
  const low = withSingularValues(40, 30, [9, 7, 5, 3, 1], rng);
  const rl = svd(low);
  assertClose(rl.s.subarray(0, 5), [9, 7, 5, 3, 1], { atol: 1e-13, rtol: 0 }, "rank 5");
  for (let i = 5; i < 30; i++) assert.ok(rl.s[i] < 1e-13, `s[${i}] = ${rl.s[i]}`);
  const cl = check(low, rl);
  assert.ok(cl.residual < 1e-13 && cl.orthU < 1e-13 && cl.orthV < 1e-13, JSON.stringify(cl));

  for (const [m, n] of [[4, 3], [3, 4]]) {
    const z = svd(matrix64(m, n));
    assert.deepEqual(Array.from(z.s), [0, 0, 0]);
    const cz = check(matrix64(m, n), z);
    assert.ok(cz.residual === 0 && cz.orthU < 1e-15 && cz.orthV < 1e-15, JSON.stringify(cz));
  }
});

Deno.test("svd: float32 in, float32 vectors out; rank truncates the full SVD and is clamped to min(m, n)", () => {
  const rng = createRng(43);
  const a32 = toFloat32(gaussian(9, 6, rng));
  const r32 = svd(a32);
  assert.ok(r32.u.data instanceof Float32Array && r32.v.data instanceof Float32Array);
  const r64 = svd(matrix64(9, 6, Float64Array.from(a32.data)));
  assert.deepEqual(Array.from(r32.s), Array.from(r64.s));
  assert.deepEqual(Array.from(r32.u.data), Array.from(Float32Array.from(r64.u.data)));

  const top = svd(a32, { rank: 2 });
  assert.deepEqual(top.u.shape, [9, 2]);
  assert.deepEqual(Array.from(top.s), Array.from(r64.s.subarray(0, 2)));
  assert.equal(svd(a32, { rank: 99 }).s.length, 6);
  const none = svd(a32, { rank: 0 });
  assert.deepEqual([none.u.shape, none.v.shape, none.s.length], [[9, 0], [6, 0], 0]);
  const empty = svd(matrix(0, 5));
  assert.deepEqual([empty.u.shape, empty.v.shape, empty.s.length], [[0, 0], [5, 0], 0]);
});

Deno.test("svd (top-k, randomized): kept values within 1e-6 relative on decaying spectra; optimal residual", () => {
  const rng = createRng(44);
  const m = 300, n = 220, k = 12;
  const spectra: [string, (i: number) => number][] = [
    ["geometric 0.9", (i) => 0.9 ** i],
    ["polynomial 1/(i+1)", (i) => 1 / (i + 1)],
    ["slow 1/√(i+1)", (i) => 1 / Math.sqrt(i + 1)],
    ["gap then flat", (i) => (i < 12 ? 10 - i * 0.5 : 1)],
  ];
  for (const [name, f] of spectra) {
    const full = Float64Array.from({ length: n }, (_, i) => f(i));
    const a = withSingularValues(m, n, full, rng);
    const t0 = performance.now();
    const r = svd(a, { rank: k, method: "randomized" });
    const ms = performance.now() - t0;
    for (let i = 0; i < k; i++) {
      const rel = Math.abs(r.s[i] - full[i]) / full[i];
      assert.ok(rel < 1e-6, `${name}: s[${i}] = ${r.s[i]} vs ${full[i]} (relative ${rel}, ${ms.toFixed(0)} ms)`);
    }
    // Eckart-Young: the best rank-k residual is ‖σ_{k+1…}‖.
    const best = frob(full.subarray(k));
    const c = check(a, r);
    assert.ok(c.residual <= best * (1 + 1e-6), `${name}: residual ${c.residual} vs optimal ${best}`);
    assert.ok(c.orthU < 1e-13 && c.orthV < 1e-13, `${name}: orthogonality ${c.orthU}, ${c.orthV}`);
  }
});

Deno.test("svd (top-k): auto picks the randomized path on a large matrix; seeded and deterministic", () => {
  const rng = createRng(45);
  const a = toFloat32(withSingularValues(385, 130, Float64Array.from({ length: 130 }, (_, i) => 0.8 ** i), rng));
  const r1 = svd(a, { rank: 8 });
  const r2 = svd(a, { rank: 8, method: "randomized" });
  assert.deepEqual(Array.from(r1.s), Array.from(r2.s), "auto = randomized here");
  assert.deepEqual(Array.from(r1.u.data), Array.from(r2.u.data));
  assert.deepEqual(Array.from(r1.v.data), Array.from(r2.v.data));
  // Against the full Jacobi SVD of the same (float32-rounded) values.
  const exact = svd(a, { rank: 8, method: "full" });
  assertClose(r1.s, exact.s, { atol: 0, rtol: 1e-9 }, "randomized vs full");
  const other = svd(a, { rank: 8, seed: 7 });
  assertClose(other.s, exact.s, { atol: 0, rtol: 1e-9 }, "another seed");
  const c = check(a, r1);
  assert.ok(c.orthU < 1e-6 && c.orthV < 1e-6, "float32 vectors are orthonormal to float32 rounding");
});

Deno.test("svd (top-k): rank-deficient input keeps orthonormal vectors; wide input", () => {
  const rng = createRng(46);
  const a = withSingularValues(200, 150, [5, 4, 3], rng); // exact rank 3, asked for 8
  const r = svd(a, { rank: 8, method: "randomized" });
  assertClose(r.s.subarray(0, 3), [5, 4, 3], { atol: 1e-12, rtol: 0 });
  for (let i = 3; i < 8; i++) assert.ok(r.s[i] < 1e-12, `s[${i}] = ${r.s[i]}`);
  const c = check(a, r);
  assert.ok(c.residual < 1e-12 && c.orthU < 1e-12 && c.orthV < 1e-12, JSON.stringify(c));

  const w = withSingularValues(64, 300, Float64Array.from({ length: 64 }, (_, i) => 2 ** -i), rng);
  const rw = svd(w, { rank: 5, method: "randomized" });
  assertClose(rw.s, [1, 0.5, 0.25, 0.125, 0.0625], { atol: 0, rtol: 1e-9 }, "wide");
});

Deno.test("svd: typed errors", () => {
  const rng = createRng(47);
  assert.throws(() => svd(matrix64(2, 2, new Float64Array([1, Infinity, 0, 1]))), NonFiniteError);
  assert.throws(() => svd(matrix64(3, 3), { rank: -1 }), OptionError);
  assert.throws(() => svd(matrix64(3, 3), { rank: 1.5 }), OptionError);
  assert.throws(() => svd(matrix64(3, 3), { rank: 3, method: "randomized" }), OptionError);
  assert.throws(() => svd(gaussian(20, 20, rng), { maxSweeps: 1 }), ConvergenceError);
});
