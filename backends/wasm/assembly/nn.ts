import { exp2x64, exp4 } from "./common";
import { gemmRowsPacked, gemmScratchSize, gemmSingle as mm, gemmTileRows, kernel4x8, packedASize } from "./gemm";

// Transformer building blocks in float32 with float64 reductions where rows are long: causal attention (forward and
// backward, tasks per (batch, head) or (batch, kv head) claimed from a shared counter), SwiGLU and softmax
// cross-entropy. Each output element is computed by one task in a fixed order, so threads do not change results.

/** Copies head columns `[col0, col0 + hd)` of rows `[row0, row0 + S)` of a `[T, cols]` matrix into `[S, hd]`. */
function gather(src: usize, cols: i32, row0: i32, col0: i32, S: i32, hd: i32, dst: usize): void {
  for (let j = 0; j < S; j++) {
    memory.copy(dst + (<usize>(j * hd) << 2), src + (<usize>((row0 + j) * cols + col0) << 2), <usize>hd << 2);
  }
}

/** Query rows per block of the attention kernels (a multiple of the gemm tile's 4 rows). */
const RB: i32 = 96;
/** Rows of the micro-kernel's A strips ({@link kernel4x8}): keys of K, head dimensions of Vᵀ. */
const AR: i32 = 4;

/** Floats of per-thread scratch of {@link attentionBackward}. */
export function attentionScratchSize(S: i32, hd: i32): i32 {
  const packed = packedASize(max(S, RB), max(RB, hd));
  return 6 * S * hd + 2 * RB * S + 2 * RB * hd + packed + gemmScratchSize() + 64;
}

/**
 * Floats of per-thread scratch of {@link attentionForward}, in order: K as 4-key strips, Vᵀ as 4-dimension strips, Q as 8-query panels
 * (keys and queries padded to whole panels), one panel of scores, one output tile, 8 reciprocal sums.
 */
export function attentionForwardScratchSize(S: i32, hd: i32): i32 {
  const panels = (S + 7) / 8, keyStrips = (panels * 8 + AR - 1) / AR, dimStrips = (hd + AR - 1) / AR;
  return keyStrips * AR * hd + dimStrips * AR * panels * 8 + panels * 8 * hd + keyStrips * AR * 8 + dimStrips * AR * 8 + 8;
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
 * `[T, kvHeads·hd]`, `T = batch·S`. Worked on transposed, 8 queries at a time, on the gemm's micro-kernel directly:
 *
 * - scores `Sᵀ = K·(Q·scale)ᵀ` come out of 4×8 tiles as a panel `[key][8 queries]`, the only keys computed being
 *   those the panel's last query sees;
 * - the causal softmax runs down the panel's columns, 8 queries in two vectors (no transposition), sums in float64;
 * - `Oᵀ = Vᵀ·Pᵀ` takes that panel as the micro-kernel's B operand as it is, and each output row is divided by its sum.
 *
 * K and Vᵀ are packed once per `(b, kv head)` and shared by the heads of its group; Q once per head.
 */
export function attentionForward(
  q: usize, k: usize, v: usize, out: usize, batch: i32, S: i32, heads: i32, kvHeads: i32, hd: i32, scale: f32,
  counter: usize, scratch: usize,
): void {
  const qCols = heads * hd, kvCols = kvHeads * hd, group = heads / kvHeads;
  // The layout of attentionForwardScratchSize.
  const panels = (S + 7) / 8, keyStrips = (panels * 8 + AR - 1) / AR, dimStrips = (hd + AR - 1) / AR;
  const keysPadded = panels * 8; // the depth of a packed Vᵀ strip
  const Kp = scratch, Vp = Kp + (<usize>(keyStrips * AR * hd) << 2), Qp = Vp + (<usize>(dimStrips * AR * keysPadded) << 2);
  const P = Qp + (<usize>(keysPadded * hd) << 2), O = P + (<usize>(keyStrips * AR * 8) << 2), inv = O + (<usize>(dimStrips * AR * 8) << 2);
  let loadedB = -1, loadedG = -1;
  while (true) {
    const t = atomic.add<i32>(counter, 1);
    if (t >= batch * heads) break;
    const b = t / heads, h = t % heads, g = h / group;
    const row0 = b * S;
    if (b != loadedB || g != loadedG) {
      packInterleaved(k, kvCols, row0, g * hd, S, hd, AR, keyStrips, 1, Kp);
      packValueStrips(v, kvCols, row0, g * hd, S, hd, dimStrips, keysPadded, Vp);
      loadedB = b;
      loadedG = g;
    }
    packInterleaved(q, qCols, row0, h * hd, S, hd, 8, panels, scale, Qp);
    for (let j = 0; j < panels; j++) {
      const q0 = j * 8, kEnd = min(q0 + 8, S); // keys [0, kEnd) are seen by some query of the panel
      const qp = Qp + (<usize>(j * 8 * hd) << 2);
      for (let s = 0; s * AR < kEnd; s++) {
        kernel4x8(hd, Kp + (<usize>(s * AR * hd) << 2), qp, P + (<usize>(s * AR * 8) << 2), 8, 0);
      }
      panelSoftmax(P, q0, kEnd, inv);
      for (let r = 0; r < dimStrips; r++) {
        kernel4x8(kEnd, Vp + (<usize>(r * AR * keysPadded) << 2), P, O + (<usize>(r * AR * 8) << 2), 8, 0);
      }
      const nq = min(8, S - q0);
      for (let jj = 0; jj < nq; jj++) {
        const w = load<f32>(inv + (<usize>jj << 2));
        const dst = out + (<usize>((row0 + q0 + jj) * qCols + h * hd) << 2);
        for (let d = 0; d < hd; d++) store<f32>(dst + (<usize>d << 2), load<f32>(O + (<usize>(d * 8 + jj) << 2)) * w);
      }
    }
  }
}

/**
 * Vᵀ of V's head columns `[col0, col0 + hd)`, rows `[row0, row0 + S)`: head dimensions as AR-row strips, the keys as
 * their depth (`[strip][key][AR]`, `depth` keys); dimensions past hd and keys past S zero.
 */
function packValueStrips(
  v: usize, cols: i32, row0: i32, col0: i32, S: i32, hd: i32, strips: i32, depth: i32, dst: usize,
): void {
  for (let r = 0; r < strips; r++) {
    const dims = min(AR, hd - r * AR);
    for (let key = 0; key < depth; key++) {
      const d = dst + (<usize>((r * depth + key) * AR) << 2);
      const n = key < S ? dims : 0;
      const src = v + (<usize>((row0 + key) * cols + col0 + r * AR) << 2);
      for (let i = 0; i < n; i++) store<f32>(d + (<usize>i << 2), load<f32>(src + (<usize>i << 2)));
      for (let i = n; i < AR; i++) store<f32>(d + (<usize>i << 2), 0);
    }
  }
}

/**
 * Head columns `[col0, col0 + hd)` of rows `[row0, row0 + S)` times `scale`, interleaved `width` rows at a time:
 * `[group][d][width]` for `groups` groups, rows past S zero. K as the micro-kernel's A operand (AR-key strips, scale 1),
 * `Q·scale` as its B operand (8-query panels).
 */
function packInterleaved(
  src: usize, cols: i32, row0: i32, col0: i32, S: i32, hd: i32, width: i32, groups: i32, scale: f32, dst: usize,
): void {
  const step = <usize>width << 2;
  for (let row = 0; row < groups * width; row++) {
    const d = dst + (<usize>((row / width) * width * hd + row % width) << 2);
    if (row >= S) {
      for (let p = 0; p < hd; p++) store<f32>(d + <usize>p * step, 0);
      continue;
    }
    const s = src + (<usize>((row0 + row) * cols + col0) << 2);
    for (let p = 0; p < hd; p++) store<f32>(d + <usize>p * step, load<f32>(s + (<usize>p << 2)) * scale);
  }
}

/**
 * Causal softmax down the 8 columns of a panel of scores `P` (`[key][8]`, keys `[0, kEnd)`; column `jj` is query
 * `q0 + jj`, which sees keys `≤ q0 + jj`): exponentials ({@link exp4}) of the visible scores minus their column's
 * maximum, the hidden ones 0, and `inv[jj] = 1 / Σ` (sums in float64). Two vectors hold the 8 columns.
 */
function panelSoftmax(P: usize, q0: i32, kEnd: i32, inv: usize): void {
  const lanesLo = i32x4(0, 1, 2, 3), lanesHi = i32x4(4, 5, 6, 7), hidden = f32x4.splat(-Infinity);
  let mlo = hidden, mhi = hidden;
  for (let p = 0; p < kEnd; p++) {
    const row = P + (<usize>(p * 8) << 2);
    let a = v128.load(row), c = v128.load(row, 16);
    if (p > q0) {
      // Key p is seen by queries q0 + jj with jj ≥ p − q0.
      const t = i32x4.splat(p - q0);
      a = v128.bitselect(a, hidden, i32x4.ge_s(lanesLo, t));
      c = v128.bitselect(c, hidden, i32x4.ge_s(lanesHi, t));
      v128.store(row, a);
      v128.store(row, c, 16);
    }
    mlo = f32x4.max(mlo, a);
    mhi = f32x4.max(mhi, c);
  }
  let s0 = f64x2.splat(0), s1 = f64x2.splat(0), s2 = f64x2.splat(0), s3 = f64x2.splat(0);
  for (let p = 0; p < kEnd; p++) {
    const row = P + (<usize>(p * 8) << 2);
    const a = exp4(f32x4.sub(v128.load(row), mlo)), c = exp4(f32x4.sub(v128.load(row, 16), mhi));
    v128.store(row, a);
    v128.store(row, c, 16);
    s0 = f64x2.add(s0, f64x2.promote_low_f32x4(a));
    s1 = f64x2.add(s1, f64x2.promote_low_f32x4(i32x4.shuffle(a, a, 2, 3, 0, 1)));
    s2 = f64x2.add(s2, f64x2.promote_low_f32x4(c));
    s3 = f64x2.add(s3, f64x2.promote_low_f32x4(i32x4.shuffle(c, c, 2, 3, 0, 1)));
  }
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s0, 0)));
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s0, 1)), 4);
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s1, 0)), 8);
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s1, 1)), 12);
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s2, 0)), 16);
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s2, 1)), 20);
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s3, 0)), 24);
  store<f32>(inv, <f32>(1 / f64x2.extract_lane(s3, 1)), 28);
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
  const gs = packed + (<usize>packedASize(max(S, RB), max(RB, hd)) << 2);
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
 * `dlogits` is nonzero `scales[t]·(softmax − onehot)` (`scales` float64). Targets are checked by the caller; −1 rows
 * are skipped. Two logits at a time through {@link exp2x64} (within about 1 ulp of float64 `exp`); the row maximum is
 * taken in float32, where it is exact.
 */
export function crossEntropyRows(
  z: usize, vocab: i32, targets: usize, losses: usize, dlogits: usize, scales: usize, r0: i32, r1: i32,
): void {
  const pairs = vocab & ~1;
  for (let t = r0; t < r1; t++) {
    const target = load<i32>(targets + (<usize>t << 2));
    if (target == -1) continue;
    const o = z + (<usize>(t * vocab) << 2);
    let m4 = f32x4.splat(-Infinity);
    let j = 0;
    // pmax(m, x) = m < x ? x : m, the reference's comparison.
    for (; j + 4 <= vocab; j += 4) m4 = f32x4.pmax(m4, v128.load(o + (<usize>j << 2)));
    let mx = f32x4.extract_lane(m4, 0);
    mx = mx < f32x4.extract_lane(m4, 1) ? f32x4.extract_lane(m4, 1) : mx;
    mx = mx < f32x4.extract_lane(m4, 2) ? f32x4.extract_lane(m4, 2) : mx;
    mx = mx < f32x4.extract_lane(m4, 3) ? f32x4.extract_lane(m4, 3) : mx;
    for (; j < vocab; j++) {
      const x = load<f32>(o + (<usize>j << 2));
      if (mx < x) mx = x;
    }
    const m = <f64>mx, mv = f64x2.splat(m);
    let s2 = f64x2.splat(0);
    for (j = 0; j < pairs; j += 2) s2 = f64x2.add(s2, exp2x64(f64x2.sub(pairAt(o, j), mv)));
    let sum = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
    if (pairs < vocab) sum += f64x2.extract_lane(exp2x64(f64x2.splat(<f64>load<f32>(o + (<usize>pairs << 2)) - m)), 0);
    const lse = m + Math.log(sum);
    store<f32>(losses + (<usize>t << 2), <f32>(lse - <f64>load<f32>(o + (<usize>target << 2))));
    if (dlogits) {
      const scale = load<f64>(scales + (<usize>t << 3)), sv = f64x2.splat(scale), lv = f64x2.splat(lse);
      const d = dlogits + (<usize>(t * vocab) << 2);
      for (j = 0; j < pairs; j += 2) {
        const g = f64x2.mul(sv, exp2x64(f64x2.sub(pairAt(o, j), lv)));
        v128.store64_lane(d + (<usize>j << 2), f32x4.demote_f64x2_zero(g), 0);
      }
      if (pairs < vocab) {
        const x = <f64>load<f32>(o + (<usize>pairs << 2)) - lse;
        store<f32>(d + (<usize>pairs << 2), <f32>(scale * f64x2.extract_lane(exp2x64(f64x2.splat(x)), 0)));
      }
      const dt = d + (<usize>target << 2);
      store<f32>(dt, <f32>(<f64>load<f32>(dt) - scale));
    }
  }
}

/** Rows of logits {@link linearCrossEntropyRows} holds at a time (a multiple of the gemm tile's rows). */
const CLASSIFIER_ROWS: i32 = 32;

/** Rows per block of {@link linearCrossEntropyRows}: threads split the rows in multiples of it. */
export function classifierRows(): i32 {
  return CLASSIFIER_ROWS;
}

/** Floats of per-thread scratch {@link linearCrossEntropyRows} needs for a vocabulary of `n`. */
export function classifierScratchSize(n: i32): i32 {
  return CLASSIFIER_ROWS * n + gemmTileRows() * 8;
}

/**
 * The losses of rows `[r0, r1)` of {@link crossEntropyRows}`(x · Wᵀ)` without the whole `[m, n]` logits: the logits
 * of {@link classifierRows} rows at a time go to `scratch` ({@link classifierScratchSize}) and are scored there.
 * `pa` is x (`[m, k]`) packed by `packA`, `pb` Wᵀ packed whole by `packBColumns`; the logits are those of `gemm` and the
 * losses those of `crossEntropyRows`, to the bit. `r0` is a multiple of {@link classifierRows}.
 */
export function linearCrossEntropyRows(
  pa: usize, m: i32, k: i32, pb: usize, n: i32, targets: usize, losses: usize, scratch: usize, r0: i32, r1: i32,
): void {
  const tile = scratch + (<usize>(CLASSIFIER_ROWS * n) << 2);
  for (let i0 = r0; i0 < r1; i0 += CLASSIFIER_ROWS) {
    const rows = min(CLASSIFIER_ROWS, r1 - i0);
    gemmRowsPacked(m, n, k, pa, pb, i0, rows, scratch, tile);
    const skip = <usize>i0 << 2;
    crossEntropyRows(scratch, n, targets + skip, losses + skip, 0, 0, 0, rows);
  }
}

/** Logits `j` and `j + 1` of a row, widened to float64. */
// @ts-ignore: decorator
@inline function pairAt(row: usize, j: i32): v128 {
  return f64x2.promote_low_f32x4(v128.load64_zero(row + (<usize>j << 2)));
}
