/**
 * Development timing of the WASM float64 factorisations against the TS references, in the same run:
 * Cholesky and the triangular solve `L⁻¹ = solve(L, I)` that GPTQ's inverse factor uses.
 * `deno run -A bench/wasm_linalg.ts [size=2048] [--ts]`. Best of N; measurements only.
 *
 * @module
 */

import { createWasmBackend } from "../backends/wasm/mod.ts";
import { cholesky } from "../core/linalg/cholesky.ts";
import { triangularSolve } from "../core/linalg/triangular.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { eye, matrix, matrix64 } from "../core/tensor.ts";
import { maxRelativeError } from "../tests/assert_close.ts";

const n = Number(Deno.args.find((a) => !a.startsWith("--")) ?? 2048);
const withTs = Deno.args.includes("--ts");

console.log(
  `load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")} on ${navigator.hardwareConcurrency} cores`,
);

async function best(fn: () => unknown, reps: number): Promise<number> {
  let t = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    t = Math.min(t, performance.now() - t0);
  }
  return t / 1000;
}

const rng = createRng(4);
const x = matrix(2 * n, n, randomNormal(rng, 2 * n * n));
const h = matrix64(n, n);
const wasm0 = await createWasmBackend();
await wasm0.gramAccumulate(h, x, 1 / (2 * n));
wasm0.dispose();
for (let i = 0; i < n; i++) h.data[i * n + i] += 0.01;
const I = eye(n);
const tsChol = withTs ? await best(() => cholesky(h), 1) : NaN;
const lRef = cholesky(h);
const tsSolve = withTs ? await best(() => triangularSolve(lRef, I, { lower: true }), 1) : NaN;
if (withTs) console.log(`n=${n} ts: cholesky ${tsChol.toFixed(3)} s, solve(L, I) ${tsSolve.toFixed(3)} s`);
for (const threads of [1, 2]) {
  const wasm = await createWasmBackend({ threads });
  const l = await wasm.cholesky(h);
  const tc = await best(() => wasm.cholesky(h), 3);
  const inv = await wasm.triangularSolve(l, I, { lower: true });
  const ts = await best(() => wasm.triangularSolve(l, I, { lower: true }), 3);
  const errL = maxRelativeError(l.data, lRef.data);
  const errInv = withTs ? maxRelativeError(inv.data, triangularSolve(lRef, I, { lower: true }).data) : NaN;
  console.log(
    `n=${n} wasm threads=${wasm.threads} relaxed=${wasm.relaxed}: cholesky ${tc.toFixed(3)} s` +
      ` (${(n ** 3 / 3 / tc / 1e9).toFixed(1)} GFLOP/s${withTs ? `, ${(tsChol / tc).toFixed(1)}× ts` : ""}, err ${
        errL.toExponential(1)
      }), solve(L, I) ${ts.toFixed(3)} s${
        withTs ? ` (${(tsSolve / ts).toFixed(1)}× ts, err ${errInv.toExponential(1)})` : ""
      }`,
  );
  wasm.dispose();
}
