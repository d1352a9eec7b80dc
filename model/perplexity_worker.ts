/**
 * Worker of {@link perplexityOnWorkers}: receives a model and a backend name once, then scores each run of windows it
 * is sent with {@link windowLosses} on a single-threaded backend of its own, and replies with the losses.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { Backend } from "../core/backend.ts";
import type { LlamaModel } from "./llama.ts";
import { windowLosses } from "./perplexity.ts";
import { errorReply, type PoolBackend, startPoolBackend, type WorkerError } from "./worker_pool.ts";

/** What the pool sends: first `init`, then `windows` requests, one at a time. */
export type PoolRequest =
  | { readonly kind: "init"; readonly model: LlamaModel; readonly backend: PoolBackend; readonly relaxed?: boolean }
  | { readonly kind: "windows"; readonly id: number; readonly ids: Int32Array; readonly seqLen: number };

/** The worker's answer to `init` (id −1) or to the request `id`. */
export type PoolReply =
  | { readonly id: number; readonly losses: Float32Array }
  | ({ readonly id: number } & WorkerError);

let state: Promise<{ model: LlamaModel; backend: Backend }> | undefined;

self.onmessage = async (e: MessageEvent<PoolRequest>) => {
  const request = e.data;
  const id = request.kind === "init" ? -1 : request.id;
  try {
    if (request.kind === "init") {
      state = startPoolBackend(request.backend, request.relaxed).then((backend) => ({ model: request.model, backend }));
      await state;
      self.postMessage({ id, losses: new Float32Array(0) } satisfies PoolReply);
      return;
    }
    if (!state) throw new Error("perplexity worker: windows before init");
    const { model, backend } = await state;
    const losses = await windowLosses(model, request.ids, request.seqLen, backend);
    self.postMessage({ id, losses } satisfies PoolReply);
  } catch (err) {
    self.postMessage(errorReply(id, err) satisfies PoolReply);
  }
};
