/**
 * WGSL of GPTQ's column loop for one block of columns (`core/quant/gptq_kernel.ts` is the reference).
 *
 * Storage is transposed as in the reference (`Wt = Wᵀ`, `[cols, ld]`), so that one invocation owns one row of W and a
 * warp reads a column coalesced. Rows are independent in GPTQ, so a workgroup of {@link GPTQ_ROWS} invocations takes
 * that many rows through the whole block without any barrier: the block's working copy `W1` lives in workgroup memory
 * (`[count][ROWS]`, conflict-free), the error feedback inside the block is a per-invocation loop of fused
 * multiply-adds, and `U`'s row is read from global memory (the same address across the workgroup: a broadcast).
 *
 * Dynamic groups starting inside the block are fitted first, from `Wt` as it stands at the start of the block (the
 * reference's choice); their parameters go to `sz` and are read back when the column loop reaches them.
 *
 * The block's scaled errors go to `E` (`[count, ld]`); the lazy update of later columns is a matmul encoded by the host.
 *
 * @module
 */

import { fitWgsl, gridKey, type GridVariant, gridWgsl } from "./grid_wgsl.ts";

/** Rows per workgroup (one invocation per row). */
export const GPTQ_ROWS = 32;

/** Static choices of one GPTQ block pipeline. */
export interface GptqVariant {
  readonly grid: GridVariant;
  readonly dynamic: boolean;
  /** Largest block (sizes the workgroup memory). */
  readonly maxBlock: number;
}

/** Cache key of a variant. */
export function gptqKey(v: GptqVariant): string {
  return `gptq:${gridKey(v.grid)}:${v.dynamic ? "dyn" : "fix"}:${v.maxBlock}`;
}

/**
 * Bindings: 0 `Wt` (read), 1 `U` (read), 2 `E` (write), 3 `Qt` (write), 4 `codesT` (write), 5 `sz` (scale, zero
 * interleaved per `[row, group]`; read for fixed groups, written for dynamic ones), 6 `aux` (u32: group of each
 * processed column for fixed groups, then the table levels as f32 bits), 7 uniform.
 */
export function gptqWgsl(v: GptqVariant): string {
  const R = GPTQ_ROWS;
  return /* wgsl */ `
struct Params {
  rows: u32, ld: u32, cols: u32, ldu: u32,
  i1: u32, count: u32, groupSize: u32, groups: u32,
  maxq: f32, nLevels: u32, levelsOff: u32, pad: u32,
}
@group(0) @binding(0) var<storage, read> Wt: array<f32>;
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read_write> E: array<f32>;
@group(0) @binding(3) var<storage, read_write> Qt: array<f32>;
@group(0) @binding(4) var<storage, read_write> codesT: array<u32>;
@group(0) @binding(5) var<storage, ${v.dynamic ? "read_write" : "read"}> sz: array<f32>;
@group(0) @binding(6) var<storage, read> aux: array<u32>;
@group(0) @binding(7) var<uniform> p: Params;
var<workgroup> W1: array<f32, ${v.maxBlock * R}>;
var<private> maxq: f32;
var<private> nLevels: u32;
fn level(i: u32) -> f32 { return bitcast<f32>(aux[p.levelsOff + i]); }
fn value(j: u32, r: u32) -> f32 { return Wt[j * p.ld + r]; }
${gridWgsl(v.grid)}
${fitWgsl(v.grid)}

@compute @workgroup_size(${R})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let r = wg.x * ${R}u + lid;
  if (r >= p.ld) { return; }
  _ = aux[0]; // every binding is used, so that the automatic layout keeps it
  opaque = p.pad;
  maxq = p.maxq;
  nLevels = p.nLevels;
  let i1 = p.i1; let count = p.count; let ld = p.ld;
  ${
    v.dynamic
      ? `let g = p.groupSize;
  for (var j0 = ((i1 + g - 1u) / g) * g; j0 < i1 + count; j0 += g) {
    let sp = fit(j0, min(g, p.cols - j0), r);
    let o = (r * p.groups + j0 / g) * 2u;
    sz[o] = sp.x; sz[o + 1u] = sp.y;
  }`
      : ""
  }
  for (var k = 0u; k < count; k++) { W1[k * ${R}u + lid] = Wt[(i1 + k) * ld + r]; }
  var s = 1.0; var z = 0.0; var cur = 0xffffffffu;
  for (var i = 0u; i < count; i++) {
    let j = i1 + i;
    let gi = ${v.dynamic ? "j / p.groupSize" : "aux[j]"};
    if (gi != cur) {
      cur = gi;
      let o = (r * p.groups + gi) * 2u;
      s = sz[o]; z = sz[o + 1u];
    }
    let x = W1[i * ${R}u + lid];
    let cv = quantize(x, s, z);
    Qt[j * ld + r] = cv.y;
    codesT[j * ld + r] = u32(cv.x);
    let e = pdiv(x - cv.y, U[j * p.ldu + j]);
    E[i * ld + r] = e;
    let ub = j * p.ldu + i1;
    var k = i + 1u;
    for (; k + 4u <= count; k += 4u) {
      let u0 = U[ub + k]; let u1 = U[ub + k + 1u]; let u2 = U[ub + k + 2u]; let u3 = U[ub + k + 3u];
      let a0 = k * ${R}u + lid;
      W1[a0] = fma(-e, u0, W1[a0]);
      W1[a0 + ${R}u] = fma(-e, u1, W1[a0 + ${R}u]);
      W1[a0 + ${2 * R}u] = fma(-e, u2, W1[a0 + ${2 * R}u]);
      W1[a0 + ${3 * R}u] = fma(-e, u3, W1[a0 + ${3 * R}u]);
    }
    for (; k < count; k++) {
      let a = k * ${R}u + lid;
      W1[a] = fma(-e, U[ub + k], W1[a]);
    }
  }
}`;
}
