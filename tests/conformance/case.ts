/**
 * The shape of a conformance case: a named check that runs one backend's kernel on generated inputs and compares it
 * with the TS reference functions in `core/`. Each part file (dense, linalg, grids, nn, gptq) exports a list of cases.
 *
 * @module
 */

import type { Backend } from "../../core/backend.ts";

/** Per-backend tolerance scale: 1 for float64-exact references, larger for float32 GPU kernels. */
export interface ConformanceContext {
  readonly backend: Backend;
  /** Multiplies every case's float32 tolerance (document why a backend needs more than 1). */
  readonly toleranceScale: number;
}

/** One conformance check. */
export interface ConformanceCase {
  readonly name: string;
  /** Runs the check; throws (an AssertionError) on disagreement. */
  run(ctx: ConformanceContext): Promise<void>;
}
