/**
 * Weighted k-means (VPTQ's codebook initialisation): k-means++ seeding by weighted D² sampling, then Lloyd
 * iterations. Deterministic for a seed: the only randomness is the seeding, drawn from {@link createRng}, and every
 * tie is broken towards the lower index.
 *
 * The assignment step (`n·k·d` work, nearly all of the time) is a parameter, so a faster backend can inject its own
 * nearest-centroid search and keep this reference's seeding and update rules.
 *
 * @module
 */

import type { KmeansOptions, KmeansResult } from "../backend.ts";
import { OptionError, ShapeError } from "../errors.ts";
import { createRng } from "../random.ts";
import { assertFinite, type Matrix, matrix } from "../tensor.ts";

/** Result of an assignment step: the nearest centroid of each point and the squared distance to it. */
export interface Assignment {
  /** Index of the nearest centroid (the lowest index among equally near ones). */
  readonly assignments: Int32Array;
  /** Squared Euclidean distance to that centroid. */
  readonly distances: Float32Array;
}

/** An assignment step: the reference {@link nearestCentroids}, or a backend's. */
export type AssignFn = (points: Matrix, centroids: Matrix) => Assignment;

/**
 * The nearest centroid of every point, by squared Euclidean distance computed as `Σ (x − c)²` in float64 (no
 * `‖x‖² − 2x·c + ‖c‖²` shortcut, whose cancellation would make near ties depend on rounding).
 *
 * @param points `[n, d]`.
 * @param centroids `[k, d]`, `k ≥ 1` when `n > 0`.
 * @returns assignments (ties go to the lower centroid index) and squared distances rounded to float32.
 * @throws {ShapeError} when the dimensions differ, or there are points but no centroids.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { nearestCentroids } from "./kmeans.ts";
 * const r = nearestCentroids(fromRows([[0, 0], [5, 5]]), fromRows([[4, 4], [0, 1]]));
 * console.assert(r.assignments[0] === 1 && r.assignments[1] === 0 && r.distances[1] === 2);
 * ```
 */
export function nearestCentroids(points: Matrix, centroids: Matrix): Assignment {
  const [n, d] = points.shape;
  const [k, dc] = centroids.shape;
  if (dc !== d) throw new ShapeError(`nearestCentroids: points have ${d} dimensions, centroids ${dc}`);
  if (k === 0 && n > 0) throw new ShapeError(`nearestCentroids: ${n} points but no centroids`);
  const P = points.data, C = centroids.data;
  const assignments = new Int32Array(n), distances = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const pi = i * d;
    let best = 0, bestD = Infinity;
    for (let c = 0; c < k; c++) {
      const cc = c * d;
      let s = 0;
      for (let t = 0; t < d && s < bestD; t++) {
        const diff = P[pi + t] - C[cc + t];
        s += diff * diff;
      }
      if (s < bestD) bestD = s, best = c;
    }
    assignments[i] = best;
    distances[i] = bestD;
  }
  return { assignments, distances };
}

/**
 * Weighted k-means: minimises `Σ_i w_i·‖x_i − c_{a(i)}‖²`.
 *
 * 1. Seeding (k-means++): the first centroid is a point drawn with probability `∝ w_i`, each next one with
 *    probability `∝ w_i·D(x_i)²` (`D` = distance to the nearest centroid chosen so far). When that total is zero
 *    (every weighted point already coincides with a centroid: duplicates, or `k ≥` the distinct weighted points), the
 *    next centroid is the point farthest from the chosen ones, ignoring weights; when every point coincides, the
 *    points are reused cyclically (duplicate centroids, which never win a tie and stay empty).
 * 2. Lloyd: each centroid moves to the weighted mean of its points (accumulated in float64). A centroid whose points
 *    carry no weight is *empty*: it is re-seeded at the point with the largest `w_i·D(x_i)²` (ties: lower index; one
 *    point per empty centroid, in centroid order), which never increases the inertia; if no point has a positive
 *    weighted distance, it stays where it is.
 * 3. Stops when an update leaves every assignment unchanged, or after `iterations` updates (default 25).
 *
 * The returned assignments and inertia are those of the returned centroids. Zero-weight points are assigned too but
 * move no centroid and add nothing to the inertia.
 *
 * @param points `[n, d]` float32 points, `n ≥ 1`.
 * @param options `k`, optional `weights` (non-negative, one per point), `seed` (default 0), `iterations`.
 * @param assign the assignment step; defaults to {@link nearestCentroids}.
 * @throws {OptionError} on `k < 1`, no points, bad iterations, or weights of the wrong length, negative or non-finite.
 * @throws {NonFiniteError} when a point has a NaN or infinite coordinate.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { kmeans } from "./kmeans.ts";
 * const r = kmeans(fromRows([[0], [0.1], [10], [10.1]]), { k: 2, seed: 1 });
 * console.assert(r.assignments[0] === r.assignments[1] && r.assignments[0] !== r.assignments[2]);
 * ```
 */
export function kmeans(points: Matrix, options: KmeansOptions, assign: AssignFn = nearestCentroids): KmeansResult {
  const [n, d] = points.shape;
  const { k, seed = 0, iterations: maxIterations = 25 } = options;
  if (points.data.length !== n * d) throw new ShapeError(`kmeans: ${n}×${d} points with ${points.data.length} values`);
  if (!Number.isInteger(k) || k < 1) throw new OptionError(`kmeans: k must be a positive integer, got ${k}`);
  if (n === 0) throw new OptionError(`kmeans: no points to cluster`);
  if (!Number.isInteger(maxIterations) || maxIterations < 0) {
    throw new OptionError(`kmeans: iterations must be a non-negative integer, got ${maxIterations}`);
  }
  const w = options.weights ?? new Float32Array(n).fill(1);
  if (w.length !== n) throw new OptionError(`kmeans: ${w.length} weights for ${n} points`);
  for (let i = 0; i < n; i++) {
    if (!(w[i] >= 0 && Number.isFinite(w[i]))) throw new OptionError(`kmeans: weight ${i} is ${w[i]}`);
  }
  assertFinite(points, "kmeans points");

  let centroids = seedPlusPlus(points, k, w, seed);
  let { assignments, distances } = assign(points, centroids);
  let iterations = 0;
  while (iterations < maxIterations) {
    const next = lloydUpdate(points, centroids, assignments, distances, w);
    iterations++;
    const r = assign(points, next);
    let changed = false;
    for (let i = 0; i < n && !changed; i++) changed = r.assignments[i] !== assignments[i];
    centroids = next;
    assignments = r.assignments;
    distances = r.distances;
    if (!changed) break;
  }
  let inertia = 0;
  for (let i = 0; i < n; i++) inertia += w[i] * distances[i];
  return { centroids, assignments, inertia, iterations };
}

/** k-means++ seeding with weighted D² sampling; see {@link kmeans}. */
function seedPlusPlus(points: Matrix, k: number, w: Float32Array, seed: number): Matrix {
  const [n, d] = points.shape;
  const P = points.data;
  const rng = createRng(seed);
  const centroids = matrix(k, d);
  const C = centroids.data;
  const d2 = new Float64Array(n).fill(Infinity); // squared distance to the nearest chosen centroid
  let reuse = 0; // next point for cyclic reuse once every point coincides with a centroid
  for (let c = 0; c < k; c++) {
    let pick = -1;
    // Sampling weights: w_i for the first centroid, w_i·D² afterwards.
    let total = 0;
    for (let i = 0; i < n; i++) total += c === 0 ? w[i] : w[i] * d2[i];
    if (total > 0) {
      const target = rng.float() * total;
      let run = 0;
      for (let i = 0; i < n; i++) {
        const p = c === 0 ? w[i] : w[i] * d2[i];
        if (p <= 0) continue;
        pick = i; // the last positive one, should rounding leave `target` beyond the running sum
        run += p;
        if (run > target) break;
      }
    } else {
      // No weighted mass left: the farthest point, else cycle through the points.
      let best = 0;
      for (let i = 0; i < n; i++) if (d2[i] > best) best = d2[i], pick = i;
      if (pick < 0) pick = reuse++ % n;
    }
    C.set(P.subarray(pick * d, (pick + 1) * d), c * d);
    // Update distances to the new centroid (float64 from the float32 coordinates, as nearestCentroids does).
    const cc = c * d;
    for (let i = 0; i < n; i++) {
      const pi = i * d;
      let s = 0;
      for (let t = 0; t < d; t++) {
        const diff = P[pi + t] - C[cc + t];
        s += diff * diff;
      }
      if (s < d2[i]) d2[i] = s;
    }
  }
  return centroids;
}

/** One Lloyd update: weighted means, then empty centroids re-seeded at the worst-served points. */
function lloydUpdate(
  points: Matrix,
  centroids: Matrix,
  assignments: Int32Array,
  distances: Float32Array,
  w: Float32Array,
): Matrix {
  const [n, d] = points.shape;
  const k = centroids.shape[0];
  const P = points.data;
  const sums = new Float64Array(k * d), mass = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    const wi = w[i];
    if (wi === 0) continue;
    const c = assignments[i], sc = c * d, pi = i * d;
    mass[c] += wi;
    for (let t = 0; t < d; t++) sums[sc + t] += wi * P[pi + t];
  }
  const next = matrix(k, d);
  const C = next.data;
  const empty: number[] = [];
  for (let c = 0; c < k; c++) {
    if (mass[c] > 0) {
      const inv = 1 / mass[c];
      for (let t = 0; t < d; t++) C[c * d + t] = sums[c * d + t] * inv;
    } else {
      C.set(centroids.data.subarray(c * d, (c + 1) * d), c * d);
      empty.push(c);
    }
  }
  if (empty.length > 0) {
    // Points by decreasing weighted distance (stable on index), taken one per empty centroid.
    const order = Array.from({ length: n }, (_, i) => i)
      .filter((i) => w[i] * distances[i] > 0)
      .sort((a, b) => w[b] * distances[b] - w[a] * distances[a] || a - b);
    empty.forEach((c, j) => {
      if (j < order.length) C.set(P.subarray(order[j] * d, (order[j] + 1) * d), c * d);
    });
  }
  return next;
}
