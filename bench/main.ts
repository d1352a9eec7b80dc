/**
 * `deno task bench`: measures every backend that starts here with the same code, and prints Markdown tables with the
 * TS reference as the baseline of the same run.
 *
 * Usage: `deno task bench [--backends ts,wasm,webgpu] [--quick] [--readme]`; `--readme` also writes the tables into
 * the `cpu-table` section of bench/README.md.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Backend } from "../core/backend.ts";
import { listBackends, loadBackend } from "../backends/registry.ts";
import { benchGram, benchMatmul, type DenseResult } from "./dense.ts";
import { benchGptqLayerIsolated } from "./gptq_layer.ts";
import { fmt, markdownTable } from "./timing.ts";
import { replaceReadmeSection } from "./results.ts";
import { fileURLToPath } from "node:url";

const { values } = parseArgs({
  options: {
    backends: { type: "string" },
    quick: { type: "boolean", default: false },
    gptq: { type: "string", default: "1024,4096" },
    "ts-gptq": { type: "string", default: "1024" },
    readme: { type: "boolean", default: false },
  },
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

// Whole-layer GPTQ: 4-bit, group 128, act-order, Hessian of 8192 correlated rows (accumulation timed apart), best of
// two in a fresh process per backend and size.
const gptqRows: (string | number)[][] = [];
const gptqSeconds = new Map<string, number>();
for (const b of backends) {
  const sizes = (b.name === "ts" ? values["ts-gptq"] : values.gptq).split(",").filter(Boolean).map(Number);
  // The TS reference factors in float64 whatever it is given: its float32 row would repeat the float64 one.
  for (const precision of b.name === "ts" ? ["f64"] as const : ["f64", "f32"] as const) {
    for (const d of values.quick ? sizes.filter((s) => s <= 1024) : sizes) {
      const r = await benchGptqLayerIsolated(b.name, d, d, 8192, precision);
      if (precision === "f64") gptqSeconds.set(`${b.name}:${d}`, r.gptq);
      const base = precision === "f64" ? gptqSeconds.get(`ts:${d}`) : undefined;
      gptqRows.push([`${d}×${d}`, b.name, precision, fmt(r.hessian), fmt(r.gptq), base ? fmt(base / r.gptq) : "—"]);
      console.error(`${b.name} gptq ${d} (${precision} factor): hessian ${fmt(r.hessian)} s, gptq ${fmt(r.gptq)} s`);
    }
  }
}

const baseline = (r: DenseResult) =>
  results.find((x) => x.backend === "ts" && x.kernel === r.kernel && x.size === r.size);
const denseTable = markdownTable(
  ["kernel", "size", "backend", "seconds", "GFLOP/s", "× TS"],
  results.map((r) => {
    const base = baseline(r);
    return [r.kernel, r.size, r.backend, fmt(r.seconds), fmt(r.gflops), base ? fmt(base.seconds / r.seconds) : "—"];
  }),
);
const gptqTable = markdownTable(["layer", "backend", "factor", "Hessian s", "GPTQ s", "× TS"], gptqRows);
const backendLine = "Backends: " +
  backends.map((b) => {
    const extra = b as Backend & { threads?: number; relaxed?: boolean };
    return `${b.name}${extra.threads ? ` (${extra.threads} threads${extra.relaxed ? ", relaxed SIMD" : ""})` : ""}`;
  }).join(", ") + `; load average ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`;
const report = [
  `\`deno task bench --backends ${names.join(",")}\`, ${
    new Date().toISOString().slice(0, 10)
  }. Each dense kernel runs ` +
  "for at least 2 s and reports its best run; each whole-layer GPTQ runs twice in a fresh process " +
  "(`bench/gptq_layer.ts`) and reports the best; the WASM rows run with `H` factored in float64 and in float32 " +
  "(`factorPrecision`, the reference GPTQ's precision).",
  "### Dense kernels (best of N; Gram counts n·d² flops)",
  denseTable,
  "### GPTQ of one layer (4-bit, group 128, act-order; Hessian of 8192 correlated rows; best of 2; H factored in " +
  "float64 or float32)",
  gptqTable,
  backendLine,
].join("\n\n");
console.log(`\n${report}`);
if (values.readme) {
  await replaceReadmeSection("cpu-table", report, fileURLToPath(new URL("./README.md", import.meta.url)));
  console.error("bench/README.md: cpu-table updated");
}
for (const b of backends) b.dispose?.();
