// Float32 factorisation for GPTQ's U and R from a float32 Hessian (the precision the reference GPTQ factors in): a
// blocked right-looking upper Cholesky `A = RᵀR` whose panels and trailing updates run on the float32 gemm, then (for
// U) the blocked inverse `X = R⁻¹` by column blocks, also on the gemm. Diagonal blocks are factored and inverted with float64 sums.
// Row-major `n × n` storage; only the upper triangle of the input is read. Each element is computed by one task in a
// fixed order, so the thread split does not change results.

import { reverseValues } from "./common";
import { gemmSingle } from "./gemm";

// @ts-ignore: decorator
@inline function at(p: usize, ld: i32, i: i32, j: i32): usize {
  return p + (<usize>(i * ld + j) << 2);
}

/**
 * Upper Cholesky of the diagonal block `[k0, k1)` in place (its trailing updates done): `R_kkᵀR_kk = A_kk`, row by
 * row, float64 sums. Returns −1, or the first row whose pivot is not positive, with the pivot's value (f64) at `bad`.
 */
export function cholDiagUpper32(a: usize, n: i32, k0: i32, k1: i32, bad: usize): i32 {
  for (let i = k0; i < k1; i++) {
    let s = <f64>load<f32>(at(a, n, i, i));
    for (let p = k0; p < i; p++) {
      const v = <f64>load<f32>(at(a, n, p, i));
      s -= v * v;
    }
    if (!(s > 0)) {
      store<f64>(bad, s);
      return i;
    }
    const d = Math.sqrt(s), inv = 1 / d;
    store<f32>(at(a, n, i, i), <f32>d);
    for (let j = i + 1; j < k1; j++) {
      let t = <f64>load<f32>(at(a, n, i, j));
      for (let p = k0; p < i; p++) t -= <f64>load<f32>(at(a, n, p, i)) * <f64>load<f32>(at(a, n, p, j));
      store<f32>(at(a, n, i, j), <f32>(t * inv));
    }
  }
  return -1;
}

/**
 * `X = R⁻¹` of the `m × m` upper block at `r` (row stride `ldr`) into `x` (row stride `ldx`, its strict lower part
 * zero on entry), column by column from `XR = I`: `X_ic = −(Σ_{i≤k<c} X_ik·R_kc) / R_cc`, float64 sums.
 */
export function invUpperBlock32(r: usize, ldr: i32, x: usize, ldx: i32, m: i32): void {
  for (let c = 0; c < m; c++) {
    const dc = 1 / <f64>load<f32>(at(r, ldr, c, c));
    store<f32>(at(x, ldx, c, c), <f32>dc);
    for (let i = 0; i < c; i++) {
      let s: f64 = 0;
      for (let k = i; k < c; k++) s += <f64>load<f32>(at(x, ldx, i, k)) * <f64>load<f32>(at(r, ldr, k, c));
      store<f32>(at(x, ldx, i, c), <f32>(-s * dc));
    }
  }
}

/** Columns of the Cholesky panel per task. */
const PANEL_COLS: i32 = 256;

/** {@link PANEL_COLS}, for the caller's sizing of each thread's `tmp` (`nb · PANEL_COLS` floats) and of the tasks. */
export function cholPanelCols(): i32 {
  return PANEL_COLS;
}

/**
 * The row panel right of the factored diagonal block `[k0, k1)`: `R[k0:k1, k1:n] = R_kk⁻ᵀ·A[k0:k1, k1:n]`, with
 * `xkk = R_kk⁻¹` (`nb × nb`, {@link invUpperBlock32}); tasks of {@link PANEL_COLS} columns claimed from `counter`.
 * `tmp`: `nb·PANEL_COLS` floats per thread; `packed`, `gs`: gemm scratch.
 */
export function cholPanel32(
  a: usize, n: i32, k0: i32, k1: i32, xkk: usize, counter: usize, tmp: usize, packed: usize, gs: usize,
): void {
  const nb = k1 - k0;
  while (true) {
    const c0 = k1 + PANEL_COLS * atomic.add<i32>(counter, 1);
    if (c0 >= n) break;
    const w = min(PANEL_COLS, n - c0);
    gemmSingle(xkk, nb, 1, at(a, n, k0, c0), n, 0, tmp, w, nb, w, nb, 0, packed, gs);
    for (let i = 0; i < nb; i++) memory.copy(at(a, n, k0 + i, c0), tmp + (<usize>(i * w) << 2), <usize>w << 2);
  }
}

/** Negates `count` floats at `p` (the packed panel of a trailing update `A −= RᵀR`). */
export function negate32(p: usize, count: i32): void {
  const sign = f32x4.splat(-1);
  let i = 0;
  for (; i + 4 <= count; i += 4) v128.store(p + (<usize>i << 2), f32x4.mul(v128.load(p + (<usize>i << 2)), sign));
  for (; i < count; i++) store<f32>(p + (<usize>i << 2), -load<f32>(p + (<usize>i << 2)));
}

/**
 * Block column `[j0, j1)` of `X = R⁻¹` above its diagonal block (which is already `R_jj⁻¹`): for each row block
 * `[i0, i0 + nb)` with `i0 < j0`, claimed from `counter`, `X_ij = −(X[i, i0:j0]·R[i0:j0, j]) · X_jj`.
 * `tmp`: `nb·nb` floats per thread; `packed`, `gs`: gemm scratch.
 */
export function invUpperColumn32(
  r: usize, x: usize, n: i32, nb: i32, j0: i32, j1: i32, counter: usize, tmp: usize, packed: usize, gs: usize,
): void {
  const jb = j1 - j0;
  while (true) {
    const i0 = nb * atomic.add<i32>(counter, 1);
    if (i0 >= j0) break;
    const rows = min(nb, j0 - i0);
    gemmSingle(at(x, n, i0, i0), n, 0, at(r, n, i0, j0), n, 0, tmp, jb, rows, jb, j0 - i0, 0, packed, gs);
    negate32(tmp, rows * jb);
    gemmSingle(tmp, jb, 0, at(x, n, j0, j0), n, 0, at(x, n, i0, j0), n, rows, jb, jb, 0, packed, gs);
  }
}

/**
 * The upper triangle of `dst = J·srcᵀ·J` (`dst[i][j] = src[n−1−j][n−1−i]`, read from `src`'s upper triangle) of an
 * `n × n` f32 matrix, zeros below it, in 32×32 tiles: threads claim bands of 32 rows of `dst` from `counter`. `src`'s
 * strict lower triangle is never read.
 */
export function antiTransposeUpper32(counter: usize, src: usize, n: i32, dst: usize): void {
  while (true) {
    const i0 = 32 * atomic.add<i32>(counter, 1);
    if (i0 >= n) break;
    const i1 = min(i0 + 32, n);
    for (let i = i0; i < i1; i++) memory.fill(at(dst, n, i, 0), 0, <usize>i0 << 2);
    for (let j0 = i0; j0 < n; j0 += 32) {
      const j1 = min(j0 + 32, n);
      for (let i = i0; i < i1; i++) {
        const js = max(j0, i); // on the diagonal tile, columns before i are below the diagonal
        for (let j = j0; j < js; j++) store<f32>(at(dst, n, i, j), 0);
        for (let j = js; j < j1; j++) store<f32>(at(dst, n, i, j), load<f32>(at(src, n, n - 1 - j, n - 1 - i)));
      }
    }
  }
}

/** Reverses `count` f32s at `a` in place ({@link reverseValues}). */
export function reverse32(a: usize, count: i32): void {
  reverseValues<f32>(a, count);
}
