/**
 * Development timing of the WASM backend's Gram accumulation against the TS reference, in the same run, best of N.
 * `deno run -A bench/wasm_gram.ts [rows=8192] [d=4096] [reps=3]`; the TS reference is timed on `[rows, 512]` only
 * (the full size would take minutes). Measurements only, no assertions.
 *
 * @module
 */

import { gramAccumulate } from "../core/linalg/gram.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix, matrix64 } from "../core/tensor.ts";
import { maxRelativeError } from "../tests/assert_close.ts";
import { createWasmBackend } from "../backends/wasm/mod.ts";

const rows = Number(Deno.args[0] ?? 8192);
const d = Number(Deno.args[1] ?? 4096);
const reps = Number(Deno.args[2] ?? 3);

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

const rng = createRng(2);
const small = matrix(rows, 512, randomNormal(rng, rows * 512));
const refSmall = matrix64(512, 512);
const tsSmall = await best(() => gramAccumulate(refSmall, small, 1), 2);
console.log(
  `gram ${rows}×512 ts: ${tsSmall.toFixed(3)} s (${(rows * 512 * 512 / tsSmall / 1e9).toFixed(2)} GFLOP/s n·d²)`,
);
const x = matrix(rows, d, randomNormal(rng, rows * d));
for (const threads of [1, 2]) {
  const wasm = await createWasmBackend({ threads });
  const accSmall = matrix64(512, 512);
  await wasm.gramAccumulate(accSmall, small, 1);
  const want = matrix64(512, 512);
  gramAccumulate(want, small, 1);
  const tSmall = await best(() => wasm.gramAccumulate(accSmall, small, 1));
  const acc = matrix64(d, d);
  await wasm.gramAccumulate(acc, x, 1 / rows); // warm-up
  const t = await best(() => wasm.gramAccumulate(acc, x, 1 / rows));
  console.log(
    `  wasm relaxed=${wasm.relaxed} threads=${wasm.threads}: ${rows}×512 ${tSmall.toFixed(4)} s (${
      (tsSmall / tSmall).toFixed(1)
    }× ts, maxRelErr ${maxRelativeError(accSmall.data.map((v) => v / (1 + reps)), want.data).toExponential(1)}); ` +
      `${rows}×${d} → ${d}²: ${t.toFixed(3)} s (${(rows * d * d / t / 1e9).toFixed(1)} GFLOP/s n·d²)`,
  );
  wasm.dispose();
}
