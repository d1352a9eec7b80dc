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

/**
 * A Deno test that runs `fn` with two fresh WASM backends, one thread and three (every kernel split), for checks that
 * threads change no bit, and disposes of both afterwards.
 */
export function wasmThreadsTest(
  name: string,
  fn: (one: WasmBackend, many: WasmBackend) => Promise<void>,
  options: { ignore?: boolean } = {},
): void {
  Deno.test({
    name,
    ignore: options.ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const one = await createWasmBackend({ threads: 1 });
      const many = await createWasmBackend({ threads: 3, parallelThreshold: 0 });
      try {
        await fn(one, many);
      } finally {
        one.dispose();
        many.dispose();
      }
    },
  });
}
