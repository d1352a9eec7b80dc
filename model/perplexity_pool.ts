/**
 * {@link perplexity} over a pool of Web Workers, each running a single-threaded backend on whole batches of windows.
 * On a CPU this beats one process with a multi-threaded backend: every part of the forward pass runs in parallel
 * (RMSNorm, RoPE, the residual adds and the copies included, which a threaded backend runs on one thread), and the
 * threads never wait for each other inside a kernel. The result is the one {@link perplexity} returns with the same
 * `batch`, to the last bit: the pool's batches are the same windows, and their losses are added in window order.
 *
 * The weights are copied once into a `SharedArrayBuffer` that every worker reads (where the runtime has one; each
 * worker gets its own copy otherwise), so the pool costs one extra copy of the model, not one per worker. Each worker
 * holds one batch of activations of its own, so peak memory grows with the worker count (batches of 8 windows of 512
 * tokens, llama-12m's layers under a 32000-token vocabulary: peak RSS 0.46, 0.75 and 1.06 GB with 1, 2 and 4 workers,
 * against 2.09, 3.81 and 5.82 GB before the WASM backend ran each layer in its own memory (`Backend.decoderLayer`) and
 * stopped holding a batch's logits whole (`Backend.linearCrossEntropy`)).
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import type { LlamaModel } from "./llama.ts";
import {
  addLosses,
  evaluationWindows,
  perplexity,
  type PerplexityOptions,
  type PerplexityResult,
  perplexityResult,
} from "./perplexity.ts";
import type { PoolReply, PoolRequest } from "./perplexity_worker.ts";
import { OptionError } from "../core/errors.ts";
import { getBackend } from "../backends/registry.ts";
import {
  checkWorkers,
  DEFAULT_WORKERS,
  type PoolBackend,
  shareFloatArrays,
  startPoolBackend,
  startWorkerPool,
} from "./worker_pool.ts";

export { DEFAULT_WORKERS, type PoolBackend };

/** Options of {@link perplexityOnWorkers}: those of {@link perplexity}, with a backend named instead of given. */
export interface PoolPerplexityOptions extends Omit<PerplexityOptions, "backend"> {
  /** Workers; default {@link DEFAULT_WORKERS}. With 1, or without `Worker`, no pool. */
  readonly workers?: number;
  /** The backend of each worker, single-threaded; default "wasm". */
  readonly backend?: PoolBackend;
  /** The WASM build of each worker: true relaxed SIMD, false plain SIMD; default the engine's best, as the backend's. */
  readonly relaxed?: boolean;
}

/**
 * Perplexity of `model` on an already tokenized text, on `workers` workers; equal to {@link perplexity}'s with the
 * same `seqLen`, `batch`, `windows` and `spread`.
 *
 * @throws {OptionError} for the bad options {@link perplexity} refuses, or a worker count that is not a positive
 *   integer.
 * @throws {Error} with a worker's message when one fails; the others are stopped.
 *
 * @example
 * ```ts ignore
 * import { loadModel, perplexityOnWorkers } from "jsr:@ptq/ptq/io";
 * const { model, tokenizer } = await loadModel("models/llama-12m");
 * const tokens = tokenizer.encode(await Deno.readTextFile("heldout.txt"));
 * const { ppl } = await perplexityOnWorkers(model, tokens, { batch: 8, workers: 2 });
 * ```
 */
export async function perplexityOnWorkers(
  model: LlamaModel,
  tokens: Int32Array,
  options: PoolPerplexityOptions = {},
): Promise<PerplexityResult> {
  const { seqLen = 512, batch = 1, onProgress, signal, backend = "wasm", relaxed } = options;
  const { workers = DEFAULT_WORKERS } = options;
  checkWorkers(workers);
  if (backend !== "wasm" && backend !== "ts") throw new OptionError(`pool backend must be wasm or ts, got ${backend}`);
  const { source, totalWindows } = evaluationWindows(tokens, options);
  signal?.throwIfAborted();
  const batches = Math.ceil(totalWindows / batch);
  if (workers === 1 || batches === 1 || typeof Worker === "undefined") {
    const local = await startPoolBackend(backend, relaxed);
    try {
      return await perplexity(model, source, { ...options, windows: totalWindows, spread: false, backend: local });
    } finally {
      if (local.name === "wasm") local.dispose?.();
    }
  }

  const losses: Float32Array[] = new Array(batches);
  let done = 0, runningNll = 0;
  const pool = await startWorkerPool<PoolRequest, PoolReply & { losses: Float32Array }>(
    new URL("./perplexity_worker.ts", import.meta.url),
    Math.min(workers, batches),
    { kind: "init", model: shareModel(model), backend, relaxed } satisfies PoolRequest,
    "perplexity worker",
  );
  try {
    await pool.run(batches, (b) => {
      const w0 = b * batch, nb = Math.min(batch, totalWindows - w0);
      return { message: { kind: "windows", id: b, ids: source.slice(w0 * seqLen, (w0 + nb) * seqLen), seqLen } };
    }, (b, reply) => {
      losses[b] = reply.losses;
      done += Math.min(batch, totalWindows - b * batch);
      runningNll = addLosses(runningNll, reply.losses);
      onProgress?.({ windows: done, totalWindows, ppl: Math.exp(runningNll / (done * (seqLen - 1))) });
    }, signal);
  } finally {
    pool.close();
  }
  // The exact sum, in window order, as perplexity adds it.
  let nll = 0;
  for (const l of losses) nll = addLosses(nll, l);
  return perplexityResult(nll, totalWindows, seqLen);
}

/**
 * The model with every float array copied into one `SharedArrayBuffer` (arrays and objects that are one stay one, as
 * tied embeddings are), so that posting it to workers shares the weights instead of copying them. Returns the model itself
 * where the runtime has no `SharedArrayBuffer`.
 */
export function shareModel(model: LlamaModel): LlamaModel {
  return { config: model.config, weights: shareFloatArrays(model.weights) };
}

/** Options of {@link evaluatePerplexity}: those of {@link perplexity} and a worker count. */
export interface EvaluateOptions extends PerplexityOptions {
  /**
   * Workers for a pool ({@link perplexityOnWorkers}) when the backend is "wasm" or "ts"; default
   * {@link DEFAULT_WORKERS}. 1, or another backend, evaluates in this thread on `backend`.
   */
  readonly workers?: number;
}

/**
 * Perplexity the fastest way the backend allows, with the same result either way: on a pool of single-threaded
 * workers for the CPU backends (of the same WASM build as `backend`) when every worker gets at least two batches, in
 * this thread on `backend` otherwise (a GPU backend, one worker, a short text).
 *
 * @throws {OptionError} as {@link perplexityOnWorkers} does.
 */
export async function evaluatePerplexity(
  model: LlamaModel,
  tokens: Int32Array,
  options: EvaluateOptions = {},
): Promise<PerplexityResult> {
  const { workers = DEFAULT_WORKERS, batch = 1 } = options;
  checkWorkers(workers);
  const backend = options.backend ?? getBackend();
  const name = backend.name;
  if (workers > 1 && (name === "wasm" || name === "ts")) {
    const { totalWindows } = evaluationWindows(tokens, options);
    if (Math.ceil(totalWindows / batch) >= 2 * workers) {
      const relaxed = (backend as Backend & { relaxed?: boolean }).relaxed;
      return await perplexityOnWorkers(model, tokens, { ...options, workers, backend: name, relaxed });
    }
  }
  return await perplexity(model, tokens, { ...options, backend });
}
