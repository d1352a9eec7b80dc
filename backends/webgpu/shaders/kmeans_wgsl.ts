/**
 * WGSL of k-means' assignment step (`nearestCentroids` in `core/linalg/kmeans.ts`): one invocation per point, the
 * squared distance `Σ (x − c)²` to every centroid (centroids read as a broadcast), ties to the lower index.
 *
 * @module
 */

/** Bindings: 0 points `[n, d]`, 1 centroids `[k, d]`, 2 assignments (u32), 3 distances (f32), 4 uniform. */
export const NEAREST_CENTROIDS_WGSL = /* wgsl */ `
struct Params { n: u32, d: u32, k: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> P: array<f32>;
@group(0) @binding(1) var<storage, read> C: array<f32>;
@group(0) @binding(2) var<storage, read_write> A: array<u32>;
@group(0) @binding(3) var<storage, read_write> D: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.y * nwg.x * 64u + gid.x;
  if (i >= p.n) { return; }
  let pi = i * p.d;
  var best = 0u; var bestD = 3.4028234e38; var any = false;
  for (var c = 0u; c < p.k; c++) {
    let cc = c * p.d;
    var s = 0.0;
    for (var t = 0u; t < p.d; t++) { let diff = P[pi + t] - C[cc + t]; s = fma(diff, diff, s); }
    if (s < bestD || !any) { bestD = s; best = c; any = true; }
  }
  A[i] = best;
  D[i] = bestD;
}`;
