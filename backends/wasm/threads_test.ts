/**
 * The threaded WASM backend returns bit-identical results to the single-threaded one: work is split by output blocks
 * whose arithmetic does not depend on which thread, or how many, compute them.
 *
 * @module
 */

import { deepStrictEqual } from "node:assert/strict";
import { reverseCholesky } from "../../core/linalg/cholesky.ts";
import { createRng, randomNormal } from "../../core/random.ts";
import { eye, matrix, matrix64 } from "../../core/tensor.ts";
import { createWasmBackend } from "./mod.ts";
import { wasmTest, wasmThreadsTest } from "./testing.ts";
import { threadsSupported, WasmRuntime } from "./runtime.ts";

wasmThreadsTest("wasm: 1 thread and 3 threads give bit-identical results", async (one, many) => {
  const rng = createRng(21);
  const a = matrix(301, 517, randomNormal(rng, 301 * 517));
  const b = matrix(517, 263, randomNormal(rng, 517 * 263));
  for (const [x, y, opts] of [[a, b, {}], [b, a, { transA: true, transB: true }]] as const) {
    deepStrictEqual((await many.matmul(x, y, opts)).data, (await one.matmul(x, y, opts)).data, "matmul");
  }
  const xg = matrix(263, 517, randomNormal(rng, 263 * 517));
  const g1 = matrix64(517, 517), g3 = matrix64(517, 517);
  await one.gramAccumulate(g1, xg, 0.5);
  await many.gramAccumulate(g3, xg, 0.5);
  deepStrictEqual(g3.data, g1.data, "gramAccumulate");
  const h = matrix64(300, 300);
  await one.gramAccumulate(h, matrix(600, 300, randomNormal(rng, 600 * 300)), 1 / 600);
  for (let i = 0; i < 300; i++) h.data[i * 300 + i] += 0.01;
  const l1 = await one.cholesky(h), l3 = await many.cholesky(h);
  deepStrictEqual(l3.data, l1.data, "cholesky");
  const i1 = await one.triangularSolve(l1, eye(300), { lower: true });
  deepStrictEqual((await many.triangularSolve(l1, eye(300), { lower: true })).data, i1.data, "triangularSolve");
  deepStrictEqual((await many.choleskyInverse(l1)).data, (await one.choleskyInverse(l1)).data, "choleskyInverse");
  const args = {
    w: matrix(333, 300, randomNormal(rng, 333 * 300)),
    r: reverseCholesky(h),
    grid: { kind: "uniform", bits: 4 } as const,
    blockSize: 128,
    groups: { kind: "dynamic", groupSize: 64 } as const,
  };
  const q1 = await one.gptqQuantize(args), q3 = await many.gptqQuantize(args);
  deepStrictEqual(q3.codes, q1.codes, "gptq codes");
  deepStrictEqual(q3.dequantized.data, q1.dequantized.data, "gptq values");
}, { ignore: !threadsSupported() });

wasmTest("wasm: overlapping kernel calls are serialised and each gets its own result", async (wasm) => {
  const rng = createRng(5);
  const mats = Array.from({ length: 4 }, (_, i) => matrix(40 + i, 50, randomNormal(rng, (40 + i) * 50)));
  const w = matrix(50, 30, randomNormal(rng, 50 * 30));
  const together = await Promise.all(mats.map((m) => wasm.matmul(m, w)));
  for (let i = 0; i < mats.length; i++) deepStrictEqual(together[i].data, (await wasm.matmul(mats[i], w)).data);
});

Deno.test({
  name: "wasm: the workers' shares run while the calling thread runs its own",
  ignore: !threadsSupported(),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // This thread's share spins until a worker's share has stored a flag. Were the workers' calls posted only after
    // this thread's share (an `await` between them), it would give up: every shared-counter kernel would then run on
    // one thread whatever the thread count.
    const rt = await WasmRuntime.create(3, undefined, 0);
    try {
      for (let round = 0; round < 3; round++) {
        const seen = await rt.exclusive(async () => {
          const flags = rt.alloc(16), results = rt.alloc(16);
          rt.i32().fill(0, flags >> 2, (flags >> 2) + 4);
          await rt.parallel([
            [["spinWaitEqual", flags, 1, 2e9, results], ["spinWaitEqual", flags + 4, 1, 2e9, results + 4]],
            [["atomicStore32", flags, 1]],
            [["atomicStore32", flags + 4, 1]],
          ]);
          return [...rt.i32().subarray(results >> 2, (results >> 2) + 2)];
        });
        deepStrictEqual(seen, [1, 1], `round ${round}: flags seen by the calling thread`);
      }
    } finally {
      rt.dispose();
    }
  },
});

Deno.test({
  name: "wasm: where workers cannot be created, every share runs on the calling thread with the same result",
  ignore: !threadsSupported(),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const rng = createRng(8);
    const a = matrix(200, 150, randomNormal(rng, 200 * 150)), b = matrix(150, 120, randomNormal(rng, 150 * 120));
    const one = await createWasmBackend({ threads: 1 });
    const want = (await one.matmul(a, b)).data;
    one.dispose();
    const realWorker = globalThis.Worker;
    // As a page whose content security policy blocks blob workers: the constructor throws.
    globalThis.Worker = class {
      constructor() {
        throw new DOMException("blob workers are blocked", "SecurityError");
      }
    } as unknown as typeof Worker;
    try {
      const many = await createWasmBackend({ threads: 3, parallelThreshold: 0 });
      try {
        deepStrictEqual((await many.matmul(a, b)).data, want);
        deepStrictEqual((await many.matmul(a, b)).data, want, "and again, once workers are known to be unavailable");
      } finally {
        many.dispose();
      }
    } finally {
      globalThis.Worker = realWorker;
    }
  },
});
