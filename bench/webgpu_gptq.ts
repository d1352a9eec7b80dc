/**
 * WebGPU GPTQ timings: `deno run -A bench/webgpu_gptq.ts [--shapes 4096x4096,4096x11008] [--rows-h 32768]
 * [--adapter hardware|software] [--check] [--steps] [--fused-only]`.
 *
 * For each `rows×cols` layer: a Hessian `2/N·XᵀX` of N correlated random rows (each row an AR(1) walk across the
 * columns plus a shared per-row offset, columns with log-normal scales) accumulated with `backend.gramAccumulate`
 * (timed and reported apart), then GPTQ 4-bit, group 128, act-order through `algorithms/gptq.ts` with the WebGPU backend
 * (everything from the Hessian to the quantized layer, its layer loss included), the same on the GPU alone
 * (`backend.gptqFromHessian`, with a float64 and a float32 Hessian), and the backend steps on their own:
 * Cholesky, the triangular inverse, and the column loop `gptqQuantize`. `--check` compares the column loop with the TS
 * reference kernel (slow for big layers). Prints measurements, never asserts.
 *
 * @module
 */

import { gptq } from "../algorithms/gptq.ts";
import { gptqQuantize as referenceGptq } from "../core/quant/gptq_kernel.ts";
import { matrix, matrix64, permuteColumns, permuteSymmetric, toFloat32 } from "../core/tensor.ts";
import type { AdapterChoice } from "../backends/webgpu/adapter.ts";
import { createWebGpuBackend } from "../backends/webgpu/mod.ts";

function arg(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : fallback;
}

const shapes = arg("shapes", "4096x4096,4096x11008").split(",").map((s) => s.split("x").map(Number));
const nRows = Number(arg("rows-h", "32768"));
const adapter = arg("adapter", "hardware") as AdapterChoice;
const check = Deno.args.includes("--check");
const backend = await createWebGpuBackend({ adapter, log: console.log });

/** A fast seeded generator of centred uniform floats with unit variance (xorshift32). */
function fastNoise(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
    return ((s >>> 0) / 4294967296 - 0.5) * 3.4641016;
  };
}

const ms = (t0: number) => performance.now() - t0;
const lines: string[] = [];
const say = (s: string) => (console.log(s), lines.push(s));

{
  // Host↔device copies through the WebGPU API (writeBuffer; copy + mapAsync), 256 MiB each way.
  const ctx = backend.context, bytes = 256 << 20;
  const data = new Float32Array(bytes / 4).fill(1.5);
  for (let rep = 0; rep < 2; rep++) {
    let t0 = performance.now();
    const buf = ctx.upload(data);
    await ctx.device.queue.onSubmittedWorkDone();
    const up = ms(t0);
    t0 = performance.now();
    await ctx.read(buf, bytes);
    const down = ms(t0);
    buf.destroy();
    say(
      `transfers: upload 256 MiB ${up.toFixed(1)} ms (${(bytes / up / 1e6).toFixed(2)} GB/s), read-back ` +
        `${down.toFixed(1)} ms (${(bytes / down / 1e6).toFixed(2)} GB/s)`,
    );
  }
}

for (const [rows, cols] of shapes) {
  const rnd = fastNoise(rows * 31 + cols);
  // Column scales: log-normal, so act-order has something to sort.
  const colScale = Float32Array.from({ length: cols }, () => Math.exp(0.5 * rnd()));
  const h = matrix64(cols, cols);
  const chunk = Math.min(nRows, 8192);
  let tGram = 0;
  for (let r0 = 0; r0 < nRows; r0 += chunk) {
    const n = Math.min(chunk, nRows - r0);
    const x = matrix(n, cols);
    for (let t = 0; t < n; t++) {
      const shared = rnd();
      let walk = 0;
      const o = t * cols;
      for (let j = 0; j < cols; j++) {
        walk = 0.7 * walk + rnd();
        x.data[o + j] = (walk + 0.5 * shared) * colScale[j];
      }
    }
    const t0 = performance.now();
    await backend.gramAccumulate(h, x, 2 / nRows);
    tGram += ms(t0);
  }
  say(`${rows}×${cols}: Hessian of ${nRows} rows via gramAccumulate: ${(tGram / 1000).toFixed(3)} s`);

  const w = matrix(rows, cols);
  for (let i = 0; i < w.data.length; i++) w.data[i] = 0.02 * rnd();

  // Warm-up on a small layer compiles every pipeline the real run uses.
  await gptq(
    matrix(8, 128, w.data.slice(0, 8 * 128)),
    matrix64(
      128,
      128,
      (() => {
        const e = new Float64Array(128 * 128);
        for (let i = 0; i < 128; i++) e[i * 129] = 1;
        return e;
      })(),
    ),
    { bits: 4, groupSize: 128, actOrder: true, backend },
  );

  // Everything on the GPU: backend.gptqFromHessian, with the float64 Hessian and with a float32 one.
  const fusedOptions = { grid: { kind: "uniform" as const, bits: 4 }, groupSize: 128, actOrder: true };
  const h32 = toFloat32(h);
  for (const [label, hh] of [["f64", h], ["f32", h32]] as const) {
    for (let rep = 0; rep < 2; rep++) {
      const t0 = performance.now();
      const q = await backend.gptqFromHessian(w, hh, fusedOptions);
      say(
        `${rows}×${cols}: backend.gptqFromHessian 4-bit g128 act-order, ${label} H: ${(ms(t0) / 1000).toFixed(3)} s ` +
          `(layer loss ${q.layerLoss.toExponential(4)})`,
      );
    }
  }

  if (Deno.args.includes("--fused-only")) continue;
  for (let rep = 0; rep < 1; rep++) {
    const t0 = performance.now();
    const q = await gptq(w, h, { bits: 4, groupSize: 128, actOrder: true, backend });
    say(
      `${rows}×${cols}: gptq() 4-bit g128 act-order, end to end from H: ${(ms(t0) / 1000).toFixed(3)} s ` +
        `(layer loss ${q.stats.layerLoss.toExponential(4)})`,
    );
  }

  if (cols > 4096 && !Deno.args.includes("--steps")) continue;
  // The backend steps alone, on the same permuted, damped Hessian as gptq() builds (`--steps` for layers wider than
  // 4096 columns: slow, since every step moves float64 matrices through the CPU).
  const d = Float64Array.from({ length: cols }, (_, j) => h.data[j * cols + j]);
  const perm = Int32Array.from({ length: cols }, (_, j) => j).sort((a, b) => d[b] - d[a] || a - b);
  const hp = permuteSymmetric(h, perm);
  let mean = 0;
  for (let j = 0; j < cols; j++) mean += hp.data[j * cols + j];
  for (let j = 0; j < cols; j++) hp.data[j * cols + j] += 0.01 * mean / cols;
  let t0 = performance.now();
  const l = await backend.cholesky(hp);
  say(`${rows}×${cols}: backend.cholesky ${cols}² (f64 in/out, f32 on GPU): ${ms(t0).toFixed(1)} ms`);
  t0 = performance.now();
  const eye = matrix64(cols, cols);
  for (let i = 0; i < cols; i++) eye.data[i * cols + i] = 1;
  await backend.triangularSolve(l, eye, { lower: true });
  say(`${rows}×${cols}: backend.triangularSolve L⁻¹ ${cols}²: ${ms(t0).toFixed(1)} ms`);
  t0 = performance.now();
  const r = await backend.reverseCholesky(hp);
  say(`${rows}×${cols}: backend.reverseCholesky (reverse, Cholesky, reverse): ${ms(t0).toFixed(1)} ms`);
  const wp = permuteColumns(w, perm);
  const args = {
    w: wp,
    r,
    grid: { kind: "uniform" as const, bits: 4 },
    blockSize: 128,
    groups: { kind: "dynamic" as const, groupSize: 128 },
  };
  await backend.gptqQuantize(args);
  t0 = performance.now();
  const got = await backend.gptqQuantize(args);
  say(`${rows}×${cols}: backend.gptqQuantize (column loop, uploads and read-back included): ${ms(t0).toFixed(1)} ms`);
  if (check) {
    t0 = performance.now();
    const want = referenceGptq(args);
    let same = 0;
    for (let i = 0; i < want.codes.length; i++) same += +(want.codes[i] === got.codes[i]);
    say(
      `${rows}×${cols}: codes equal to the TS reference kernel: ${(100 * same / want.codes.length).toFixed(3)}% ` +
        `(reference took ${(ms(t0) / 1000).toFixed(1)} s)`,
    );
  }
}
console.log("\nsummary\n" + lines.join("\n"));
backend.dispose?.();
