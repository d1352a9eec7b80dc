/**
 * The reference backend: every kernel in plain TypeScript, straight from `core/`. It is the accuracy reference of the
 * conformance suite and the fallback that runs everywhere.
 *
 * @module
 */

import type { Backend } from "../../core/backend.ts";
import { BackendError } from "../../core/errors.ts";
import { gramAccumulate } from "../../core/linalg/gram.ts";
import { matmul } from "../../core/linalg/matmul.ts";

// Kernels still being written land here one by one; until then they fail loudly by name.
const pending = (name: string) => () => Promise.reject(new BackendError(`kernel ${name} is not yet implemented`));

/** The reference TS backend. */
export const tsBackend: Backend = {
  name: "ts",
  matmul: (a, b, options) => Promise.resolve(matmul(a, b, options)),
  gramAccumulate: (acc, x, alpha) => Promise.resolve(gramAccumulate(acc, x, alpha)),
  cholesky: pending("cholesky"),
  triangularSolve: pending("triangularSolve"),
  choleskyInverse: pending("choleskyInverse"),
  eigh: pending("eigh"),
  svd: pending("svd"),
  kmeans: pending("kmeans"),
  fitGrid: pending("fitGrid"),
  quantizeGrid: pending("quantizeGrid"),
  gptqQuantize: pending("gptqQuantize"),
  rmsNorm: pending("rmsNorm"),
  rmsNormBackward: pending("rmsNormBackward"),
  rope: pending("rope"),
  attention: pending("attention"),
  attentionBackward: pending("attentionBackward"),
  swiglu: pending("swiglu"),
  swigluBackward: pending("swigluBackward"),
  crossEntropy: pending("crossEntropy"),
};
