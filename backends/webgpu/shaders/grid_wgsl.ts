/**
 * WGSL of the grid arithmetic shared by the grid kernels and GPTQ: float32 operations in the order of
 * `core/grids/uniform.ts` (GPTQ's `quant.py`) and `core/grids/fit.ts`.
 *
 * Division is corrected to the correctly rounded quotient (the float32 neighbour with the smallest exact residual
 * `a − q·b`), because WGSL and Vulkan only promise 2.5 ULP for `/` (NVIDIA's is not correctly rounded) and a rounding
 * decision (`round(x / scale)`) must see the correctly rounded quotient to agree with the reference. The exact residual
 * is one `fma` where the device fuses it (NVIDIA), and Dekker's error-free product where `fma` is a multiply and an add
 * (lavapipe): the smoke test tells which. Kernels set the private `opaque` to a uniform that is always 0.
 *
 * @module
 */

import type { GridSpec } from "../../../core/grids/types.ts";
import { MSE_GRID, MSE_NORM, MSE_STEPS } from "../../../core/grids/uniform.ts";

/** Static grid choices compiled into a shader. */
export interface GridVariant {
  readonly kind: "uniform" | "table";
  readonly symmetric: boolean;
  readonly mse: boolean;
  /** The device's `fma` is fused: the division residual uses it; otherwise Dekker's exact product. */
  readonly fusedFma: boolean;
}

/** The compiled-in part of a grid. */
export function gridVariant(grid: GridSpec, fusedFma: boolean): GridVariant {
  return grid.kind === "uniform"
    ? { kind: "uniform", symmetric: grid.symmetric ?? false, mse: grid.mse ?? false, fusedFma }
    : { kind: "table", symmetric: false, mse: false, fusedFma };
}

/** Key part of a grid variant. */
export function gridKey(v: GridVariant): string {
  return `${v.kind}${v.symmetric ? "S" : ""}${v.mse ? "M" : ""}${v.fusedFma ? "F" : "D"}`;
}

/** `f32` literal that round-trips exactly. */
export function f32Literal(x: number): string {
  const v = Math.fround(x);
  if (Number.isInteger(v) && Math.abs(v) < 1e7) return `${v}.0`;
  return `${v.toPrecision(9)}`;
}

/**
 * WGSL functions over a grid. Needs, in scope: `maxq: f32` (uniform grids; from a uniform), and for tables
 * `fn level(i: u32) -> f32` and `nLevels: u32`. Defines:
 * - `pdiv(a, b)`: correctly rounded division (the kernel must set `opaque` from a zero uniform first);
 * - `quantize(x, s, z) -> vec2<f32>`: `(code, dequantized value)`; fitting is {@link fitWgsl}.
 */
export function gridWgsl(v: GridVariant): string {
  // resid(a, b, q) = a − q·b exactly: one fused multiply-add, or Dekker's error-free product.
  const resid = v.fusedFma
    ? /* wgsl */ `
fn resid(a: f32, b: f32, q: f32) -> f32 { return fma(-q, b, a); }`
    : /* wgsl */ `
fn split(a: f32) -> vec2<f32> {
  let c = 4097.0 * a;
  let hi = c - (c - a);
  return vec2<f32>(hi, a - hi);
}
fn resid(a: f32, b: f32, q: f32) -> f32 {
  // p + e = q·b exactly (Dekker); a − p is exact when q is close to a/b (Sterbenz).
  let p = q * b;
  let x = split(q); let y = split(b);
  let e = ((x.x * y.x - p) + x.x * y.y + x.y * y.x) + x.y * y.y;
  return (a - p) - e;
}`;
  // The quotient is made opaque (its bits XOR a run-time zero) so that no compiler can fold a − (a/b)·b to 0; then
  // the float32 neighbours are compared by exact residual: the nearest one is the correctly rounded quotient.
  const common = resid + /* wgsl */ `
var<private> opaque: u32;
fn pdiv(a: f32, b: f32) -> f32 {
  var q = bitcast<f32>(bitcast<u32>(a / b) ^ opaque);
  for (var step = 0u; step < 2u; step++) {
    let u = bitcast<u32>(q);
    let qm = bitcast<f32>(u - 1u); let qp = bitcast<f32>(u + 1u);
    var best = q; var br = abs(resid(a, b, q));
    let rm = abs(resid(a, b, qm)); let rp = abs(resid(a, b, qp));
    if (rm < br) { best = qm; br = rm; }
    if (rp < br) { best = qp; }
    q = best;
  }
  return q;
}`;
  if (v.kind === "uniform") {
    return common + /* wgsl */ `
fn quantize(x: f32, s: f32, z: f32) -> vec2<f32> {
  let q = round(pdiv(x, s)) + z;
  let c = select(0.0, min(q, maxq), q > 0.0);
  return vec2<f32>(c, s * (c - z));
}`;
  }
  return common + /* wgsl */ `
fn nearest(t: f32) -> u32 {
  let n = nLevels;
  if (!(t > level(0u))) { return 0u; }
  if (t >= level(n - 1u)) { return n - 1u; }
  var lo = 0u; var hi = n - 1u;
  loop {
    if (hi - lo <= 1u) { break; }
    let mid = (lo + hi) / 2u;
    if (level(mid) < t) { lo = mid; } else { hi = mid; }
  }
  return select(lo, hi, t > (level(lo) + level(hi)) * 0.5);
}
fn quantize(x: f32, s: f32, z: f32) -> vec2<f32> {
  let c = nearest(pdiv(x, s));
  return vec2<f32>(f32(c), s * level(c));
}`;
}

/**
 * WGSL of `fn fit(j0: u32, len: u32, r: u32) -> vec2<f32>`: the grid's `(scale, zero)` for the values
 * `value(j0 + k, r)`, `k < len` (the caller defines `fn value(j: u32, r: u32) -> f32`), as `fitUniformRow` (min-max,
 * symmetric, MSE) or the table rule (absolute maximum, 1 for an all-zero group).
 */
export function fitWgsl(v: GridVariant): string {
  if (v.kind === "table") {
    return /* wgsl */ `
fn fit(j0: u32, len: u32, r: u32) -> vec2<f32> {
  var m = 0.0;
  for (var k = 0u; k < len; k++) { m = max(m, abs(value(j0 + k, r))); }
  return vec2<f32>(select(m, 1.0, m == 0.0), 0.0);
}`;
  }
  const ps = Array.from({ length: MSE_STEPS }, (_, i) => f32Literal(1 - i / MSE_GRID));
  const mse = v.mse
    ? /* wgsl */ `
  var best = 3.4028234e38; // not an infinity literal: some compilers fold comparisons with infinities
  for (var i = 0u; i < ${MSE_STEPS}u; i++) {
    let pp = MSE_P[i];
    let xmin1 = pp * xmin; let xmax1 = pp * xmax;
    let scale1 = pdiv(xmax1 - xmin1, maxq);
    ${v.symmetric ? "let zero1 = zero;" : "let zero1 = nz(round(pdiv(-xmin1, scale1)));"}
    var err = 0.0;
    for (var k = 0u; k < len; k++) {
      let x = value(j0 + k, r);
      let d = quantize(x, scale1, zero1).y - x;
      err += pow(abs(d), ${f32Literal(MSE_NORM)});
    }
    if (err < best) { best = err; scale = scale1; zero = zero1; }
  }`
    : "";
  return /* wgsl */ `
${v.mse ? `const MSE_P = array<f32, ${MSE_STEPS}>(${ps.join(", ")});` : ""}
fn nz(x: f32) -> f32 { return select(x, 0.0, x == 0.0); }
fn fit(j0: u32, len: u32, r: u32) -> vec2<f32> {
  var lo = 0.0; var hi = 0.0;
  for (var k = 0u; k < len; k++) {
    let x = value(j0 + k, r);
    if (x < lo) { lo = x; }
    if (x > hi) { hi = x; }
  }
  var xmin = lo; var xmax = hi;
  ${v.symmetric ? "xmax = max(abs(xmin), xmax); if (xmin < 0.0) { xmin = -xmax; }" : ""}
  if (xmin == 0.0 && xmax == 0.0) { xmin = -1.0; xmax = 1.0; }
  var scale = pdiv(xmax - xmin, maxq);
  var zero = ${v.symmetric ? "(maxq + 1.0) / 2.0" : "nz(round(pdiv(-xmin, scale)))"};
  ${mse}
  return vec2<f32>(scale, zero);
}`;
}

/**
 * `fitGrid`: one invocation per (row, group) of `W` (`[rows, cols]`), writing `scale` and `zero` (`[rows, groups]`).
 * Bindings: 0 `W`, 1 `out` (scale then zero, `2·rows·groups`), 2 `levels` (unused by uniform grids), 3 uniform.
 */
export function fitGridWgsl(v: GridVariant): string {
  return /* wgsl */ `
struct Params { rows: u32, cols: u32, groupSize: u32, groups: u32, maxq: f32, nLevels: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> W: array<f32>;
@group(0) @binding(1) var<storage, read_write> outp: array<f32>;
@group(0) @binding(2) var<storage, read> levels: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
var<private> maxq: f32;
var<private> nLevels: u32;
fn level(i: u32) -> f32 { return levels[i]; }
fn value(j: u32, r: u32) -> f32 { return W[r * p.cols + j]; }
${gridWgsl(v)}
${fitWgsl(v)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.y * nwg.x * 64u + gid.x;
  _ = levels[0];
  if (t >= p.rows * p.groups) { return; }
  opaque = p.p0;
  maxq = p.maxq;
  nLevels = p.nLevels;
  let r = t / p.groups; let g = t % p.groups;
  let j0 = g * p.groupSize;
  let sz = fit(j0, min(p.groupSize, p.cols - j0), r);
  outp[t] = sz.x;
  outp[p.rows * p.groups + t] = sz.y;
}`;
}

/**
 * `quantizeGrid`: one invocation per four consecutive weights (one u32 of packed codes). Bindings: 0 `W`, 1 `sz`
 * (scale then zero, `[rows, groups]` each), 2 `aux` (u32: group of each column, then the levels as f32 bits),
 * 3 `deq`, 4 `codes` (packed bytes), 5 uniform.
 */
export function quantizeGridWgsl(v: GridVariant): string {
  return /* wgsl */ `
struct Params { rows: u32, cols: u32, groups: u32, words: u32, maxq: f32, nLevels: u32, levelsOff: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> W: array<f32>;
@group(0) @binding(1) var<storage, read> sz: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<u32>;
@group(0) @binding(3) var<storage, read_write> deq: array<f32>;
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;
var<private> maxq: f32;
var<private> nLevels: u32;
fn level(i: u32) -> f32 { return bitcast<f32>(aux[p.levelsOff + i]); }
${gridWgsl(v)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = gid.y * nwg.x * 256u + gid.x;
  if (w >= p.words) { return; }
  opaque = p.p0;
  maxq = p.maxq;
  nLevels = p.nLevels;
  let total = p.rows * p.cols;
  var word = 0u;
  for (var c = 0u; c < 4u; c++) {
    let f = w * 4u + c;
    if (f < total) {
      let r = f / p.cols; let j = f % p.cols;
      let o = r * p.groups + aux[j];
      let cv = quantize(W[f], sz[o], sz[p.rows * p.groups + o]);
      deq[f] = cv.y;
      word = word | ((u32(cv.x) & 255u) << (8u * c));
    }
  }
  codes[w] = word;
}`;
}
