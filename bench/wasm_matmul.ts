/**
 * Development timing of the WASM backend's dense kernels against the TS reference, in the same run, best of N.
 * `deno run -A bench/wasm_matmul.ts [size=1024] [reps=5]`. Measurements only, no assertions.
 *
 * @module
 */

import { matmul } from "../core/linalg/matmul.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import { maxRelativeError } from "../tests/assert_close.ts";
import { createWasmBackend } from "../backends/wasm/mod.ts";
import { relaxedSimdSupported } from "../backends/wasm/runtime.ts";

const size = Number(Deno.args[0] ?? 1024);
const reps = Number(Deno.args[1] ?? 5);

console.log(
  `load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")} on ${navigator.hardwareConcurrency} cores`,
);

async function best(fn: () => unknown, n = reps): Promise<number> {
  let t = Infinity;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    t = Math.min(t, performance.now() - t0);
  }
  return t / 1000;
}

const rng = createRng(1);
const a = matrix(size, size, randomNormal(rng, size * size));
const b = matrix(size, size, randomNormal(rng, size * size));
const flops = 2 * size ** 3;
const want = matmul(a, b);
const tsTime = await best(() => matmul(a, b), Math.min(reps, 2));
console.log(
  `matmul ${size}³  ts: ${(flops / tsTime / 1e9).toFixed(2)} GFLOP/s (${tsTime.toFixed(3)} s, best of ${
    Math.min(reps, 2)
  })`,
);

const configs = [
  ...(relaxedSimdSupported() ? [{ relaxed: true, threads: 1 }, { relaxed: true, threads: 2 }] : []),
  { relaxed: false, threads: 1 },
  { relaxed: false, threads: 2 },
];
for (const cfg of configs) {
  const wasm = await createWasmBackend(cfg);
  for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
    const opts = { transA, transB };
    const got = await wasm.matmul(a, b, opts); // warm-up (tier-up) and check
    const err = transA || transB ? NaN : maxRelativeError(got.data, want.data);
    const t = await best(() => wasm.matmul(a, b, opts));
    console.log(
      `  wasm relaxed=${wasm.relaxed} threads=${wasm.threads} tA=${+transA} tB=${+transB}: ` +
        `${(flops / t / 1e9).toFixed(1)} GFLOP/s (${t.toFixed(4)} s, ${(tsTime / t).toFixed(1)}× ts)` +
        (Number.isNaN(err) ? "" : ` maxRelErr ${err.toExponential(1)}`),
    );
  }
  wasm.dispose();
}
