/**
 * Table grids: a fixed ascending list of levels with `max |level| = 1`, scaled per group by the group's absolute
 * maximum (`ŵ = scale · levels[q]`). NF4, FP4 (E2M1), FP8 (E4M3, E5M2), general minifloats, binary and ternary.
 *
 * Levels are stored as float32. A format's values are divided by its largest magnitude in float64 and rounded once to
 * float32: the largest level is then exactly 1, and since adjacent values of every format here differ by far more than
 * a float32 rounding, the order of levels, and which level is nearest to a value (up to a float32 rounding at the exact
 * midpoints), are those of the real format.
 *
 * @module
 */

import { OptionError } from "../errors.ts";
import type { TableGrid } from "./types.ts";

/**
 * A table grid from any finite values: sorted ascending, duplicates (including ±0) merged, divided by the largest
 * magnitude and rounded to float32.
 *
 * @param name name for reports.
 * @param values the format's values, in any order and scale.
 * @throws {OptionError} on non-finite values, fewer than 2 or more than 256 distinct levels, all zeros, or two values
 *   that become one float32 level after normalisation.
 *
 * @example
 * ```ts
 * import { tableGrid } from "./tables.ts";
 * const g = tableGrid("int3sym", [-3, -2, -1, 0, 1, 2, 3]);
 * console.assert(g.bits === 3 && g.levels[6] === 1);
 * ```
 */
export function tableGrid(name: string, values: ArrayLike<number>): TableGrid {
  const sorted = Array.from(values, (v) => {
    if (!Number.isFinite(v)) throw new OptionError(`table grid ${name}: non-finite value ${v}`);
    return v + 0; // −0 → +0 so that one zero remains
  }).sort((a, b) => a - b);
  const distinct = sorted.filter((v, i) => i === 0 || v !== sorted[i - 1]);
  const max = Math.max(...distinct.map(Math.abs));
  if (!(max > 0)) throw new OptionError(`table grid ${name}: needs a non-zero value`);
  if (distinct.length < 2 || distinct.length > 256) {
    throw new OptionError(`table grid ${name}: needs 2 to 256 distinct levels, got ${distinct.length}`);
  }
  const levels = Float32Array.from(distinct, (v) => v / max);
  for (let i = 1; i < levels.length; i++) {
    if (!(levels[i] > levels[i - 1])) {
      throw new OptionError(`table grid ${name}: values ${distinct[i - 1]} and ${distinct[i]} collide in float32`);
    }
  }
  let bits = 1;
  while (2 ** bits < levels.length) bits++;
  return { kind: "table", name, levels, bits };
}

/**
 * Index of the level nearest to `x` in an ascending table, by binary search. The distance is decided exactly: `x` is
 * compared with the float64 midpoint of its two neighbours, which is exact for float32 levels (their sum is exact in
 * float64 unless their exponents differ by more than 29, which no table here has).
 *
 * Tie rule: a value exactly halfway between two levels goes to the **lower** level (smaller index), as the
 * bitsandbytes NF4 quantizer does (`x > midpoint ? upper : lower`). Values beyond the ends clamp to the first or last
 * level; NaN gives 0.
 *
 * @example
 * ```ts
 * import { nearestLevel, TERNARY } from "./tables.ts";
 * console.assert(nearestLevel(TERNARY.levels, 0.7) === 2 && nearestLevel(TERNARY.levels, 0.5) === 1);
 * ```
 */
export function nearestLevel(levels: ArrayLike<number>, x: number): number {
  const n = levels.length;
  if (!(x > levels[0])) return 0;
  if (x >= levels[n - 1]) return n - 1;
  // Invariant: levels[lo] < x <= levels[hi].
  let lo = 0, hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (levels[mid] < x) lo = mid;
    else hi = mid;
  }
  return x > (levels[lo] + levels[hi]) / 2 ? hi : lo;
}

/** Options of {@link minifloatGrid}. */
export interface MinifloatOptions {
  /** Exponent bias; default the IEEE bias `2^(e−1) − 1`. */
  readonly bias?: number;
  /**
   * Which bit patterns are not numbers (they are left out of the table):
   * - `"ieee"` (default): the all-ones exponent holds ±Infinity and NaN (IEEE half, OCP E5M2);
   * - `"nan-only"`: only all-ones exponent with all-ones mantissa is NaN; the rest of the top binade is finite and there
   *   are no infinities (OCP E4M3, PyTorch's `float8_e4m3fn`);
   * - `"none"`: every pattern is a finite number (OCP MX FP4 E2M1, FP6 E2M3 and E3M2).
   */
  readonly special?: "ieee" | "nan-only" | "none";
  /** Keep the subnormals (exponent field 0, `0.m · 2^(1−bias)`); default true. False flushes them to zero. */
  readonly subnormals?: boolean;
  /** Name for reports; default `e<E>m<M>` with the non-default options appended. */
  readonly name?: string;
}

/**
 * The finite values of a signed minifloat with `exponentBits` exponent and `mantissaBits` mantissa bits (one sign bit,
 * `1 + E + M ≤ 8`), as a table grid. A pattern with exponent field `f` and mantissa field `m` is
 * `(1 + m/2^M) · 2^(f − bias)` when `f > 0` and `(m/2^M) · 2^(1 − bias)` when `f = 0` (subnormal); `special` says which
 * patterns are Inf/NaN. ±0 are one level; levels are normalised by the largest finite value.
 *
 * @throws {OptionError} on bit counts outside `E ≥ 1`, `M ≥ 0`, `E + M ≤ 7`, a non-integer bias, or a format with no
 *   non-zero finite value.
 *
 * @example
 * ```ts
 * import { minifloatGrid } from "./tables.ts";
 * const e2m1 = minifloatGrid(2, 1, { special: "none" });
 * console.assert(e2m1.levels.length === 15 && e2m1.levels[14] === 1);
 * ```
 */
export function minifloatGrid(exponentBits: number, mantissaBits: number, options: MinifloatOptions = {}): TableGrid {
  const e = exponentBits, m = mantissaBits;
  if (!Number.isInteger(e) || !Number.isInteger(m) || e < 1 || m < 0 || e + m > 7) {
    throw new OptionError(`minifloat needs integer E ≥ 1, M ≥ 0, E + M ≤ 7; got E${e}M${m}`);
  }
  const defaultBias = 2 ** (e - 1) - 1;
  const { bias = defaultBias, special = "ieee", subnormals = true } = options;
  if (!Number.isInteger(bias)) throw new OptionError(`minifloat bias must be an integer, got ${bias}`);
  const name = options.name ??
    `e${e}m${m}${special === "ieee" ? "" : `-${special}`}${subnormals ? "" : "-ftz"}${
      bias === defaultBias ? "" : `-b${bias}`
    }`;
  const topExp = 2 ** e - 1, topMant = 2 ** m - 1;
  const magnitudes: number[] = [];
  for (let f = 0; f <= topExp; f++) {
    if (f === topExp && special === "ieee") continue;
    for (let mant = 0; mant <= topMant; mant++) {
      if (f === topExp && mant === topMant && special === "nan-only") continue;
      const v = f === 0 ? (subnormals ? mant : 0) * 2 ** (1 - bias - m) : (2 ** m + mant) * 2 ** (f - bias - m);
      magnitudes.push(v, -v);
    }
  }
  return tableGrid(name, magnitudes);
}

/**
 * NF4 (QLoRA's 4-bit NormalFloat), the exact float32 values of bitsandbytes' code book.
 * bitsandbytes pairs it with blocks of 64 and an absmax scale.
 */
export const NF4: TableGrid = tableGrid("nf4", [
  -1,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1,
]);

/** FP4 E2M1 (OCP MX): magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6, divided by 6; both signs, one zero (15 levels). */
export const FP4_E2M1: TableGrid = minifloatGrid(2, 1, { special: "none", name: "fp4_e2m1" });

/** FP8 E4M3 (OCP): bias 7, subnormals, no infinities, NaN only at S.1111.111, max 448; 253 levels. */
export const FP8_E4M3: TableGrid = minifloatGrid(4, 3, { special: "nan-only", name: "e4m3" });

/** FP8 E5M2 (OCP, IEEE-like): bias 15, subnormals, Inf/NaN in the top binade, max 57344; 247 levels. */
export const FP8_E5M2: TableGrid = minifloatGrid(5, 2, { special: "ieee", name: "e5m2" });

/** Binary {−1, 1}: sign times the group's absolute maximum. */
export const BINARY: TableGrid = tableGrid("binary", [-1, 1]);

/** Ternary {−1, 0, 1}. */
export const TERNARY: TableGrid = tableGrid("ternary", [-1, 0, 1]);
