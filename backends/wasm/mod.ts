/**
 * The WASM-SIMD backend: kernels written in AssemblyScript (`assembly/`), compiled into a plain-SIMD and a
 * relaxed-SIMD module (`generated/`, rebuilt by `build.ts`), the relaxed one chosen where the engine validates it.
 * Large kernels run on both the calling thread and Web Workers over shared memory where the runtime allows, on the
 * calling thread alone otherwise, with bit-identical results either way.
 *
 * Kernels without a native implementation yet delegate to the TS reference functions in `core/`, each marked below.
 *
 * @example
 * ```ts ignore
 * import { createWasmBackend } from "./mod.ts";
 * import { fromRows } from "../../core/tensor.ts";
 * const wasm = await createWasmBackend();
 * const c = await wasm.matmul(fromRows([[1, 2]]), fromRows([[3], [4]]));
 * console.assert(c.data[0] === 11);
 * wasm.dispose();
 * ```
 * @module
 */

import type {
  AttentionShape,
  Backend,
  DecoderLayerOptions,
  DecoderLayerWeights,
  GptqKernelArgs,
  GptqKernelResult,
  KmeansOptions,
  KmeansResult,
  MatmulOptions,
  RopeOptions,
  TriangularSolveOptions,
} from "../../core/backend.ts";
import { NonFiniteError, NotPositiveDefiniteError, OptionError, ShapeError } from "../../core/errors.ts";
import { checkGrid, fitGrid, groupCount } from "../../core/grids/fit.ts";
import {
  checkFactor,
  checkPermutation,
  fitSpan,
  gptqBlockInverse,
  gptqQuantize as referenceGptq,
} from "../../core/quant/gptq_kernel.ts";
import type { GridParams, GridSpec } from "../../core/grids/types.ts";
import { fitUniformRow, uniformMaxq } from "../../core/grids/uniform.ts";
import { asPivotOfReversed, squareSize } from "../../core/linalg/cholesky.ts";
import { eigh } from "../../core/linalg/eigh.ts";
import { type AssignFn, kmeans } from "../../core/linalg/kmeans.ts";
import { svd } from "../../core/linalg/svd.ts";
import { rmsNorm, rmsNormBackward } from "../../core/nn/rms_norm.ts";
import { rope, ropeLayout, ropeTables } from "../../core/nn/rope.ts";
import { checkDecoderLayer, layerRopeOptions } from "../../core/nn/decoder_layer.ts";
import { checkLinearCrossEntropy } from "../../core/nn/cross_entropy.ts";
import { checkSwigluLinear } from "../../core/nn/swiglu.ts";
import {
  assertShape,
  type FloatArray,
  invertPermutation,
  type Matrix,
  matrix,
  matrix64,
  zerosLike,
} from "../../core/tensor.ts";
import { type Call, WasmRuntime } from "./runtime.ts";

/** Where a triangular solve's result stays zero (see `zeroStructure` in {@link createWasmBackend}). */
interface ZeroStructure {
  readonly hi: Int32Array;
  readonly lo: Int32Array;
}

/** Options of {@link createWasmBackend}. */
export interface WasmBackendOptions {
  /**
   * Threads for large kernels, the calling one included; default `navigator.hardwareConcurrency`. Where shared
   * memory or Web Workers are missing, 1.
   */
  readonly threads?: number;
  /** true: require the relaxed-SIMD build; false: plain SIMD; default: relaxed where the engine supports it. */
  readonly relaxed?: boolean;
  /**
   * Kernels with fewer floating-point operations than this run on one thread (default 2²³, about what a worker round
   * trip costs). Tests set 0 to exercise the threaded paths on small inputs.
   */
  readonly parallelThreshold?: number;
}

/** The WASM backend, with what it chose at start-up. */
export interface WasmBackend extends Backend {
  readonly name: "wasm";
  /** Threads in use (1 where threads are unsupported). */
  readonly threads: number;
  /** Whether the relaxed-SIMD build (fused multiply-add) runs. */
  readonly relaxed: boolean;
  /** Terminates the workers; the backend is unusable afterwards. */
  dispose(): void;
}

/** Rows of C each thread's share of the Gram fold is a multiple of. */
const SPLIT_ALIGN = 16;
/** Row blocks of C shared between threads are multiples of this: whole register tiles (4 rows) and L2 blocks (96). */
const ROW_BLOCK = 96;
/** Rows of a classifier copied into WASM memory at a time by `linearCrossEntropy` (a multiple of the tile's 8 columns). */
const CLASSIFIER_PACK_ROWS = 1024;

/** Strips of A one thread claims at a time in `packAShared` (`PACK_STRIPS` in `assembly/gemm.ts`). */
const PACK_STRIPS = 16;

function roundUp(v: number, to: number): number {
  return Math.ceil(v / to) * to;
}

/** Boundaries `0 = b0 < b1 < ... = n` (multiples of `align` except the last) of `parts` shares of equal work. */
function splitEven(n: number, parts: number, align: number): number[] {
  const bounds = [0];
  for (let t = 1; t < parts; t++) {
    bounds.push(Math.min(n, Math.max(bounds[t - 1], Math.round((n * t) / parts / align) * align)));
  }
  bounds.push(n);
  return bounds;
}

/** Runs a synchronous reference kernel as an async kernel; a throw becomes a rejection. */
function run<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** One group's grid parameters, as the reference GPTQ kernel fits them (a strided view of `values`). */
function fitGroup(
  grid: GridSpec,
  values: Float32Array,
  offset: number,
  length: number,
  stride: number,
): { scale: number; zero: number } {
  if (grid.kind === "uniform") {
    return fitUniformRow(values, grid.bits, grid.symmetric ?? false, grid.mse ?? false, { offset, length, stride });
  }
  let absmax = 0;
  for (let k = 0, i = offset; k < length; k++, i += stride) absmax = Math.max(absmax, Math.abs(values[i]));
  return { scale: absmax === 0 ? 1 : absmax, zero: 0 };
}

/** The reference's shape checks of the attention kernels. */
function checkAttention(
  what: string,
  shape: AttentionShape,
  q: Matrix,
  k: Matrix,
  v: Matrix,
): { qCols: number; kvCols: number } {
  const { batch, seqLen, heads, kvHeads, headDim } = shape;
  for (const [name, value] of Object.entries(shape)) {
    if (!Number.isInteger(value) || value <= 0) throw new OptionError(`${what}: ${name} must be a positive integer`);
  }
  if (heads % kvHeads !== 0) throw new OptionError(`${what}: ${heads} heads are not a multiple of ${kvHeads} kv heads`);
  const t = batch * seqLen, qCols = heads * headDim, kvCols = kvHeads * headDim;
  const expect = (m: Matrix, cols: number, name: string) => {
    if (m.shape[0] !== t || m.shape[1] !== cols || m.data.length !== t * cols) {
      throw new ShapeError(`${what}: ${name} is ${m.shape[0]}×${m.shape[1]}, expected ${t}×${cols}`);
    }
  };
  expect(q, qCols, "q"), expect(k, kvCols, "k"), expect(v, kvCols, "v");
  return { qCols, kvCols };
}

/** The reference's same-shape check of the SwiGLU kernels. */
function checkSame(what: string, a: Matrix, b: Matrix, names: string): void {
  if (a.shape[0] !== b.shape[0] || a.shape[1] !== b.shape[1] || a.data.length !== b.data.length) {
    throw new ShapeError(`${what}: ${names} differ in shape, ${a.shape.join("×")} vs ${b.shape.join("×")}`);
  }
}

/**
 * Starts the WASM backend: compiles the module, creates its memory and (lazily) its workers.
 * @throws {BackendError} where WebAssembly SIMD is unsupported, or `relaxed: true` and relaxed SIMD is.
 */
export async function createWasmBackend(options: WasmBackendOptions = {}): Promise<WasmBackend> {
  const hw = typeof navigator !== "undefined" ? navigator.hardwareConcurrency : undefined;
  const threads = Math.max(1, Math.min(64, Math.floor(options.threads ?? hw ?? 1)));
  const rt = await WasmRuntime.create(threads, options.relaxed, options.parallelThreshold ?? 2 ** 23);
  const x = rt.exports;
  const scratchBytes = x.gemmScratchSize() * 4;

  /**
   * Blocks of C for the shared-counter gemms: about 4 column blocks per thread (16..256 wide), then row blocks until
   * there are 8 (16 for a triangle) blocks per thread, so that the last blocks to finish are small.
   */
  function gemmBlocks(m: number, n: number, threads: number, triangle: boolean): { rb: number; cb: number } {
    const cb = Math.min(256, Math.max(16, roundUp(Math.ceil(n / (4 * threads)), 16)));
    const rowBlocks = Math.ceil(((triangle ? 16 : 8) * threads) / Math.ceil(n / cb));
    return { rb: Math.max(ROW_BLOCK, roundUp(Math.ceil(m / rowBlocks), ROW_BLOCK)), cb };
  }

  /** Runs the task loop `call(counter)` on `threads` threads, which claim tasks from one zeroed counter. */
  function tasks(threads: number, call: (counter: number) => Call): Promise<void> {
    const counter = rt.alloc(4);
    rt.i32()[counter >> 2] = 0;
    return rt.parallel(Array.from({ length: threads }, () => [call(counter)]));
  }

  /**
   * `C = op(A)·op(B)` into `[m, n]` at byte offset `c` (row stride n); with `upper`, only the tiles reaching the upper
   * triangle. One thread runs {@link gemm} over all of C; several share blocks of C through an atomic counter.
   */
  function gemmInto(
    a: Float32Array | number,
    transA: boolean,
    b: Float32Array | number,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    c: number,
    upper = false,
    beta1 = false,
  ): Promise<void> {
    return gemmsInto(a, transA, m, k, [{ b, transB, n, c }], upper, beta1);
  }

  /** {@link gemmInto} for several products with the same `op(A)` (`[m, k]`), which is packed once. */
  async function gemmsInto(
    a: Float32Array | number,
    transA: boolean,
    m: number,
    k: number,
    products: readonly { b: Float32Array | number; transB: boolean; n: number; c: number }[],
    upper = false,
    beta1 = false,
  ): Promise<void> {
    if (k === 0) {
      // An empty sum: C = 0 (the kernels would leave C as the arena had it), or unchanged with beta1.
      if (!beta1) { for (const { n, c } of products) rt.f32().fill(0, c >> 2, (c >> 2) + m * n); }
      return;
    }
    const mark = rt.mark();
    try {
      const up = upper ? 1 : 0, b1 = beta1 ? 1 : 0;
      const widest = Math.max(...products.map((p) => p.n));
      const threads = rt.threadsFor(upper ? m * widest * k : 2 * m * widest * k);
      const packed = await packA(typeof a === "number" ? a : rt.put(a), transA, m, k, threads);
      const counter = rt.alloc(4);
      const scratch = Array.from({ length: threads }, () => rt.alloc(scratchBytes));
      for (const { b, transB, n, c } of products) {
        const pb = typeof b === "number" ? b : rt.put(b);
        const ldb = transB ? k : n, tb = transB ? 1 : 0;
        if (threads === 1) {
          x.gemm(m, n, k, packed, pb, ldb, tb, c, n, 0, m, 0, n, scratch[0], up, b1);
          continue;
        }
        const { rb, cb } = gemmBlocks(m, n, threads, upper);
        rt.i32()[counter >> 2] = 0;
        await rt.parallel(
          scratch.map((s) => [["gemmShared", counter, rb, cb, m, n, k, packed, pb, ldb, tb, c, n, s, up, b1]]),
        );
      }
    } finally {
      rt.release(mark);
    }
  }

  /** RMSNorm of `n` rows of `d` floats at byte offset `px` (gains at `pw`) into a new block; returns its offset. */
  async function rmsNormAt(px: number, pw: number, eps: number, n: number, d: number): Promise<number> {
    const py = rt.alloc(n * d * 4);
    await byRanges(n, n * d * 8, 1, (r0, r1) => ["rmsNormRows", px, pw, eps, d, py, r0, r1]);
    return py;
  }

  /** RoPE's float64 cos/sin tables for `n` rows in WASM memory (shared by a layer's queries and keys). */
  function ropeTablesAt(n: number, options: RopeOptions): { pc: number; ps: number } {
    const { cos, sin } = ropeTables(Math.min(options.seqLen, n), options.headDim, options.theta);
    return { pc: rt.put(cos), ps: rt.put(sin) };
  }

  /** RoPE, in place, of `n` rows of `cols` floats at byte offset `px`, with tables from {@link ropeTablesAt}. */
  async function ropeAt(
    px: number,
    n: number,
    cols: number,
    options: RopeOptions,
    { pc, ps }: { pc: number; ps: number },
  ): Promise<void> {
    const { seqLen, half, stride, partner, sign } = ropeLayout(options, cols);
    await byRanges(n, n * cols * 8, 1, (t0, t1) => {
      return ["ropeRows", px, cols, half, pc, ps, seqLen, stride, partner, sign, t0, t1];
    });
  }

  /** Causal attention of q, k, v at byte offsets `pq`, `pk`, `pv` (shapes checked) into a new block; its offset. */
  async function attentionAt(pq: number, pk: number, pv: number, shape: AttentionShape): Promise<number> {
    const { batch, seqLen: S, heads, kvHeads, headDim: hd } = shape;
    const po = rt.alloc(batch * S * heads * hd * 4);
    const threads = rt.threadsFor(2 * batch * heads * S * S * hd, batch * heads);
    const scale = 1 / Math.sqrt(hd), scratch = () => rt.alloc(x.attentionForwardScratchSize(S, hd) * 4);
    await tasks(
      threads,
      (t) => ["attentionForward", pq, pk, pv, po, batch, S, heads, kvHeads, hd, scale, t, scratch()],
    );
    return po;
  }

  /** `a + b` over `n` floats at byte offsets `pa`, `pb`, into `py` (which may be either). */
  function addAt(pa: number, pb: number, py: number, n: number): Promise<void> {
    return byRanges(n, n * 4, 4, (lo, hi) => ["addRange", pa, pb, py, lo, hi]);
  }

  /**
   * op(A) (`m × k` at byte offset `pa`, `[k, m]` when `transA`) packed for the gemm kernels; returns its offset. Every
   * thread packs (strips claimed from a counter), or this one alone when the strips are one claim.
   */
  async function packA(pa: number, transA: boolean, m: number, k: number, threads: number): Promise<number> {
    const packed = rt.alloc(x.packedASize(m, k) * 4);
    const lda = transA ? m : k, ta = transA ? 1 : 0;
    if (threads === 1 || Math.ceil(m / x.gemmTileRows()) <= PACK_STRIPS) x.packA(pa, lda, ta, m, k, packed);
    else {
      const counter = rt.alloc(4);
      rt.i32()[counter >> 2] = 0;
      await rt.parallel(Array.from({ length: threads }, () => [["packAShared", counter, pa, lda, ta, m, k, packed]]));
    }
    return packed;
  }

  /**
   * Runs `call(lo, hi)` for ranges of `[0, n)` (multiples of `align`), one per thread worth using for `flops` of work:
   * the split of every kernel whose output elements are independent.
   */
  function byRanges(n: number, flops: number, align: number, call: (lo: number, hi: number) => Call): Promise<void> {
    const bounds = splitEven(n, rt.threadsFor(flops, Math.ceil(n / align)), align);
    const parts: Call[][] = [];
    for (let t = 0; t + 1 < bounds.length; t++) {
      if (bounds[t] < bounds[t + 1]) parts.push([call(bounds[t], bounds[t + 1])]);
    }
    return rt.parallel(parts);
  }

  /** `silu(gate) ⊙ up` of `n` values at byte offsets `pg`, `pu`, threads taking ranges; returns the result's offset. */
  async function swigluAt(pg: number, pu: number, n: number): Promise<number> {
    const py = rt.alloc(n * 4);
    await byRanges(n, n * 40, 1024, (lo, hi) => ["swigluRange", pg, pu, py, lo, hi]);
    return py;
  }

  /**
   * GPTQ's column loop (`core/quant/gptq_kernel.ts` semantics): W transposed into processing order (through the
   * permutation), then per block its start `W + C·U_B` (a gemm), grid fits for the groups that start in it (min-max
   * natively, MSE and tables by the reference functions, on the block start in WASM memory), the in-block loop natively
   * (rows split between threads), and the lazy update `C += (W − Q)·R` of the later columns as an accumulating gemm;
   * the results transposed back.
   */
  function gptqQuantizeWasm(args: GptqKernelArgs): Promise<GptqKernelResult> {
    const { w, r, grid, blockSize, groups, permutation } = args;
    const [rows, cols] = w.shape;
    try {
      assertShape(w, -1, -1, "gptq weights");
      checkFactor(r, cols);
      if (!Number.isInteger(blockSize) || blockSize < 1) throw new OptionError(`gptq: block size ${blockSize}`);
      checkGrid(grid);
      if (permutation) checkPermutation(permutation, cols);
      // Rounding coupled across rows (a row factor) runs the TS reference loop: a column's rows depend on each other.
      if (args.rowFactor) return Promise.resolve(referenceGptq(args));
    } catch (e) {
      return Promise.reject(e);
    }
    const dynamic = groups.kind === "dynamic";
    const groupSize = dynamic ? groups.groupSize : 0;
    if (dynamic && groupSize === 0) {
      return Promise.reject(
        new OptionError("gptq: dynamic groups need a group size ≥ 1 (fit per-row grids up front as fixed params)"),
      );
    }
    const nGroups = dynamic ? groupCount(cols, groupSize) : groups.params.groups;
    const params: GridParams = dynamic
      ? { rows, groups: nGroups, scale: new Float32Array(rows * nGroups), zero: new Float32Array(rows * nGroups) }
      : groups.params;
    const groupOf = new Int32Array(cols);
    if (dynamic) {
      for (let j = 0; j < cols; j++) groupOf[j] = Math.floor(j / groupSize);
    } else {
      if (params.rows !== rows || groups.groupOfColumn.length !== cols) {
        return Promise.reject(
          new ShapeError(
            `gptq: fixed grid parameters for ${params.rows} rows and ${groups.groupOfColumn.length} columns`,
          ),
        );
      }
      for (let j = 0; j < cols; j++) {
        const g = groups.groupOfColumn[j];
        if (g < 0 || g >= params.groups) {
          return Promise.reject(new OptionError(`gptq: column ${j} in group ${g} of ${params.groups}`));
        }
        groupOf[j] = g;
      }
    }
    return rt.exclusive(async () => {
      if (rows === 0 || cols === 0) {
        return { dequantized: matrix(rows, cols), codes: new Uint8Array(rows * cols), params, errorEnergy: 0 };
      }
      // Column c of W is processed at position pos[c]: the transpositions in and out apply the permutation.
      const pos = permutation ? rt.put(invertPermutation(permutation)) : 0;
      /** Runs a transposition kernel `(src, rows, cols, pos, dst, c0, c1)` with threads taking column ranges. */
      const byColumns = (name: string, src: number, dst: number) =>
        byRanges(cols, rows * cols * 8, 8, (c0, c1) => [name, src, rows, cols, pos, dst, c0, c1]);
      const pw = rt.put(w.data);
      const wt = rt.alloc(rows * cols * 4);
      await byColumns("scatterColumns32", pw, wt);
      // The column loop works in float32, as the reference kernel: a float64 R is rounded first.
      const pr = rt.put(r.data instanceof Float32Array ? r.data : new Float32Array(r.data));
      const qt = rt.alloc(rows * cols * 4), codesT = rt.alloc(rows * cols);
      const bs = Math.min(blockSize, cols);
      // C = (W − Q)·R of the finished blocks ([cols, rows], in W's place, which is not read after its transposition;
      // the first block's update writes it, the others add), a
      // block's start S and its U_B (over the block and the rest of the groups starting in it), and its scaled errors
      // E (then W − Q, for the update).
      const span = (i1: number) => dynamic ? fitSpan(i1, Math.min(i1 + bs, cols), cols, groupSize) : bs;
      let maxSpan = 0;
      for (let i1 = 0; i1 < cols; i1 += bs) maxSpan = Math.max(maxSpan, span(i1));
      const ct = pw, st = rt.alloc(maxSpan * rows * 4), pub = rt.alloc(maxSpan * maxSpan * 4);
      const e = rt.alloc(bs * rows * 4);
      const nf = rt.alloc(bs * cols * 4);
      const pScale = rt.put(params.scale), pZero = rt.put(params.zero);
      const pGroup = rt.put(groupOf);
      const isTable = grid.kind === "table";
      // The plain min-max fit runs natively; MSE search and tables through the reference functions.
      const nativeFit = grid.kind === "uniform" && !grid.mse;
      const levels = isTable ? rt.put(Float32Array.from(grid.levels)) : 0;
      const nlevels = isTable ? grid.levels.length : 0;
      const maxq = grid.kind === "uniform" ? uniformMaxq(grid.bits) : 0;
      const rowThreads = rt.threadsFor(rows * bs * bs * 3, Math.ceil(rows / 32));
      const work = Array.from({ length: rowThreads }, () => rt.alloc(x.gptqScratchSize(bs) * 4));
      const counter = rt.alloc(4);
      let energy = 0;
      for (let i1 = 0; i1 < cols; i1 += bs) {
        const i2 = Math.min(i1 + bs, cols), count = i2 - i1;
        // S = W_B + C_B·U_B, as Sᵀ = W_Bᵀ + U_Bᵀ·C_Bᵀ in the transposed layout.
        const ext = Math.min(span(i1), cols - i1);
        const ldu = i1 === 0 ? count : ext; // the first block starts from W: U_B on the block only
        rt.f32().set(gptqBlockInverse(r, i1, ldu), pub >> 2);
        rt.u8().copyWithin(st, wt + i1 * rows * 4, wt + (i1 + ext) * rows * 4);
        if (i1 > 0) await gemmInto(pub, true, ct + i1 * rows * 4, false, ext, rows, ext, st, false, true);
        if (dynamic) {
          // Groups starting in this block, fitted on its start S (the reference's choice).
          for (let j = Math.ceil(i1 / groupSize) * groupSize; j < i2; j += groupSize) {
            const g = j / groupSize, length = Math.min(groupSize, cols - j);
            if (nativeFit) {
              x.fitUniformGroup(st, rows, j - i1, length, grid.symmetric ? 1 : 0, maxq, pScale, pZero, nGroups, g);
              continue;
            }
            const f32 = rt.f32(), base = (st >> 2) + (j - i1) * rows;
            for (let r = 0; r < rows; r++) {
              const p = fitGroup(grid, f32, base + r, length, rows);
              f32[(pScale >> 2) + r * nGroups + g] = p.scale;
              f32[(pZero >> 2) + r * nGroups + g] = p.zero;
            }
          }
        }
        rt.i32()[counter >> 2] = 0;
        const parts: Call[][] = [];
        for (let t = 0; t < rowThreads; t++) {
          parts.push([[
            "gptqBlock",
            st,
            rows,
            i1,
            i2,
            pub,
            ldu,
            e,
            qt,
            codesT,
            pScale,
            pZero,
            nGroups,
            pGroup,
            isTable ? 1 : 0,
            maxq,
            levels,
            nlevels,
            counter,
            work[t],
          ]]);
        }
        await rt.parallel(parts);
        // Σ e² in the reference's order (columns, then rows), on one thread so that it does not depend on the split.
        energy = x.sumSquares32(e, count * rows, energy);
        if (i2 < cols) {
          // C[i2:, :] += R[i1:i2, i2:]ᵀ · (W − Q)[i1:i2]  (written, not added, by the first block)
          x.gptqFactorRows(pr, cols, i1, i2, nf);
          x.difference32(wt + i1 * rows * 4, qt + i1 * rows * 4, e, count * rows);
          await gemmInto(nf, true, e, false, cols - i2, rows, count, ct + i2 * rows * 4, false, i1 > 0);
        }
      }
      const dq = rt.alloc(rows * cols * 4), codes = rt.alloc(rows * cols);
      await byColumns("gatherColumns32", qt, dq);
      await byColumns("gatherColumns8", codesT, codes);
      if (dynamic) {
        params.scale.set(rt.f32().subarray(pScale >> 2, (pScale >> 2) + rows * nGroups));
        params.zero.set(rt.f32().subarray(pZero >> 2, (pZero >> 2) + rows * nGroups));
      }
      return {
        dequantized: matrix(rows, cols, rt.takeF32(dq, rows * cols)),
        codes: rt.u8().slice(codes, codes + rows * cols),
        params,
        errorEnergy: energy,
      };
    });
  }

  /** Rows of the diagonal blocks of the blocked Cholesky and triangular solves. */
  const NB = 128;
  /** Rows of the float32 path's diagonal blocks: a multiple of the gemm tile's 4 rows. */
  const NB32 = 120;
  const dScratchBytes = x.dgemmScratchSize() * 8;

  /** `C[m, n] −= A·Bᵀ` on the lower tiles, float64, A and B rows `k` long with row stride `ld` (Cholesky update). */
  function dsyrkLower(a: number, m: number, k: number, ld: number, c: number): Promise<void> {
    const mark = rt.mark();
    const packed = rt.alloc(x.dpackedASize(m, k) * 8);
    x.dpackA(a, ld, 0, m, k, packed);
    const threads = rt.threadsFor(m * m * k, Math.ceil(m / SPLIT_ALIGN));
    if (threads === 1) {
      x.dgemm(m, m, k, packed, a, ld, 1, c, ld, 0, m, 0, m, rt.alloc(dScratchBytes), 1, -1);
      rt.release(mark);
      return Promise.resolve();
    }
    const { rb, cb } = gemmBlocks(m, m, threads, true);
    return tasks(
      threads,
      (t) => ["dgemmShared", t, rb, cb, m, m, k, packed, a, ld, 1, c, ld, rt.alloc(dScratchBytes), 1, -1],
    )
      .finally(() => rt.release(mark));
  }

  /**
   * `C[m, m] −= Aᵀ·A` on the upper tiles, float32, A `k` rows of `m` with row stride `ld`, C with row stride `ld`
   * (the float32 Cholesky's trailing update), as `C += (−A)ᵀ·A`: A packed once and negated.
   */
  async function ssyrkUpper(a: number, m: number, k: number, ld: number, c: number): Promise<void> {
    const mark = rt.mark();
    const size = x.packedASize(m, k), packed = rt.alloc(size * 4);
    const threads = rt.threadsFor(m * m * k, Math.ceil(m / SPLIT_ALIGN));
    await tasks(threads, (t) => ["packAShared", t, a, ld, 1, m, k, packed]);
    x.negate32(packed, size);
    const { rb, cb } = gemmBlocks(m, m, threads, true);
    await tasks(
      threads,
      (t) => ["gemmShared", t, rb, cb, m, m, k, packed, a, ld, 0, c, ld, rt.alloc(scratchBytes), 1, 1],
    );
    rt.release(mark);
  }

  /** Blocked Cholesky in float64 of the `n × n` matrix at `pa`, in place; throws at the first bad pivot. */
  async function choleskyAt(pa: number, n: number): Promise<void> {
    const inv = rt.alloc(n * 8), bad = rt.alloc(8);
    for (let k0 = 0; k0 < n; k0 += NB) {
      const k1 = Math.min(k0 + NB, n);
      const r = x.cholDiag(pa, n, k0, k1, inv, bad);
      if (r >= 0) throw new NotPositiveDefiniteError(n, r, rt.f64()[bad >> 3]);
      if (k1 === n) break;
      const threads = rt.threadsFor((n - k1) * NB * NB, Math.ceil((n - k1) / 16));
      await tasks(threads, (t) => ["cholPanel", pa, n, k0, k1, inv, t]);
      await dsyrkLower(pa + (k1 * n + k0) * 8, n - k1, k1 - k0, n, pa + (k1 * n + k1) * 8);
    }
    x.zeroUpper64(pa, n);
  }

  /**
   * `L̃` with `J·H·J = L̃·L̃ᵀ` in float64, in WASM memory (`J·H·J` is `H`'s storage reversed); returns its offset.
   * @throws {NotPositiveDefiniteError} at the first bad pivot, given as an index of `H`.
   */
  async function reversedFactorAt64(h: FloatArray, n: number): Promise<number> {
    const pa = put64(h);
    x.reverse64(pa, n * n);
    try {
      await choleskyAt(pa, n);
    } catch (err) {
      throw asPivotOfReversed(err, n);
    }
    return pa;
  }

  /**
   * The float32 upper Cholesky factor `R̃` (`A = R̃ᵀR̃`) of the `n × n` matrix at `pa`, in place in its upper triangle
   * (the strict lower triangle is left undefined); panels and trailing updates run on the float32 gemm. With `px`, the
   * inverses of the diagonal blocks (the panels' `R̃_kk⁻¹`) are also stored as the diagonal blocks of `px`. The matrix
   * at `pa` is `J·H·J` (`H`'s storage reversed).
   * @throws {NotPositiveDefiniteError} at the first bad pivot, given as an index of `H`.
   */
  async function factorUpper32(pa: number, n: number, px?: number): Promise<void> {
    const at = (i: number, j: number) => pa + (i * n + j) * 4;
    const bad = rt.alloc(8), xkk = rt.alloc(NB32 * NB32 * 4);
    const perThread = (floats: number) => () => rt.alloc(floats * 4);
    const panelCols = x.cholPanelCols();
    const tmp = perThread(NB32 * Math.max(NB32, panelCols)),
      packed = perThread(x.packedASize(NB32, n)),
      gs = perThread(scratchBytes / 4);
    for (let k0 = 0; k0 < n; k0 += NB32) {
      const k1 = Math.min(k0 + NB32, n), nb = k1 - k0;
      const r = x.cholDiagUpper32(pa, n, k0, k1, bad);
      if (r >= 0) throw new NotPositiveDefiniteError(n, n - 1 - r, rt.f64()[bad >> 3]);
      if (k1 === n) {
        if (px !== undefined) x.invUpperBlock32(at(k0, k0), n, px + (k0 * n + k0) * 4, n, nb);
        break;
      }
      const mark = rt.mark();
      const m = n - k1;
      // The row panel R[k0:k1, k1:n] = R_kk⁻ᵀ·A[k0:k1, k1:n].
      rt.f32().fill(0, xkk >> 2, (xkk >> 2) + nb * nb);
      x.invUpperBlock32(at(k0, k0), n, xkk, nb, nb);
      if (px !== undefined) {
        const f32 = rt.f32();
        for (let i = 0; i < nb; i++) {
          const from = (xkk >> 2) + i * nb;
          f32.copyWithin((px >> 2) + (k0 + i) * n + k0, from, from + nb);
        }
      }
      const threads = rt.threadsFor(2 * nb * nb * m, Math.ceil(m / panelCols));
      await tasks(threads, (c) => ["cholPanel32", pa, n, k0, k1, xkk, c, tmp(), packed(), gs()]);
      rt.release(mark);
      // The trailing update A[k1:, k1:] −= R_panelᵀ·R_panel (upper tiles).
      await ssyrkUpper(at(k0, k1), m, nb, n, at(k1, k1));
    }
  }

  /**
   * The upper triangle of `J·srcᵀ·J` of the `n × n` float32 matrix at `src` into `dst` (zeros below its diagonal), on
   * every thread; returns `dst`.
   */
  async function antiTransposeUpper(src: number, n: number, dst: number): Promise<number> {
    await tasks(rt.threadsFor(n * n * 4, Math.ceil(n / 32)), (c) => ["antiTransposeUpper32", c, src, n, dst]);
    return dst;
  }

  /**
   * GPTQ's `U` in float32 (`upperCholeskyOfInverse` of a float32 Hessian): `R̃` the upper Cholesky factor of `J·H·J`
   * (storage reversed), `X = R̃⁻¹`, and `U = J·Xᵀ·J`, so that `H⁻¹ = UᵀU`; panels, trailing updates and the inverse's
   * off-diagonal blocks run on the float32 gemm. Returns the byte offset of U.
   */
  async function upperCholeskyOfInverse32(h: Float32Array, n: number): Promise<number> {
    const pa = rt.put(h);
    x.reverse32(pa, n * n);
    // X = R̃⁻¹ is built in px; its diagonal blocks R̃_kk⁻¹ are the panels' xkk, kept as they are formed.
    const px = rt.alloc(n * n * 4);
    rt.f32().fill(0, px >> 2, (px >> 2) + n * n);
    await factorUpper32(pa, n, px);
    const perThread = (floats: number) => () => rt.alloc(floats * 4);
    const tmp = perThread(NB32 * Math.max(NB32, x.cholPanelCols())),
      packed = perThread(x.packedASize(NB32, n)),
      gs = perThread(scratchBytes / 4);
    // The blocks of X above its diagonal, by block columns, from the columns before.
    for (let j0 = NB32; j0 < n; j0 += NB32) {
      const j1 = Math.min(j0 + NB32, n);
      const mark = rt.mark();
      const threads = rt.threadsFor(j0 * j0 * (j1 - j0), j0 / NB32);
      await tasks(threads, (c) => ["invUpperColumn32", pa, px, n, NB32, j0, j1, c, tmp(), packed(), gs()]);
      rt.release(mark);
    }
    return await antiTransposeUpper(px, n, pa); // R̃ is not read after the inverse
  }

  /**
   * `reverseCholesky` of a float32 Hessian in float32: `R̃` the upper Cholesky factor of `J·H·J` (storage reversed),
   * and `R = J·R̃ᵀ·J`, so that `H = R·Rᵀ`. Returns the byte offset of R.
   */
  async function reverseCholesky32(h: Float32Array, n: number): Promise<number> {
    const pa = rt.put(h);
    x.reverse32(pa, n * n);
    await factorUpper32(pa, n);
    return await antiTransposeUpper(pa, n, rt.alloc(n * n * 4));
  }

  /**
   * Where the solution of `T·X = B` stays zero, from B (`[n, k]`): `hi[i]` is one past the last non-zero column of the
   * rows row `i` depends on; the rows of column `c` of X that can be non-zero start at `lo[c]` (lower) or end before it
   * (upper).
   */
  function zeroStructure(bRows: ArrayLike<number>, n: number, k: number, lower: boolean): ZeroStructure {
    const hi = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let last = 0;
      for (let p = k - 1; p >= 0; p--) {
        if (bRows[i * k + p] !== 0) {
          last = p + 1;
          break;
        }
      }
      hi[i] = last;
    }
    if (lower) { for (let i = 1; i < n; i++) hi[i] = Math.max(hi[i], hi[i - 1]); }
    else for (let i = n - 2; i >= 0; i--) hi[i] = Math.max(hi[i], hi[i + 1]);
    // lo[c]: the rows of column c of X that can be non-zero start there (lower) or end before it (upper).
    const lo = new Int32Array(k).fill(lower ? n : 0);
    for (let i = 0; i < n; i++) {
      for (let p = 0; p < k; p++) {
        if (bRows[i * k + p] !== 0) lo[p] = lower ? Math.min(lo[p], i) : i + 1;
      }
    }
    return { hi, lo };
  }

  /** The {@link zeroStructure} of the `n × n` identity under a lower solve (its inverse is lower triangular). */
  function identityStructure(n: number): ZeroStructure {
    return { hi: Int32Array.from({ length: n }, (_, i) => i + 1), lo: Int32Array.from({ length: n }, (_, c) => c) };
  }

  /**
   * Solves `T·X = B` in place at `px` (`[n, k]` float64), `T` at `pt` lower or upper (not transposed), `inv` its
   * reciprocal diagonal; `zeros` says where X stays zero (its blocks are skipped). Threads take disjoint column ranges.
   */
  async function solveAt(
    pt: number,
    n: number,
    px: number,
    k: number,
    inv: number,
    lower: boolean,
    { hi, lo }: ZeroStructure,
  ): Promise<void> {
    const phi = rt.put(hi), plo = rt.put(lo);
    const threads = rt.threadsFor(n * n * k, Math.ceil(k / 128));
    // Lower solves over many column chunks share one packing of T's row blocks.
    let pre = 0;
    if (lower && k > 128) {
      pre = rt.alloc(4 * Math.ceil(n / NB));
      x.lowerPrepack(pt, n, NB, pre, rt.alloc(x.lowerPrepackSize(n, NB)));
    }
    await tasks(threads, (t) => {
      const packed = rt.alloc(x.dpackedASize(NB, n) * 8), scratch = rt.alloc(dScratchBytes);
      return ["trsmShared", pt, n, px, k, t, inv, phi, plo, lower ? 1 : 0, NB, packed, scratch, pre];
    });
  }

  /**
   * `L⁻¹` of the lower factor at `pl` (`n × n` float64, `inv` its reciprocal diagonal), solved against an identity
   * laid out in WASM memory; returns the byte offset of the result.
   */
  async function lowerInverseAt(pl: number, n: number, inv: number): Promise<number> {
    const px = rt.alloc(n * n * 8), f64 = rt.f64();
    f64.fill(0, px >> 3, (px >> 3) + n * n);
    for (let i = 0; i < n; i++) f64[(px >> 3) + i * n + i] = 1;
    await solveAt(pl, n, px, n, inv, true, identityStructure(n));
    return px;
  }

  /** A float64 copy of `data` in WASM memory. */
  function put64(data: FloatArray): number {
    return rt.put(data instanceof Float64Array ? data : Float64Array.from(data));
  }

  /** A matrix like `like` holding the `n × m` float64 values at `p`. */
  function take<A extends FloatArray>(like: Matrix<A>, p: number, rows: number, cols: number): Matrix<A> {
    if (like.data instanceof Float64Array) return matrix64(rows, cols, rt.takeF64(p, rows * cols)) as Matrix<A>;
    const out = zerosLike(like, rows, cols);
    out.data.set(rt.f64().subarray(p >> 3, (p >> 3) + rows * cols));
    return out;
  }

  const backend: WasmBackend = {
    name: "wasm",
    threads: rt.threads,
    relaxed: rt.relaxed,

    matmul(a: Matrix, b: Matrix, options: MatmulOptions = {}): Promise<Matrix> {
      const { transA = false, transB = false } = options;
      const m = transA ? a.shape[1] : a.shape[0];
      const k = transA ? a.shape[0] : a.shape[1];
      const kb = transB ? b.shape[1] : b.shape[0];
      const n = transB ? b.shape[0] : b.shape[1];
      if (k !== kb) {
        return Promise.reject(
          new ShapeError(
            `matmul: ${m}×${k} (A${transA ? "ᵀ" : ""}) times ${kb}×${n} (B${
              transB ? "ᵀ" : ""
            }): inner dimensions differ`,
          ),
        );
      }
      return rt.exclusive(async () => {
        assertShape(a, -1, -1, "matmul A");
        assertShape(b, -1, -1, "matmul B");
        if (m === 0 || n === 0 || k === 0) return matrix(m, n);
        const c = rt.alloc(m * n * 4);
        await gemmInto(a.data, transA, b.data, transB, m, n, k, c);
        return matrix(m, n, rt.takeF32(c, m * n));
      });
    },

    gramAccumulate(acc: Matrix<FloatArray>, xm: Matrix, alpha: number): Promise<void> {
      const [n, d] = xm.shape;
      if (acc.shape[0] !== d || acc.shape[1] !== d) {
        return Promise.reject(
          new ShapeError(`gramAccumulate: accumulator ${acc.shape[0]}×${acc.shape[1]} for inputs with ${d} columns`),
        );
      }
      return rt.exclusive(async () => {
        assertShape(xm, -1, -1, "gramAccumulate x");
        assertShape(acc, d, d, "gramAccumulate accumulator");
        if (n === 0 || d === 0) return;
        // C = XᵀX (upper triangle) in float32: op(A) = Xᵀ is X read transposed, op(B) = X (the same copy).
        const px = rt.put(xm.data);
        const c = rt.alloc(d * d * 4);
        await gemmInto(px, true, px, false, d, d, n, c, true);
        // acc += alpha·C (mirrored), in the accumulator's own precision.
        const is64 = acc.data instanceof Float64Array;
        const pacc = rt.put(acc.data);
        await byRanges(d, d * d * 8, SPLIT_ALIGN, (r0, r1) => ["gramFold", pacc, is64 ? 1 : 0, c, d, alpha, r0, r1]);
        if (is64) acc.data.set(rt.f64().subarray(pacc >> 3, (pacc >> 3) + d * d));
        else acc.data.set(rt.f32().subarray(pacc >> 2, (pacc >> 2) + d * d));
      });
    },

    gptqQuantize: (args) => gptqQuantizeWasm(args),

    // Delegated to the TS reference functions in core/ until native kernels land (the priority list in the report):
    cholesky<A extends FloatArray>(a: Matrix<A>): Promise<Matrix<A>> {
      return rt.exclusive(async () => {
        const n = squareSize(a, "cholesky");
        const pa = put64(a.data);
        await choleskyAt(pa, n);
        return take(a, pa, n, n);
      });
    },

    triangularSolve<A extends FloatArray>(
      t: Matrix<A>,
      b: Matrix<A>,
      options: TriangularSolveOptions,
    ): Promise<Matrix<A>> {
      return rt.exclusive(async () => {
        const { lower, transpose = false, unitDiagonal = false } = options;
        const n = t.shape[0];
        if (t.shape[1] !== n || t.data.length !== n * n) {
          throw new ShapeError(`triangularSolve: T must be square, got ${t.shape[0]}×${t.shape[1]}`);
        }
        const [br, k] = b.shape;
        if (br !== n || b.data.length !== br * k) {
          throw new ShapeError(`triangularSolve: T is ${n}×${n} but B is ${br}×${k}`);
        }
        const invDiag = new Float64Array(n).fill(1);
        if (!unitDiagonal) {
          for (let i = 0; i < n; i++) {
            const d = t.data[i * n + i];
            if (d === 0 || !Number.isFinite(d)) {
              throw new NonFiniteError(
                `triangularSolve: T is singular or not finite: diagonal entry ${i} of ${n} is ${d}`,
              );
            }
            invDiag[i] = 1 / d;
          }
        }
        if (n === 0 || k === 0) return zerosLike(b);
        let pt = put64(t.data);
        if (transpose) {
          const tt = rt.alloc(n * n * 8);
          x.transpose64(pt, n, tt);
          pt = tt;
        }
        const px = put64(b.data), inv = rt.put(invDiag);
        await solveAt(pt, n, px, k, inv, lower !== transpose, zeroStructure(b.data, n, k, lower !== transpose));
        return take(b, px, n, k);
      });
    },

    choleskyInverse<A extends FloatArray>(l: Matrix<A>): Promise<Matrix<A>> {
      return rt.exclusive(async () => {
        const n = squareSize(l, "choleskyInverse");
        const invDiag = new Float64Array(n);
        for (let i = 0; i < n; i++) {
          const d = l.data[i * n + i];
          if (d === 0 || !Number.isFinite(d)) throw new NotPositiveDefiniteError(n, i, d);
          invDiag[i] = 1 / d;
        }
        if (n === 0) return zerosLike(l);
        // Y = L⁻¹ (lower), then (L·Lᵀ)⁻¹ = Yᵀ·Y: its lower triangle, mirrored so the result is exactly symmetric.
        const pl = put64(l.data), inv = rt.put(invDiag);
        const py = await lowerInverseAt(pl, n, inv);
        const pr = rt.alloc(n * n * 8);
        const mark = rt.mark();
        const packed = rt.alloc(x.dpackedASize(n, n) * 8);
        x.dpackA(py, n, 1, n, n, packed);
        const threads = rt.threadsFor(n * n * n, Math.ceil(n / SPLIT_ALIGN));
        const { cb } = gemmBlocks(n, n, threads, true);
        await tasks(
          threads,
          (t) => ["dgemmShared", t, ROW_BLOCK, cb, n, n, n, packed, py, n, 0, pr, n, rt.alloc(dScratchBytes), 1, 0],
        );
        rt.release(mark);
        const out = take(l, pr, n, n);
        const o = out.data;
        for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) o[j * n + i] = o[i * n + j];
        return out;
      });
    },

    upperCholeskyOfInverse<A extends FloatArray>(h: Matrix<A>): Promise<Matrix<A>> {
      return rt.exclusive(async () => {
        const n = squareSize(h, "upperCholeskyOfInverse");
        if (n === 0) return zerosLike(h);
        // A float32 Hessian is factored in float32, as the reference GPTQ does: half the cost of the float64 path.
        if (h.data instanceof Float32Array) {
          return matrix(n, n, rt.takeF32(await upperCholeskyOfInverse32(h.data, n), n * n)) as Matrix<A>;
        }
        // Everything stays in WASM memory: L̃, X = L̃⁻¹ from the identity, and U = J·X·J reversed in place; one copy
        // in, one out.
        const pa = await reversedFactorAt64(h.data, n);
        const f64 = rt.f64(), invDiag = new Float64Array(n);
        for (let i = 0; i < n; i++) invDiag[i] = 1 / f64[(pa >> 3) + i * n + i];
        const px = await lowerInverseAt(pa, n, rt.put(invDiag));
        x.reverse64(px, n * n);
        return take(h, px, n, n);
      });
    },

    reverseCholesky<A extends FloatArray>(h: Matrix<A>): Promise<Matrix<A>> {
      return rt.exclusive(async () => {
        const n = squareSize(h, "reverseCholesky");
        if (n === 0) return zerosLike(h);
        // A float32 Hessian is factored in float32, as upperCholeskyOfInverse does.
        if (h.data instanceof Float32Array) {
          return matrix(n, n, rt.takeF32(await reverseCholesky32(h.data, n), n * n)) as Matrix<A>;
        }
        // L̃ reversed again is R = J·L̃·J.
        const pa = await reversedFactorAt64(h.data, n);
        x.reverse64(pa, n * n);
        return take(h, pa, n, n);
      });
    },

    // delegated: iterative float64 eigen-solver, off the hot paths; stays in TS.
    eigh: (a) => run(() => eigh(a)),
    // delegated: one-sided Jacobi SVD in float64, used by the low-rank methods only.
    svd: (a, options) => run(() => svd(a, options)),
    // Lloyd iterations and k-means++ seeding from core/linalg/kmeans.ts, with the native nearest-centroid search.
    kmeans(points: Matrix, options: KmeansOptions): Promise<KmeansResult> {
      return rt.exclusive(() => {
        let cached: Matrix | undefined, pPoints = 0;
        const assign: AssignFn = (p, c) => {
          const [n, d] = p.shape, [k, dc] = c.shape;
          if (dc !== d) throw new ShapeError(`nearestCentroids: points have ${d} dimensions, centroids ${dc}`);
          if (k === 0 && n > 0) throw new ShapeError(`nearestCentroids: ${n} points but no centroids`);
          if (p !== cached) pPoints = rt.put(p.data), cached = p;
          const mark = rt.mark();
          const pc = rt.put(c.data), pa = rt.alloc(n * 4), pd = rt.alloc(n * 4);
          x.nearestCentroidRows(pPoints, d, pc, k, pa, pd, 0, n);
          const result = { assignments: rt.i32().slice(pa >> 2, (pa >> 2) + n), distances: rt.takeF32(pd, n) };
          rt.release(mark);
          return result;
        };
        return kmeans(points, options, assign);
      });
    },
    // delegated: per-group fits (min-max and GPTQ's MSE search) stay with their reference semantics in one place.
    fitGrid: (w, grid, groupSize) => run(() => fitGrid(w, grid, groupSize)),
    quantizeGrid(w: Matrix, grid: GridSpec, params: GridParams, groupOfColumn: Int32Array) {
      return rt.exclusive(async () => {
        checkGrid(grid);
        const [rows, cols] = w.shape;
        const { groups, scale, zero } = params;
        if (params.rows !== rows || scale.length !== rows * groups || zero.length !== rows * groups) {
          throw new ShapeError(`grid params for ${params.rows}×${groups} groups do not fit ${rows}×${cols} weights`);
        }
        if (groupOfColumn.length !== cols) {
          throw new ShapeError(`groupOfColumn has ${groupOfColumn.length} entries for ${cols} columns`);
        }
        for (let j = 0; j < cols; j++) {
          const g = groupOfColumn[j];
          if (g < 0 || g >= groups) throw new OptionError(`column ${j} is in group ${g}, outside 0..${groups - 1}`);
        }
        assertShape(w, -1, -1, "quantizeGrid weights");
        const pw = rt.put(w.data), ps = rt.put(scale), pz = rt.put(zero), pg = rt.put(groupOfColumn);
        const isTable = grid.kind === "table";
        const levels = isTable ? rt.put(Float32Array.from(grid.levels)) : 0;
        const maxq = grid.kind === "uniform" ? uniformMaxq(grid.bits) : 0;
        const pc = rt.alloc(rows * cols), po = rt.alloc(rows * cols * 4);
        const nl = isTable ? grid.levels.length : 0, kind = isTable ? 1 : 0;
        await byRanges(
          rows,
          rows * cols * 20,
          1,
          (r0, r1) => ["quantizeRows", pw, cols, ps, pz, groups, pg, kind, maxq, levels, nl, pc, po, r0, r1],
        );
        return {
          codes: rt.u8().slice(pc, pc + rows * cols),
          dequantized: matrix(rows, cols, rt.takeF32(po, rows * cols)),
        };
      });
    },

    // delegated: memory-bound (one pass over x); copying x into WASM memory and the result out costs more than the
    // reference's loop (measured 0.9× at 1024×2048 and 4096²), so the TS reference is the faster kernel.
    // (decoderLayer runs the native rmsNormRows on data already in WASM memory.)
    rmsNorm: (xm, weight, eps) => run(() => rmsNorm(xm, weight, eps)),
    // delegated: memory-bound, as rmsNorm.
    rmsNormBackward: (xm, weight, dy, eps) => run(() => rmsNormBackward(xm, weight, dy, eps)),

    // delegated: memory-bound rotation, as rmsNorm (decoderLayer runs the native ropeRows).
    rope: (xm, options) => run(() => rope(xm, options)),

    attention(q: Matrix, k: Matrix, v: Matrix, shape: AttentionShape): Promise<Matrix> {
      return rt.exclusive(async () => {
        const { qCols } = checkAttention("attention", shape, q, k, v);
        const T = shape.batch * shape.seqLen;
        const po = await attentionAt(rt.put(q.data), rt.put(k.data), rt.put(v.data), shape);
        return matrix(T, qCols, rt.takeF32(po, T * qCols));
      });
    },

    attentionBackward(q: Matrix, k: Matrix, v: Matrix, dout: Matrix, shape: AttentionShape) {
      return rt.exclusive(async () => {
        const { qCols, kvCols } = checkAttention("attentionBackward", shape, q, k, v);
        if (dout.shape[0] !== q.shape[0] || dout.shape[1] !== qCols) {
          throw new ShapeError(
            `attentionBackward: dout is ${dout.shape[0]}×${dout.shape[1]}, expected ${q.shape[0]}×${qCols}`,
          );
        }
        assertShape(dout, q.shape[0], qCols, "attentionBackward dout");
        const { batch, seqLen: S, heads, kvHeads, headDim: hd } = shape;
        const T = batch * S;
        const pq = rt.put(q.data), pk = rt.put(k.data), pv = rt.put(v.data), pdo = rt.put(dout.data);
        const pdq = rt.alloc(T * qCols * 4), pdk = rt.alloc(T * kvCols * 4), pdv = rt.alloc(T * kvCols * 4);
        const threads = rt.threadsFor(6 * batch * heads * S * S * hd, batch * kvHeads);
        const scale = 1 / Math.sqrt(hd), scratch = () => rt.alloc(x.attentionScratchSize(S, hd) * 4);
        const call = (t: number): Call => [
          "attentionBackward",
          ...[pq, pk, pv, pdo, pdq, pdk, pdv, batch, S, heads, kvHeads, hd, scale, t, scratch()],
        ];
        await tasks(threads, call);
        return {
          dq: matrix(T, qCols, rt.takeF32(pdq, T * qCols)),
          dk: matrix(T, kvCols, rt.takeF32(pdk, T * kvCols)),
          dv: matrix(T, kvCols, rt.takeF32(pdv, T * kvCols)),
        };
      });
    },

    swiglu(gate: Matrix, up: Matrix): Promise<Matrix> {
      return rt.exclusive(async () => {
        checkSame("swiglu", gate, up, "gate and up");
        const n = gate.data.length;
        const py = await swigluAt(rt.put(gate.data), rt.put(up.data), n);
        return matrix(gate.shape[0], gate.shape[1], rt.takeF32(py, n));
      });
    },

    swigluLinear(xm: Matrix, gate: Matrix, up: Matrix): Promise<Matrix> {
      return rt.exclusive(async () => {
        checkSwigluLinear(xm, gate, up);
        assertShape(xm, -1, -1, "swigluLinear x");
        assertShape(gate, -1, -1, "swigluLinear gate");
        assertShape(up, gate.shape[0], gate.shape[1], "swigluLinear up");
        const [m, k] = xm.shape, n = gate.shape[0];
        if (m === 0 || n === 0 || k === 0) return matrix(m, n); // silu(0)·0
        // Both projections from one packing of x; they stay in WASM memory for the SwiGLU.
        const pg = rt.alloc(m * n * 4), pu = rt.alloc(m * n * 4);
        const products = [{ b: gate.data, transB: true, n, c: pg }, { b: up.data, transB: true, n, c: pu }];
        await gemmsInto(xm.data, false, m, k, products);
        return matrix(m, n, rt.takeF32(await swigluAt(pg, pu, m * n), m * n));
      });
    },

    swigluBackward(gate: Matrix, up: Matrix, dy: Matrix) {
      return rt.exclusive(async () => {
        checkSame("swigluBackward", gate, up, "gate and up");
        checkSame("swigluBackward", gate, dy, "gate and dy");
        const n = gate.data.length;
        const pg = rt.put(gate.data), pu = rt.put(up.data), pdy = rt.put(dy.data);
        const pdg = rt.alloc(n * 4), pdu = rt.alloc(n * 4);
        await byRanges(n, n * 50, 1024, (lo, hi) => ["swigluBackwardRange", pg, pu, pdy, pdg, pdu, lo, hi]);
        const [r, c] = gate.shape;
        return { dgate: matrix(r, c, rt.takeF32(pdg, n)), dup: matrix(r, c, rt.takeF32(pdu, n)) };
      });
    },

    crossEntropy(logits: Matrix, targets: Int32Array, gradScale?: number | Float32Array) {
      return rt.exclusive(async () => {
        const [n, vocab] = logits.shape;
        if (targets.length !== n) {
          throw new ShapeError(`crossEntropy: ${targets.length} targets for ${n} rows of logits`);
        }
        if (typeof gradScale === "object" && gradScale.length !== n) {
          throw new ShapeError(`crossEntropy: ${gradScale.length} gradient scales for ${n} rows of logits`);
        }
        assertShape(logits, -1, -1, "crossEntropy logits");
        for (let t = 0; t < n; t++) {
          const target = targets[t];
          if (target !== -1 && (target < 0 || target >= vocab)) {
            throw new ShapeError(`crossEntropy: target ${target} at row ${t} is outside [0, ${vocab})`);
          }
        }
        const pz = rt.put(logits.data), pt = rt.put(targets), pl = rt.put(new Float32Array(n));
        const withGrad = gradScale !== undefined;
        const pd = withGrad ? rt.alloc(n * vocab * 4) : 0;
        const scales = new Float64Array(n);
        if (typeof gradScale === "number") scales.fill(gradScale);
        else if (gradScale) scales.set(gradScale);
        const ps = rt.put(scales);
        await byRanges(n, n * vocab * 40, 1, (r0, r1) => ["crossEntropyRows", pz, vocab, pt, pl, pd, ps, r0, r1]);
        const losses = rt.takeF32(pl, n);
        if (!withGrad) return { losses };
        if (withGrad && pd) {
          // Rows with an ignored target carry no gradient.
          const d = rt.f32();
          for (let t = 0; t < n; t++) {
            if (targets[t] === -1) d.fill(0, (pd >> 2) + t * vocab, (pd >> 2) + (t + 1) * vocab);
          }
        }
        return { losses, dlogits: matrix(n, vocab, rt.takeF32(pd, n * vocab)) };
      });
    },

    linearCrossEntropy(xm: Matrix, w: Matrix, targets: Int32Array): Promise<Float32Array> {
      return rt.exclusive(async () => {
        checkLinearCrossEntropy(xm, w, targets);
        assertShape(xm, -1, -1, "linearCrossEntropy x");
        assertShape(w, -1, -1, "linearCrossEntropy classifier");
        const [m, k] = xm.shape, n = w.shape[0];
        if (m === 0) return new Float32Array(0);
        // x packed once, the classifier packed whole once; each thread then forms and scores its rows' logits a
        // block at a time in its own scratch, never all [m, n] of them.
        const threads = rt.threadsFor(2 * m * n * k, Math.ceil(m / x.classifierRows()));
        const pa = await packA(rt.put(xm.data), false, m, k, threads);
        // The classifier is copied in and packed a block of rows at a time: one packed copy in WASM memory, not two.
        const pb = rt.alloc(x.packedBSize(n, k) * 4), nPad = roundUp(n, 8);
        for (let j0 = 0; j0 < n; j0 += CLASSIFIER_PACK_ROWS) {
          const nb = Math.min(CLASSIFIER_PACK_ROWS, n - j0), mark = rt.mark();
          x.packBColumns(rt.put(w.data.subarray(j0 * k, (j0 + nb) * k)), k, nb, k, j0, nPad, pb);
          rt.release(mark);
        }
        const pt = rt.put(targets), pl = rt.put(new Float32Array(m));
        const scratchBytes = x.classifierScratchSize(n) * 4;
        await byRanges(m, 2 * m * n * k, x.classifierRows(), (r0, r1) => {
          return ["linearCrossEntropyRows", pa, m, k, pb, n, pt, pl, rt.alloc(scratchBytes), r0, r1];
        });
        return rt.takeF32(pl, m);
      });
    },

    decoderLayer(xm: Matrix, w: DecoderLayerWeights, options: DecoderLayerOptions): Promise<Matrix> {
      return rt.exclusive(async () => {
        checkDecoderLayer(xm, w, options);
        const { attention: shape, eps } = options;
        const [T, d] = xm.shape, f = w.gate.shape[0];
        const qCols = shape.heads * shape.headDim, kvCols = shape.kvHeads * shape.headDim;
        const rope = layerRopeOptions(options);
        // Every intermediate stays in WASM memory; only the layer's output is copied out. The steps and their kernels
        // are decoderLayerWith's, so the result is the same to the bit.
        const px = rt.put(xm.data);
        const pxn = await rmsNormAt(px, rt.put(w.inputNorm), eps, T, d);
        const pq = rt.alloc(T * qCols * 4), pk = rt.alloc(T * kvCols * 4), pv = rt.alloc(T * kvCols * 4);
        await gemmsInto(pxn, false, T, d, [
          { b: w.q.data, transB: true, n: qCols, c: pq },
          { b: w.k.data, transB: true, n: kvCols, c: pk },
          { b: w.v.data, transB: true, n: kvCols, c: pv },
        ]);
        const tables = ropeTablesAt(T, rope);
        await ropeAt(pq, T, qCols, rope, tables);
        await ropeAt(pk, T, kvCols, rope, tables);
        const pattn = await attentionAt(pq, pk, pv, shape);
        const ph = rt.alloc(T * d * 4);
        await gemmsInto(pattn, false, T, qCols, [{ b: w.o.data, transB: true, n: d, c: ph }]);
        await addAt(px, ph, ph, T * d);
        const phn = await rmsNormAt(ph, rt.put(w.postAttentionNorm), eps, T, d);
        const pg = rt.alloc(T * f * 4), pu = rt.alloc(T * f * 4);
        await gemmsInto(phn, false, T, d, [{ b: w.gate.data, transB: true, n: f, c: pg }, {
          b: w.up.data,
          transB: true,
          n: f,
          c: pu,
        }]);
        const pact = await swigluAt(pg, pu, T * f);
        const pout = rt.alloc(T * d * 4);
        await gemmsInto(pact, false, T, f, [{ b: w.down.data, transB: true, n: d, c: pout }]);
        await addAt(ph, pout, pout, T * d);
        return matrix(T, d, rt.takeF32(pout, T * d));
      });
    },

    dispose: () => rt.dispose(),
  };
  return backend;
}
