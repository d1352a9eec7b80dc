/**
 * The conformance suite on the WebGPU backend. It uses a hardware adapter when there is one and the software adapter
 * (lavapipe in CI) otherwise; `PTQ_WEBGPU_ADAPTER=hardware|software` forces one. Without any adapter the suite is
 * registered as ignored, with the reason.
 *
 * @module
 */

import { defineConformanceTests } from "../../tests/conformance/mod.ts";
import type { AdapterChoice } from "./adapter.ts";
import { createWebGpuBackend } from "./mod.ts";

async function probe(): Promise<{ adapter?: AdapterChoice; skipReason?: string }> {
  const forced = Deno.env.get("PTQ_WEBGPU_ADAPTER") as AdapterChoice | undefined;
  if (forced) return { adapter: forced };
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return { skipReason: "this runtime has no navigator.gpu" };
  const hw = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (hw && !hw.info.isFallbackAdapter) return { adapter: "hardware" };
  const sw = hw ?? await gpu.requestAdapter({ forceFallbackAdapter: true });
  if (sw) return { adapter: "software" };
  return { skipReason: "no WebGPU adapter (install mesa-vulkan-drivers and libvulkan1 for lavapipe)" };
}

const { adapter, skipReason } = await probe();

// Float32 GPU kernels with fused multiply-adds and a different summation order than the float64 reference.
defineConformanceTests("webgpu", () => createWebGpuBackend({ adapter, log: (m) => console.log(m) }), {
  skipReason,
  toleranceScale: 2,
});
