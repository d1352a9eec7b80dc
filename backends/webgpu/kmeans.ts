/**
 * k-means' assignment step on the GPU, the `n·k·d` part of `Backend.kmeans`. The reference `kmeans` in
 * `core/linalg/kmeans.ts` takes a synchronous assignment function, so `Backend.kmeans` still runs the reference (with
 * its own assignment); this one is ready for an asynchronous hook.
 *
 * @module
 */

import { ShapeError } from "../../core/errors.ts";
import type { Assignment } from "../../core/linalg/kmeans.ts";
import type { Matrix } from "../../core/tensor.ts";
import type { GpuContext } from "./context.ts";
import { NEAREST_CENTROIDS_WGSL } from "./shaders/kmeans_wgsl.ts";
import { grid1d } from "./shaders/util_wgsl.ts";

/**
 * The nearest centroid of every point (squared Euclidean distance in float32, ties to the lower index).
 *
 * @throws {ShapeError} when the dimensions differ, or there are points but no centroids.
 */
export async function gpuNearestCentroids(ctx: GpuContext, points: Matrix, centroids: Matrix): Promise<Assignment> {
  const [n, d] = points.shape;
  const [k, dc] = centroids.shape;
  if (dc !== d) throw new ShapeError(`nearestCentroids: points have ${d} dimensions, centroids ${dc}`);
  if (k === 0 && n > 0) throw new ShapeError(`nearestCentroids: ${n} points but no centroids`);
  if (n === 0) return { assignments: new Int32Array(0), distances: new Float32Array(0) };
  const pb = ctx.upload(points.data), cb = ctx.upload(centroids.data);
  const ab = ctx.buffer(n * 4), db = ctx.buffer(n * 4);
  const u = ctx.uniform([n, d, k, 0]);
  try {
    const batch = ctx.batch().temp(u);
    batch.dispatch(ctx.pipeline("nearest-centroids", () => NEAREST_CENTROIDS_WGSL), [pb, cb, ab, db, u], grid1d(n, 64));
    const [a, dist] = await batch.readMany([{ buffer: ab, bytes: n * 4 }, { buffer: db, bytes: n * 4 }]);
    await ctx.checkErrors("nearestCentroids");
    return { assignments: new Int32Array(a), distances: new Float32Array(dist) };
  } finally {
    for (const b of [pb, cb, ab, db]) b.destroy();
  }
}
