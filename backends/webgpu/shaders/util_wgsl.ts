/**
 * Small data-movement and reduction kernels: permuted transposes, code packing (u32 codes → bytes), finiteness checks
 * and dot products.
 *
 * @module
 */

/** Workgroups for a 1-D dispatch of `n` invocations in groups of 256, wrapped into y past 65535. */
export function grid1d(n: number, size = 256): [number, number] {
  const groups = Math.ceil(n / size);
  return groups <= 65535 ? [Math.max(groups, 0), 1] : [65535, Math.ceil(groups / 65535)];
}

/**
 * GPTQ's input matrix for the Cholesky: `A[i][j] = H[π(i)][π(j)]` for `j < i`, `diag[i]` on the diagonal, 0 above,
 * with `π` a u32 map (act-order permutation composed with the order reversal). Dispatch 16×16 over `(n, n)`.
 */
export const GATHER_SYMMETRIC_WGSL = /* wgsl */ `
struct Params { n: u32, ldh: u32, lda: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> H: array<f32>;
@group(0) @binding(1) var<storage, read> map: array<u32>;
@group(0) @binding(2) var<storage, read> diag: array<f32>;
@group(0) @binding(3) var<storage, read_write> A: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.y; let j = g.x;
  if (i >= p.n || j >= p.n) { return; }
  var v = 0.0;
  if (i == j) { v = diag[i]; } else if (j < i) { v = H[map[i] * p.ldh + map[j]]; }
  A[i * p.lda + j] = v;
}`;

/** `U[i][j] = X[n−1−i][n−1−j]` (order reversal of rows and columns). Dispatch 16×16 over `(n, n)`. */
export const REVERSE_WGSL = /* wgsl */ `
struct Params { n: u32, ld: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> U: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.y; let j = g.x;
  if (i >= p.n || j >= p.n) { return; }
  U[i * p.ld + j] = X[(p.n - 1u - i) * p.ld + (p.n - 1u - j)];
}`;

/**
 * `Wt[j][r] = W[r][map[j]]` (0 where `map[j]` is `0xffffffff`, a dead column): permutes, zeroes and transposes the
 * weights into GPTQ's layout in one pass. Dispatch 16×16 over `(ld, cols)`.
 */
export const PERMUTE_TRANSPOSE_WGSL = /* wgsl */ `
struct Params { rows: u32, cols: u32, ld: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> W: array<f32>;
@group(0) @binding(1) var<storage, read> map: array<u32>;
@group(0) @binding(2) var<storage, read_write> Wt: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let r = g.x; let j = g.y;
  if (r >= p.ld || j >= p.cols) { return; }
  let src = map[j];
  var v = 0.0;
  if (r < p.rows && src != 0xffffffffu) { v = W[r * p.cols + src]; }
  Wt[j * p.ld + r] = v;
}`;

/** `out[r][c] = src[map[c]][r]`: transposes GPTQ's `Qt` back with the inverse permutation. 16×16 over `(cols, rows)`. */
export const GATHER_TRANSPOSE_WGSL = /* wgsl */ `
struct Params { rows: u32, cols: u32, ld: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> map: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let c = g.x; let r = g.y;
  if (c >= p.cols || r >= p.rows) { return; }
  dst[r * p.cols + c] = src[map[c] * p.ld + r];
}`;

/**
 * Packs codes stored transposed (`codesT[map[c]·ld + r]`, u32 each) into row-major bytes `[rows, cols]`, four per
 * word. One invocation per output word (1-D, see {@link grid1d}).
 */
export const PACK_CODES_MAP_WGSL = /* wgsl */ `
struct Params { rows: u32, cols: u32, ld: u32, words: u32 }
@group(0) @binding(0) var<storage, read> codesT: array<u32>;
@group(0) @binding(1) var<storage, read> map: array<u32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = gid.y * nwg.x * 256u + gid.x;
  if (w >= p.words) { return; }
  var word = 0u;
  let total = p.rows * p.cols;
  for (var c = 0u; c < 4u; c++) {
    let f = w * 4u + c;
    if (f < total) {
      let r = f / p.cols; let j = f % p.cols;
      word = word | ((codesT[map[j] * p.ld + r] & 255u) << (8u * c));
    }
  }
  packed[w] = word;
}`;

/** `E = A − B` elementwise over `n` values (1-D). */
export const SUBTRACT_WGSL = /* wgsl */ `
struct Params { n: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> E: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.y * nwg.x * 256u + gid.x;
  if (i < p.n) { E[i] = A[i] - B[i]; }
}`;

/** Partial sums of `A∘B` over `n` values: workgroup `g` (of `p.groups`, 256 each) writes `out[g]`. */
export const DOT_PARTIALS_WGSL = /* wgsl */ `
struct Params { n: u32, groups: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> outp: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
var<workgroup> part: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  var s = 0.0;
  for (var i = wg.x * 256u + lid; i < p.n; i += p.groups * 256u) { s = fma(A[i], B[i], s); }
  part[lid] = s;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h = h / 2u) {
    if (lid < h) { part[lid] = part[lid] + part[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u) { outp[wg.x] = part[0]; }
}`;

/** Sets `status[0]` to 1 if any of the `n` values is NaN or infinite (1-D). */
export const CHECK_FINITE_WGSL = /* wgsl */ `
struct Params { n: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> A: array<u32>;
@group(0) @binding(1) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.y * nwg.x * 256u + gid.x;
  if (i < p.n && (A[i] & 0x7f800000u) == 0x7f800000u) { atomicOr(&status[0], 1u); }
}`;

/**
 * float64 → float32 with round-to-nearest-even, from the raw bits (`[rows, cols]` f64 → `[rows, ld]` f32), so that
 * float64 matrices are uploaded as they are instead of converted by a slow CPU loop. Results below the float32 normal
 * range flush to signed zero. Dispatch 16×16 over `(cols, rows)`.
 */
export const F64_TO_F32_WGSL = /* wgsl */ `
struct Params { rows: u32, cols: u32, ld: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> src: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
fn narrow(v: vec2<u32>) -> f32 {
  let lo = v.x; let hi = v.y;
  let sign = hi & 0x80000000u;
  let e = (hi >> 20u) & 0x7ffu;
  if (e == 0x7ffu) {
    let nan = ((hi & 0xfffffu) | lo) != 0u;
    return bitcast<f32>(sign | 0x7f800000u | select(0u, 0x400000u, nan));
  }
  let ef = i32(e) - 896;
  if (ef >= 255) { return bitcast<f32>(sign | 0x7f800000u); }
  if (ef <= 0) { return bitcast<f32>(sign); }
  let m = ((hi & 0xfffffu) << 3u) | (lo >> 29u);
  let rest = lo & 0x1fffffffu;
  var bits = (u32(ef) << 23u) | m;
  if (rest > 0x10000000u || (rest == 0x10000000u && (m & 1u) == 1u)) { bits += 1u; }
  return bitcast<f32>(sign | bits);
}
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let j = g.x; let i = g.y;
  if (i >= p.rows || j >= p.cols) { return; }
  dst[i * p.ld + j] = narrow(src[i * p.cols + j]);
}`;
