/**
 * Worker of `bench/perplexity.ts`: loads the model on its first request, then evaluates each run of whole windows it
 * is sent and replies with their total negative log-likelihood.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { setBackend } from "../backends/registry.ts";
import { loadModel } from "../model/load.ts";
import type { LlamaModel } from "../model/llama.ts";
import { perplexity } from "../model/perplexity.ts";

/** A run of whole windows to evaluate with a model and a backend. */
export interface WorkerRequest {
  readonly id: number;
  readonly model: string;
  readonly backend: string;
  readonly tokens: Int32Array;
  readonly seqLen: number;
  readonly batch: number;
}

/** The worker's answer to the request `id`. */
export type WorkerReply =
  | { readonly id: number; readonly nll: number; readonly windows: number }
  | { readonly id: number; readonly error: string };

let loaded: Promise<LlamaModel> | undefined;

self.onmessage = async (e: MessageEvent<WorkerRequest>) => {
  const { id, model: path, backend: name, tokens, seqLen, batch } = e.data;
  try {
    loaded ??= loadModel(path).then((r) => r.model);
    const backend = await setBackend(name);
    const r = await perplexity(await loaded, tokens, { seqLen, batch, backend });
    self.postMessage({ id, nll: r.nll, windows: r.windows } satisfies WorkerReply);
  } catch (err) {
    self.postMessage({ id, error: err instanceof Error ? err.message : String(err) } satisfies WorkerReply);
  }
};
