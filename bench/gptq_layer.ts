/**
 * Whole-layer GPTQ benchmark: Hessian accumulation of `rows` correlated random inputs and GPTQ (4-bit, group 128,
 * act-order) of a `d_out × d_in` layer, per backend, in seconds. Inputs are AR(1)-correlated across columns with
 * log-normal column scales, so the Hessian is far from diagonal and act-order has something to sort.
 *
 * @module
 */

import { gptq } from "../algorithms/gptq.ts";
import type { FactorPrecision } from "../algorithms/prepare.ts";
import { createHessianAccumulator } from "../algorithms/hessian.ts";
import type { Backend } from "../core/backend.ts";
import { loadBackend } from "../backends/registry.ts";
import { createRng } from "../core/random.ts";
import { type Matrix, matrix } from "../core/tensor.ts";

/** Correlated inputs: `x_j = ρ·x_{j−1} + √(1−ρ²)·z_j`, times a log-normal scale per column. */
export function correlatedRows(rows: number, cols: number, seed = 1, rho = 0.9): Matrix {
  const rng = createRng(seed);
  const scale = Float64Array.from({ length: cols }, () => Math.exp(0.5 * rng.normal()));
  const x = matrix(rows, cols);
  const s = Math.sqrt(1 - rho * rho);
  for (let i = 0; i < rows; i++) {
    let prev = rng.normal();
    for (let j = 0; j < cols; j++) {
      prev = rho * prev + s * rng.normal();
      x.data[i * cols + j] = prev * scale[j];
    }
  }
  return x;
}

/** Seconds of a layer's Hessian accumulation and of its GPTQ, and GPTQ's layer loss. */
export interface GptqLayerTiming {
  readonly hessian: number;
  readonly gptq: number;
  readonly loss: number;
}

/** Seconds of the Hessian and of GPTQ for one layer on `backend`, factoring `H` in `factorPrecision`. */
export async function benchGptqLayer(
  backend: Backend,
  out: number,
  inputs: number,
  rows: number,
  factorPrecision: FactorPrecision = "f64",
): Promise<GptqLayerTiming> {
  const x = correlatedRows(rows, inputs);
  const rng = createRng(7);
  const w = matrix(out, inputs, Float32Array.from({ length: out * inputs }, () => rng.normal() * 0.02));
  let t = performance.now();
  const acc = createHessianAccumulator(inputs, { backend });
  // Batches of 2048 rows, as a calibration loop would feed them.
  for (let r = 0; r < rows; r += 2048) {
    const n = Math.min(2048, rows - r);
    await acc.observe({ data: x.data.subarray(r * inputs, (r + n) * inputs), shape: [n, inputs] });
  }
  const h = acc.finish();
  const hessian = (performance.now() - t) / 1000;
  t = performance.now();
  const q = await gptq(w, h, { bits: 4, groupSize: 128, actOrder: true, factorPrecision, backend });
  return { hessian, gptq: (performance.now() - t) / 1000, loss: q.stats.layerLoss };
}

/**
 * {@link benchGptqLayer} in a fresh process, so that what ran before in the caller's process (other backends' garbage,
 * functions the engine has seen with other array types) does not weigh on the measurement.
 */
export async function benchGptqLayerIsolated(
  backend: string,
  out: number,
  inputs: number,
  rows: number,
  factorPrecision: FactorPrecision = "f64",
): Promise<GptqLayerTiming> {
  const args = ["run", "-A", import.meta.url, backend, String(out), String(inputs), String(rows), factorPrecision];
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), { args, stderr: "piped" }).output();
  const text = new TextDecoder().decode(stdout).trim();
  if (code !== 0) throw new Error(`GPTQ layer benchmark (${backend}) failed: ${new TextDecoder().decode(stderr)}`);
  return JSON.parse(text.slice(text.lastIndexOf("\n") + 1));
}

if (import.meta.main) {
  // `deno run -A bench/gptq_layer.ts BACKEND OUT IN ROWS [f64|f32]`: the best of two measurements (Hessian and GPTQ
  // each), printed as JSON on the last line.
  const [name, out, inputs, rows, precision = "f64"] = Deno.args;
  if (precision !== "f64" && precision !== "f32") throw new Error(`factor precision f64 or f32, got ${precision}`);
  const backend = await loadBackend(name);
  const runs: GptqLayerTiming[] = [];
  for (let i = 0; i < 2; i++) {
    runs.push(await benchGptqLayer(backend, Number(out), Number(inputs), Number(rows), precision));
  }
  const best = (k: "hessian" | "gptq") => Math.min(...runs.map((r) => r[k]));
  console.log(JSON.stringify({ hessian: best("hessian"), gptq: best("gptq"), loss: runs[0].loss }));
  backend.dispose?.();
}
