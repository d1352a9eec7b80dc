/**
 * The browser example's settings, apart from the library so that the page's own bundle stays small (the library runs
 * in the worker).
 *
 * @module
 */

/** The knobs the page offers. */
export interface ExperimentSettings {
  readonly method: "rtn" | "gptq";
  readonly bits: number;
  /** Columns per group, 0 = per row. */
  readonly group: number;
  readonly actOrder: boolean;
  /** Calibration windows (GPTQ). */
  readonly samples: number;
  /** Window length for calibration and evaluation. */
  readonly seqLen: number;
  /** Evaluation windows (at most what the held-out half holds). */
  readonly windows: number;
  /** Seed of the calibration sampling. */
  readonly seed: number;
}

/** Defaults: small enough to run in a few seconds on the TS backend. */
export const DEFAULT_SETTINGS: ExperimentSettings = {
  method: "gptq",
  bits: 4,
  group: 0,
  actOrder: false,
  samples: 16,
  seqLen: 128,
  windows: 16,
  seed: 0,
};
