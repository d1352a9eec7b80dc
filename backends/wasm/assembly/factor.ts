// Float64 factorisations and solves: blocked right-looking Cholesky (diagonal block and panel here, trailing update
// by `dgemm`) and blocked triangular solves over column ranges of the right-hand side (threads take disjoint ranges).

import { madd64, reverseValues } from "./common";
import { dgemm, dpackA, KC, MR } from "./dgemm";

/** Columns of X per chunk of the blocked solve. */
const CW: i32 = 128;

/**
 * Factors the diagonal block `[k0, k1)` of the row-major `n × n` f64 matrix `a` in place (its trailing updates are
 * done): Cholesky-Banachiewicz on the lower triangle, `inv[i] = 1 / L[i][i]`. Returns −1, or the first row whose pivot
 * is not positive, with the pivot's value at `bad`.
 */
export function cholDiag(a: usize, n: i32, k0: i32, k1: i32, inv: usize, bad: usize): i32 {
  for (let i = k0; i < k1; i++) {
    const ri = a + (<usize>(i * n) << 3);
    for (let j = k0; j <= i; j++) {
      const rj = a + (<usize>(j * n) << 3);
      let s = load<f64>(ri + (<usize>j << 3)) - dot(ri, rj, k0, j);
      if (j < i) {
        store<f64>(ri + (<usize>j << 3), s * load<f64>(inv + (<usize>j << 3)));
      } else {
        if (!(s > 0)) {
          store<f64>(bad, s);
          return i;
        }
        const d = Math.sqrt(s);
        store<f64>(ri + (<usize>i << 3), d);
        store<f64>(inv + (<usize>i << 3), 1 / d);
      }
    }
  }
  return -1;
}

/**
 * `Σ_{p ∈ [p0, p1)} x[p]·y[p]` over two f64 rows: four independent two-lane sums (one sum would wait on the latency of
 * each addition), then the tail.
 */
// @ts-ignore: decorator
@inline function dot(x: usize, y: usize, p0: i32, p1: i32): f64 {
  let a0 = f64x2.splat(0), a1 = f64x2.splat(0), a2 = f64x2.splat(0), a3 = f64x2.splat(0);
  let p = p0;
  for (; p + 8 <= p1; p += 8) {
    const px = x + (<usize>p << 3), py = y + (<usize>p << 3);
    a0 = f64x2.add(a0, f64x2.mul(v128.load(px), v128.load(py)));
    a1 = f64x2.add(a1, f64x2.mul(v128.load(px, 16), v128.load(py, 16)));
    a2 = f64x2.add(a2, f64x2.mul(v128.load(px, 32), v128.load(py, 32)));
    a3 = f64x2.add(a3, f64x2.mul(v128.load(px, 48), v128.load(py, 48)));
  }
  for (; p + 2 <= p1; p += 2) {
    a0 = f64x2.add(a0, f64x2.mul(v128.load(x + (<usize>p << 3)), v128.load(y + (<usize>p << 3))));
  }
  const acc = f64x2.add(f64x2.add(a0, a1), f64x2.add(a2, a3));
  let s = f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
  if (p < p1) s += load<f64>(x + (<usize>p << 3)) * load<f64>(y + (<usize>p << 3));
  return s;
}

/**
 * The panel below the diagonal block `[k0, k1)`: `L[i][j] = (A[i][j] − L[i,k0:j]·L[j,k0:j]) / L[j][j]`, rows claimed
 * 16 at a time from `counter` (an i32 the caller zeroes).
 */
export function cholPanel(a: usize, n: i32, k0: i32, k1: i32, inv: usize, counter: usize): void {
  while (true) {
    const r0 = k1 + 16 * atomic.add<i32>(counter, 1);
    if (r0 >= n) break;
    cholPanelRows(a, n, k0, k1, inv, r0, min(n, r0 + 16));
  }
}

function cholPanelRows(a: usize, n: i32, k0: i32, k1: i32, inv: usize, r0: i32, r1: i32): void {
  for (let i = r0; i < r1; i++) {
    const ri = a + (<usize>(i * n) << 3);
    for (let j = k0; j < k1; j++) {
      const rj = a + (<usize>(j * n) << 3);
      const s = load<f64>(ri + (<usize>j << 3)) - dot(ri, rj, k0, j);
      store<f64>(ri + (<usize>j << 3), s * load<f64>(inv + (<usize>j << 3)));
    }
  }
}

/**
 * Solves `T·X = B` in place in `x` (`[n, k]` f64, B on entry), `T` lower (`lower` nonzero, forward) or upper
 * (backward), `inv` the reciprocal diagonal (ones for a unit diagonal). Columns are independent: threads claim chunks
 * of CW columns from `counter` (an i32 the caller zeroes) and solve each whole, in blocks of `nb` rows: the solved
 * rows' contribution by `dgemm`, then row by row inside the block. `hi[i]`: columns at or past it are zero in every row
 * of X that row `i` depends on (skipped); `lo[c]`: the rows of column c of X that can be non-zero start there (lower)
 * or end before it (upper). Identity right-hand sides (inverses) thus cost a third of a dense solve. `pre`: 0, or (lower
 * only) the table of {@link lowerPrepack}.
 */
export function trsmShared(
  t: usize, n: i32, x: usize, k: i32, counter: usize, inv: usize, hi: usize, lo: usize, lower: i32, nb: i32,
  packed: usize, scratch: usize, pre: usize,
): void {
  const chunks = (k + CW - 1) / CW;
  while (true) {
    const ch = atomic.add<i32>(counter, 1);
    if (ch >= chunks) break;
    const c0 = ch * CW, c1 = min(k, c0 + CW);
    // Rows of X this chunk can have non-zero: [ks, n) when lower, [0, ke) when upper.
    let bound = lower ? n : 0;
    for (let c = c0; c < c1; c++) {
      const v = load<i32>(lo + (<usize>c << 2));
      bound = lower ? min(bound, v) : max(bound, v);
    }
    const blocks = (n + nb - 1) / nb;
    for (let bi = 0; bi < blocks; bi++) {
      const b = lower ? bi : blocks - 1 - bi;
      const i0 = b * nb, i1 = min(n, i0 + nb);
      if (lower ? i1 <= bound : i0 >= bound) continue; // X rows here are zero and stay zero
      const ce = min(c1, load<i32>(hi + (<usize>(lower ? i1 - 1 : i0) << 2)));
      if (ce <= c0) continue;
      const w = ce - c0;
      const ks = lower ? max(0, bound) : i1, ke = lower ? i0 : min(n, bound);
      if (ke > ks && pre) {
        // Lower: T[i0:i1, 0:i0] was packed once (`lowerPrepack`); start at the KC block holding `ks`.
        const ka = (ks / KC) * KC, mPad = ((i1 - i0 + MR - 1) / MR) * MR;
        const pa = load<usize>(pre + (<usize>b << 2)) + (<usize>(ka * mPad) << 3);
        dgemm(
          i1 - i0, w, ke - ka, pa, x + (<usize>(ka * k + c0) << 3), k, 0, x + (<usize>(i0 * k + c0) << 3), k,
          0, i1 - i0, 0, w, scratch, 0, -1,
        );
      } else if (ke > ks) {
        dpackA(t + (<usize>(i0 * n + ks) << 3), n, 0, i1 - i0, ke - ks, packed);
        dgemm(
          i1 - i0, w, ke - ks, packed, x + (<usize>(ks * k + c0) << 3), k, 0, x + (<usize>(i0 * k + c0) << 3), k,
          0, i1 - i0, 0, w, scratch, 0, -1,
        );
      }
      trsmDiagonalBlock(t, n, x, k, inv, lower, i0, i1, c0, ce);
    }
  }
}

/**
 * The substitution inside one diagonal block of {@link trsmShared}: rows `[i0, i1)` of X, columns `[c0, ce)`, after the
 * solved rows' contribution is subtracted. A function of its own so that the engine's optimising tier takes it over
 * after a few blocks (a long-running caller stays in the baseline tier for the whole call).
 */
export function trsmDiagonalBlock(
  t: usize, n: i32, x: usize, k: i32, inv: usize, lower: i32, i0: i32, i1: i32, c0: i32, ce: i32,
): void {
  for (let ii = 0; ii < i1 - i0; ii++) {
    const i = lower ? i0 + ii : i1 - 1 - ii;
    const xi = x + (<usize>(i * k) << 3);
    const j0 = lower ? i0 : i + 1, j1 = lower ? i : i1;
    const ti = t + (<usize>(i * n) << 3);
    const d = load<f64>(inv + (<usize>i << 3));
    const dv = f64x2.splat(d);
    // X[i, p:p+8] = (X[i, p:p+8] − Σ_j T[i][j]·X[j, p:p+8]) · inv[i]: the sums in registers, one store per chunk.
    let p = c0;
    for (; p + 8 <= ce; p += 8) {
      const o = <usize>p << 3;
      let s0 = f64x2.splat(0), s1 = f64x2.splat(0), s2 = f64x2.splat(0), s3 = f64x2.splat(0);
      for (let j = j0; j < j1; j++) {
        const c = load<f64>(ti + (<usize>j << 3));
        if (c == 0) continue;
        const cv = f64x2.splat(c);
        const xj = x + (<usize>(j * k) << 3) + o;
        s0 = madd64(cv, v128.load(xj), s0);
        s1 = madd64(cv, v128.load(xj, 16), s1);
        s2 = madd64(cv, v128.load(xj, 32), s2);
        s3 = madd64(cv, v128.load(xj, 48), s3);
      }
      v128.store(xi + o, f64x2.mul(f64x2.sub(v128.load(xi + o), s0), dv));
      v128.store(xi + o, f64x2.mul(f64x2.sub(v128.load(xi + o, 16), s1), dv), 16);
      v128.store(xi + o, f64x2.mul(f64x2.sub(v128.load(xi + o, 32), s2), dv), 32);
      v128.store(xi + o, f64x2.mul(f64x2.sub(v128.load(xi + o, 48), s3), dv), 48);
    }
    for (; p < ce; p++) {
      let s: f64 = 0;
      for (let j = j0; j < j1; j++) s += load<f64>(ti + (<usize>j << 3)) * load<f64>(x + (<usize>(j * k + p) << 3));
      const q = xi + (<usize>p << 3);
      store<f64>(q, (load<f64>(q) - s) * d);
    }
  }
}

/**
 * Packs every row block `[i0, i0 + nb)` of the lower `T` over columns `[0, i0)` once, for all column chunks of
 * {@link trsmShared}: block `b` at `dst + table[b]`; `table` (u32 per block) is written at `pre`. Returns the bytes used.
 */
export function lowerPrepack(t: usize, n: i32, nb: i32, pre: usize, dst: usize): usize {
  let off: usize = 0;
  const blocks = (n + nb - 1) / nb;
  for (let b = 0; b < blocks; b++) {
    const i0 = b * nb, i1 = min(n, i0 + nb);
    store<usize>(pre + (<usize>b << 2), dst + off);
    if (i0 > 0) dpackA(t + (<usize>(i0 * n) << 3), n, 0, i1 - i0, i0, dst + off);
    off += <usize>(((i1 - i0 + MR - 1) / MR) * MR * i0) << 3;
  }
  return off;
}

/** Bytes {@link lowerPrepack} needs for an `n × n` factor. */
export function lowerPrepackSize(n: i32, nb: i32): f64 {
  let total: f64 = 0;
  for (let i0 = 0; i0 < n; i0 += nb) total += <f64>(((min(n, i0 + nb) - i0 + MR - 1) / MR) * MR) * <f64>i0 * 8;
  return total;
}

/** Transposes an `n × n` f64 matrix into `dst` in 32×32 tiles. */
export function transpose64(src: usize, n: i32, dst: usize): void {
  for (let i0 = 0; i0 < n; i0 += 32) {
    const i1 = min(i0 + 32, n);
    for (let j0 = 0; j0 < n; j0 += 32) {
      const j1 = min(j0 + 32, n);
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) store<f64>(dst + (<usize>(j * n + i) << 3), load<f64>(src + (<usize>(i * n + j) << 3)));
      }
    }
  }
}

/** Zeroes the strict upper triangle of an `n × n` f64 matrix. */
export function zeroUpper64(a: usize, n: i32): void {
  for (let i = 0; i < n; i++) memory.fill(a + (<usize>(i * n + i + 1) << 3), 0, <usize>(n - i - 1) << 3);
}

/** Reverses `count` f64s at `a` in place ({@link reverseValues}). */
export function reverse64(a: usize, count: i32): void {
  reverseValues<f64>(a, count);
}
