import { exp4 } from "./common";
import { gemmScratchSize, gemmSingle as mm } from "./gemm";

// Transformer building blocks in float32 with float64 reductions where rows are long: causal attention (forward and
// backward, tasks per (batch, head) or (batch, kv head) claimed from a shared counter), SwiGLU and softmax
// cross-entropy. Each output element is computed by one task in a fixed order, so threads do not change results.

/** Copies head columns `[col0, col0 + hd)` of rows `[row0, row0 + S)` of a `[T, cols]` matrix into `[S, hd]`. */
function gather(src: usize, cols: i32, row0: i32, col0: i32, S: i32, hd: i32, dst: usize): void {
  for (let j = 0; j < S; j++) {
    memory.copy(dst + (<usize>(j * hd) << 2), src + (<usize>((row0 + j) * cols + col0) << 2), <usize>hd << 2);
  }
}

/** Query rows per block of the attention kernels (a multiple of the gemm tile's 6 rows). */
const RB: i32 = 96;

/** Floats of per-thread scratch of the attention kernels. */
export function attentionScratchSize(S: i32, hd: i32): i32 {
  const packed = ((max(S, RB) + 5) / 6) * 6 * max(RB, hd);
  return 6 * S * hd + 2 * RB * S + 2 * RB * hd + packed + gemmScratchSize() + 64;
}

/**
 * Softmax of the causal rows `i0 + r` (`r < rb`) of `P` (`[rb, S]`, scores on entry): keys `0..i0 + r`, exponentials
 * ({@link exp4}, four keys at a time) summed in float64, masked keys set to 0 up to `i1`.
 */
function causalSoftmax(P: usize, S: i32, i0: i32, rb: i32, i1: i32): void {
  for (let r = 0; r < rb; r++) {
    const row = P + (<usize>(r * S) << 2), last = i0 + r;
    let mx = -Infinity as f32;
    for (let j = 0; j <= last; j++) mx = max(mx, load<f32>(row + (<usize>j << 2)));
    const mv = f32x4.splat(mx);
    let sum2 = f64x2.splat(0);
    let j = 0;
    for (; j + 4 <= last + 1; j += 4) {
      const e = exp4(f32x4.sub(v128.load(row + (<usize>j << 2)), mv));
      v128.store(row + (<usize>j << 2), e);
      sum2 = f64x2.add(sum2, f64x2.add(f64x2.promote_low_f32x4(e), f64x2.promote_low_f32x4(i32x4.shuffle(e, e, 2, 3, 0, 1))));
    }
    let sum = f64x2.extract_lane(sum2, 0) + f64x2.extract_lane(sum2, 1);
    for (; j <= last; j++) {
      const e = f32x4.extract_lane(exp4(f32x4.splat(load<f32>(row + (<usize>j << 2)) - mx)), 0);
      store<f32>(row + (<usize>j << 2), e);
      sum += e;
    }
    const inv = <f32>(1 / sum);
    for (let j = 0; j <= last; j++) store<f32>(row + (<usize>j << 2), load<f32>(row + (<usize>j << 2)) * inv);
    for (let j = last + 1; j < i1; j++) store<f32>(row + (<usize>j << 2), 0);
  }
}

/**
 * Causal attention forward: tasks `(b, h)` claimed from `counter`. `q`, `out` are `[T, heads·hd]`, `k`, `v`
 * `[T, kvHeads·hd]`, `T = batch·S`. Per block of RB queries: scores `Q·Kᵀ` by gemm, causal softmax, `P·V` by gemm.
 */
export function attentionForward(
  q: usize, k: usize, v: usize, out: usize, batch: i32, S: i32, heads: i32, kvHeads: i32, hd: i32, scale: f32,
  counter: usize, scratch: usize,
): void {
  const qCols = heads * hd, kvCols = kvHeads * hd, group = heads / kvHeads;
  const Q = scratch, K = Q + (<usize>(S * hd) << 2), V = K + (<usize>(S * hd) << 2);
  const P = V + (<usize>(S * hd) << 2), O = P + (<usize>(2 * RB * S) << 2);
  const packed = O + (<usize>(2 * RB * hd) << 2);
  const gs = packed + (<usize>(((max(S, RB) + 5) / 6) * 6 * max(RB, hd)) << 2);
  let loadedB = -1, loadedG = -1;
  while (true) {
    const t = atomic.add<i32>(counter, 1);
    if (t >= batch * heads) break;
    const b = t / heads, h = t % heads, g = h / group;
    const row0 = b * S;
    if (b != loadedB || g != loadedG) {
      gather(k, kvCols, row0, g * hd, S, hd, K);
      gather(v, kvCols, row0, g * hd, S, hd, V);
      loadedB = b;
      loadedG = g;
    }
    gather(q, qCols, row0, h * hd, S, hd, Q);
    scaleInPlace(Q, S * hd, scale);
    for (let i0 = 0; i0 < S; i0 += RB) {
      const rb = min(RB, S - i0), i1 = i0 + rb;
      mm(Q + (<usize>(i0 * hd) << 2), hd, 0, K, hd, 1, P, S, rb, i1, hd, 0, packed, gs);
      causalSoftmax(P, S, i0, rb, i1);
      mm(P, S, 0, V, hd, 0, O, hd, rb, hd, i1, 0, packed, gs);
      for (let r = 0; r < rb; r++) {
        memory.copy(out + (<usize>((row0 + i0 + r) * qCols + h * hd) << 2), O + (<usize>(r * hd) << 2), <usize>hd << 2);
      }
    }
  }
}

function scaleInPlace(x: usize, n: i32, s: f32): void {
  for (let i = 0; i < n; i++) store<f32>(x + (<usize>i << 2), load<f32>(x + (<usize>i << 2)) * s);
}

/**
 * Causal attention backward (probabilities recomputed): tasks `(b, kv head g)` claimed from `counter`, each owning
 * `dk`, `dv` of its head and `dq` of the heads sharing it. Per head and block of RB queries, with `P` recomputed:
 * `dV += Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ∘ (dP − rowsum(P ∘ dP))`, `dQ = dS·K·scale`, `dK += dSᵀ·(Q·scale)`.
 */
export function attentionBackward(
  q: usize, k: usize, v: usize, dout: usize, dq: usize, dk: usize, dv: usize,
  batch: i32, S: i32, heads: i32, kvHeads: i32, hd: i32, scale: f32, counter: usize, scratch: usize,
): void {
  const qCols = heads * hd, kvCols = kvHeads * hd, group = heads / kvHeads;
  const Q = scratch, K = Q + (<usize>(S * hd) << 2), V = K + (<usize>(S * hd) << 2);
  const dK = V + (<usize>(S * hd) << 2), dV = dK + (<usize>(S * hd) << 2), G = dV + (<usize>(S * hd) << 2);
  const P = G + (<usize>(S * hd) << 2), dP = P + (<usize>(RB * S) << 2);
  const O = dP + (<usize>(RB * S) << 2);
  const packed = O + (<usize>(2 * RB * hd) << 2);
  const gs = packed + (<usize>(((max(S, RB) + 5) / 6) * 6 * max(RB, hd)) << 2);
  while (true) {
    const t = atomic.add<i32>(counter, 1);
    if (t >= batch * kvHeads) break;
    const b = t / kvHeads, g = t % kvHeads;
    const row0 = b * S;
    gather(k, kvCols, row0, g * hd, S, hd, K);
    gather(v, kvCols, row0, g * hd, S, hd, V);
    memory.fill(dK, 0, <usize>(2 * S * hd) << 2);
    for (let h = g * group; h < (g + 1) * group; h++) {
      gather(q, qCols, row0, h * hd, S, hd, Q);
      scaleInPlace(Q, S * hd, scale);
      gather(dout, qCols, row0, h * hd, S, hd, G);
      for (let i0 = 0; i0 < S; i0 += RB) {
        const rb = min(RB, S - i0), i1 = i0 + rb;
        const Qb = Q + (<usize>(i0 * hd) << 2), Gb = G + (<usize>(i0 * hd) << 2);
        mm(Qb, hd, 0, K, hd, 1, P, S, rb, i1, hd, 0, packed, gs);
        causalSoftmax(P, S, i0, rb, i1);
        mm(P, S, 1, Gb, hd, 0, dV, hd, i1, hd, rb, 1, packed, gs); // dV[0:i1] += Pᵀ·dO
        mm(Gb, hd, 0, V, hd, 1, dP, S, rb, i1, hd, 0, packed, gs); // dP = dO·Vᵀ
        for (let r = 0; r < rb; r++) {
          const pr = P + (<usize>(r * S) << 2), dr = dP + (<usize>(r * S) << 2), last = i0 + r;
          let pdp: f64 = 0;
          for (let j = 0; j <= last; j++) pdp += <f64>load<f32>(pr + (<usize>j << 2)) * <f64>load<f32>(dr + (<usize>j << 2));
          const c = <f32>pdp;
          for (let j = 0; j < i1; j++) {
            const o = <usize>j << 2;
            store<f32>(dr + o, j <= last ? load<f32>(pr + o) * (load<f32>(dr + o) - c) : 0);
          }
        }
        mm(dP, S, 0, K, hd, 0, O, hd, rb, hd, i1, 0, packed, gs); // dQ = dS·K (·scale below)
        for (let r = 0; r < rb; r++) {
          const dst = dq + (<usize>((row0 + i0 + r) * qCols + h * hd) << 2), src = O + (<usize>(r * hd) << 2);
          for (let c = 0; c < hd; c++) store<f32>(dst + (<usize>c << 2), load<f32>(src + (<usize>c << 2)) * scale);
        }
        mm(dP, S, 1, Qb, hd, 0, dK, hd, i1, hd, rb, 1, packed, gs); // dK[0:i1] += dSᵀ·(Q·scale)
      }
    }
    for (let j = 0; j < S; j++) {
      const o = <usize>((row0 + j) * kvCols + g * hd) << 2;
      memory.copy(dk + o, dK + (<usize>(j * hd) << 2), <usize>hd << 2);
      memory.copy(dv + o, dV + (<usize>(j * hd) << 2), <usize>hd << 2);
    }
  }
}

/**
 * The logistic function per lane, float32: `1 / (1 + e^−g)` for `g ≥ 0`, `e^g / (1 + e^g)` below (the exponential is
 * always of `−|g|`, so it cannot overflow).
 */
// @ts-ignore: decorator
@inline function sigmoid4(g: v128): v128 {
  const e = exp4(f32x4.neg(f32x4.abs(g)));
  const d = f32x4.div(f32x4.splat(1), f32x4.add(f32x4.splat(1), e));
  return v128.bitselect(d, f32x4.mul(e, d), f32x4.ge(g, f32x4.splat(0)));
}

/** `y = silu(gate) · up` over `[i0, i1)`, four at a time (the last few one lane of a vector each). */
export function swigluRange(gate: usize, up: usize, y: usize, i0: i32, i1: i32): void {
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, swiglu4(v128.load(gate + o), v128.load(up + o)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, f32x4.extract_lane(swiglu4(f32x4.splat(load<f32>(gate + o)), f32x4.splat(load<f32>(up + o))), 0));
  }
}

// @ts-ignore: decorator
@inline function swiglu4(g: v128, u: v128): v128 {
  return f32x4.mul(f32x4.mul(g, sigmoid4(g)), u);
}

/** Gradients of {@link swigluRange} over `[i0, i1)`: `dup = dy·g·s`, `dgate = dy·up·s·(1 + g·(1 − s))`. */
export function swigluBackwardRange(gate: usize, up: usize, dy: usize, dgate: usize, dup: usize, i0: i32, i1: i32): void {
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    swigluBackward4(v128.load(gate + o), v128.load(up + o), v128.load(dy + o), dgate + o, dup + o, 4);
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = f32x4.splat(load<f32>(gate + o)), u = f32x4.splat(load<f32>(up + o)), d = f32x4.splat(load<f32>(dy + o));
    swigluBackward4(g, u, d, dgate + o, dup + o, 1);
  }
}

// @ts-ignore: decorator
@inline function swigluBackward4(g: v128, u: v128, d: v128, dgate: usize, dup: usize, lanes: i32): void {
  const s = sigmoid4(g);
  const vu = f32x4.mul(f32x4.mul(d, g), s);
  const vg = f32x4.mul(f32x4.mul(f32x4.mul(d, u), s), f32x4.add(f32x4.splat(1), f32x4.mul(g, f32x4.sub(f32x4.splat(1), s))));
  if (lanes == 4) {
    v128.store(dup, vu);
    v128.store(dgate, vg);
  } else {
    store<f32>(dup, f32x4.extract_lane(vu, 0));
    store<f32>(dgate, f32x4.extract_lane(vg, 0));
  }
}

/**
 * Softmax cross-entropy of rows `[r0, r1)` (`[n, vocab]` logits), float64 as the reference: `losses[t]`, and when
 * `dlogits` is nonzero `scales[t]·(softmax − onehot)` (`scales` float64). Targets are checked by the caller; −1 rows are skipped.
 */
export function crossEntropyRows(
  z: usize, vocab: i32, targets: usize, losses: usize, dlogits: usize, scales: usize, r0: i32, r1: i32,
): void {
  for (let t = r0; t < r1; t++) {
    const target = load<i32>(targets + (<usize>t << 2));
    if (target == -1) continue;
    const o = z + (<usize>(t * vocab) << 2);
    let max = -Infinity;
    for (let j = 0; j < vocab; j++) max = Math.max(max, <f64>load<f32>(o + (<usize>j << 2)));
    let sum: f64 = 0;
    for (let j = 0; j < vocab; j++) sum += Math.exp(<f64>load<f32>(o + (<usize>j << 2)) - max);
    const lse = max + Math.log(sum);
    store<f32>(losses + (<usize>t << 2), <f32>(lse - <f64>load<f32>(o + (<usize>target << 2))));
    if (dlogits) {
      const scale = load<f64>(scales + (<usize>t << 3));
      const d = dlogits + (<usize>(t * vocab) << 2);
      for (let j = 0; j < vocab; j++) {
        store<f32>(d + (<usize>j << 2), <f32>(scale * Math.exp(<f64>load<f32>(o + (<usize>j << 2)) - lse)));
      }
      const dt = d + (<usize>target << 2);
      store<f32>(dt, <f32>(<f64>load<f32>(dt) - scale));
    }
  }
}
