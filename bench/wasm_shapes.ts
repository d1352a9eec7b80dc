/**
 * Development timing of the WASM matmul at llama-12m's forward shapes (`x·Wᵀ` with a batch of 8 windows of 512
 * tokens), best of N per shape: `deno run -A bench/wasm_shapes.ts [tokens=4096] [seconds=1]`. Measurements only.
 *
 * @module
 */

import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import { createWasmBackend } from "../backends/wasm/mod.ts";

const tokens = Number(Deno.args[0] ?? 4096);
const seconds = Number(Deno.args[1] ?? 1);
const backend = await createWasmBackend();
const rng = createRng(1);
/** `[out, in]` weights of the model's linear layers, each with how many times one forward pass runs it. */
const shapes: [number, number, number][] = [[1024, 384, 12], [384, 1024, 6], [384, 384, 12], [4096, 384, 1], [
  128,
  384,
  12,
]];
let total = 0;
for (const [out, inp, calls] of shapes) {
  const x = matrix(tokens, inp, randomNormal(rng, tokens * inp));
  const w = matrix(out, inp, randomNormal(rng, out * inp));
  let best = Infinity;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const s = performance.now();
    await backend.matmul(x, w, { transB: true });
    best = Math.min(best, performance.now() - s);
  }
  total += best * calls;
  console.log(
    `${tokens}×${inp} · (${out}×${inp})ᵀ  ${best.toFixed(2)} ms  ${
      (2 * tokens * inp * out / best / 1e6).toFixed(1)
    } GFLOP/s`,
  );
}
console.log(`one forward pass's matmuls: ${total.toFixed(0)} ms`);
await backend.dispose?.();
