/**
 * Access to `../shared` (models, data, PyTorch fixtures) for tests and benchmarks. A test that needs it and cannot
 * find it is skipped with a message naming the missing file; in CI `../shared` is always present.
 *
 * @module
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Absolute path of the shared folder beside the repository (override with `PTQ_SHARED`). */
export const SHARED_DIR: string = Deno.env.get("PTQ_SHARED") ??
  fileURLToPath(new URL("../../shared/", import.meta.url));

/** Absolute path of a file under the shared folder. */
export function sharedPath(rel: string): string {
  return `${SHARED_DIR.replace(/\/$/, "")}/${rel}`;
}

/** True when every listed shared file exists. */
export function hasShared(...rels: string[]): boolean {
  return rels.every((r) => existsSync(sharedPath(r)));
}

/**
 * Registers a test that needs files from `../shared`; when one is missing the test is ignored and the reason printed.
 *
 * @example
 * ```ts ignore
 * sharedTest("loads llama-12m", ["models/llama-12m/config.json"], async () => {});
 * ```
 */
export function sharedTest(name: string, needs: string[], fn: (t: Deno.TestContext) => void | Promise<void>): void {
  const missing = needs.filter((r) => !existsSync(sharedPath(r)));
  if (missing.length) console.warn(`skipping "${name}": ../shared is missing ${missing.join(", ")}`);
  Deno.test({ name, ignore: missing.length > 0, fn });
}
