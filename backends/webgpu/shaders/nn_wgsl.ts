/**
 * WGSL of the transformer building blocks (references in `core/nn/`): RMSNorm, RoPE, SwiGLU, softmax cross-entropy
 * and causal grouped-query attention, forward and backward, in float32.
 *
 * @module
 */

/** Workgroup-wide sum of `v` over 256 invocations through `red` (every invocation gets the total). */
const REDUCE = /* wgsl */ `
var<workgroup> red: array<f32, 256>;
fn wg_sum(v: f32, lid: u32) -> f32 {
  workgroupBarrier();
  red[lid] = v;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h = h / 2u) {
    if (lid < h) { red[lid] = red[lid] + red[lid + h]; }
    workgroupBarrier();
  }
  return red[0];
}
fn wg_max(v: f32, lid: u32) -> f32 {
  workgroupBarrier();
  red[lid] = v;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h = h / 2u) {
    if (lid < h) { red[lid] = max(red[lid], red[lid + h]); }
    workgroupBarrier();
  }
  return red[0];
}`;

/** RMSNorm forward, one workgroup per row; also writes `1/rms` per row to `rinv` (used by the backward). */
export const RMSNORM_WGSL = /* wgsl */ `
struct Params { n: u32, d: u32, eps: f32, p0: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${REDUCE}
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let row = wg.y * 65535u + wg.x;
  if (row >= p.n) { return; }
  let o = row * p.d;
  var ss = 0.0;
  for (var j = lid; j < p.d; j += 256u) { let x = X[o + j]; ss = fma(x, x, ss); }
  let r = 1.0 / sqrt(wg_sum(ss, lid) / f32(p.d) + p.eps);
  for (var j = lid; j < p.d; j += 256u) { Y[o + j] = X[o + j] * r * W[j]; }
}`;

/** RMSNorm backward `dx` per row (one workgroup per row), and `r·x·dy` per element into `T` for `dweight`. */
export const RMSNORM_BACKWARD_WGSL = /* wgsl */ `
struct Params { n: u32, d: u32, eps: f32, p0: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> DY: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;
@group(0) @binding(4) var<storage, read_write> T: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${REDUCE}
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let row = wg.y * 65535u + wg.x;
  if (row >= p.n) { return; }
  let o = row * p.d;
  var ss = 0.0; var dot = 0.0;
  for (var j = lid; j < p.d; j += 256u) {
    let x = X[o + j];
    ss = fma(x, x, ss);
    dot = fma(DY[o + j] * W[j], x, dot);
  }
  let sst = wg_sum(ss, lid);
  let dott = wg_sum(dot, lid);
  let r = 1.0 / sqrt(sst / f32(p.d) + p.eps);
  let c = r * r * r * dott / f32(p.d);
  for (var j = lid; j < p.d; j += 256u) {
    let x = X[o + j]; let g = DY[o + j];
    // With one feature the two terms cancel to r·w·g·(1 − x²r²) = r·w·g·eps·r²; float32 cannot form that difference.
    DX[o + j] = select(r * W[j] * g - x * c, r * W[j] * g * (p.eps * r * r), p.d == 1u);
    T[o + j] = g * x * r;
  }
}`;

/** Column sums of `T` (`[n, d]`) into `S` (`[d]`): one invocation per column. */
export const COLUMN_SUM_WGSL = /* wgsl */ `
struct Params { n: u32, d: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> T: array<f32>;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let j = g.x;
  if (j >= p.d) { return; }
  var s = 0.0;
  for (var i = 0u; i < p.n; i++) { s += T[i * p.d + j]; }
  S[j] = s;
}`;

/** RoPE: one invocation per (token, head, pair); `cs` holds `cos, sin` per (position, pair) from the host. */
export const ROPE_WGSL = /* wgsl */ `
struct Params { n: u32, cols: u32, headDim: u32, seqLen: u32, interleaved: u32, sign: f32, tabLen: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.y * nwg.x * 256u + gid.x;
  let half = p.headDim / 2u;
  let pairs = p.cols / 2u;
  if (e >= p.n * pairs) { return; }
  let t = e / pairs; let q = e % pairs;
  let h = q / half; let i = q % half;
  let base = t * p.cols + h * p.headDim;
  var ia = base + i; var ib = ia + half;
  if (p.interleaved != 0u) { ia = base + 2u * i; ib = ia + 1u; }
  let tab = cs[(t % p.seqLen) * half + i];
  let c = tab.x; let s = p.sign * tab.y;
  let a = X[ia]; let b = X[ib];
  Y[ia] = a * c - b * s;
  Y[ib] = a * s + b * c;
}`;

/** Numerically stable logistic function. */
const SIGMOID = /* wgsl */ `
fn sigmoid(g: f32) -> f32 {
  if (g >= 0.0) { return 1.0 / (1.0 + exp(-g)); }
  let e = exp(g);
  return e / (1.0 + e);
}`;

/** SwiGLU forward and backward (`mode` 0: forward into `A`; 1: backward, `dgate` into `A`, `dup` into `B`). */
export const SWIGLU_WGSL = /* wgsl */ `
struct Params { n: u32, mode: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read> DY: array<f32>;
@group(0) @binding(3) var<storage, read_write> A: array<f32>;
@group(0) @binding(4) var<storage, read_write> B: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${SIGMOID}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.y * nwg.x * 256u + gid.x;
  if (i >= p.n) { return; }
  let g = G[i]; let s = sigmoid(g);
  if (p.mode == 0u) {
    A[i] = g * s * U[i];
    _ = DY[0];
  } else {
    let d = DY[i];
    B[i] = d * g * s;
    A[i] = d * U[i] * s * (1.0 + g * (1.0 - s));
  }
}`;

/**
 * Softmax cross-entropy, one workgroup per token row: the loss, and (when `withGrad`) `scale·(softmax − onehot)`.
 * Ignored targets (−1) give loss 0 and a zero gradient row.
 */
export const CROSS_ENTROPY_WGSL = /* wgsl */ `
struct Params { n: u32, vocab: u32, withGrad: u32, p0: u32 }
@group(0) @binding(0) var<storage, read> Z: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<storage, read_write> D: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${REDUCE}
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let row = wg.y * 65535u + wg.x;
  if (row >= p.n) { return; }
  let tgt = targets[row];
  let o = row * p.vocab;
  if (tgt < 0) {
    if (lid == 0u) { losses[row] = 0.0; }
    if (p.withGrad != 0u) { for (var j = lid; j < p.vocab; j += 256u) { D[o + j] = 0.0; } }
    return;
  }
  var m = -3.4028234e38;
  for (var j = lid; j < p.vocab; j += 256u) { m = max(m, Z[o + j]); }
  let mx = wg_max(m, lid);
  var s = 0.0;
  for (var j = lid; j < p.vocab; j += 256u) { s += exp(Z[o + j] - mx); }
  let lse = mx + log(wg_sum(s, lid));
  if (lid == 0u) { losses[row] = lse - Z[o + u32(tgt)]; }
  if (p.withGrad != 0u) {
    let sc = scales[row];
    for (var j = lid; j < p.vocab; j += 256u) {
      var v = sc * exp(Z[o + j] - lse);
      if (j == u32(tgt)) { v -= sc; }
      D[o + j] = v;
    }
  }
}`;

/** Attention forward: one invocation per (token, head), online softmax over the causal keys. */
export function attentionWgsl(hd: number): string {
  return /* wgsl */ `
struct Params { T: u32, S: u32, heads: u32, kvHeads: u32, scale: f32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> K: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@group(0) @binding(4) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.y * nwg.x * 64u + gid.x;
  if (e >= p.T * p.heads) { return; }
  let t = e / p.heads; let h = e % p.heads;
  let i = t % p.S; let row0 = t - i;
  let g = h / (p.heads / p.kvHeads);
  let qo = t * p.heads * ${hd}u + h * ${hd}u;
  var q: array<f32, ${hd}>;
  var acc: array<f32, ${hd}>;
  for (var c = 0u; c < ${hd}u; c++) { q[c] = Q[qo + c] * p.scale; acc[c] = 0.0; }
  var m = -3.4028234e38; var l = 0.0;
  for (var j = 0u; j <= i; j++) {
    let ko = (row0 + j) * p.kvHeads * ${hd}u + g * ${hd}u;
    var s = 0.0;
    for (var c = 0u; c < ${hd}u; c++) { s = fma(q[c], K[ko + c], s); }
    let mn = max(m, s);
    let corr = exp(m - mn); let w = exp(s - mn);
    l = l * corr + w;
    for (var c = 0u; c < ${hd}u; c++) { acc[c] = fma(w, V[ko + c], acc[c] * corr); }
    m = mn;
  }
  for (var c = 0u; c < ${hd}u; c++) { O[qo + c] = acc[c] / l; }
  LSE[e] = m + log(l);
}`;
}

/**
 * Attention backward, pass 1: per (token, head), `D = dout·out` and `dq = scale · Σ_j P_ij (dout·v_j − D) k_j`;
 * needs `LSE` and `O` from the forward.
 */
export function attentionBackwardQWgsl(hd: number): string {
  return /* wgsl */ `
struct Params { T: u32, S: u32, heads: u32, kvHeads: u32, scale: f32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> K: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read> O: array<f32>;
@group(0) @binding(4) var<storage, read> DO: array<f32>;
@group(0) @binding(5) var<storage, read> LSE: array<f32>;
@group(0) @binding(6) var<storage, read_write> DQ: array<f32>;
@group(0) @binding(7) var<storage, read_write> DD: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.y * nwg.x * 64u + gid.x;
  if (e >= p.T * p.heads) { return; }
  let t = e / p.heads; let h = e % p.heads;
  let i = t % p.S; let row0 = t - i;
  let g = h / (p.heads / p.kvHeads);
  let qo = t * p.heads * ${hd}u + h * ${hd}u;
  var q: array<f32, ${hd}>;
  var go: array<f32, ${hd}>;
  var acc: array<f32, ${hd}>;
  var dd = 0.0;
  for (var c = 0u; c < ${hd}u; c++) {
    q[c] = Q[qo + c] * p.scale; go[c] = DO[qo + c]; acc[c] = 0.0;
    dd = fma(go[c], O[qo + c], dd);
  }
  let lse = LSE[e];
  for (var j = 0u; j <= i; j++) {
    let ko = (row0 + j) * p.kvHeads * ${hd}u + g * ${hd}u;
    var s = 0.0; var dp = 0.0;
    for (var c = 0u; c < ${hd}u; c++) { s = fma(q[c], K[ko + c], s); dp = fma(go[c], V[ko + c], dp); }
    let ds = exp(s - lse) * (dp - dd);
    for (var c = 0u; c < ${hd}u; c++) { acc[c] = fma(ds, K[ko + c], acc[c]); }
  }
  for (var c = 0u; c < ${hd}u; c++) { DQ[qo + c] = acc[c] * p.scale; }
  DD[e] = dd;
}`;
}

/** Attention backward, pass 2: per (token j, kv head), `dk_j` and `dv_j` summed over the group's heads and `i ≥ j`. */
export function attentionBackwardKvWgsl(hd: number): string {
  return /* wgsl */ `
struct Params { T: u32, S: u32, heads: u32, kvHeads: u32, scale: f32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> K: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read> DO: array<f32>;
@group(0) @binding(4) var<storage, read> LSE: array<f32>;
@group(0) @binding(5) var<storage, read> DD: array<f32>;
@group(0) @binding(6) var<storage, read_write> DK: array<f32>;
@group(0) @binding(7) var<storage, read_write> DV: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.y * nwg.x * 64u + gid.x;
  if (e >= p.T * p.kvHeads) { return; }
  let t = e / p.kvHeads; let g = e % p.kvHeads;
  let j = t % p.S; let row0 = t - j;
  let group = p.heads / p.kvHeads;
  let ko = t * p.kvHeads * ${hd}u + g * ${hd}u;
  var k: array<f32, ${hd}>;
  var v: array<f32, ${hd}>;
  var dk: array<f32, ${hd}>;
  var dv: array<f32, ${hd}>;
  for (var c = 0u; c < ${hd}u; c++) { k[c] = K[ko + c]; v[c] = V[ko + c]; dk[c] = 0.0; dv[c] = 0.0; }
  for (var h = g * group; h < (g + 1u) * group; h++) {
    for (var i = j; i < p.S; i++) {
      let tq = row0 + i;
      let qo = tq * p.heads * ${hd}u + h * ${hd}u;
      let eq = tq * p.heads + h;
      var s = 0.0; var dp = 0.0;
      for (var c = 0u; c < ${hd}u; c++) { s = fma(Q[qo + c] * p.scale, k[c], s); dp = fma(DO[qo + c], v[c], dp); }
      let pr = exp(s - LSE[eq]);
      let ds = pr * (dp - DD[eq]);
      for (var c = 0u; c < ${hd}u; c++) {
        dv[c] = fma(pr, DO[qo + c], dv[c]);
        dk[c] = fma(ds, Q[qo + c] * p.scale, dk[c]);
      }
    }
  }
  for (var c = 0u; c < ${hd}u; c++) { DK[ko + c] = dk[c]; DV[ko + c] = dv[c]; }
}`;
}
