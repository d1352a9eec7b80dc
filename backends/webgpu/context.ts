/**
 * The WebGPU context every kernel of this backend runs on: one device, a cache of compiled pipelines, buffer helpers,
 * and {@link Batch}, which records many dispatches into one command encoder so that a whole layer runs with one submit
 * and one read-back.
 *
 * @module
 */

import { BackendError } from "../../core/errors.ts";

/** Usage of the storage buffers kernels read and write. */
export const STORAGE: number = 0x80 | 0x4 | 0x8; // STORAGE | COPY_SRC | COPY_DST (GPUBufferUsage values)

const MAP_READ = 0x1, COPY_DST = 0x8, UNIFORM = 0x40;

/** A uniform value: plain numbers are u32, `{ i }` is i32, `{ f }` is f32. */
export type UniformValue = number | { readonly i: number } | { readonly f: number };

/** A buffer binding: the whole buffer, or a range of it in bytes. */
export type Binding = GPUBuffer | { readonly buffer: GPUBuffer; readonly offset?: number; readonly size?: number };

/** What {@link createContext} was given: the adapter and device and what they can do. */
export interface GpuContext {
  readonly device: GPUDevice;
  readonly adapterInfo: GPUAdapterInfo;
  /** The device has `shader-f16`. */
  readonly f16: boolean;
  /** The device has `timestamp-query`. */
  readonly timestamps: boolean;
  /** The adapter is a software (fallback) one, such as lavapipe. */
  readonly software: boolean;
  /** `fma` is a fused multiply-add (found by the smoke test); grid kernels pick their exact division by it. */
  fusedFma: boolean;
  /** Largest storage binding in bytes. */
  readonly maxBinding: number;
  /** Workgroup memory in bytes. */
  readonly maxWorkgroupStorage: number;
  /** Compiles (once per key) and returns a compute pipeline whose entry point is `main`. */
  pipeline(key: string, code: () => string): GPUComputePipeline;
  /** A storage buffer of at least `bytes` bytes (rounded up to 16; never 0). */
  buffer(bytes: number, label?: string): GPUBuffer;
  /** A storage buffer holding `data` (zero-padded to `minBytes` when given). */
  upload(data: ArrayBufferView, minBytes?: number, label?: string): GPUBuffer;
  /** A uniform buffer of 4-byte values, in order. */
  uniform(values: readonly UniformValue[]): GPUBuffer;
  /** Starts recording dispatches. */
  batch(): Batch;
  /** Copies `bytes` bytes at `offset` of `buffer` back to the CPU (one submit, one map). */
  read(buffer: GPUBuffer, bytes: number, offset?: number): Promise<ArrayBuffer>;
  /** Throws if the device reported an error since the last call (validation, out of memory). */
  checkErrors(what: string): Promise<void>;
  /** Destroys the device. */
  destroy(): void;
}

/**
 * Records dispatches and copies; {@link Batch.submit} sends them with one `queue.submit`. Dispatches in one compute
 * pass see each other's writes (each dispatch is its own usage scope). Temporary buffers registered with
 * {@link Batch.temp} are destroyed once the batch is submitted (WebGPU keeps them alive until the work finishes).
 */
export interface Batch {
  /** Dispatches `pipeline` with the bindings at indices 0, 1, …, and `groups` workgroups (x, y, z). */
  dispatch(pipeline: GPUComputePipeline, bindings: readonly Binding[], groups: readonly number[]): Batch;
  /** Copies bytes between buffers (ends the current compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): Batch;
  /** Registers buffers to destroy after the submit. */
  temp(...buffers: GPUBuffer[]): Batch;
  /** Writes a timestamp (when the device has timestamp queries) into `set` at `index`. */
  timestamp(set: GPUQuerySet, index: number): Batch;
  /** Submits everything recorded. */
  submit(): void;
  /** Submits, then copies `bytes` bytes of `buffer` back. */
  read(buffer: GPUBuffer, bytes: number, offset?: number): Promise<ArrayBuffer>;
  /** Submits, then copies several buffers back through one staging buffer and one map. */
  readMany(parts: readonly { readonly buffer: GPUBuffer; readonly bytes: number }[]): Promise<ArrayBuffer[]>;
}

const round16 = (n: number) => Math.max(16, Math.ceil(n / 16) * 16);

/** Wraps a device into a {@link GpuContext}. */
export function createContext(adapter: GPUAdapter, device: GPUDevice): GpuContext {
  const pipelines = new Map<string, GPUComputePipeline>();
  const lost: { error?: string } = {};
  device.lost.then((info) => lost.error = `device lost: ${info.message}`);
  const uncaptured: string[] = [];
  device.addEventListener?.("uncapturederror", (e) => {
    uncaptured.push((e as GPUUncapturedErrorEvent).error.message);
  });

  const ctx: GpuContext = {
    device,
    adapterInfo: adapter.info,
    f16: device.features.has("shader-f16"),
    timestamps: device.features.has("timestamp-query"),
    software: adapter.info.isFallbackAdapter === true,
    fusedFma: true,
    maxBinding: device.limits.maxStorageBufferBindingSize,
    maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
    pipeline(key, code) {
      let p = pipelines.get(key);
      if (!p) {
        const module = device.createShaderModule({ code: code(), label: key });
        p = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" }, label: key });
        pipelines.set(key, p);
      }
      return p;
    },
    buffer(bytes, label) {
      if (bytes > device.limits.maxBufferSize) {
        throw new BackendError(
          `webgpu: a buffer of ${bytes} bytes exceeds the device limit ${device.limits.maxBufferSize}`,
        );
      }
      return device.createBuffer({ size: round16(bytes), usage: STORAGE, label });
    },
    upload(data, minBytes = 0, label) {
      const size = round16(Math.max(data.byteLength, minBytes));
      const buf = ctx.buffer(size, label);
      if (data.byteLength > 0) {
        const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
        // writeBuffer needs a multiple of 4 bytes.
        if (bytes.byteLength % 4 === 0) device.queue.writeBuffer(buf, 0, bytes);
        else {
          const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
          padded.set(bytes);
          device.queue.writeBuffer(buf, 0, padded);
        }
      }
      return buf;
    },
    uniform(values) {
      const buf = device.createBuffer({ size: round16(values.length * 4), usage: UNIFORM | COPY_DST });
      const raw = new ArrayBuffer(round16(values.length * 4));
      const u = new Uint32Array(raw), i = new Int32Array(raw), f = new Float32Array(raw);
      values.forEach((v, k) => {
        if (typeof v === "number") u[k] = v >>> 0;
        else if ("i" in v) i[k] = v.i;
        else f[k] = v.f;
      });
      device.queue.writeBuffer(buf, 0, raw);
      return buf;
    },
    batch() {
      return createBatch(ctx);
    },
    read(buffer, bytes, offset = 0) {
      return createBatch(ctx).read(buffer, bytes, offset);
    },
    async checkErrors(what) {
      if (lost.error) throw new BackendError(`webgpu ${what}: ${lost.error}`);
      if (uncaptured.length) {
        const msg = uncaptured.splice(0).join("; ");
        throw new BackendError(`webgpu ${what}: ${msg}`);
      }
      await Promise.resolve();
    },
    destroy() {
      pipelines.clear();
      device.destroy();
    },
  };
  return ctx;
}

function createBatch(ctx: GpuContext): Batch {
  const { device } = ctx;
  const encoder = device.createCommandEncoder();
  let pass: GPUComputePassEncoder | undefined;
  const temps: GPUBuffer[] = [];
  const endPass = () => {
    pass?.end();
    pass = undefined;
  };
  const batch: Batch = {
    dispatch(pipeline, bindings, groups) {
      pass ??= encoder.beginComputePass();
      const entries: GPUBindGroupEntry[] = bindings.map((b, binding) => ({
        binding,
        resource: b instanceof GPUBuffer ? { buffer: b } : { buffer: b.buffer, offset: b.offset, size: b.size },
      }));
      const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      const [x, y = 1, z = 1] = groups;
      if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
      return batch;
    },
    copy(src, srcOffset, dst, dstOffset, bytes) {
      endPass();
      if (bytes > 0) encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
      return batch;
    },
    temp(...buffers) {
      temps.push(...buffers);
      return batch;
    },
    timestamp(set, index) {
      endPass();
      // writeTimestamp on the encoder is behind a feature in some implementations; use an empty pass instead.
      const p = encoder.beginComputePass({ timestampWrites: { querySet: set, beginningOfPassWriteIndex: index } });
      p.end();
      return batch;
    },
    submit() {
      endPass();
      device.queue.submit([encoder.finish()]);
      for (const t of temps) t.destroy();
      temps.length = 0;
    },
    async read(buffer, bytes, offset = 0) {
      const size = Math.ceil(bytes / 4) * 4;
      const staging = device.createBuffer({ size: Math.max(4, size), usage: MAP_READ | COPY_DST });
      batch.copy(buffer, offset, staging, 0, size);
      batch.submit();
      try {
        await staging.mapAsync(0x1);
        return staging.getMappedRange(0, size).slice(0, bytes);
      } catch (e) {
        await ctx.checkErrors("read-back");
        throw new BackendError(`webgpu read-back failed: ${e instanceof Error ? e.message : e}`);
      } finally {
        staging.destroy();
      }
    },
    async readMany(parts) {
      const offsets: number[] = [];
      let total = 0;
      for (const p of parts) offsets.push(total), total += Math.ceil(p.bytes / 16) * 16;
      const staging = device.createBuffer({ size: Math.max(16, total), usage: MAP_READ | COPY_DST });
      parts.forEach((p, i) => batch.copy(p.buffer, 0, staging, offsets[i], Math.ceil(p.bytes / 4) * 4));
      batch.submit();
      try {
        await staging.mapAsync(0x1);
        const all = staging.getMappedRange(0, Math.max(16, total));
        return parts.map((p, i) => all.slice(offsets[i], offsets[i] + p.bytes));
      } catch (e) {
        await ctx.checkErrors("read-back");
        throw new BackendError(`webgpu read-back failed: ${e instanceof Error ? e.message : e}`);
      } finally {
        staging.destroy();
      }
    },
  };
  return batch;
}
