/**
 * The uniform integer grid of GPTQ and RTN, reproducing the reference implementation bit for bit: GPTQ's `quant.py`
 * (`Quantizer.find_params(x, weight=True)` and `quantize`). The GPTQ port must match PyTorch output on 99.5% of
 * entries, so every operation below is the float32 operation PyTorch performs, in the same order: each `+ − × ÷` is
 * computed in float64 and rounded with `Math.fround`, which equals the float32 operation (float64 carries more than
 * twice float32's precision, so the double rounding is harmless for these four operations).
 *
 * Grid: `ŵ = scale · (q − zero)`, integer `q ∈ [0, maxq]`, `maxq = 2^bits − 1`.
 *
 * @module
 */

import { OptionError } from "../errors.ts";

const fround = Math.fround;

/** GPTQ's MSE search: candidates `p = 1 − i/grid`. */
export const MSE_GRID = 100;
/** GPTQ's MSE search: the range shrinks by at most this fraction. */
export const MSE_MAX_SHRINK = 0.8;
/** GPTQ's MSE search: the error is `Σ|ŵ − w|^norm`. */
export const MSE_NORM = 2.4;
/**
 * Number of MSE candidates, `int(maxshrink · grid)` = 80: the reference loops `for i in range(80)`, so `p` runs over
 * `1, 0.99, …, 0.21`. ALGORITHMS.md writes `k = 0..80` (81 candidates, down to 0.2); we follow the reference code,
 * since matching its output is the requirement.
 */
export const MSE_STEPS: number = Math.trunc(MSE_MAX_SHRINK * MSE_GRID);

/** Fitted parameters of one row or group: `ŵ = scale · (q − zero)`. */
export interface UniformParams {
  /** Step of the grid (float32 value). */
  readonly scale: number;
  /** Integer code of the value 0 (float32 value, an integer; never −0). */
  readonly zero: number;
}

/** A code and its dequantized value. */
export interface UniformQuantized {
  /** Integer code in `[0, maxq]`. */
  readonly code: number;
  /** `scale · (code − zero)` in float32. */
  readonly value: number;
}

/** Which elements of an array form the row or group: `values[offset + k · stride]` for `k < length`. */
export interface StridedView {
  /** Index of the first element; default 0. */
  readonly offset?: number;
  /** Number of elements; default `(values.length − offset) / stride` rounded up. */
  readonly length?: number;
  /** Distance between consecutive elements; default 1 (a contiguous row). */
  readonly stride?: number;
}

/**
 * Rounds half to even, as `torch.round` and `numpy.round` do (and unlike `Math.round`, which rounds half up).
 *
 * @example
 * ```ts
 * import { roundHalfEven } from "./uniform.ts";
 * console.assert(roundHalfEven(2.5) === 2 && roundHalfEven(3.5) === 4 && roundHalfEven(-2.5) === -2);
 * ```
 */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round sends every tie up; the tie is detectable exactly because r − x is exact for |x| < 2^52.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * `2^bits − 1`, the largest code.
 *
 * @throws {OptionError} unless `bits` is an integer in 1..8.
 */
export function uniformMaxq(bits: number): number {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) {
    throw new OptionError(`uniform grid bits must be an integer in 1..8, got ${bits}`);
  }
  return 2 ** bits - 1;
}

/**
 * The code of `x`: `clamp(round(x / scale) + zero, 0, maxq)` in float32, rounding half to even.
 * A `scale` of 0 (a row whose range underflows float32) gives NaN in the reference; here the code is then 0.
 */
export function uniformCode(x: number, scale: number, zero: number, maxq: number): number {
  const q = fround(roundHalfEven(fround(x / scale)) + zero);
  // Written so that NaN falls through to 0 instead of escaping as a code.
  return q > 0 ? (q < maxq ? q : maxq) : 0;
}

/** The value of a code: `scale · (code − zero)` in float32. */
export function uniformValue(code: number, scale: number, zero: number): number {
  return fround(scale * fround(code - zero));
}

/**
 * GPTQ's `quantize(x, scale, zero, maxq)`: the code and the dequantized value of one weight.
 *
 * @example
 * ```ts
 * import { quantizeUniform } from "./uniform.ts";
 * const { code, value } = quantizeUniform(0.26, 0.1, 3, 15);
 * console.assert(code === 6 && Math.abs(value - 0.3) < 1e-6);
 * ```
 */
export function quantizeUniform(x: number, scale: number, zero: number, maxq: number): UniformQuantized {
  const code = uniformCode(x, scale, zero, maxq);
  return { code, value: uniformValue(code, scale, zero) };
}

/** Resolves a {@link StridedView} against an array. @throws {OptionError} on a view outside the array. */
function resolveView(values: ArrayLike<number>, view: StridedView): [offset: number, length: number, stride: number] {
  const offset = view.offset ?? 0, stride = view.stride ?? 1;
  const length = view.length ?? Math.max(0, Math.ceil((values.length - offset) / stride));
  const bad = !Number.isInteger(offset) || !Number.isInteger(stride) || !Number.isInteger(length) || offset < 0 ||
    stride < 1 || length < 0 || (length > 0 && offset + (length - 1) * stride >= values.length);
  if (bad) {
    throw new OptionError(`view offset ${offset}, length ${length}, stride ${stride} outside ${values.length} values`);
  }
  return [offset, length, stride];
}

/**
 * GPTQ's selection criterion for one candidate: `Σ |quantize(x) − x|^norm`. Each term is computed as PyTorch does
 * (float32 subtraction, `|·|`, float32 `pow` with the exponent itself rounded to float32, as `pow_` does with a Python
 * scalar exponent on a float32 tensor); the sum is accumulated in float64. PyTorch sums float32 terms in a
 * blocked order we cannot reproduce, so candidates whose errors agree to float32 rounding may be ordered differently
 * by the two; the float64 sum is the better-defined of the two and ties of that kind are vanishingly rare.
 *
 * @param values the weights; the row or group is `view` of them.
 */
export function uniformError(
  values: ArrayLike<number>,
  scale: number,
  zero: number,
  maxq: number,
  norm: number = MSE_NORM,
  view: StridedView = {},
): number {
  const [offset, length, stride] = resolveView(values, view);
  const e = fround(norm);
  let err = 0;
  for (let k = 0, i = offset; k < length; k++, i += stride) {
    const x = values[i];
    const d = fround(uniformValue(uniformCode(x, scale, zero, maxq), scale, zero) - x);
    err += fround(Math.abs(d) ** e);
  }
  return err;
}

/** The clipping range of a row or group before any MSE shrinking. */
export interface UniformRange {
  readonly xmin: number;
  readonly xmax: number;
}

/**
 * The range GPTQ's `find_params` starts from: `xmin = min(0, min x)`, `xmax = max(0, max x)`; symmetric:
 * `xmax = max(|xmin|, xmax)` and, only where `xmin < 0`, `xmin = −xmax` (a row with no negative value keeps `xmin = 0`:
 * a quirk of the reference, kept); `[0, 0]` becomes `[−1, 1]`. An empty view behaves as an all-zero row.
 *
 * @throws {OptionError} on a view outside `values`.
 */
export function uniformRange(values: ArrayLike<number>, symmetric = false, view: StridedView = {}): UniformRange {
  const [offset, length, stride] = resolveView(values, view);
  let lo = 0, hi = 0;
  for (let k = 0, i = offset; k < length; k++, i += stride) {
    const x = values[i];
    // Comparisons skip NaN, unlike torch.min; non-finite weights are rejected upstream.
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  let xmin = fround(lo), xmax = fround(hi);
  if (symmetric) {
    xmax = Math.max(Math.abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === 0 && xmax === 0) xmin = -1, xmax = 1;
  return { xmin, xmax };
}

/**
 * The grid of the range `[p·xmin, p·xmax]`: `scale = (xmax₁ − xmin₁) / maxq`, `zero = symmetric ? (maxq + 1)/2 :
 * round(−xmin₁ / scale)`, in float32. `p = 1` is min-max; MSE candidate `i` is `p = 1 − i/100` (GPTQ's Python float,
 * rounded to float32 when PyTorch multiplies a float32 tensor by it).
 */
export function uniformCandidate(range: UniformRange, maxq: number, symmetric: boolean, p = 1): UniformParams {
  const pf = fround(p);
  const xmin = fround(pf * range.xmin), xmax = fround(pf * range.xmax);
  const scale = fround(fround(xmax - xmin) / maxq);
  // `+ 0` turns the −0 of round(−0 / scale) into +0, so stored zeros compare equal bit for bit.
  const zero = symmetric ? (maxq + 1) / 2 : roundHalfEven(fround(-xmin / scale)) + 0;
  return { scale, zero };
}

/**
 * Fits the grid to one row or group, exactly as GPTQ's `Quantizer.find_params(x, weight=True)` with `perchannel=True`:
 *
 * - `xmin = min(0, min x)`, `xmax = max(0, max x)`;
 * - symmetric: `xmax = max(|xmin|, xmax)` and, only where `xmin < 0`, `xmin = −xmax` (a row with no negative value
 *   keeps `xmin = 0`: a quirk of the reference, kept);
 * - `xmin = xmax = 0` becomes `[−1, 1]`;
 * - `scale = (xmax − xmin) / maxq`, `zero = symmetric ? (maxq + 1)/2 : round(−xmin / scale)`;
 * - `mse`: for `i = 0..79`, `p = 1 − i/100` (rounded to float32, as PyTorch does with a Python scalar), the candidate
 *   `[p·xmin, p·xmax]` (symmetric keeps `zero`) replaces the current one when its error `Σ|ŵ − x|^2.4` is strictly
 *   smaller.
 *
 * An empty view behaves as an all-zero row.
 *
 * @param values the weights (float32 values); the row or group is `view` of them (default: all of `values`).
 * @param bits 1..8.
 * @throws {OptionError} on bits outside 1..8 or a view outside `values`.
 *
 * @example
 * ```ts
 * import { fitUniformRow } from "./uniform.ts";
 * const { scale, zero } = fitUniformRow(new Float32Array([-1, 0.5, 2]), 2);
 * console.assert(scale === 1 && zero === 1);
 * ```
 */
export function fitUniformRow(
  values: ArrayLike<number>,
  bits: number,
  symmetric = false,
  mse = false,
  view: StridedView = {},
): UniformParams {
  const maxq = uniformMaxq(bits);
  const [offset, length, stride] = resolveView(values, view);
  const range = uniformRange(values, symmetric, { offset, length, stride });
  let { scale, zero } = uniformCandidate(range, maxq, symmetric);
  if (!mse) return { scale, zero };

  let best = Infinity;
  for (let i = 0; i < MSE_STEPS; i++) {
    // The symmetric zero is the same for every candidate, as in the reference (which reuses `self.zero`).
    const c = uniformCandidate(range, maxq, symmetric, 1 - i / MSE_GRID);
    const err = uniformError(values, c.scale, c.zero, maxq, MSE_NORM, { offset, length, stride });
    if (err < best) best = err, scale = c.scale, zero = c.zero;
  }
  return { scale, zero };
}
