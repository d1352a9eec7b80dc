/**
 * Calibration windows: GPTQ samples `n` random windows of `L` consecutive tokens from the calibration text.
 *
 * @module
 */

import { OptionError } from "../core/errors.ts";
import { createRng } from "../core/random.ts";

/**
 * `count` windows of `seqLen` tokens at random starts (seeded), concatenated batch-major. Windows may overlap, as in
 * GPTQ's data loaders.
 *
 * @throws {OptionError} when the text is shorter than one window or the counts are not positive integers.
 *
 * @example
 * ```ts
 * import { sampleWindows } from "./windows.ts";
 * const w = sampleWindows(Int32Array.from({ length: 100 }, (_, i) => i), 3, 10, 0);
 * console.assert(w.length === 30 && w[1] === w[0] + 1);
 * ```
 */
export function sampleWindows(tokens: Int32Array, count: number, seqLen: number, seed: number): Int32Array {
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(seqLen) || seqLen < 1) {
    throw new OptionError(`need a positive number of windows and window length, got ${count} × ${seqLen}`);
  }
  if (tokens.length < seqLen) {
    throw new OptionError(`calibration text has ${tokens.length} tokens, fewer than one window of ${seqLen}`);
  }
  const rng = createRng(seed);
  const out = new Int32Array(count * seqLen);
  for (let i = 0; i < count; i++) {
    const start = rng.int(tokens.length - seqLen + 1);
    out.set(tokens.subarray(start, start + seqLen), i * seqLen);
  }
  return out;
}

/** The first `⌊n/L⌋` (or `limit`) non-overlapping windows of `seqLen` tokens, concatenated. */
export function consecutiveWindows(tokens: Int32Array, seqLen: number, limit = Infinity): Int32Array {
  const n = Math.min(Math.floor(tokens.length / seqLen), limit);
  return tokens.slice(0, n * seqLen);
}
