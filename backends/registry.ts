/**
 * Backend selection, in the manner of tfjs: backends are registered by name with a factory and a priority, and one of
 * them is current. Algorithms take an explicit `backend` option and fall back to {@link getBackend}.
 *
 * The reference TS backend is always registered and is the default until {@link setBackend} picks another. The WASM
 * and WebGPU backends are registered here too, loaded lazily so that importing ptq does not load their modules.
 *
 * @example
 * ```ts
 * import { getBackend, setBackend } from "./registry.ts";
 * await setBackend("ts");
 * console.assert(getBackend().name === "ts");
 * ```
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { BackendError } from "../core/errors.ts";
import { tsBackend } from "./ts/mod.ts";

/** Creates a backend, possibly asynchronously (WebGPU asks for an adapter). */
export type BackendFactory = () => Backend | Promise<Backend>;

interface Entry {
  readonly factory: BackendFactory;
  readonly priority: number;
  instance?: Promise<Backend>;
}

const registry = new Map<string, Entry>();
let current: Backend = tsBackend;

/**
 * Registers a backend under `name`. A higher `priority` is tried first by {@link setBestBackend}.
 * Re-registering a name replaces it (and forgets an instance already created).
 */
export function registerBackend(name: string, factory: BackendFactory, priority = 0): void {
  registry.set(name, { factory, priority });
}

/** Names of the registered backends, highest priority first. */
export function listBackends(): string[] {
  return [...registry.entries()].sort((a, b) => b[1].priority - a[1].priority).map(([name]) => name);
}

/**
 * The backend registered as `name`, created on first use and cached.
 * @throws {BackendError} for an unknown name or a factory that fails (the cause is kept).
 */
export function loadBackend(name: string): Promise<Backend> {
  const entry = registry.get(name);
  if (!entry) {
    return Promise.reject(new BackendError(`unknown backend "${name}"; registered: ${listBackends().join(", ")}`));
  }
  entry.instance ??= Promise.resolve().then(entry.factory).catch((cause) => {
    entry.instance = undefined; // a later call may retry (for example after installing a GPU driver)
    throw new BackendError(`backend "${name}" failed to start: ${cause instanceof Error ? cause.message : cause}`);
  });
  return entry.instance;
}

/** Makes a backend current, by name or as an object; returns it. */
export async function setBackend(backend: string | Backend): Promise<Backend> {
  current = typeof backend === "string" ? await loadBackend(backend) : backend;
  return current;
}

/**
 * Makes the highest-priority backend that starts current (among those of priority ≥ 0: WASM, then TS); returns it.
 * Failing ones are skipped.
 */
export async function setBestBackend(): Promise<Backend> {
  for (const name of listBackends()) {
    if (registry.get(name)!.priority < 0) continue;
    try {
      return await setBackend(name);
    } catch {
      // try the next one: a missing GPU or an old runtime is not an error here
    }
  }
  return await setBackend(tsBackend);
}

/** The current backend (the TS reference unless {@link setBackend} chose another). */
export function getBackend(): Backend {
  return current;
}

registerBackend("ts", () => tsBackend, 0);
// Loaded on first use, so importing ptq does not instantiate WASM or ask for a GPU. WASM is the best default on a CPU;
// WebGPU is chosen explicitly (on a machine without a GPU its software adapter is slower than WASM).
registerBackend("wasm", async () => (await import("./wasm/mod.ts")).createWasmBackend(), 2);
registerBackend("webgpu", async () => (await import("./webgpu/mod.ts")).createWebGpuBackend(), -1);
