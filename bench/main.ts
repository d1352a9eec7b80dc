/**
 * `deno task bench`: measures every backend that starts here with the same code, and prints Markdown tables with the
 * TS reference as the baseline of the same run.
 *
 * Usage: `deno task bench [--backends ts,wasm,webgpu] [--quick]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Backend } from "../core/backend.ts";
import { listBackends, loadBackend } from "../backends/registry.ts";
import { benchGram, benchMatmul, type DenseResult } from "./dense.ts";
import { fmt, markdownTable } from "./timing.ts";

const { values } = parseArgs({
  options: { backends: { type: "string" }, quick: { type: "boolean", default: false } },
});
const names = values.backends?.split(",") ?? listBackends().reverse();

const backends: Backend[] = [];
for (const name of names) {
  try {
    backends.push(await loadBackend(name));
  } catch (e) {
    console.error(`skipping backend ${name}: ${e instanceof Error ? e.message : e}`);
  }
}

const results: DenseResult[] = [];
for (const b of backends) {
  const fast = b.name !== "ts";
  for (const n of fast && !values.quick ? [512, 1024, 2048] : [512, 1024]) {
    results.push(await benchMatmul(b, n, fast ? 5 : 2));
    console.error(`${b.name} matmul ${n}: ${fmt(results.at(-1)!.gflops)} GFLOP/s`);
  }
  const grams: [number, number][] = fast && !values.quick ? [[4096, 512], [4096, 1024], [8192, 4096]] : [[4096, 512], [
    4096,
    1024,
  ]];
  for (const [rows, d] of grams) {
    results.push(await benchGram(b, rows, d, fast ? 3 : 1));
    console.error(`${b.name} gram ${rows}×${d}: ${fmt(results.at(-1)!.seconds)} s`);
  }
}

const baseline = (r: DenseResult) =>
  results.find((x) => x.backend === "ts" && x.kernel === r.kernel && x.size === r.size);
console.log("\n## Dense kernels (best of N; Gram counts n·d² flops)\n");
console.log(markdownTable(
  ["kernel", "size", "backend", "seconds", "GFLOP/s", "× TS"],
  results.map((r) => {
    const base = baseline(r);
    return [r.kernel, r.size, r.backend, fmt(r.seconds), fmt(r.gflops), base ? fmt(base.seconds / r.seconds) : "—"];
  }),
));
