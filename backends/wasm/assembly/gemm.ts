// Single-precision matrix multiply, blocked as in BLIS: op(A) is packed once into MR-row strips per KC-deep block, each
// thread packs its own NC-wide panels of op(B) into NR-column micro-panels, and an MR×NR register-tiled micro-kernel
// accumulates one tile of C over a KC-deep block. Every element of C sums its products in the same order (KC blocks
// in ascending order, then k ascending inside the micro-kernel), whatever the thread split: results do not depend on
// the number of threads.

import { madd, transpose4 } from "./common";

/**
 * Rows of a register tile. Four, not the six that fill x64's vector registers: the engines we run on check the bounds
 * of every memory access (three instructions each, no trap handler), so the micro-kernel is bound by instruction
 * issue, not by its multiply-adds. Four rows of A come in one load, and lane shuffles broadcast them: three checked
 * loads per eight multiply-adds instead of eight per twelve (36–39 against 29–32 GFLOP/s on one core, L1-resident:
 * `bench/wasm_microkernel.ts`).
 */
const MR: i32 = 4;
/** Columns of a register tile (two f32x4 vectors). */
const NR: i32 = 8;
/**
 * Depth of a packed block: an MR×KC strip of A and a KC×NR micro-panel of B (18 KiB together) stay in L1. 384 holds
 * a transformer's hidden size in one block (measured 12 % faster than 256 at k = 384, the same at k = 1024 and up).
 */
const KC: i32 = 384;
/** Rows of A kept in L2 while the micro-panels of B stream past. */
const MC: i32 = 96;
/** Columns of B packed at once. */
const NC: i32 = 2048;

/** Rows of the register tile (C is split between threads in multiples of it). */
export function gemmTileRows(): i32 {
  return MR;
}

/** Floats of packed A for an `m × k` operand (whole strips, zero-padded). */
export function packedASize(m: i32, k: i32): i32 {
  return ((m + MR - 1) / MR) * MR * k;
}

/** Floats of per-thread scratch `gemm` needs: one packed panel of B and one edge tile. */
export function gemmScratchSize(): i32 {
  return KC * NC + MR * NR;
}

/**
 * Packs op(A) (`m × k`) into strips: block `p0` (every KC rows of k) starts at `p0 · mPad`, strip `s` of it at
 * `p0 · mPad + s · MR · kc`, holding `kc` groups of MR consecutive rows' values. Rows past `m` are zero.
 * @param a op(A)'s storage: `[m, k]` with row stride `lda`, or `[k, m]` when `transA`.
 */
export function packA(a: usize, lda: i32, transA: i32, m: i32, k: i32, dst: usize): void {
  packAStrips(a, lda, transA, m, k, dst, 0, (m + MR - 1) / MR);
}

/** Strips a thread packs at a time in {@link packAShared}. */
const PACK_STRIPS: i32 = 16;

/**
 * {@link packA} shared between threads: each claims {@link PACK_STRIPS} strips at a time from `counter` (an i32 the
 * caller zeroes) and packs them for every KC block. Strips are disjoint, so the result is the same for any split.
 */
export function packAShared(counter: usize, a: usize, lda: i32, transA: i32, m: i32, k: i32, dst: usize): void {
  const strips = (m + MR - 1) / MR;
  while (true) {
    const s0 = atomic.add<i32>(counter, 1) * PACK_STRIPS;
    if (s0 >= strips) break;
    packAStrips(a, lda, transA, m, k, dst, s0, min(strips, s0 + PACK_STRIPS));
  }
}

/** {@link packA} for strips `[s0, s1)` (rows `[s0·MR, s1·MR)`) of every KC block. */
function packAStrips(a: usize, lda: i32, transA: i32, m: i32, k: i32, dst: usize, s0: i32, s1: i32): void {
  const mPad = ((m + MR - 1) / MR) * MR;
  for (let p0 = 0; p0 < k; p0 += KC) {
    const kc = min(KC, k - p0);
    for (let i0 = s0 * MR; i0 < s1 * MR; i0 += MR) {
      let d = dst + (<usize>(p0 * mPad + i0 * kc) << 2);
      const rows = min(MR, m - i0);
      if (transA) {
        for (let p = 0; p < kc; p++) {
          const src = a + (<usize>((p0 + p) * lda + i0) << 2);
          if (rows == MR) v128.store(d, v128.load(src));
          else {
            for (let ii = 0; ii < MR; ii++) store<f32>(d + (<usize>ii << 2), ii < rows ? load<f32>(src + (<usize>ii << 2)) : 0);
          }
          d += <usize>MR << 2;
        }
      } else if (rows == MR) {
        // Four steps of k at a time, through a 4×4 register transpose.
        const s0 = a + (<usize>(i0 * lda + p0) << 2), ld = <usize>lda << 2;
        let p = 0;
        for (; p + 4 <= kc; p += 4) {
          const o = <usize>p << 2;
          const a0 = v128.load(s0 + o), a1 = v128.load(s0 + ld + o), a2 = v128.load(s0 + 2 * ld + o);
          const a3 = v128.load(s0 + 3 * ld + o);
          const dp = d + (<usize>(p * MR) << 2); // steps p..p+3, MR = 4 floats (16 bytes) each
          transpose4(a0, a1, a2, a3, dp, dp + 16, dp + 32, dp + 48);
        }
        for (; p < kc; p++) {
          for (let ii = 0; ii < MR; ii++) {
            store<f32>(d + (<usize>(p * MR + ii) << 2), load<f32>(s0 + <usize>ii * ld + (<usize>p << 2)));
          }
        }
      } else {
        for (let ii = 0; ii < MR; ii++) {
          const src = a + (<usize>((i0 + ii) * lda + p0) << 2);
          const dd = d + (<usize>ii << 2);
          if (ii < rows) {
            for (let p = 0; p < kc; p++) store<f32>(dd + (<usize>(p * MR) << 2), load<f32>(src + (<usize>p << 2)));
          } else {
            for (let p = 0; p < kc; p++) store<f32>(dd + (<usize>(p * MR) << 2), 0);
          }
        }
      }
    }
  }
}

/**
 * Floats of op(B) (`k × n`) packed whole, for a product whose B is read by many row blocks: KC block `p0` starts at
 * `p0 · nPad` (`nPad` = n rounded up to NR) and holds the micro-panels of every column, as {@link packB} lays out one
 * panel. {@link packBColumns} fills it.
 */
export function packedBSize(n: i32, k: i32): i32 {
  return ((n + NR - 1) / NR) * NR * k;
}

/**
 * Columns `[j0, j0 + nb)` of op(B) = Wᵀ packed into {@link packedBSize}'s layout for `nPad` columns (a multiple of NR)
 * at `dst`, from `w`, rows `j0 ..` of W (`[·, k]`, row stride `ldw`): so that W can come into memory a block of rows at
 * a time. `j0` is a multiple of NR; the block ending at W's last row zero-pads the last micro-panel.
 */
export function packBColumns(w: usize, ldw: i32, nb: i32, k: i32, j0: i32, nPad: i32, dst: usize): void {
  for (let p0 = 0; p0 < k; p0 += KC) {
    const kc = min(KC, k - p0);
    packB(w, ldw, 1, nb, p0, kc, 0, nb, dst + (<usize>(p0 * nPad + j0 * kc) << 2));
  }
}

/**
 * `C[0:rows, 0:n] = op(A)[r0:r0+rows] · op(B)` with op(A) packed by {@link packA} (`m` rows) and op(B) by
 * {@link packBColumns}, into `c` (row stride `n`); `tile` is an MR×NR scratch tile. The sums are those of {@link gemm},
 * to the bit. `r0` is a multiple of MR.
 */
export function gemmRowsPacked(
  m: i32, n: i32, k: i32, pa: usize, pb: usize, r0: i32, rows: i32, c: usize, tile: usize,
): void {
  const mPad = ((m + MR - 1) / MR) * MR, nPad = ((n + NR - 1) / NR) * NR;
  if (k == 0) memory.fill(c, 0, <usize>(rows * n) << 2);
  for (let pc = 0; pc < k; pc += KC) {
    const kc = min(KC, k - pc);
    // The strips from row r0 on, as if they were the first of an (m − r0)-row operand.
    const paRows = pa + (<usize>(pc * mPad + r0 * kc) << 2);
    blockProduct(m - r0, n, kc, paRows, pb + (<usize>(pc * nPad) << 2), c, n, 0, rows, 0, n, tile, 0, pc > 0 ? 1 : 0);
  }
}

/** Packs columns `[j0, j0 + nc)` of op(B) over rows `[p0, p0 + kc)` into NR-wide micro-panels `[kc][NR]`. */
function packB(b: usize, ldb: i32, transB: i32, n: i32, p0: i32, kc: i32, j0: i32, nc: i32, dst: usize): void {
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = min(NR, n - j0 - jr);
    let d = dst + (<usize>(jr * kc) << 2);
    if (!transB) {
      let src = b + (<usize>(p0 * ldb + j0 + jr) << 2);
      if (cols == NR) {
        for (let p = 0; p < kc; p++) {
          v128.store(d, v128.load(src));
          v128.store(d, v128.load(src, 16), 16);
          d += <usize>NR << 2;
          src += <usize>ldb << 2;
        }
      } else {
        for (let p = 0; p < kc; p++) {
          for (let jj = 0; jj < NR; jj++) store<f32>(d + (<usize>jj << 2), jj < cols ? load<f32>(src + (<usize>jj << 2)) : 0);
          d += <usize>NR << 2;
          src += <usize>ldb << 2;
        }
      }
    } else {
      for (let jj = 0; jj < NR; jj++) {
        const dd = d + (<usize>jj << 2);
        if (jj < cols) {
          const src = b + (<usize>((j0 + jr + jj) * ldb + p0) << 2);
          for (let p = 0; p < kc; p++) store<f32>(dd + (<usize>(p * NR) << 2), load<f32>(src + (<usize>p << 2)));
        } else {
          for (let p = 0; p < kc; p++) store<f32>(dd + (<usize>(p * NR) << 2), 0);
        }
      }
    }
  }
}

/**
 * The MR×NR (4×8) micro-kernel: `C[0:MR, 0:NR] (+)= Apanel · Bpanel` over `kc` steps. Each step loads its four values
 * of A as one vector and broadcasts each by a lane shuffle. Exported so that the optimiser keeps it a function of its
 * own (the engine then tiers it up early, while the long-running caller is still in its baseline tier).
 */
export function kernel4x8(kc: i32, pa: usize, pb: usize, c: usize, ldc: i32, accumulate: i32): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let p = 0; p < kc; p++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    const av = v128.load(pa);
    let a = v128.shuffle<f32>(av, av, 0, 0, 0, 0);
    c00 = madd(a, b0, c00);
    c01 = madd(a, b1, c01);
    a = v128.shuffle<f32>(av, av, 1, 1, 1, 1);
    c10 = madd(a, b0, c10);
    c11 = madd(a, b1, c11);
    a = v128.shuffle<f32>(av, av, 2, 2, 2, 2);
    c20 = madd(a, b0, c20);
    c21 = madd(a, b1, c21);
    a = v128.shuffle<f32>(av, av, 3, 3, 3, 3);
    c30 = madd(a, b0, c30);
    c31 = madd(a, b1, c31);
    pa += 16;
    pb += 32;
  }
  const ld = <usize>ldc << 2;
  if (accumulate) {
    c00 = f32x4.add(c00, v128.load(c + 0 * ld, 0));
    c01 = f32x4.add(c01, v128.load(c + 0 * ld, 16));
    c10 = f32x4.add(c10, v128.load(c + 1 * ld, 0));
    c11 = f32x4.add(c11, v128.load(c + 1 * ld, 16));
    c20 = f32x4.add(c20, v128.load(c + 2 * ld, 0));
    c21 = f32x4.add(c21, v128.load(c + 2 * ld, 16));
    c30 = f32x4.add(c30, v128.load(c + 3 * ld, 0));
    c31 = f32x4.add(c31, v128.load(c + 3 * ld, 16));
  }
  v128.store(c + 0 * ld, c00, 0);
  v128.store(c + 0 * ld, c01, 16);
  v128.store(c + 1 * ld, c10, 0);
  v128.store(c + 1 * ld, c11, 16);
  v128.store(c + 2 * ld, c20, 0);
  v128.store(c + 2 * ld, c21, 16);
  v128.store(c + 3 * ld, c30, 0);
  v128.store(c + 3 * ld, c31, 16);
}

/**
 * `C[m0:m1, n0:n1] = op(A) · op(B)` for one thread's share of C (`[m, n]`, row stride `ldc`).
 * @param pa op(A) packed by {@link packA}.
 * @param m0 first row, a multiple of MR; `m1` the end row (a multiple of MR or `m`).
 * @param n0 first column, a multiple of NR.
 * @param scratch this thread's {@link gemmScratchSize} floats.
 * @param upper nonzero: only tiles that reach the upper triangle (`col ≥ row` somewhere) are computed (Gram).
 * @param beta1 nonzero: `C += op(A)·op(B)` instead of `C =`.
 */
export function gemm(
  m: i32, n: i32, k: i32, pa: usize, b: usize, ldb: i32, transB: i32, c: usize, ldc: i32,
  m0: i32, m1: i32, n0: i32, n1: i32, scratch: usize, upper: i32, beta1: i32,
): void {
  const mPad = ((m + MR - 1) / MR) * MR;
  const tile = scratch + (<usize>(KC * NC) << 2);
  for (let jc = n0; jc < n1; jc += NC) {
    const nc = min(NC, n1 - jc);
    for (let pc = 0; pc < k; pc += KC) {
      const kc = min(KC, k - pc);
      packB(b, ldb, transB, n, pc, kc, jc, nc, scratch);
      const paBlock = pa + (<usize>(pc * mPad) << 2);
      blockProduct(m, n, kc, paBlock, scratch, c, ldc, m0, m1, jc, nc, tile, upper, pc > 0 || beta1 != 0 ? 1 : 0);
    }
  }
}

/**
 * One KC-deep block of the product: `C[m0:m1, jc:jc+nc] (+)= Ablock · Bpanel`, where `paBlock` is the block's packed
 * strips of op(A) and `pbPanel` the packed micro-panels of columns `[jc, jc + nc)` (`kc · NR` floats each). The
 * micro-panel stays in L1 while the strips of MC rows stream past from L2.
 * @param tile a scratch MR×NR tile for the edges.
 * @param acc nonzero: add to C (a later KC block, or `beta1`).
 */
function blockProduct(
  m: i32, n: i32, kc: i32, paBlock: usize, pbPanel: usize, c: usize, ldc: i32,
  m0: i32, m1: i32, jc: i32, nc: i32, tile: usize, upper: i32, acc: i32,
): void {
  for (let ic = m0; ic < m1; ic += MC) {
    const icEnd = min(ic + MC, m1);
    if (upper && ic >= jc + nc) break;
    for (let jr = 0; jr < nc; jr += NR) {
      const j = jc + jr;
      const cols = min(NR, n - j);
      const pb = pbPanel + (<usize>(jr * kc) << 2);
      for (let ir = ic; ir < icEnd; ir += MR) {
        if (upper && ir >= j + NR) break;
        const rows = min(MR, m - ir);
        const pai = paBlock + (<usize>(ir * kc) << 2);
        const cij = c + (<usize>(ir * ldc + j) << 2);
        if (rows == MR && cols == NR) {
          kernel4x8(kc, pai, pb, cij, ldc, acc);
        } else {
          // Edge tile: through a full-size scratch tile, copying only the valid part.
          for (let ii = 0; ii < MR; ii++) {
            for (let jj = 0; jj < NR; jj++) {
              store<f32>(tile + (<usize>(ii * NR + jj) << 2), acc && ii < rows && jj < cols ? load<f32>(cij + (<usize>(ii * ldc + jj) << 2)) : 0);
            }
          }
          kernel4x8(kc, pai, pb, tile, NR, 1);
          for (let ii = 0; ii < rows; ii++) {
            for (let jj = 0; jj < cols; jj++) {
              store<f32>(cij + (<usize>(ii * ldc + jj) << 2), load<f32>(tile + (<usize>(ii * NR + jj) << 2)));
            }
          }
        }
      }
    }
  }
}

/**
 * Threads share the tiles of C dynamically: each takes the next `rb × cb` block from an atomic counter at `counter`
 * (an i32 the caller zeroes) and computes it with {@link gemm}, so that a thread slowed down by other work just takes
 * fewer blocks. Block `t` covers row block `t % rowBlocks` and column block `t / rowBlocks` from the right (the
 * largest upper-triangular blocks first); the arithmetic of each
 * element is the same whichever thread computes it. Blocks wholly below the diagonal are skipped when `upper`.
 * @param rb rows per block, a multiple of MR; `cb` columns per block, a multiple of NR. Other arguments as `gemm`.
 */
export function gemmShared(
  counter: usize, rb: i32, cb: i32,
  m: i32, n: i32, k: i32, pa: usize, b: usize, ldb: i32, transB: i32, c: usize, ldc: i32, scratch: usize, upper: i32,
  beta1: i32,
): void {
  const rowBlocks = (m + rb - 1) / rb, colBlocks = (n + cb - 1) / cb;
  const tasks = rowBlocks * colBlocks;
  while (true) {
    const t = atomic.add<i32>(counter, 1);
    if (t >= tasks) break;
    const r0 = (t % rowBlocks) * rb, c0 = (colBlocks - 1 - t / rowBlocks) * cb; // right (heaviest) first
    const c1 = min(n, c0 + cb);
    if (upper && r0 >= c1) continue;
    gemm(m, n, k, pa, b, ldb, transB, c, ldc, r0, min(m, r0 + rb), c0, c1, scratch, upper, beta1);
  }
}

/** `C[m, n] (+)= op(A)·op(B)` on one thread: A packed into `packed`, `gs` the gemm scratch. */
export function gemmSingle(
  a: usize, lda: i32, transA: i32, b: usize, ldb: i32, transB: i32, c: usize, ldc: i32, m: i32, n: i32, k: i32,
  accumulate: i32, packed: usize, gs: usize,
): void {
  packA(a, lda, transA, m, k, packed);
  gemm(m, n, k, packed, b, ldb, transB, c, ldc, 0, m, 0, n, gs, 0, accumulate);
}
