/**
 * Dense-kernel benchmark: matmul and Gram accumulation GFLOP/s for each backend, with the TS reference as the baseline
 * of the same run.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import { bestSeconds } from "./timing.ts";

/** One measured kernel size. */
export interface DenseResult {
  readonly kernel: string;
  readonly size: string;
  readonly backend: string;
  readonly seconds: number;
  readonly gflops: number;
}

/** Matmul `n×n·n×n` (2n³ flops) on `backend`. */
export async function benchMatmul(backend: Backend, n: number, repeats = 3): Promise<DenseResult> {
  const rng = createRng(n);
  const a = matrix(n, n, randomNormal(rng, n * n)), b = matrix(n, n, randomNormal(rng, n * n));
  const seconds = await bestSeconds(() => backend.matmul(a, b), { repeats, warmup: 1, minSeconds: 2 });
  return { kernel: "matmul", size: `${n}³`, backend: backend.name, seconds, gflops: (2 * n ** 3) / seconds / 1e9 };
}

/** Gram accumulation of `rows × d` inputs into a float32 `d×d` accumulator; counts n·d² flops (the one triangle a symmetric kernel needs). */
export async function benchGram(backend: Backend, rows: number, d: number, repeats = 3): Promise<DenseResult> {
  const rng = createRng(rows + d);
  const x = matrix(rows, d, randomNormal(rng, rows * d));
  const acc = matrix(d, d);
  const seconds = await bestSeconds(() => backend.gramAccumulate(acc, x, 1), { repeats, warmup: 1, minSeconds: 2 });
  return {
    kernel: "gram",
    size: `${rows}×${d}`,
    backend: backend.name,
    seconds,
    gflops: (rows * d * d) / seconds / 1e9,
  };
}
