/**
 * Development timing of the WASM backend's transformer kernels against the TS references, in the same run, best of N.
 * `deno run -A bench/wasm_nn.ts`. Measurements only, no assertions. (RMSNorm and RoPE delegate to the references.)
 *
 * @module
 */

import { createWasmBackend } from "../backends/wasm/mod.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import type { AttentionShape, Backend } from "../core/backend.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";

console.log(
  `load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")} on ${navigator.hardwareConcurrency} cores`,
);

async function best(fn: () => unknown, reps = 3): Promise<number> {
  let t = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    t = Math.min(t, performance.now() - t0);
  }
  return t / 1000;
}

const rng = createRng(5);
const shape: AttentionShape = { batch: 2, seqLen: 512, heads: 8, kvHeads: 4, headDim: 64 };
const T = shape.batch * shape.seqLen;
const q = matrix(T, shape.heads * shape.headDim, randomNormal(rng, T * shape.heads * shape.headDim));
const k = matrix(T, shape.kvHeads * shape.headDim, randomNormal(rng, T * shape.kvHeads * shape.headDim));
const v = matrix(T, shape.kvHeads * shape.headDim, randomNormal(rng, T * shape.kvHeads * shape.headDim));
const x = matrix(T, 2048, randomNormal(rng, T * 2048));
const logits = matrix(256, 32000, randomNormal(rng, 256 * 32000, 3));
const targets = Int32Array.from({ length: 256 }, () => rng.int(32000));

const kernels: [string, (b: Backend) => Promise<unknown>][] = [
  ["attention 2×512, 8/4 heads, hd 64", (b) => b.attention(q, k, v, shape)],
  ["attentionBackward (same)", (b) => b.attentionBackward(q, k, v, q, shape)],
  ["swiglu 1024×2048", (b) => b.swiglu(x, x)],
  ["swigluBackward 1024×2048", (b) => b.swigluBackward(x, x, x)],
  ["crossEntropy 256×32000 + grad", (b) => b.crossEntropy(logits, targets, 1 / 256)],
];
const wasm1 = await createWasmBackend({ threads: 1 });
const wasm2 = await createWasmBackend({ threads: 2 });
for (const [name, run] of kernels) {
  await run(tsBackend); // warm-up (JIT) for the reference too
  const ts = await best(() => run(tsBackend), 2);
  await run(wasm1), await run(wasm2);
  const t1 = await best(() => run(wasm1)), t2 = await best(() => run(wasm2));
  console.log(
    `${name}: ts ${ts.toFixed(4)} s; wasm 1 thread ${t1.toFixed(4)} s (${(ts / t1).toFixed(1)}×), ` +
      `${wasm2.threads} threads ${t2.toFixed(4)} s (${(ts / t2).toFixed(1)}×)`,
  );
}
wasm1.dispose();
wasm2.dispose();
