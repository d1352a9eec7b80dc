/**
 * Test helper for the WASM backend's own tests.
 *
 * @module
 */

import { createWasmBackend, type WasmBackend, type WasmBackendOptions } from "./mod.ts";

/**
 * A Deno test that runs `fn` with a fresh WASM backend (two threads, every kernel split across them, unless `options`
 * say otherwise) and disposes of it afterwards. The sanitizers are off: the backend's worker threads and their message
 * ports outlive the test's bookkeeping until `dispose`.
 */
export function wasmTest(
  name: string,
  fn: (wasm: WasmBackend) => Promise<void>,
  options: WasmBackendOptions = { threads: 2, parallelThreshold: 0 },
): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const wasm = await createWasmBackend(options);
      try {
        await fn(wasm);
      } finally {
        wasm.dispose();
      }
    },
  });
}
