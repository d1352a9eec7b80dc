/**
 * Adapter selection for the WebGPU backend: asks for a hardware or a software adapter, logs what it got, raises the
 * device limits to what the adapter offers, and runs a numeric smoke test so that an adapter that computes nothing
 * (a null or broken driver) is refused at start-up instead of returning zeros later.
 *
 * @module
 */

import { BackendError } from "../../core/errors.ts";
import { createContext, type GpuContext } from "./context.ts";

/** Which adapter to use. */
export type AdapterChoice = "auto" | "hardware" | "software";

/** Options of {@link openGpu}. */
export interface OpenGpuOptions {
  /**
   * - `"auto"` (default) and `"hardware"`: a hardware adapter; a software (fallback) adapter is refused, because it is
   *   slower than the CPU backends and would otherwise win `setBestBackend` on a machine without a GPU;
   * - `"software"`: the fallback adapter (Mesa's lavapipe on Linux), for CI and tests.
   */
  readonly adapter?: AdapterChoice;
  /** Receives one line about the adapter and device; default silent. */
  readonly log?: (msg: string) => void;
}

const INSTALL_HINT = "on Linux install the Vulkan loader and a driver (Debian: libvulkan1 and the GPU's Vulkan ICD, " +
  "or mesa-vulkan-drivers for the lavapipe software adapter)";

/** Describes an adapter in one line. */
export function describeAdapter(info: GPUAdapterInfo): string {
  const parts = [info.description || info.device || "unknown device", info.vendor && `vendor ${info.vendor}`];
  if (info.architecture) parts.push(`arch ${info.architecture}`);
  if (info.isFallbackAdapter) parts.push("software/fallback");
  return parts.filter(Boolean).join(", ");
}

/**
 * Finds an adapter, creates a device with the adapter's limits and the useful optional features (`shader-f16`,
 * `timestamp-query`), and checks that it computes.
 *
 * @throws {BackendError} when the runtime has no WebGPU, no adapter of the requested kind exists, the device cannot be
 *   created, or the smoke test gets wrong numbers back.
 */
export async function openGpu(options: OpenGpuOptions = {}): Promise<GpuContext> {
  const choice = options.adapter ?? "auto";
  const log = options.log ?? (() => {});
  if (choice !== "auto" && choice !== "hardware" && choice !== "software") {
    throw new BackendError(`webgpu: adapter must be "auto", "hardware" or "software", got ${JSON.stringify(choice)}`);
  }
  // Typed structurally: workers and non-window runtimes have no `Navigator` type.
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) {
    throw new BackendError("webgpu: this runtime has no navigator.gpu (Deno 2.x has it by default; Node does not)");
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = choice === "software"
      ? await gpu.requestAdapter({ forceFallbackAdapter: true })
      : await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    throw new BackendError(`webgpu: requestAdapter failed: ${e instanceof Error ? e.message : e}; ${INSTALL_HINT}`);
  }
  if (!adapter) {
    throw new BackendError(
      choice === "software"
        ? `webgpu: no software adapter found; ${INSTALL_HINT}`
        : `webgpu: no GPU adapter found; ${INSTALL_HINT} (set VK_DRIVER_FILES to the driver's ICD json if it is not ` +
          `in a standard place), or ask for the software adapter with { adapter: "software" }`,
    );
  }
  const info = adapter.info;
  if (choice !== "software" && info.isFallbackAdapter) {
    throw new BackendError(
      `webgpu: only a software adapter was found (${describeAdapter(info)}); it is slower than the CPU backends, so ` +
        `it is used only when asked for explicitly with { adapter: "software" }`,
    );
  }

  const wanted: GPUFeatureName[] = ["shader-f16", "timestamp-query"];
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  const l = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
  };
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch (e) {
    throw new BackendError(
      `webgpu: requestDevice failed on ${describeAdapter(info)}: ${e instanceof Error ? e.message : e}`,
    );
  }
  const ctx = createContext(adapter, device);
  try {
    await smokeTest(ctx);
  } catch (e) {
    device.destroy();
    throw e instanceof BackendError ? e : new BackendError(`webgpu: smoke test failed: ${e}`);
  }
  log(
    `webgpu: ${describeAdapter(info)}; fma ${ctx.fusedFma ? "fused" : "not fused"}; features ${
      [...device.features].sort().join(" ") || "none"
    }; ` +
      `max storage binding ${device.limits.maxStorageBufferBindingSize} B, workgroup storage ` +
      `${device.limits.maxComputeWorkgroupStorageSize} B, ${device.limits.maxComputeInvocationsPerWorkgroup} ` +
      `invocations per workgroup`,
  );
  return ctx;
}

const SMOKE_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
var<workgroup> tile: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let g = wg.x * 64u + i;
  tile[i] = x[g];
  workgroupBarrier();
  // Reads a neighbour's value through workgroup memory: checks barriers and shared memory too.
  y[g] = tile[63u - i] * 2.0 + 1.0 + f32(wg.x);
  if (g == 0u) {
    // (1 + 2⁻¹²)² − (1 + 2⁻¹¹) is 2⁻²⁴ when fma is fused and 0 when it is a multiply and an add.
    y[arrayLength(&y) - 1u] = fma(x[256], x[256], -x[257]);
  }
}`;

/**
 * Runs a small kernel and checks every number: an adapter that computes nothing (zeros back, or the input echoed) is
 * refused here with a clear message.
 */
async function smokeTest(ctx: GpuContext): Promise<void> {
  const n = 256;
  const x = new Float32Array(n + 2);
  for (let i = 0; i < n; i++) x[i] = (i * 7) % 13 - 6.5;
  x[n] = 1 + 2 ** -12, x[n + 1] = 1 + 2 ** -11;
  ctx.device.pushErrorScope("validation");
  const xb = ctx.upload(x), yb = ctx.buffer((n + 4) * 4);
  const pipeline = ctx.pipeline("smoke", () => SMOKE_WGSL);
  const out = new Float32Array(await ctx.batch().dispatch(pipeline, [xb, yb], [n / 64]).read(yb, (n + 4) * 4));
  const err = await ctx.device.popErrorScope();
  xb.destroy(), yb.destroy();
  if (err) {
    throw new BackendError(
      `webgpu: smoke test did not validate on ${describeAdapter(ctx.adapterInfo)}: ${err.message}`,
    );
  }
  for (let i = 0; i < n; i++) {
    const wg = Math.floor(i / 64), mirror = wg * 64 + 63 - (i % 64);
    const want = x[mirror] * 2 + 1 + wg;
    if (out[i] !== want) {
      throw new BackendError(
        `webgpu: the adapter ${
          describeAdapter(ctx.adapterInfo)
        } does not compute correctly (smoke test: element ${i} ` +
          `is ${out[i]}, expected ${want}); refusing it. A null or broken driver does this; check the Vulkan driver`,
      );
    }
  }
  ctx.fusedFma = out[n + 3] === 2 ** -24;
}
