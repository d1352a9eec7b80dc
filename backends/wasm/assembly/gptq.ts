// GPTQ's error-feedback loop within one block of columns, on transposed weights (`Wt`, `[cols, rows]`, a column of W
// contiguous), matching `core/quant/gptq_kernel.ts` operation for operation: codes and values in float32, the scaled
// error `fround(fround(x − q) / d)`, and the in-block feedback `fround(w − e·u)` with the product in float64. Rows are
// independent inside a block, so threads split them. The lazy update of the later columns is a `gemm`.

/**
 * Runs columns `[i1, i2)` for chunks of rows claimed from `counter` (an i32 the caller zeroes), updating `Wt` in place (the block's working copy: the reference never
 * reads these columns of `Wt` again after the block starts, and grid fits read them before this call).
 *
 * @param wt `[cols, rows]` float32 weights.
 * @param u `[cols, cols]` float64 upper factor.
 * @param e `[i2 − i1, rows]` float32 output: the scaled errors of the block.
 * @param qt `[cols, rows]` float32 output: dequantized values.
 * @param codes `[cols, rows]` u8 output.
 * @param scale `[rows, groups]` float32 grid scales; `zero` likewise.
 * @param groupOf `cols` i32 group indices.
 * @param kind 0: uniform with `maxq`; 1: table of `nlevels` float32 `levels`.
 * @param ework this thread's {@link gptqScratchSize} float64s; `counter` the shared chunk counter.
 */
export function gptqBlock(
  wt: usize, rows: i32, cols: i32, i1: i32, i2: i32, u: usize, e: usize, qt: usize, codes: usize,
  scale: usize, zero: usize, groups: i32, groupOf: usize, kind: i32, maxq: f32, levels: usize, nlevels: i32,
  counter: usize, ework: usize,
): void {
  const count = i2 - i1;
  // Chunks of RC rows, taken from the shared counter: a chunk's working columns (count × RC floats) stay in L1 for
  // the whole block, and a thread slowed by other work just takes fewer chunks.
  const chunks = (rows + RC - 1) / RC;
  while (true) {
    const t = atomic.add<i32>(counter, 1);
    if (t >= chunks) break;
    const rc = t * RC;
    const re = min(rc + RC, rows);
    for (let i = 0; i < count; i++) {
      const j = i1 + i;
      const g = load<i32>(groupOf + (<usize>j << 2));
      const d = load<f64>(u + (<usize>(j * cols + j) << 3));
      const col = wt + (<usize>(j * rows) << 2);
      const ecol = e + (<usize>(i * rows) << 2);
      const qcol = qt + (<usize>(j * rows) << 2);
      const ccol = codes + <usize>(j * rows);
      for (let r = rc; r < re; r++) {
        const x = load<f32>(col + (<usize>r << 2));
        const p = <usize>(r * groups + g) << 2;
        const s = load<f32>(scale + p);
        let code: i32, q: f32;
        if (kind == 0) {
          const z = load<f32>(zero + p);
          const c = f32.nearest(x / s) + z;
          const cq: f32 = c > 0 ? (c < maxq ? c : maxq) : 0;
          code = <i32>cq;
          q = s * (cq - z);
        } else {
          code = nearestLevel(levels, nlevels, x / s);
          q = s * load<f32>(levels + (<usize>code << 2));
        }
        store<u8>(ccol + <usize>r, <u8>code);
        store<f32>(qcol + (<usize>r << 2), q);
        const err = <f32>(<f64>(x - q) / d);
        store<f32>(ecol + (<usize>r << 2), err);
        store<f64>(ework + (<usize>(r - rc) << 3), <f64>err);
      }
      // W1[:, k] −= e · U[j, i1 + k] for the later columns of the block, product and difference in float64.
      for (let k = i + 1; k < count; k++) {
        const uk = load<f64>(u + (<usize>(j * cols + i1 + k) << 3));
        if (uk == 0) continue;
        const uv = f64x2.splat(uk);
        const wk = wt + (<usize>((i1 + k) * rows) << 2);
        let r = rc;
        for (; r + 4 <= re; r += 4) {
          const pw = wk + (<usize>r << 2), pe = ework + (<usize>(r - rc) << 3);
          const wv = v128.load(pw);
          const lo = f64x2.sub(f64x2.promote_low_f32x4(wv), f64x2.mul(v128.load(pe), uv));
          const hi = f64x2.sub(f64x2.promote_low_f32x4(i32x4.shuffle(wv, wv, 2, 3, 0, 1)), f64x2.mul(v128.load(pe, 16), uv));
          v128.store(pw, i32x4.shuffle(f32x4.demote_f64x2_zero(lo), f32x4.demote_f64x2_zero(hi), 0, 1, 4, 5));
        }
        for (; r < re; r++) {
          const pw = wk + (<usize>r << 2);
          store<f32>(pw, <f32>(<f64>load<f32>(pw) - load<f64>(ework + (<usize>(r - rc) << 3)) * uk));
        }
      }
    }
  }
}

/** Rows per chunk of {@link gptqBlock}; its float64 error scratch (`ework`) holds this many values. */
const RC: i32 = 128;

/** Float64s of per-thread scratch {@link gptqBlock} needs. */
export function gptqScratchSize(): i32 {
  return RC;
}

/**
 * `core/grids/tables.ts`'s `nearestLevel`: index of the level nearest `x` in the ascending table, ties (exactly at a
 * midpoint, computed in float64) to the lower level, beyond the ends clamped, NaN to 0.
 */
function nearestLevel(levels: usize, n: i32, x: f32): i32 {
  if (!(x > load<f32>(levels))) return 0;
  if (x >= load<f32>(levels + (<usize>(n - 1) << 2))) return n - 1;
  let lo = 0, hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (load<f32>(levels + (<usize>mid << 2)) < x) lo = mid;
    else hi = mid;
  }
  const mid = (<f64>load<f32>(levels + (<usize>lo << 2)) + <f64>load<f32>(levels + (<usize>hi << 2))) / 2;
  return <f64>x > mid ? hi : lo;
}

/**
 * `dst[i][k] = −U[i1 + i][i2 + k]` as float32, `[i2 − i1, cols − i2]`: the negated factor rows of the lazy update
 * (negated so that the update is an accumulating `gemm` into `Wt`).
 */
export function gptqNegatedFactor(u: usize, cols: i32, i1: i32, i2: i32, dst: usize): void {
  const rest = cols - i2;
  for (let i = i1; i < i2; i++) {
    const src = u + (<usize>(i * cols + i2) << 3);
    const d = dst + (<usize>((i - i1) * rest) << 2);
    for (let k = 0; k < rest; k++) store<f32>(d + (<usize>k << 2), <f32>-load<f64>(src + (<usize>k << 3)));
  }
}

/** `dst[i] = src[i]` widened from float32 to float64 (exact), `count` values: a float32 U for the column loop. */
export function widen32(src: usize, count: i32, dst: usize): void {
  let i = 0;
  for (; i + 4 <= count; i += 4) {
    const v = v128.load(src + (<usize>i << 2));
    v128.store(dst + (<usize>i << 3), f64x2.promote_low_f32x4(v));
    v128.store(dst + (<usize>i << 3), f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1)), 16);
  }
  for (; i < count; i++) store<f64>(dst + (<usize>i << 3), <f64>load<f32>(src + (<usize>i << 2)));
}

/** Transposes a `[rows, cols]` float32 matrix into `[cols, rows]` in 32×32 tiles. */
export function transpose32(src: usize, rows: i32, cols: i32, dst: usize): void {
  for (let i0 = 0; i0 < rows; i0 += 32) {
    const i1 = min(i0 + 32, rows);
    for (let j0 = 0; j0 < cols; j0 += 32) {
      const j1 = min(j0 + 32, cols);
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) {
          store<f32>(dst + (<usize>(j * rows + i) << 2), load<f32>(src + (<usize>(i * cols + j) << 2)));
        }
      }
    }
  }
}

/** Transposes a `[rows, cols]` u8 matrix into `[cols, rows]` in 32×32 tiles. */
export function transpose8(src: usize, rows: i32, cols: i32, dst: usize): void {
  for (let i0 = 0; i0 < rows; i0 += 32) {
    const i1 = min(i0 + 32, rows);
    for (let j0 = 0; j0 < cols; j0 += 32) {
      const j1 = min(j0 + 32, cols);
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) store<u8>(dst + <usize>(j * rows + i), load<u8>(src + <usize>(i * cols + j)));
      }
    }
  }
}

/**
 * `core/grids/fit.ts`'s `quantizeGrid` for rows `[r0, r1)` of `w` (`[rows, cols]` float32): codes (u8) and values
 * (float32) with row `i`, column `j` using parameters `(i, groupOf[j])`; grid arguments as {@link gptqBlock}.
 */
export function quantizeRows(
  w: usize, cols: i32, scale: usize, zero: usize, groups: i32, groupOf: usize, kind: i32, maxq: f32, levels: usize,
  nlevels: i32, codes: usize, out: usize, r0: i32, r1: i32,
): void {
  for (let i = r0; i < r1; i++) {
    for (let j = 0; j < cols; j++) {
      const k = <usize>(i * cols + j);
      const p = <usize>(i * groups + load<i32>(groupOf + (<usize>j << 2))) << 2;
      const x = load<f32>(w + (k << 2)), s = load<f32>(scale + p);
      let code: i32, q: f32;
      if (kind == 0) {
        const z = load<f32>(zero + p);
        const c = f32.nearest(x / s) + z;
        const cq: f32 = c > 0 ? (c < maxq ? c : maxq) : 0;
        code = <i32>cq;
        q = s * (cq - z);
      } else {
        code = nearestLevel(levels, nlevels, x / s);
        q = s * load<f32>(levels + (<usize>code << 2));
      }
      store<u8>(codes + k, <u8>code);
      store<f32>(out + (k << 2), q);
    }
  }
}

/**
 * `core/linalg/kmeans.ts`'s `nearestCentroids` for points `[p0, p1)`: the lowest-index nearest centroid and its
 * squared distance, summed in float64 in dimension order exactly as the reference (so ties break identically).
 */
export function nearestCentroidRows(
  points: usize, d: i32, centroids: usize, k: i32, assign: usize, dist: usize, p0: i32, p1: i32,
): void {
  for (let i = p0; i < p1; i++) {
    const pi = points + (<usize>(i * d) << 2);
    let best = 0, bestD = Infinity;
    for (let c = 0; c < k; c++) {
      const cc = centroids + (<usize>(c * d) << 2);
      let s: f64 = 0;
      for (let t = 0; t < d && s < bestD; t++) {
        const diff = <f64>load<f32>(pi + (<usize>t << 2)) - <f64>load<f32>(cc + (<usize>t << 2));
        s += diff * diff;
      }
      if (s < bestD) {
        bestD = s;
        best = c;
      }
    }
    store<i32>(assign + (<usize>i << 2), best);
    store<f32>(dist + (<usize>i << 2), <f32>bestD);
  }
}
