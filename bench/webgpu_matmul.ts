/**
 * WebGPU matmul throughput: `deno run -A bench/webgpu_matmul.ts [--size 4096] [--adapter hardware|software]
 * [--iters 20]`. Times the GPU-resident kernel (operands already on the GPU; many dispatches per submit, timed by
 * wall clock around submit + `onSubmittedWorkDone`, and by timestamp queries where the device has them) for each
 * transposition mode and K step, checks sampled entries against float64 dot products, and times the CPU-in/CPU-out
 * `backend.matmul` (uploads and read-back included). Prints measurements, never asserts.
 *
 * @module
 */

import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import type { AdapterChoice } from "../backends/webgpu/adapter.ts";
import { createWebGpuBackend } from "../backends/webgpu/mod.ts";
import { encodeMatmul, gpuMat } from "../backends/webgpu/matmul.ts";

function arg(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : fallback;
}

const n = Number(arg("size", "4096"));
const iters = Number(arg("iters", "20"));
const adapter = arg("adapter", "hardware") as AdapterChoice;
const backend = await createWebGpuBackend({ adapter, log: console.log });
const ctx = backend.context;

const rng = createRng(1);
const a = randomNormal(rng, n * n), b = randomNormal(rng, n * n);
const aBuf = ctx.upload(a), bBuf = ctx.upload(b), cBuf = ctx.buffer(n * n * 4);
const A = gpuMat(aBuf, n, n), B = gpuMat(bBuf, n, n), C = gpuMat(cBuf, n, n);
const flops = 2 * n * n * n;

async function timeIt(encode: () => void, reps: number): Promise<number> {
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) encode();
  await ctx.device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / reps;
}

async function timestamped(record: (batch: ReturnType<typeof ctx.batch>) => void, reps: number) {
  if (!ctx.timestamps) return NaN;
  const set = ctx.device.createQuerySet({ type: "timestamp", count: 2 });
  const resolve = ctx.device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const batch = ctx.batch();
  batch.timestamp(set, 0);
  for (let r = 0; r < reps; r++) record(batch);
  batch.timestamp(set, 1);
  // resolveQuerySet is recorded through a tiny separate encoder after the batch.
  batch.submit();
  const enc = ctx.device.createCommandEncoder();
  enc.resolveQuerySet(set, 0, 2, resolve, 0);
  const staging = ctx.device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  enc.copyBufferToBuffer(resolve, 0, staging, 0, 16);
  ctx.device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(staging.getMappedRange().slice(0));
  staging.destroy(), resolve.destroy(), set.destroy();
  return Number(t[1] - t[0]) / 1e6 / reps; // ms
}

function check(transA: boolean, transB: boolean, out: Float32Array): number {
  // 64 sampled entries against float64 dot products.
  let worst = 0;
  for (let s = 0; s < 64; s++) {
    const i = (s * 997) % n, j = (s * 1531 + 7) % n;
    let ref = 0, mag = 0;
    for (let k = 0; k < n; k++) {
      const av = transA ? a[k * n + i] : a[i * n + k], bv = transB ? b[j * n + k] : b[k * n + j];
      ref += av * bv;
      mag += Math.abs(av * bv);
    }
    worst = Math.max(worst, Math.abs(out[i * n + j] - ref) / mag);
  }
  return worst;
}

const rows: string[] = [];
for (const bk of [8, 16] as const) {
  for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
    const enc = (batch: ReturnType<typeof ctx.batch>) => encodeMatmul(ctx, batch, A, B, C, { transA, transB, bk });
    // Warm-up (compiles the pipeline) and correctness.
    const batch = ctx.batch();
    enc(batch);
    const out = new Float32Array(await batch.read(cBuf, n * n * 4));
    const err = check(transA, transB, out);
    await timeIt(() => {
      const bt = ctx.batch();
      enc(bt);
      bt.submit();
    }, 3);
    // One submit per product, and all products in one submit.
    const perSubmit = await timeIt(() => {
      const bt = ctx.batch();
      enc(bt);
      bt.submit();
    }, iters);
    const oneSubmit = await timeIt(() => {
      const bt = ctx.batch();
      for (let r = 0; r < iters; r++) enc(bt);
      bt.submit();
    }, 1) / iters;
    const ts = await timestamped(enc, iters);
    const tf = (ms: number) => (flops / ms / 1e9).toFixed(2);
    const line = `matmul ${n}³ bk=${bk} transA=${+transA} transB=${+transB}: ${perSubmit.toFixed(3)} ms/submit ` +
      `(${tf(perSubmit)} TFLOP/s), batched ${oneSubmit.toFixed(3)} ms (${tf(oneSubmit)} TFLOP/s), timestamps ` +
      `${ts.toFixed(3)} ms (${tf(ts)} TFLOP/s); max rel err ${err.toExponential(2)}`;
    console.log(line);
    rows.push(line);
  }
}

// CPU in, CPU out (upload, product, read-back).
const am = matrix(n, n, a), bm = matrix(n, n, b);
await backend.matmul(am, bm);
const t0 = performance.now();
await backend.matmul(am, bm);
const e2e = performance.now() - t0;
rows.push(`backend.matmul ${n}³ CPU→GPU→CPU: ${e2e.toFixed(1)} ms (${(flops / e2e / 1e9).toFixed(2)} TFLOP/s)`);
console.log(rows.at(-1));
console.log("\nsummary\n" + rows.join("\n"));
aBuf.destroy(), bBuf.destroy(), cBuf.destroy();
backend.dispose?.();
