/**
 * Where the time of a WebGPU read-back goes, by size: the read-back the WebGPU backend does for every kernel result
 * (a fresh `MAP_READ` staging buffer, a copy, a submit, `mapAsync`, `getMappedRange` and a slice), the same with one
 * staging buffer reused, and the floor of an empty submit followed by `onSubmittedWorkDone`. Median of `--reps` runs.
 *
 * `deno run -A bench/webgpu_readback.ts [--reps 9] [--software]`. Measurements only.
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: { reps: { type: "string", default: "9" }, software: { type: "boolean", default: false } },
});
const reps = Number(values.reps);
const adapter = await navigator.gpu?.requestAdapter({ forceFallbackAdapter: values.software });
if (!adapter) throw new Error("no WebGPU adapter");
const device = await adapter.requestDevice({
  requiredLimits: {
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
  },
});
console.log(`adapter: ${adapter.info.vendor} ${adapter.info.device || adapter.info.description}`);

const STORAGE = 0x80 | 0x4 | 0x8, MAP_READ = 0x1, COPY_DST = 0x8;

async function median(fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

/** Copies `bytes` of `src` into `staging` and submits. */
function submitCopy(src: GPUBuffer, staging: GPUBuffer, bytes: number): void {
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, staging, 0, bytes);
  device.queue.submit([enc.finish()]);
}

/** Maps `staging` and copies its first `bytes` out. */
async function mapAndCopy(staging: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  await staging.mapAsync(MAP_READ);
  return staging.getMappedRange(0, bytes).slice(0);
}

const rows: string[] = [];
const floor = await median(async () => {
  device.queue.submit([device.createCommandEncoder().finish()]);
  await device.queue.onSubmittedWorkDone();
});
rows.push(`empty submit + onSubmittedWorkDone: ${floor.toFixed(3)} ms`);

for (const bytes of [4 << 10, 256 << 10, 4 << 20, 16 << 20, 64 << 20]) {
  const src = device.createBuffer({ size: bytes, usage: STORAGE });
  device.queue.writeBuffer(src, 0, new Uint8Array(bytes).fill(7));
  await device.queue.onSubmittedWorkDone();
  // The backend's pattern: a fresh staging buffer per read.
  const fresh = await median(async () => {
    const staging = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST });
    submitCopy(src, staging, bytes);
    await mapAndCopy(staging, bytes);
    staging.destroy();
  });
  const staging = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST });
  const reused = await median(async () => {
    submitCopy(src, staging, bytes);
    await mapAndCopy(staging, bytes);
    staging.unmap();
  });
  // The map alone, with the copy already done: what mapAsync and getMappedRange cost without the transfer.
  const mapTimes: number[] = [];
  for (let i = 0; i < reps; i++) {
    submitCopy(src, staging, bytes);
    await device.queue.onSubmittedWorkDone();
    const t = performance.now();
    await staging.mapAsync(MAP_READ);
    const view = staging.getMappedRange(0, bytes);
    mapTimes.push(performance.now() - t);
    void view.byteLength;
    staging.unmap();
  }
  const mapOnly = mapTimes.sort((a, b) => a - b)[Math.floor(reps / 2)];
  const gbs = (ms: number) => (bytes / ms / 1e6).toFixed(2);
  rows.push(
    `${(bytes / 1024).toFixed(0).padStart(6)} KiB: fresh staging ${fresh.toFixed(3)} ms (${gbs(fresh)} GB/s), ` +
      `reused ${reused.toFixed(3)} ms (${gbs(reused)} GB/s), copy done then map+range ${mapOnly.toFixed(3)} ms`,
  );
  src.destroy();
  staging.destroy();
}
for (const r of rows) console.log(r);
device.destroy();
