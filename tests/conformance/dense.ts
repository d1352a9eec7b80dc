/**
 * Conformance of the dense kernels: matmul in all four transposition modes and Gram accumulation, on sizes that include
 * 1, odd and non-multiple-of-tile dimensions.
 *
 * @module
 */

import { gramAccumulate } from "../../core/linalg/gram.ts";
import { matmul } from "../../core/linalg/matmul.ts";
import { createRng, randomNormal } from "../../core/random.ts";
import { matrix, matrix64 } from "../../core/tensor.ts";
import { assertClose } from "../assert_close.ts";
import type { ConformanceCase } from "./case.ts";

const SHAPES: [number, number, number][] = [[1, 1, 1], [1, 7, 3], [7, 1, 5], [17, 33, 9], [64, 64, 64], [65, 129, 31], [
  128,
  385,
  96,
]];

export const denseCases: ConformanceCase[] = [
  ...[false, true].flatMap((transA) =>
    [false, true].map((transB): ConformanceCase => ({
      name: `matmul transA=${transA} transB=${transB}`,
      async run({ backend, toleranceScale }) {
        const rng = createRng(11);
        for (const [m, k, n] of SHAPES) {
          const a = transA ? matrix(k, m, randomNormal(rng, k * m)) : matrix(m, k, randomNormal(rng, m * k));
          const b = transB ? matrix(n, k, randomNormal(rng, n * k)) : matrix(k, n, randomNormal(rng, k * n));
          const got = await backend.matmul(a, b, { transA, transB });
          const want = matmul(a, b, { transA, transB });
          if (got.shape[0] !== m || got.shape[1] !== n) throw new Error(`shape ${got.shape} for ${m}×${n}`);
          // f32 accumulation error grows like sqrt(k)·ε·|a||b| for random inputs.
          const tol = 4e-6 * Math.sqrt(k) * toleranceScale;
          assertClose(got.data, want.data, { atol: tol, rtol: tol }, `matmul ${m}×${k}×${n}`);
        }
      },
    }))
  ),
  {
    name: "gramAccumulate into float32 and float64 accumulators",
    async run({ backend, toleranceScale }) {
      const rng = createRng(12);
      for (const [n, d] of [[1, 1], [3, 7], [300, 33], [513, 128], [64, 385]]) {
        const x1 = matrix(n, d, randomNormal(rng, n * d)), x2 = matrix(n, d, randomNormal(rng, n * d));
        for (const acc of [matrix(d, d), matrix64(d, d)]) {
          const ref = matrix64(d, d);
          gramAccumulate(ref, x1, 2 / n);
          gramAccumulate(ref, x2, 0.5);
          await backend.gramAccumulate(acc, x1, 2 / n);
          await backend.gramAccumulate(acc, x2, 0.5);
          const tol = 4e-6 * Math.sqrt(n) * toleranceScale;
          assertClose(acc.data, ref.data, { atol: tol, rtol: tol }, `gram ${n}×${d}`);
        }
      }
    },
  },
];
