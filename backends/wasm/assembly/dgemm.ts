// Double-precision matrix multiply-accumulate for the factorisations (Cholesky trailing updates, blocked triangular
// solves, L⁻ᵀL⁻¹): the same BLIS blocking as `gemm.ts` on f64x2 vectors, with a 6×4 register tile (12 accumulators), and
// `C ±= op(A)·op(B)` or `C = op(A)·op(B)`, optionally restricted to the tiles that reach the lower triangle.
// The arithmetic of each element does not depend on the thread split.

import { madd64 } from "./common";

export const MR: i32 = 6;
const NR: i32 = 4;
export const KC: i32 = 256;
const MC: i32 = 96;
const NC: i32 = 1024;

/** Float64s of packed A for an `m × k` operand. */
export function dpackedASize(m: i32, k: i32): i32 {
  return ((m + MR - 1) / MR) * MR * k;
}

/** Float64s of per-thread scratch of {@link dgemm}. */
export function dgemmScratchSize(): i32 {
  return KC * NC + MR * NR;
}

/** Packs op(A) (`m × k`, row stride `lda`, `[k, m]` storage when `transA`) as `gemm.ts`'s `packA` does, in f64. */
export function dpackA(a: usize, lda: i32, transA: i32, m: i32, k: i32, dst: usize): void {
  const mPad = ((m + MR - 1) / MR) * MR;
  for (let p0 = 0; p0 < k; p0 += KC) {
    const kc = min(KC, k - p0);
    for (let i0 = 0; i0 < mPad; i0 += MR) {
      const d = dst + (<usize>(p0 * mPad + i0 * kc) << 3);
      const rows = min(MR, m - i0);
      for (let ii = 0; ii < MR; ii++) {
        const dd = d + (<usize>ii << 3);
        if (ii >= rows) {
          for (let p = 0; p < kc; p++) store<f64>(dd + (<usize>(p * MR) << 3), 0);
        } else if (transA) {
          for (let p = 0; p < kc; p++) {
            store<f64>(dd + (<usize>(p * MR) << 3), load<f64>(a + (<usize>((p0 + p) * lda + i0 + ii) << 3)));
          }
        } else {
          const src = a + (<usize>((i0 + ii) * lda + p0) << 3);
          for (let p = 0; p < kc; p++) store<f64>(dd + (<usize>(p * MR) << 3), load<f64>(src + (<usize>p << 3)));
        }
      }
    }
  }
}

function dpackB(b: usize, ldb: i32, transB: i32, n: i32, p0: i32, kc: i32, j0: i32, nc: i32, dst: usize): void {
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = min(NR, n - j0 - jr);
    const d = dst + (<usize>(jr * kc) << 3);
    for (let jj = 0; jj < NR; jj++) {
      const dd = d + (<usize>jj << 3);
      if (jj >= cols) {
        for (let p = 0; p < kc; p++) store<f64>(dd + (<usize>(p * NR) << 3), 0);
      } else if (transB) {
        const src = b + (<usize>((j0 + jr + jj) * ldb + p0) << 3);
        for (let p = 0; p < kc; p++) store<f64>(dd + (<usize>(p * NR) << 3), load<f64>(src + (<usize>p << 3)));
      } else {
        const src = b + (<usize>(p0 * ldb + j0 + jr + jj) << 3);
        for (let p = 0; p < kc; p++) store<f64>(dd + (<usize>(p * NR) << 3), load<f64>(src + (<usize>(p * ldb) << 3)));
      }
    }
  }
}

/** 6×4 f64 micro-kernel: `C (mode 0) =, (1) +=, (−1) −=` the product of the packed panels over `kc` steps. */
export function dkernel6x4(kc: i32, pa: usize, pb: usize, c: usize, ldc: i32, mode: i32): void {
  let c00 = f64x2.splat(0), c01 = f64x2.splat(0);
  let c10 = f64x2.splat(0), c11 = f64x2.splat(0);
  let c20 = f64x2.splat(0), c21 = f64x2.splat(0);
  let c30 = f64x2.splat(0), c31 = f64x2.splat(0);
  let c40 = f64x2.splat(0), c41 = f64x2.splat(0);
  let c50 = f64x2.splat(0), c51 = f64x2.splat(0);
  for (let p = 0; p < kc; p++) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    let a = v128.load64_splat(pa, 0);
    c00 = madd64(a, b0, c00);
    c01 = madd64(a, b1, c01);
    a = v128.load64_splat(pa, 8);
    c10 = madd64(a, b0, c10);
    c11 = madd64(a, b1, c11);
    a = v128.load64_splat(pa, 16);
    c20 = madd64(a, b0, c20);
    c21 = madd64(a, b1, c21);
    a = v128.load64_splat(pa, 24);
    c30 = madd64(a, b0, c30);
    c31 = madd64(a, b1, c31);
    a = v128.load64_splat(pa, 32);
    c40 = madd64(a, b0, c40);
    c41 = madd64(a, b1, c41);
    a = v128.load64_splat(pa, 40);
    c50 = madd64(a, b0, c50);
    c51 = madd64(a, b1, c51);
    pa += 48;
    pb += 32;
  }
  const ld = <usize>ldc << 3;
  if (mode > 0) {
    c00 = f64x2.add(v128.load(c + 0 * ld, 0), c00);
    c01 = f64x2.add(v128.load(c + 0 * ld, 16), c01);
    c10 = f64x2.add(v128.load(c + 1 * ld, 0), c10);
    c11 = f64x2.add(v128.load(c + 1 * ld, 16), c11);
    c20 = f64x2.add(v128.load(c + 2 * ld, 0), c20);
    c21 = f64x2.add(v128.load(c + 2 * ld, 16), c21);
    c30 = f64x2.add(v128.load(c + 3 * ld, 0), c30);
    c31 = f64x2.add(v128.load(c + 3 * ld, 16), c31);
    c40 = f64x2.add(v128.load(c + 4 * ld, 0), c40);
    c41 = f64x2.add(v128.load(c + 4 * ld, 16), c41);
    c50 = f64x2.add(v128.load(c + 5 * ld, 0), c50);
    c51 = f64x2.add(v128.load(c + 5 * ld, 16), c51);
  } else if (mode < 0) {
    c00 = f64x2.sub(v128.load(c + 0 * ld, 0), c00);
    c01 = f64x2.sub(v128.load(c + 0 * ld, 16), c01);
    c10 = f64x2.sub(v128.load(c + 1 * ld, 0), c10);
    c11 = f64x2.sub(v128.load(c + 1 * ld, 16), c11);
    c20 = f64x2.sub(v128.load(c + 2 * ld, 0), c20);
    c21 = f64x2.sub(v128.load(c + 2 * ld, 16), c21);
    c30 = f64x2.sub(v128.load(c + 3 * ld, 0), c30);
    c31 = f64x2.sub(v128.load(c + 3 * ld, 16), c31);
    c40 = f64x2.sub(v128.load(c + 4 * ld, 0), c40);
    c41 = f64x2.sub(v128.load(c + 4 * ld, 16), c41);
    c50 = f64x2.sub(v128.load(c + 5 * ld, 0), c50);
    c51 = f64x2.sub(v128.load(c + 5 * ld, 16), c51);
  }
  v128.store(c + 0 * ld, c00, 0);
  v128.store(c + 0 * ld, c01, 16);
  v128.store(c + 1 * ld, c10, 0);
  v128.store(c + 1 * ld, c11, 16);
  v128.store(c + 2 * ld, c20, 0);
  v128.store(c + 2 * ld, c21, 16);
  v128.store(c + 3 * ld, c30, 0);
  v128.store(c + 3 * ld, c31, 16);
  v128.store(c + 4 * ld, c40, 0);
  v128.store(c + 4 * ld, c41, 16);
  v128.store(c + 5 * ld, c50, 0);
  v128.store(c + 5 * ld, c51, 16);
}

/**
 * `C[m0:m1, n0:n1] (mode) op(A)·op(B)` (see {@link dkernel6x4}) with `op(A)` packed by {@link dpackA}; C is `[m, n]`
 * with row stride `ldc`. `lower`: only tiles reaching the lower triangle (`col ≤ row` somewhere) are computed.
 */
export function dgemm(
  m: i32, n: i32, k: i32, pa: usize, b: usize, ldb: i32, transB: i32, c: usize, ldc: i32,
  m0: i32, m1: i32, n0: i32, n1: i32, scratch: usize, lower: i32, mode: i32,
): void {
  const mPad = ((m + MR - 1) / MR) * MR;
  const tile = scratch + (<usize>(KC * NC) << 3);
  for (let jc = n0; jc < n1; jc += NC) {
    const nc = min(NC, n1 - jc);
    for (let pc = 0; pc < k; pc += KC) {
      const kc = min(KC, k - pc);
      const md = pc > 0 && mode == 0 ? 1 : mode;
      dpackB(b, ldb, transB, n, pc, kc, jc, nc, scratch);
      const paBlock = pa + (<usize>(pc * mPad) << 3);
      for (let ic = m0; ic < m1; ic += MC) {
        const icEnd = min(ic + MC, m1);
        for (let jr = 0; jr < nc; jr += NR) {
          const j = jc + jr;
          const cols = min(NR, n - j);
          const pb = scratch + (<usize>(jr * kc) << 3);
          for (let ir = ic; ir < icEnd; ir += MR) {
            if (lower && j >= ir + MR) continue;
            const rows = min(MR, m - ir);
            const pai = paBlock + (<usize>(ir * kc) << 3);
            const cij = c + (<usize>(ir * ldc + j) << 3);
            if (rows == MR && cols == NR) {
              dkernel6x4(kc, pai, pb, cij, ldc, md);
            } else {
              for (let ii = 0; ii < MR; ii++) {
                for (let jj = 0; jj < NR; jj++) {
                  store<f64>(tile + (<usize>(ii * NR + jj) << 3), ii < rows && jj < cols ? load<f64>(cij + (<usize>(ii * ldc + jj) << 3)) : 0);
                }
              }
              dkernel6x4(kc, pai, pb, tile, NR, md == 0 ? 0 : md);
              for (let ii = 0; ii < rows; ii++) {
                for (let jj = 0; jj < cols; jj++) {
                  store<f64>(cij + (<usize>(ii * ldc + jj) << 3), load<f64>(tile + (<usize>(ii * NR + jj) << 3)));
                }
              }
            }
          }
        }
      }
    }
  }
}

/** {@link dgemm} over blocks of C shared through an atomic counter, as `gemm.ts`'s `gemmShared` (lower: skip blocks
 * wholly above the diagonal). */
export function dgemmShared(
  counter: usize, rb: i32, cb: i32,
  m: i32, n: i32, k: i32, pa: usize, b: usize, ldb: i32, transB: i32, c: usize, ldc: i32, scratch: usize,
  lower: i32, mode: i32,
): void {
  const rowBlocks = (m + rb - 1) / rb, colBlocks = (n + cb - 1) / cb;
  const tasks = rowBlocks * colBlocks;
  while (true) {
    const t = atomic.add<i32>(counter, 1);
    if (t >= tasks) break;
    const r0 = (rowBlocks - 1 - t % rowBlocks) * rb, c0 = (t / rowBlocks) * cb; // bottom (heaviest) rows first
    const r1 = min(m, r0 + rb);
    if (lower && c0 >= r1) continue;
    dgemm(m, n, k, pa, b, ldb, transB, c, ldc, r0, r1, c0, min(n, c0 + cb), scratch, lower, mode);
  }
}
