/**
 * Development timing of GPTQ with the WASM backend: the column-loop kernel alone (WASM, 1 and 2 threads, against the TS
 * reference kernel at the same size when `--ts`), and the whole algorithm (4-bit, g128, act-order) with the WASM
 * backend. `deno run -A bench/wasm_gptq.ts [size=4096] [--ts] [--whole]`. Best of N where repeated; measurements only.
 *
 * @module
 */

import { gptq } from "../algorithms/gptq.ts";
import { createWasmBackend } from "../backends/wasm/mod.ts";
import type { GptqKernelArgs } from "../core/backend.ts";
import { reverseCholesky } from "../core/linalg/cholesky.ts";
import { gptqQuantize } from "../core/quant/gptq_kernel.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix, matrix64 } from "../core/tensor.ts";

const size = Number(Deno.args.find((a) => !a.startsWith("--")) ?? 4096);
const withTs = Deno.args.includes("--ts");
const withWhole = Deno.args.includes("--whole");
const rows = size, cols = size;

console.log(
  `load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")} on ${navigator.hardwareConcurrency} cores`,
);

async function time(fn: () => unknown, reps = 2): Promise<number> {
  let t = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    t = Math.min(t, performance.now() - t0);
  }
  return t / 1000;
}

const rng = createRng(3);
const w = matrix(rows, cols, randomNormal(rng, rows * cols, 0.02));
// A Hessian-like SPD matrix: XᵀX/n of correlated inputs, computed with the backend itself.
const wasm = await createWasmBackend();
const n = 2 * cols;
const xin = matrix(n, cols, randomNormal(rng, n * cols));
const h = matrix64(cols, cols);
let t0 = performance.now();
await wasm.gramAccumulate(h, xin, 2 / n);
console.log(
  `Hessian (${n}×${cols} → ${cols}², wasm threads=${wasm.threads}): ${((performance.now() - t0) / 1000).toFixed(3)} s`,
);
for (let i = 0; i < cols; i++) h.data[i * cols + i] += 0.01;
t0 = performance.now();
const r = reverseCholesky(h);
console.log(`R via core reverseCholesky (TS, float64): ${((performance.now() - t0) / 1000).toFixed(3)} s`);
const args: GptqKernelArgs = {
  w,
  r,
  grid: { kind: "uniform", bits: 4 },
  blockSize: 128,
  groups: { kind: "dynamic", groupSize: 128 },
};
const ts = withTs ? await time(() => gptqQuantize(args), 1) : NaN;
if (withTs) console.log(`gptqQuantize kernel ${rows}×${cols} ts: ${ts.toFixed(3)} s`);
for (const threads of [1, 2]) {
  const b = await createWasmBackend({ threads });
  await b.gptqQuantize(args); // warm-up
  const t = await time(() => b.gptqQuantize(args));
  console.log(
    `gptqQuantize kernel ${rows}×${cols} wasm threads=${b.threads} relaxed=${b.relaxed}: ${t.toFixed(3)} s` +
      (withTs ? ` (${(ts / t).toFixed(1)}× ts)` : ""),
  );
  b.dispose();
}
if (withWhole) {
  const whole = await time(() => gptq(w, h, { bits: 4, groupSize: 128, actOrder: true, backend: wasm }), 1);
  console.log(`whole gptq() 4-bit g128 act-order, wasm backend threads=${wasm.threads}: ${whole.toFixed(3)} s`);
}
wasm.dispose();
