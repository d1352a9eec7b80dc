/**
 * Grid descriptions as plain data, so every backend (TS, WASM, WGSL) can fit and round to the same grids.
 *
 * Every grid is one of two shapes:
 * - `uniform`: `ŵ = scale · (q − zero)`, integer `q ∈ [0, 2^bits − 1]` (GPTQ's min-max grid, optionally MSE-shrunk);
 * - `table`: `ŵ = scale · levels[q]`, a fixed ascending table with `max |level| = 1` (NF4, FP4, FP8, minifloats,
 *   binary, ternary); `scale` is the group's absolute maximum, `zero` is unused and stored as 0.
 *
 * @module
 */

/** The uniform integer grid of GPTQ and RTN. */
export interface UniformGrid {
  readonly kind: "uniform";
  /** Bits per code, 1-8. */
  readonly bits: number;
  /** Symmetric around zero (`zero = 2^(bits−1)`); default false (asymmetric min-max). */
  readonly symmetric?: boolean;
  /** GPTQ's MSE search: shrink the range and keep the scale minimising `Σ|w − ŵ|^2.4`; default false. */
  readonly mse?: boolean;
}

/** A fixed table of levels scaled per group by the group's absolute maximum. */
export interface TableGrid {
  readonly kind: "table";
  /** Name for reports ("nf4", "fp4_e2m1", "e4m3", ...). */
  readonly name: string;
  /** Ascending levels with `max |level| = 1`; at most 256 of them. */
  readonly levels: Float32Array;
  /** Bits per code: `ceil(log2(levels.length))`. */
  readonly bits: number;
}

/** Any grid the quantizers accept. */
export type GridSpec = UniformGrid | TableGrid;

/**
 * Fitted grid parameters: one `scale` and `zero` per (row, group), row-major `[rows, groups]`.
 * Table grids store `zero = 0`.
 */
export interface GridParams {
  readonly rows: number;
  readonly groups: number;
  readonly scale: Float32Array;
  readonly zero: Float32Array;
}
