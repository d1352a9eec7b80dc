import { transpose4 } from "./common";

// GPTQ's error-feedback loop within one block of columns, on transposed weights (`[cols, rows]`, a column of W
// contiguous), matching `core/quant/gptq_kernel.ts` operation for operation, all in float32: codes and values, the
// scaled error `(x − q) / d`, and the in-block feedback `w − e·u` as a product and a difference (never fused, so that
// both builds round alike). Rows are independent inside a block, so threads split them. The block's start and the
// lazy update of the later columns (through R) are `gemm`s.

/**
 * Runs columns `[i1, i2)` for chunks of rows claimed from `counter` (an i32 the caller zeroes). Reads the block's
 * start (the grid fits read it before this call; nothing reads it after it).
 *
 * @param st `[i2 − i1, rows]` float32 weights of the block as it starts.
 * @param u float32 upper factor, row stride `ldu`: GPTQ's `U` on the block's diagonal (from its first row and column).
 * @param e `[i2 − i1, rows]` float32 output: the scaled errors of the block.
 * @param qt `[cols, rows]` float32 output: dequantized values.
 * @param codes `[cols, rows]` u8 output.
 * @param scale `[rows, groups]` float32 grid scales; `zero` likewise.
 * @param groupOf `cols` i32 group indices.
 * @param kind 0: uniform with `maxq`; 1: table of `nlevels` float32 `levels`.
 * @param work this thread's {@link gptqScratchSize} floats (for `i2 − i1` columns); `counter` the shared chunk counter.
 */
export function gptqBlock(
  st: usize, rows: i32, i1: i32, i2: i32, u: usize, ldu: i32, e: usize, qt: usize, codes: usize,
  scale: usize, zero: usize, groups: i32, groupOf: usize, kind: i32, maxq: f32, levels: usize, nlevels: i32,
  counter: usize, work: usize,
): void {
  const count = i2 - i1;
  // Chunks of RC rows, taken from the shared counter, so that a thread slowed by other work just takes fewer chunks.
  // A chunk's working columns are copied next to each other (stride RC): in `st` they are `rows` floats apart, a power
  // of two for most layers, and would fall into the same few cache sets.
  const chunks = (rows + RC - 1) / RC;
  while (true) {
    const t = atomic.add<i32>(counter, 1);
    if (t >= chunks) break;
    const rc = t * RC;
    const re = min(rc + RC, rows), n = re - rc;
    for (let i = 0; i < count; i++) {
      memory.copy(work + (<usize>(i * RC) << 2), st + (<usize>(i * rows + rc) << 2), <usize>n << 2);
    }
    for (let i = 0; i < count; i++) {
      const j = i1 + i;
      const g = load<i32>(groupOf + (<usize>j << 2));
      const d = load<f32>(u + (<usize>(i * ldu + i) << 2));
      const col = work + (<usize>(i * RC) << 2); // row rc + t of the chunk at col + 4t
      const ecol = e + (<usize>(i * rows + rc) << 2);
      const qcol = qt + (<usize>(j * rows + rc) << 2);
      const ccol = codes + <usize>(j * rows + rc);
      for (let t = 0; t < n; t++) {
        const x = load<f32>(col + (<usize>t << 2));
        const p = <usize>((rc + t) * groups + g) << 2;
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
        store<u8>(ccol + <usize>t, <u8>code);
        store<f32>(qcol + (<usize>t << 2), q);
        store<f32>(ecol + (<usize>t << 2), (x - q) / d);
      }
      // W1[:, k] −= e · U[i, k] for the later columns of the block.
      for (let k = i + 1; k < count; k++) {
        const uk = load<f32>(u + (<usize>(i * ldu + k) << 2));
        if (uk == 0) continue;
        const uv = f32x4.splat(uk);
        const wk = work + (<usize>(k * RC) << 2);
        let t = 0;
        for (; t + 4 <= n; t += 4) {
          const pw = wk + (<usize>t << 2);
          v128.store(pw, f32x4.sub(v128.load(pw), f32x4.mul(v128.load(ecol + (<usize>t << 2)), uv)));
        }
        for (; t < n; t++) {
          const pw = wk + (<usize>t << 2);
          store<f32>(pw, load<f32>(pw) - load<f32>(ecol + (<usize>t << 2)) * uk);
        }
      }
    }
  }
}

/** Rows per chunk of {@link gptqBlock}: a block of 128 working columns of a chunk fills 32 KiB. */
const RC: i32 = 64;

/** Floats of per-thread scratch {@link gptqBlock} needs for blocks of `blockSize` columns: the chunk's columns. */
export function gptqScratchSize(blockSize: i32): i32 {
  return RC * blockSize;
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
 * `dst[i][k] = R[i1 + i][i2 + k]`, `[i2 − i1, cols − i2]`: the factor rows of the lazy update, contiguous for the
 * `gemm` that accumulates `C[i2:] += R[i1:i2, i2:]ᵀ·(W − Q)[i1:i2]`.
 */
export function gptqFactorRows(r: usize, cols: i32, i1: i32, i2: i32, dst: usize): void {
  const rest = cols - i2;
  for (let i = i1; i < i2; i++) {
    memory.copy(dst + (<usize>((i - i1) * rest) << 2), r + (<usize>(i * cols + i2) << 2), <usize>rest << 2);
  }
}

/** `dst = a − b` over `n` float32s (the block's `W − Q` for the lazy update). */
export function difference32(a: usize, b: usize, dst: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(dst + o, f32x4.sub(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(dst + o, load<f32>(a + o) - load<f32>(b + o));
  }
}

// Transpositions between W (`[rows, cols]`) and the kernel's working layout (`[cols, rows]`, a column of W contiguous,
// rows in processing order): `pos[c]` is the processing position of column `c` (0: the identity), so that act-order
// costs no pass of its own. Columns go in tiles of TC, rows four at a time through 4×4 register transposes; threads
// take disjoint column ranges.

/** Columns per tile: the tile's TC rows of the working layout stay in cache while its rows of W stream past. */
const TC: i32 = 8;

/**
 * Byte address of element `r` of row `pos[c]` (row `c` when `pos` is 0) of a `[cols, n]` matrix of `T` at `base`.
 */
// @ts-ignore: decorator
@inline function rowOf<T>(base: usize, pos: usize, c: i32, n: i32, r: i32): usize {
  const k = pos ? load<i32>(pos + (<usize>c << 2)) : c;
  return base + (<usize>k * <usize>n + <usize>r) * sizeof<T>();
}

/** `dst[pos[c]][r] = src[r][c]` (float32) for columns `[c0, c1)`: W (`[rows, cols]`) into the working layout. */
export function scatterColumns32(src: usize, rows: i32, cols: i32, pos: usize, dst: usize, c0: i32, c1: i32): void {
  const ld = <usize>cols << 2;
  for (let ct = c0; ct < c1; ct += TC) {
    const ce = min(ct + TC, c1);
    let r = 0;
    for (; r + 4 <= rows; r += 4) {
      const s = src + <usize>r * ld;
      let c = ct;
      for (; c + 4 <= ce; c += 4) {
        const o = <usize>c << 2;
        transpose4(
          v128.load(s + o), v128.load(s + ld + o), v128.load(s + 2 * ld + o), v128.load(s + 3 * ld + o),
          rowOf<f32>(dst, pos, c, rows, r), rowOf<f32>(dst, pos, c + 1, rows, r), rowOf<f32>(dst, pos, c + 2, rows, r),
          rowOf<f32>(dst, pos, c + 3, rows, r),
        );
      }
      for (; c < ce; c++) {
        const d = rowOf<f32>(dst, pos, c, rows, r);
        for (let i = 0; i < 4; i++) store<f32>(d + (<usize>i << 2), load<f32>(s + <usize>i * ld + (<usize>c << 2)));
      }
    }
    for (; r < rows; r++) {
      for (let c = ct; c < ce; c++) store<f32>(rowOf<f32>(dst, pos, c, rows, r), load<f32>(src + <usize>r * ld + (<usize>c << 2)));
    }
  }
}

/** `dst[r][c] = src[pos[c]][r]` (float32) for columns `[c0, c1)`: the working layout back into W's (`[rows, cols]`). */
export function gatherColumns32(src: usize, rows: i32, cols: i32, pos: usize, dst: usize, c0: i32, c1: i32): void {
  const ld = <usize>cols << 2;
  for (let ct = c0; ct < c1; ct += TC) {
    const ce = min(ct + TC, c1);
    let r = 0;
    for (; r + 4 <= rows; r += 4) {
      const d = dst + <usize>r * ld;
      let c = ct;
      for (; c + 4 <= ce; c += 4) {
        const o = <usize>c << 2;
        transpose4(
          v128.load(rowOf<f32>(src, pos, c, rows, r)), v128.load(rowOf<f32>(src, pos, c + 1, rows, r)),
          v128.load(rowOf<f32>(src, pos, c + 2, rows, r)), v128.load(rowOf<f32>(src, pos, c + 3, rows, r)),
          d + o, d + ld + o, d + 2 * ld + o, d + 3 * ld + o,
        );
      }
      for (; c < ce; c++) {
        const s = rowOf<f32>(src, pos, c, rows, r);
        for (let i = 0; i < 4; i++) store<f32>(d + <usize>i * ld + (<usize>c << 2), load<f32>(s + (<usize>i << 2)));
      }
    }
    for (; r < rows; r++) {
      for (let c = ct; c < ce; c++) store<f32>(dst + <usize>r * ld + (<usize>c << 2), load<f32>(rowOf<f32>(src, pos, c, rows, r)));
    }
  }
}

/** {@link gatherColumns32} for bytes (the codes): 4×4 blocks of bytes transposed by one shuffle. */
export function gatherColumns8(src: usize, rows: i32, cols: i32, pos: usize, dst: usize, c0: i32, c1: i32): void {
  for (let ct = c0; ct < c1; ct += TC) {
    const ce = min(ct + TC, c1);
    let r = 0;
    for (; r + 4 <= rows; r += 4) {
      const d = dst + <usize>r * <usize>cols;
      let c = ct;
      for (; c + 4 <= ce; c += 4) {
        // Lane i: bytes r..r+3 of source row pos[c + i]; after the shuffle, lane j: column bytes c..c+3 of row r + j.
        let v = i32x4.splat(load<i32>(rowOf<u8>(src, pos, c, rows, r)));
        v = i32x4.replace_lane(v, 1, load<i32>(rowOf<u8>(src, pos, c + 1, rows, r)));
        v = i32x4.replace_lane(v, 2, load<i32>(rowOf<u8>(src, pos, c + 2, rows, r)));
        v = i32x4.replace_lane(v, 3, load<i32>(rowOf<u8>(src, pos, c + 3, rows, r)));
        v = i8x16.shuffle(v, v, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        store<i32>(d + <usize>c, i32x4.extract_lane(v, 0));
        store<i32>(d + <usize>cols + <usize>c, i32x4.extract_lane(v, 1));
        store<i32>(d + 2 * <usize>cols + <usize>c, i32x4.extract_lane(v, 2));
        store<i32>(d + 3 * <usize>cols + <usize>c, i32x4.extract_lane(v, 3));
      }
      for (; c < ce; c++) {
        const s = rowOf<u8>(src, pos, c, rows, r);
        for (let i = 0; i < 4; i++) store<u8>(d + <usize>i * <usize>cols + <usize>c, load<u8>(s + <usize>i));
      }
    }
    for (; r < rows; r++) {
      for (let c = ct; c < ce; c++) store<u8>(dst + <usize>r * <usize>cols + <usize>c, load<u8>(rowOf<u8>(src, pos, c, rows, r)));
    }
  }
}


/** `init + Σ x²` over `n` float32 values, accumulated in float64 in order: GPTQ's running error energy. */
export function sumSquares32(x: usize, n: i32, init: f64): f64 {
  let s = init;
  for (let i = 0; i < n; i++) {
    const v = <f64>load<f32>(x + (<usize>i << 2));
    s += v * v;
  }
  return s;
}

/**
 * `core/grids/uniform.ts`'s `fitUniformRow` without MSE search, for every row of one group: columns `[j, j + length)`
 * of the working layout (`[cols, rows]`), into `scale`/`zero` `[rows, groups]` at group `g`. The same float32 steps as
 * the reference: `lo = min(0, x…)`, `hi = max(0, x…)` (comparisons, so NaN is skipped), symmetric folding, the empty
 * range as `[−1, 1]`, `scale = (hi − lo) / maxq`, `zero = round(−lo / scale)` or `(maxq + 1) / 2`.
 */
export function fitUniformGroup(
  wt: usize, rows: i32, j: i32, length: i32, symmetric: i32, maxq: f32, scale: usize, zero: usize, groups: i32, g: i32,
): void {
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    let lo = f32x4.splat(0), hi = f32x4.splat(0);
    for (let k = 0; k < length; k++) {
      const x = v128.load(wt + (<usize>((j + k) * rows + r) << 2));
      lo = f32x4.pmin(lo, x); // x < lo ? x : lo, as the reference's comparison
      hi = f32x4.pmax(hi, x);
    }
    fitRange(f32x4.extract_lane(lo, 0), f32x4.extract_lane(hi, 0), r, symmetric, maxq, scale, zero, groups, g);
    fitRange(f32x4.extract_lane(lo, 1), f32x4.extract_lane(hi, 1), r + 1, symmetric, maxq, scale, zero, groups, g);
    fitRange(f32x4.extract_lane(lo, 2), f32x4.extract_lane(hi, 2), r + 2, symmetric, maxq, scale, zero, groups, g);
    fitRange(f32x4.extract_lane(lo, 3), f32x4.extract_lane(hi, 3), r + 3, symmetric, maxq, scale, zero, groups, g);
  }
  for (; r < rows; r++) {
    let lo: f32 = 0, hi: f32 = 0;
    for (let k = 0; k < length; k++) {
      const x = load<f32>(wt + (<usize>((j + k) * rows + r) << 2));
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
    fitRange(lo, hi, r, symmetric, maxq, scale, zero, groups, g);
  }
}

// @ts-ignore: decorator
@inline function fitRange(
  lo: f32, hi: f32, r: i32, symmetric: i32, maxq: f32, scale: usize, zero: usize, groups: i32, g: i32,
): void {
  let xmin = lo, xmax = hi;
  if (symmetric) {
    xmax = max(abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin == 0 && xmax == 0) {
    xmin = -1;
    xmax = 1;
  }
  const s = (xmax - xmin) / maxq;
  const p = <usize>(r * groups + g) << 2;
  store<f32>(scale + p, s);
  store<f32>(zero + p, symmetric ? (maxq + 1) / 2 : f32.nearest(-xmin / s) + 0);
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
