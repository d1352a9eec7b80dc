/**
 * The backend conformance suite on the WASM backend, in the configurations a program may get: one thread with the
 * plain-SIMD and the relaxed-SIMD build, and several threads (with the threshold at 0 so that even small kernels split;
 * the thread split does not depend on the build, and `threads_test.ts` checks it is bit-exact).
 *
 * @module
 */

import { defineConformanceTests } from "../../tests/conformance/mod.ts";
import { createWasmBackend } from "./mod.ts";
import { relaxedSimdSupported, threadsSupported } from "./runtime.ts";

const noRelaxed = relaxedSimdSupported() ? undefined : "this engine does not support relaxed SIMD";
const noThreads = threadsSupported() ? undefined : "no shared memory or Web Workers here";

defineConformanceTests("wasm (1 thread, plain SIMD)", () => createWasmBackend({ threads: 1, relaxed: false }));
defineConformanceTests(
  "wasm (1 thread, relaxed SIMD)",
  () => createWasmBackend({ threads: 1, relaxed: true }),
  { skipReason: noRelaxed },
);
defineConformanceTests(
  "wasm (3 threads, relaxed SIMD)",
  () => createWasmBackend({ threads: 3, relaxed: true, parallelThreshold: 0 }),
  { skipReason: noThreads ?? noRelaxed },
);
