/**
 * Numeric comparison for tests: every element within `atol + rtol·|expected|`, with a message that names the worst
 * element, so a failure says where and by how much.
 *
 * @module
 */

import { AssertionError } from "node:assert/strict";

/** Tolerances of {@link assertClose}. */
export interface Tolerance {
  /** Absolute tolerance; default 1e-6. */
  readonly atol?: number;
  /** Relative tolerance; default 1e-5. */
  readonly rtol?: number;
}

/** Asserts that two arrays have equal length and agree element-wise within the tolerance. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-6, rtol = 1e-5 }: Tolerance = {},
  what = "values",
): void {
  if (actual.length !== expected.length) {
    throw new AssertionError({ message: `${what}: length ${actual.length} ≠ expected ${expected.length}` });
  }
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(a) !== Number.isNaN(e)) {
      throw new AssertionError({ message: `${what}[${i}]: ${a} vs expected ${e}` });
    }
    if (Number.isNaN(e) || a === e) continue;
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (excess > worstExcess) worstExcess = excess, worst = i;
  }
  if (worst >= 0) {
    const a = actual[worst], e = expected[worst];
    throw new AssertionError({
      message: `${what}[${worst}]: ${a} vs expected ${e} (|Δ| = ${Math.abs(a - e)}, allowed ${atol} + ${rtol}·|e|)`,
    });
  }
}

/** Largest |a − e| / max(|e|) over the arrays: one number to report in benchmarks and messages. */
export function maxRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}
