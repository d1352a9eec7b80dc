/**
 * WGSL of the small dense kernels behind the blocked Cholesky and triangular solves; the O(n³) work of both is the
 * tiled matmul (`matmul_wgsl.ts`), these handle the `nb × nb` diagonal blocks in workgroup memory.
 *
 * @module
 */

/**
 * Column-wise triangular inverse of the `b × b` block held in workgroup array `T` (row stride NB) into `X`, one
 * invocation per column (`c = lid < b`). `lower`/`unit` are WGSL boolean expressions.
 */
function invertBlockWgsl(nb: number): string {
  return /* wgsl */ `
fn invert_block(lid: u32, b: u32, lower: bool, unit: bool) {
  let c = lid;
  if (c < b) {
    if (lower) {
      for (var i = 0u; i < b; i++) {
        if (i < c) { X[i * ${nb}u + c] = 0.0; continue; }
        var s = select(0.0, 1.0, i == c);
        for (var q = c; q < i; q++) { s = fma(-T[i * ${nb}u + q], X[q * ${nb}u + c], s); }
        X[i * ${nb}u + c] = select(s / T[i * ${nb}u + i], s, unit);
      }
    } else {
      for (var ii = 0u; ii < b; ii++) {
        let i = b - 1u - ii;
        if (i > c) { X[i * ${nb}u + c] = 0.0; continue; }
        var s = select(0.0, 1.0, i == c);
        for (var q = i + 1u; q <= c; q++) { s = fma(-T[i * ${nb}u + q], X[q * ${nb}u + c], s); }
        X[i * ${nb}u + c] = select(s / T[i * ${nb}u + i], s, unit);
      }
    }
  }
}`;
}

/**
 * Factors the diagonal block `A[k:k+b, k:k+b]` (lower triangle read; `b ≤ NB`) in place, zeroes its upper triangle,
 * and writes `L_kk⁻¹` to `Linv` (`[NB, NB]`). The first pivot that is not positive is recorded in `status`
 * (`[pivot as u32, value as f32 bits]`, pivot `0xffffffff` while none failed). One workgroup of 256.
 */
export function potrfWgsl(nb: number): string {
  return /* wgsl */ `
struct Params { ld: u32, k: u32, b: u32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> Linv: array<f32>;
@group(0) @binding(2) var<storage, read_write> status: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;
var<workgroup> T: array<f32, ${nb * nb}>;
var<workgroup> X: array<f32, ${nb * nb}>;
${invertBlockWgsl(nb)}
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  let b = p.b; let base = p.k * p.ld + p.k;
  for (var e = lid; e < b * b; e += 256u) {
    let i = e / b; let j = e % b;
    T[i * ${nb}u + j] = select(0.0, A[base + i * p.ld + j], j <= i);
  }
  workgroupBarrier();
  for (var j = 0u; j < b; j++) {
    if (lid == 0u) {
      let s = T[j * ${nb}u + j];
      if (!(s > 0.0) && status[0] == 0xffffffffu) { status[0] = p.k + j; status[1] = bitcast<u32>(s); }
      T[j * ${nb}u + j] = sqrt(s);
    }
    workgroupBarrier();
    let d = T[j * ${nb}u + j];
    for (var i = j + 1u + lid; i < b; i += 256u) { T[i * ${nb}u + j] = T[i * ${nb}u + j] / d; }
    workgroupBarrier();
    // Rank-1 update of the trailing lower triangle.
    let m = b - j - 1u;
    for (var e = lid; e < m * m; e += 256u) {
      let i = j + 1u + e / m; let c = j + 1u + e % m;
      if (c <= i) { T[i * ${nb}u + c] = fma(-T[i * ${nb}u + j], T[c * ${nb}u + j], T[i * ${nb}u + c]); }
    }
    workgroupBarrier();
  }
  invert_block(lid, b, true, false);
  workgroupBarrier();
  for (var e = lid; e < b * b; e += 256u) {
    let i = e / b; let j = e % b;
    A[base + i * p.ld + j] = select(0.0, T[i * ${nb}u + j], j <= i);
  }
  for (var e = lid; e < ${nb * nb}u; e += 256u) {
    let i = e / ${nb}u; let j = e % ${nb}u;
    Linv[e] = select(0.0, X[i * ${nb}u + j], i < b && j < b);
  }
}`;
}

/**
 * Inverts every diagonal `nb × nb` block of a triangular matrix `T` (`[n, n]`, leading dimension `ld`) in parallel,
 * one workgroup per block, into `Tinv` (`[blocks, NB, NB]`, zero outside each block's triangle).
 */
export function trtriBlocksWgsl(nb: number): string {
  return /* wgsl */ `
struct Params { ld: u32, n: u32, lower: u32, unit: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> Tinv: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> T: array<f32, ${nb * nb}>;
var<workgroup> X: array<f32, ${nb * nb}>;
${invertBlockWgsl(nb)}
@compute @workgroup_size(${nb})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let k = wg.x * ${nb}u;
  let b = min(${nb}u, p.n - k);
  let lower = p.lower != 0u;
  let base = k * p.ld + k;
  for (var e = lid; e < b * b; e += ${nb}u) {
    let i = e / b; let j = e % b;
    let keep = select(j >= i, j <= i, lower);
    T[i * ${nb}u + j] = select(0.0, A[base + i * p.ld + j], keep);
  }
  workgroupBarrier();
  invert_block(lid, b, lower, p.unit != 0u);
  workgroupBarrier();
  let out = wg.x * ${nb * nb}u;
  for (var e = lid; e < ${nb * nb}u; e += ${nb}u) {
    let i = e / ${nb}u; let j = e % ${nb}u;
    Tinv[out + e] = select(0.0, X[i * ${nb}u + j], i < b && j < b);
  }
}`;
}

/** Zeroes the strict upper (`upper = 1`) or strict lower triangle of `[n, n]` with leading dimension `ld`. */
export const ZERO_TRIANGLE_WGSL = /* wgsl */ `
struct Params { n: u32, ld: u32, upper: u32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.y; let j = g.x;
  if (i >= p.n || j >= p.n) { return; }
  if ((p.upper != 0u && j > i) || (p.upper == 0u && j < i)) { A[i * p.ld + j] = 0.0; }
}`;

/** Writes the identity into `[n, n]` with leading dimension `ld` (the whole `n × ld` range). */
export const IDENTITY_WGSL = /* wgsl */ `
struct Params { n: u32, ld: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.y; let j = g.x;
  if (i >= p.n || j >= p.ld) { return; }
  A[i * p.ld + j] = select(0.0, 1.0, i == j);
}`;
