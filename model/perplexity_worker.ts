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
import { type PoolBackend, servePool, startPoolBackend, type WorkerError } from "./worker_pool.ts";

/** What the pool sends: first `init`, then `windows` requests, one at a time. */
export type PoolRequest =
  | { readonly kind: "init"; readonly model: LlamaModel; readonly backend: PoolBackend; readonly relaxed?: boolean }
  | { readonly kind: "windows"; readonly id: number; readonly ids: Int32Array; readonly seqLen: number };

/** What a worker keeps after `init`. */
type State = { readonly model: LlamaModel; readonly backend: Backend };

/** The worker's answer to `init` (id −1, nothing else) or to the request `id` (its windows' losses). */
export type PoolReply =
  | { readonly id: number; readonly losses?: Float32Array }
  | ({ readonly id: number } & WorkerError);

servePool<Extract<PoolRequest, { kind: "init" }>, Extract<PoolRequest, { kind: "windows" }>, State>(
  self,
  "perplexity worker",
  async (init) => ({ model: init.model, backend: await startPoolBackend(init.backend, init.relaxed) }),
  async ({ model, backend }, task) => ({
    reply: { losses: await windowLosses(model, task.ids, task.seqLen, backend) },
  }),
);
