/**
 * The page's worker: fetches stories260K and the text, picks a backend, runs {@link runExperiment}, and posts
 * progress and the result. The work runs here, not on the page's thread, because the TS and WASM kernels resolve as
 * microtasks: on the main thread the page could not repaint its progress bar until the very end.
 *
 * In: `{ settings, backend: "auto" | "webgpu" | "webgpu-software" | "wasm" | "ts", dataUrl }`. Out: `{ type: "ready", info }`, then
 * `{ type: "progress", progress }`..., then `{ type: "result", result }` or `{ type: "error", message }`.
 *
 * @module
 */

import { loadBackend } from "../../backends/registry.ts";
import type { Backend } from "../../core/backend.ts";
import { type ExperimentData, type ExperimentSettings, prepareData, runExperiment } from "./experiment.ts";

/** A run request from the page. */
export interface RunMessage {
  readonly settings: ExperimentSettings;
  readonly backend: "auto" | "webgpu" | "webgpu-software" | "wasm" | "ts";
  /** Absolute URL of the folder holding `stories260K/` and `tinystories/`. */
  readonly dataUrl: string;
}

/** Replies to the page. */
export type WorkerMessage =
  | { readonly type: "ready"; readonly backend: string; readonly skipped: readonly string[]; readonly stories: number }
  | { readonly type: "progress"; readonly progress: { phase: string; fraction: number; note: string } }
  | { readonly type: "result"; readonly result: Awaited<ReturnType<typeof runExperiment>> }
  | { readonly type: "error"; readonly message: string };

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<RunMessage>) => void) | null;
  postMessage(m: WorkerMessage): void;
};

let data: Promise<ExperimentData> | undefined;
const backends = new Map<string, Promise<{ backend: Backend; skipped: string[] }>>();

async function fetchBytes(url: URL): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** The first backend that starts, in order of preference; the ones that did not start, with why. */
async function pickBackend(choice: RunMessage["backend"]): Promise<{ backend: Backend; skipped: string[] }> {
  const order = choice === "auto" ? ["webgpu", "wasm", "ts"] : [choice];
  const skipped: string[] = [];
  for (const name of order) {
    try {
      // The WebGPU backend refuses software adapters unless asked (they are slower than WASM); asking lets a machine
      // without a GPU (Chromium's SwiftShader) run the WebGPU code path anyway.
      const backend = name === "webgpu-software"
        ? await (await import("../../backends/webgpu/mod.ts")).createWebGpuBackend({ adapter: "software" })
        : await loadBackend(name);
      return { backend, skipped };
    } catch (e) {
      skipped.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new Error(`no backend started (${skipped.join("; ")})`);
}

scope.onmessage = async (e) => {
  const { settings, backend: choice, dataUrl } = e.data;
  try {
    const base = new URL(dataUrl);
    data ??= Promise.all([
      fetchBytes(new URL("stories260K/stories260K.bin", base)),
      fetchBytes(new URL("stories260K/tok512.bin", base)),
      fetchBytes(new URL("tinystories/tinystories-valid.txt", base)),
    ]).then(([model, tok, text]) => prepareData(model, tok, new TextDecoder().decode(text)));
    if (!backends.has(choice)) backends.set(choice, pickBackend(choice));
    const [d, { backend, skipped }] = await Promise.all([data, backends.get(choice)!]);
    scope.postMessage({
      type: "ready",
      backend: backend.name,
      skipped,
      stories: d.stories.calibration + d.stories.evaluation,
    });
    let last = 0;
    const result = await runExperiment(d, settings, backend, (progress) => {
      // Posting every step would flood the page; ten updates a second are plenty for a bar.
      const now = performance.now();
      if (now - last < 100 && progress.fraction < 1) return;
      last = now;
      scope.postMessage({ type: "progress", progress });
    });
    scope.postMessage({ type: "result", result });
  } catch (err) {
    scope.postMessage({ type: "error", message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
};
