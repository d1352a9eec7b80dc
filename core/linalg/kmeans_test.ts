import assert from "node:assert/strict";
import { NonFiniteError, OptionError, ShapeError } from "../errors.ts";
import { createRng, type Rng } from "../random.ts";
import { fromRows, type Matrix, matrix } from "../tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { kmeans, nearestCentroids } from "./kmeans.ts";

/** Brute force: every squared distance, the first minimum. */
function bruteNearest(points: Matrix, centroids: Matrix): { a: number[]; d: number[] } {
  const [n, dim] = points.shape, k = centroids.shape[0];
  const a: number[] = [], d: number[] = [];
  for (let i = 0; i < n; i++) {
    const all = Array.from({ length: k }, (_, c) => {
      let s = 0;
      for (let t = 0; t < dim; t++) s += (points.data[i * dim + t] - centroids.data[c * dim + t]) ** 2;
      return s;
    });
    const best = Math.min(...all);
    a.push(all.indexOf(best));
    d.push(best);
  }
  return { a, d };
}

/** `perBlob` points around each of `centers` with standard deviation `spread`. */
function blobs(centers: number[][], perBlob: number, spread: number, rng: Rng): Matrix {
  const dim = centers[0].length;
  const m = matrix(centers.length * perBlob, dim);
  centers.forEach((c, b) => {
    for (let i = 0; i < perBlob; i++) {
      for (let t = 0; t < dim; t++) m.data[(b * perBlob + i) * dim + t] = c[t] + spread * rng.normal();
    }
  });
  return m;
}

/** Σ w_i·‖x_i − c_{a(i)}‖² in float64. */
function inertiaOf(points: Matrix, centroids: Matrix, assignments: Int32Array, weights?: Float32Array): number {
  const dim = points.shape[1];
  let s = 0;
  for (let i = 0; i < points.shape[0]; i++) {
    let d = 0;
    for (let t = 0; t < dim; t++) d += (points.data[i * dim + t] - centroids.data[assignments[i] * dim + t]) ** 2;
    s += (weights ? weights[i] : 1) * d;
  }
  return s;
}

Deno.test("nearestCentroids: agrees with brute force; ties go to the lower index; shape errors", () => {
  const rng = createRng(61);
  for (const [n, k, dim] of [[1, 1, 1], [7, 3, 2], [385, 17, 5]]) {
    const p = matrix(n, dim, Float32Array.from({ length: n * dim }, () => rng.normal()));
    const c = matrix(k, dim, Float32Array.from({ length: k * dim }, () => rng.normal()));
    const got = nearestCentroids(p, c);
    const want = bruteNearest(p, c);
    assert.deepEqual(Array.from(got.assignments), want.a);
    assertClose(got.distances, want.d, { atol: 1e-12, rtol: 1e-7 });
  }
  const tie = nearestCentroids(fromRows([[0, 0]]), fromRows([[1, 0], [0, 1], [-1, 0]]));
  assert.equal(tie.assignments[0], 0);
  assert.throws(() => nearestCentroids(matrix(2, 3), matrix(2, 2)), ShapeError);
  assert.throws(() => nearestCentroids(matrix(2, 3), matrix(0, 3)), ShapeError);
});

Deno.test("kmeans: weighted closed form in 1-D (centroids 0.75 and 10.5, inertia 1.25)", () => {
  const points = fromRows([[0], [1], [10], [11]]);
  const weights = new Float32Array([1, 3, 1, 1]);
  for (const seed of [0, 1, 2, 3]) {
    const r = kmeans(points, { k: 2, weights, seed });
    const cs = Array.from(r.centroids.data).sort((a, b) => a - b);
    assertClose(cs, [0.75, 10.5], { atol: 1e-7, rtol: 0 }, `seed ${seed}`);
    assertClose([r.inertia], [1.25], { atol: 1e-6, rtol: 0 });
    assert.ok(r.iterations >= 1 && r.iterations <= 25);
  }
});

Deno.test("kmeans: separated blobs are recovered; inertia and assignments match the returned centroids", () => {
  const rng = createRng(62);
  const centers = [[0, 0, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 10]];
  const p = blobs(centers, 75, 0.5, rng);
  const r = kmeans(p, { k: 4, seed: 5 });
  assert.deepEqual(r.centroids.shape, [4, 4]);
  // Every blob's points share one cluster, and the clusters differ between blobs.
  const labels = centers.map((_, b) => r.assignments[b * 75]);
  assert.equal(new Set(labels).size, 4);
  for (let i = 0; i < 300; i++) assert.equal(r.assignments[i], labels[Math.floor(i / 75)]);
  // Each centroid is its blob's sample mean.
  centers.forEach((_, b) => {
    const mean = [0, 0, 0, 0];
    for (let i = 0; i < 75; i++) for (let t = 0; t < 4; t++) mean[t] += p.data[(b * 75 + i) * 4 + t] / 75;
    assertClose(r.centroids.data.subarray(labels[b] * 4, labels[b] * 4 + 4), mean, { atol: 1e-5, rtol: 0 });
  });
  const brute = bruteNearest(p, r.centroids);
  assert.deepEqual(Array.from(r.assignments), brute.a);
  assertClose([r.inertia], [inertiaOf(p, r.centroids, r.assignments)], { atol: 0, rtol: 1e-6 });
  assert.ok(r.iterations < 25, "converged before the limit");
});

Deno.test("kmeans: deterministic for a seed, Lloyd never worsens the seeding, iterations: 0 returns the seeds", () => {
  const rng = createRng(63);
  const p = matrix(500, 3, Float32Array.from({ length: 1500 }, () => rng.normal()));
  const weights = Float32Array.from({ length: 500 }, () => rng.float() * 2);
  const a = kmeans(p, { k: 16, weights, seed: 11 });
  const b = kmeans(p, { k: 16, weights, seed: 11 });
  assert.deepEqual(Array.from(a.centroids.data), Array.from(b.centroids.data));
  assert.deepEqual(Array.from(a.assignments), Array.from(b.assignments));
  assert.equal(a.inertia, b.inertia);
  assert.equal(a.iterations, b.iterations);
  const seeds = kmeans(p, { k: 16, weights, seed: 11, iterations: 0 });
  assert.equal(seeds.iterations, 0);
  assert.ok(a.inertia < seeds.inertia, `${a.inertia} vs seeding ${seeds.inertia}`);
  assertClose([a.inertia], [inertiaOf(p, a.centroids, a.assignments, weights)], { atol: 0, rtol: 1e-6 });
  // Seeds are data points.
  for (let c = 0; c < 16; c++) {
    const row = Array.from(seeds.centroids.data.subarray(c * 3, c * 3 + 3));
    let found = false;
    for (let i = 0; i < 500 && !found; i++) found = row.every((v, t) => v === p.data[i * 3 + t]);
    assert.ok(found, `seed ${c} is not a point`);
  }
  const other = kmeans(p, { k: 16, weights, seed: 12 });
  assert.notDeepEqual(Array.from(other.centroids.data), Array.from(a.centroids.data));
});

Deno.test("kmeans: k ≥ n, duplicate points, and all-zero weights give finite centroids and zero inertia", () => {
  const three = fromRows([[1, 2], [3, 4], [5, 6]]);
  const big = kmeans(three, { k: 5, seed: 1 });
  assert.deepEqual(big.centroids.shape, [5, 2]);
  assert.equal(big.inertia, 0);
  assert.equal(new Set(big.assignments).size, 3, "each point its own centroid");
  assert.ok(big.centroids.data.every(Number.isFinite));

  const dup = matrix(20, 2);
  for (let i = 0; i < 20; i++) dup.data.set(i % 2 ? [7, 7] : [-1, 2], i * 2);
  const rd = kmeans(dup, { k: 3, seed: 2 });
  assert.equal(rd.inertia, 0);
  assert.ok(rd.centroids.data.every(Number.isFinite));
  const rows = new Set(
    Array.from({ length: 3 }, (_, c) => `${rd.centroids.data[2 * c]},${rd.centroids.data[2 * c + 1]}`),
  );
  assert.ok(rows.has("7,7") && rows.has("-1,2"));

  const zeros = kmeans(three, { k: 2, weights: new Float32Array(3), seed: 3 });
  assert.equal(zeros.inertia, 0);
  assert.ok(zeros.centroids.data.every(Number.isFinite));
  assert.deepEqual(Array.from(zeros.assignments), bruteNearest(three, zeros.centroids).a);

  // Zero-weight points are assigned but move nothing: the far point at 50 is never a seed and never a centroid.
  const zw = kmeans(fromRows([[0], [0.1], [50]]), { k: 2, weights: new Float32Array([1, 1, 0]), seed: 4 });
  assert.deepEqual(Array.from(zw.centroids.data).sort((x, y) => x - y), [0, Math.fround(0.1)]);
  assert.equal(zw.inertia, 0);
});

Deno.test("kmeans: an empty cluster is re-seeded at the worst-served point (through an injected assign step)", () => {
  const points = fromRows([[0], [1], [2], [100]]);
  let calls = 0;
  const seen: number[][] = [];
  const r = kmeans(points, { k: 2, seed: 0 }, (p, c) => {
    calls++;
    seen.push(Array.from(c.data));
    const real = nearestCentroids(p, c);
    if (calls > 1) return real;
    // First call: pretend every point went to centroid 0, leaving centroid 1 empty.
    const distances = Float32Array.from({ length: 4 }, (_, i) => (p.data[i] - c.data[0]) ** 2);
    return { assignments: new Int32Array(4), distances };
  });
  // After the first update, centroid 0 is the mean of all points and centroid 1 jumped to the point farthest from
  // the first seed (the only centroid any point was said to use).
  const first = seen[0][0];
  const farthest = [0, 1, 2, 100].reduce((best, x) => (Math.abs(x - first) > Math.abs(best - first) ? x : best));
  assertClose(seen[1], [103 / 4, farthest], { atol: 1e-5, rtol: 0 });
  assertClose(Array.from(r.centroids.data).sort((x, y) => x - y), [1, 100], { atol: 1e-6, rtol: 0 });
  assertClose([r.inertia], [2], { atol: 1e-6, rtol: 0 });
  assert.equal(calls, r.iterations + 1, "one assignment per update plus the seeding's");
});

Deno.test("kmeans: option errors", () => {
  const p = fromRows([[0], [1]]);
  assert.throws(() => kmeans(p, { k: 0 }), OptionError);
  assert.throws(() => kmeans(p, { k: 1.5 }), OptionError);
  assert.throws(() => kmeans(matrix(0, 2), { k: 1 }), OptionError);
  assert.throws(() => kmeans(p, { k: 1, weights: new Float32Array([1]) }), OptionError);
  assert.throws(() => kmeans(p, { k: 1, weights: new Float32Array([1, -1]) }), OptionError);
  assert.throws(() => kmeans(p, { k: 1, weights: new Float32Array([1, NaN]) }), OptionError);
  assert.throws(() => kmeans(p, { k: 1, iterations: -1 }), OptionError);
  assert.throws(() => kmeans(fromRows([[0], [NaN]]), { k: 1 }), NonFiniteError);
});
