/**
 * Tensors as plain data: a row-major typed array and a shape. Nothing here owns hidden state; every helper
 * returns a new value except the few named `set*`, which write into a matrix the caller owns.
 *
 * @module
 */

import { NonFiniteError, ShapeError } from "./errors.ts";

/** The two element types the library computes in. */
export type FloatArray = Float32Array | Float64Array;

/** An n-dimensional tensor: row-major `data` whose length is the product of `shape`. */
export interface Tensor<A extends FloatArray = Float32Array> {
  readonly data: A;
  readonly shape: readonly number[];
}

/** A 2-D tensor `[rows, cols]`, row-major. Linear layers use the safetensors layout `[out, in]`. */
export interface Matrix<A extends FloatArray = Float32Array> {
  readonly data: A;
  readonly shape: readonly [rows: number, cols: number];
}

/** Constructor of either float array type, so helpers can allocate "the same kind as the input". */
type FloatArrayOf<A extends FloatArray> = A extends Float64Array ? Float64ArrayConstructor
  : Float32ArrayConstructor;

function arrayType<A extends FloatArray>(a: A): FloatArrayOf<A> {
  return (a instanceof Float64Array ? Float64Array : Float32Array) as FloatArrayOf<A>;
}

/**
 * A float32 matrix. Without `data`, filled with zeros; with `data`, wraps it (no copy) after checking its length.
 *
 * @example
 * ```ts
 * import { matrix } from "./tensor.ts";
 * const m = matrix(2, 3, new Float32Array([1, 2, 3, 4, 5, 6]));
 * console.assert(m.shape[1] === 3);
 * ```
 * @throws {ShapeError} when `data.length !== rows * cols` or a dimension is negative or fractional.
 */
export function matrix(rows: number, cols: number, data?: Float32Array): Matrix {
  checkDims(rows, cols);
  const d = data ?? new Float32Array(rows * cols);
  if (d.length !== rows * cols) {
    throw new ShapeError(`matrix ${rows}×${cols} needs ${rows * cols} values, got ${d.length}`);
  }
  return { data: d, shape: [rows, cols] };
}

/** A float64 matrix; see {@link matrix}. */
export function matrix64(rows: number, cols: number, data?: Float64Array): Matrix<Float64Array> {
  checkDims(rows, cols);
  const d = data ?? new Float64Array(rows * cols);
  if (d.length !== rows * cols) {
    throw new ShapeError(`matrix ${rows}×${cols} needs ${rows * cols} values, got ${d.length}`);
  }
  return { data: d, shape: [rows, cols] };
}

function checkDims(rows: number, cols: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new ShapeError(`matrix dimensions must be non-negative integers, got ${rows}×${cols}`);
  }
}

/** A matrix of the same element type as `like`, zero-filled. */
export function zerosLike<A extends FloatArray>(
  like: Matrix<A>,
  rows = like.shape[0],
  cols = like.shape[1],
): Matrix<A> {
  checkDims(rows, cols);
  const Ctor = arrayType(like.data);
  return { data: new Ctor(rows * cols) as A, shape: [rows, cols] };
}

/** The `n × n` identity in float64. */
export function eye(n: number): Matrix<Float64Array> {
  const m = matrix64(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** A float32 matrix from nested arrays (tests and examples). @throws {ShapeError} on ragged rows. */
export function fromRows(rows: readonly (readonly number[])[]): Matrix {
  const r = rows.length, c = rows[0]?.length ?? 0;
  const m = matrix(r, c);
  rows.forEach((row, i) => {
    if (row.length !== c) throw new ShapeError(`row ${i} has ${row.length} values, expected ${c}`);
    m.data.set(row, i * c);
  });
  return m;
}

/** Nested arrays of a matrix (tests and printing). */
export function toRows(m: Matrix<FloatArray>): number[][] {
  const [r, c] = m.shape;
  return Array.from({ length: r }, (_, i) => Array.from(m.data.subarray(i * c, (i + 1) * c)));
}

/** A copy with fresh storage. */
export function clone<A extends FloatArray>(m: Matrix<A>): Matrix<A> {
  return { data: m.data.slice() as A, shape: [m.shape[0], m.shape[1]] };
}

/** The same values in float64 (a copy). */
export function toFloat64(m: Matrix<FloatArray>): Matrix<Float64Array> {
  return { data: new Float64Array(m.data), shape: [m.shape[0], m.shape[1]] };
}

/** The same values rounded to float32 (a copy). */
export function toFloat32(m: Matrix<FloatArray>): Matrix {
  return { data: new Float32Array(m.data), shape: [m.shape[0], m.shape[1]] };
}

/** Rows `[r0, r1)` as a view sharing storage: free, since rows are contiguous. */
export function rowBlock<A extends FloatArray>(m: Matrix<A>, r0: number, r1: number): Matrix<A> {
  const [rows, cols] = m.shape;
  if (r0 < 0 || r1 > rows || r0 > r1) throw new ShapeError(`row block [${r0}, ${r1}) outside ${rows} rows`);
  return { data: m.data.subarray(r0 * cols, r1 * cols) as A, shape: [r1 - r0, cols] };
}

/** Columns `[c0, c1)` as a new contiguous matrix (one pass over the block). */
export function colBlock<A extends FloatArray>(m: Matrix<A>, c0: number, c1: number): Matrix<A> {
  const [rows, cols] = m.shape;
  if (c0 < 0 || c1 > cols || c0 > c1) throw new ShapeError(`column block [${c0}, ${c1}) outside ${cols} columns`);
  const w = c1 - c0;
  const out = zerosLike(m, rows, w);
  for (let i = 0; i < rows; i++) out.data.set(m.data.subarray(i * cols + c0, i * cols + c1), i * w);
  return out;
}

/** Writes `block` into columns `[c0, c0 + block cols)` of `m`, in place. */
export function setColBlock(m: Matrix<FloatArray>, c0: number, block: Matrix<FloatArray>): void {
  const [rows, cols] = m.shape;
  const [br, bc] = block.shape;
  if (br !== rows || c0 < 0 || c0 + bc > cols) {
    throw new ShapeError(`cannot write a ${br}×${bc} block at column ${c0} of a ${rows}×${cols} matrix`);
  }
  for (let i = 0; i < rows; i++) m.data.set(block.data.subarray(i * bc, (i + 1) * bc), i * cols + c0);
}

/** The transpose, as a new matrix of the same element type. */
export function transpose<A extends FloatArray>(m: Matrix<A>): Matrix<A> {
  const [r, c] = m.shape;
  const out = zerosLike(m, c, r);
  const a = m.data, b = out.data;
  // 32×32 tiles keep both the reads and the writes within cache lines.
  for (let i0 = 0; i0 < r; i0 += 32) {
    for (let j0 = 0; j0 < c; j0 += 32) {
      const i1 = Math.min(i0 + 32, r), j1 = Math.min(j0 + 32, c);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) b[j * r + i] = a[i * c + j];
    }
  }
  return out;
}

/** Columns reordered: column `j` of the result is column `perm[j]` of `m`. */
export function permuteColumns<A extends FloatArray>(m: Matrix<A>, perm: ArrayLike<number>): Matrix<A> {
  const [r, c] = m.shape;
  if (perm.length !== c) throw new ShapeError(`permutation of length ${perm.length} for ${c} columns`);
  const out = zerosLike(m);
  const a = m.data, b = out.data;
  for (let i = 0; i < r; i++) {
    const src = i * c;
    for (let j = 0; j < c; j++) b[src + j] = a[src + perm[j]];
  }
  return out;
}

/** Rows and columns reordered symmetrically: `out[i][j] = m[perm[i]][perm[j]]`. */
export function permuteSymmetric<A extends FloatArray>(m: Matrix<A>, perm: ArrayLike<number>): Matrix<A> {
  const [r, c] = m.shape;
  if (r !== c || perm.length !== c) {
    throw new ShapeError(`symmetric permutation of length ${perm.length} for ${r}×${c}`);
  }
  const out = zerosLike(m);
  const a = m.data, b = out.data;
  for (let i = 0; i < r; i++) {
    const src = perm[i] * c, dst = i * c;
    for (let j = 0; j < c; j++) b[dst + j] = a[src + perm[j]];
  }
  return out;
}

/** The inverse of a permutation: `inv[perm[i]] = i`. */
export function invertPermutation(perm: ArrayLike<number>): Int32Array {
  const inv = new Int32Array(perm.length);
  for (let i = 0; i < perm.length; i++) inv[perm[i]] = i;
  return inv;
}

/** The diagonal of a square matrix, in float64. */
export function diagonal(m: Matrix<FloatArray>): Float64Array {
  const [r, c] = m.shape;
  const n = Math.min(r, c);
  const d = new Float64Array(n);
  for (let i = 0; i < n; i++) d[i] = m.data[i * c + i];
  return d;
}

/** Throws a {@link ShapeError} naming `what` unless `m` has the expected shape (`-1` matches any size). */
export function assertShape(m: Matrix<FloatArray>, rows: number, cols: number, what: string): void {
  const [r, c] = m.shape;
  if ((rows >= 0 && r !== rows) || (cols >= 0 && c !== cols) || m.data.length !== r * c) {
    throw new ShapeError(
      `${what}: expected ${rows < 0 ? "any" : rows}×${
        cols < 0 ? "any" : cols
      }, got ${r}×${c} (${m.data.length} values)`,
    );
  }
}

/** Throws a {@link NonFiniteError} naming `what` if any value is NaN or infinite. */
export function assertFinite(m: Matrix<FloatArray>, what: string): void {
  const d = m.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      const c = m.shape[1] || 1;
      throw new NonFiniteError(`${what} has a non-finite value ${d[i]} at [${Math.floor(i / c)}, ${i % c}]`);
    }
  }
}
