/**
 * The conformance suite every backend must pass: one `Deno.test` per kernel family, each comparing the backend with
 * the TS reference in `core/`. A backend's test file calls {@link defineConformanceTests} with a loader.
 *
 * @example
 * ```ts ignore
 * import { defineConformanceTests } from "../../tests/conformance/mod.ts";
 * defineConformanceTests("wasm", () => createWasmBackend());
 * ```
 * @module
 */

import type { Backend } from "../../core/backend.ts";
import type { ConformanceCase } from "./case.ts";
import { denseCases } from "./dense.ts";
import { gptqCases } from "./gptq.ts";
import { gridCases } from "./grids.ts";
import { linalgCases } from "./linalg.ts";
import { nnCases } from "./nn.ts";

/** Every case, in the order the suite runs them. */
export const conformanceCases: readonly ConformanceCase[] = [
  ...denseCases,
  ...linalgCases,
  ...gridCases,
  ...gptqCases,
  ...nnCases,
];

/** Options of {@link defineConformanceTests}. */
export interface ConformanceOptions {
  /** Multiplies the float32 tolerances; default 1. */
  readonly toleranceScale?: number;
  /** Why the backend cannot run here (no GPU adapter, say): the tests are registered as ignored with this reason. */
  readonly skipReason?: string;
}

/** Registers the whole suite for one backend as steps of one `Deno.test`. */
export function defineConformanceTests(
  name: string,
  load: () => Promise<Backend> | Backend,
  { toleranceScale = 1, skipReason }: ConformanceOptions = {},
): void {
  if (skipReason) console.warn(`skipping the ${name} conformance suite: ${skipReason}`);
  Deno.test({
    name: `conformance: ${name}`,
    ignore: skipReason !== undefined,
    // GPU backends keep device handles open between steps.
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const backend = await load();
      for (const c of conformanceCases) {
        await t.step(c.name, () => c.run({ backend, toleranceScale }));
      }
    },
  });
}
