/**
 * The calibration driver's passes over the windows on a pool of workers, each running a single-threaded backend on
 * whole batches (as the evaluation pool does): every part of a layer's forward pass runs in parallel, and no thread
 * waits for another inside a kernel. The residual stream lives in shared memory; each pass shares the layer's weights
 * once. The Hessians' Gram matrices are formed per batch in the workers (in float64) and added here in batch order, so
 * the result does not depend on the worker count and equals the in-process driver's to the bit (WASM and TS: one
 * rounding into the sum either way, `HessianAccumulator.observeGram`).
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { type FloatArray, type Matrix, matrix, matrix64 } from "../core/tensor.ts";
import type { CalibrationReply, CalibrationRequest } from "./calibrate_worker.ts";
import type { LlamaConfig } from "./config.ts";
import type { LinearKind, LlamaLayerWeights } from "./llama.ts";
import { sharedFloats, shareFloatArrays, startWorkerPool, type WorkerPool } from "./worker_pool.ts";

/** Batches of windows of one pass: `windows` of `seqLen` tokens, `batch` at a time. */
export interface PassShape {
  readonly windows: number;
  readonly seqLen: number;
  readonly batch: number;
}

/** Workers for {@link quantizeSequential}'s passes (see the module's description). */
export interface CalibrationPool {
  /** `x` copied into shared memory, for a stream the workers read. */
  share(x: Matrix): Matrix;
  /**
   * The outputs of layer `layer` (weights `weights`) for every window of `stream`, in shared memory; `onBatch` is
   * called with the windows of each batch done, in the order they finish.
   */
  propagate(
    layer: number,
    weights: LlamaLayerWeights,
    stream: Matrix,
    pass: PassShape,
    onBatch: (windows: number) => void,
    signal?: AbortSignal,
  ): Promise<Matrix>;
  /**
   * The Gram matrices `XᵀX` of the inputs of the linear layers `names` (up to those of `last`) of every batch: `onGrams`
   * gets each batch's, by the first name reading each input, in batch order.
   */
  grams(
    layer: number,
    weights: LlamaLayerWeights,
    stream: Matrix,
    pass: PassShape,
    names: readonly string[],
    last: LinearKind,
    onGrams: (grams: readonly (readonly [string, Matrix<FloatArray>])[], rows: number) => void,
    signal?: AbortSignal,
  ): Promise<void>;
  /** Stops the workers. */
  close(): void;
}

/**
 * A pool of `workers` workers running `backend`'s kind single-threaded, or undefined where one does not apply: one
 * worker, fewer than two batches per worker, a backend other than "wasm" or "ts", or a runtime without `Worker` or
 * `SharedArrayBuffer`.
 */
export async function startCalibrationPool(
  config: LlamaConfig,
  backend: Backend,
  workers: number,
  batches: number,
): Promise<CalibrationPool | undefined> {
  const name = backend.name;
  if (workers < 2 || batches < 2 * workers || (name !== "wasm" && name !== "ts")) return undefined;
  if (typeof Worker === "undefined" || typeof SharedArrayBuffer === "undefined") return undefined;
  const relaxed = (backend as Backend & { relaxed?: boolean }).relaxed;
  const pool: WorkerPool<CalibrationRequest, CalibrationReply> = await startWorkerPool(
    new URL("./calibrate_worker.ts", import.meta.url),
    workers,
    { kind: "init", config, backend: name, relaxed } satisfies CalibrationRequest,
    "calibration worker",
  );
  const hidden = config.hiddenSize;
  /** Batch `b` of a pass: its windows, and its floats `[f0, f1)` of the stream. */
  const rowsOf = (pass: PassShape, b: number) => {
    const w0 = b * pass.batch, batch = Math.min(pass.batch, pass.windows - w0);
    return { batch, f0: w0 * pass.seqLen * hidden, f1: (w0 + batch) * pass.seqLen * hidden };
  };
  const batchesOf = (pass: PassShape) => Math.ceil(pass.windows / pass.batch);
  return {
    share(x) {
      const data = sharedFloats(x.data.length);
      data.set(x.data);
      return matrix(x.shape[0], x.shape[1], data);
    },
    async propagate(layer, weights, stream, pass, onBatch, signal) {
      const shared = shareFloatArrays(weights);
      const out = sharedFloats(stream.data.length);
      await pool.run(
        batchesOf(pass),
        (b) => {
          const { batch, f0, f1 } = rowsOf(pass, b);
          const x = stream.data.subarray(f0, f1), y = out.subarray(f0, f1);
          return {
            message: { kind: "propagate", id: b, layer, weights: shared, x, batch, seqLen: pass.seqLen, out: y },
          };
        },
        (b) => onBatch(rowsOf(pass, b).batch),
        signal,
      );
      return matrix(stream.shape[0], hidden, out);
    },
    async grams(layer, weights, stream, pass, names, last, onGrams, signal) {
      const shared = shareFloatArrays(weights);
      // Batches finish in any order; their Gram matrices are handed on in batch order. (A batch that finishes long
      // before an earlier one waits here: at most the batches the other workers do meanwhile.)
      const pending = new Map<number, CalibrationReply>();
      let next = 0;
      await pool.run(batchesOf(pass), (b) => {
        const { batch, f0, f1 } = rowsOf(pass, b);
        const x = stream.data.subarray(f0, f1);
        return {
          message: { kind: "grams", id: b, layer, weights: shared, x, batch, seqLen: pass.seqLen, names, last },
        };
      }, (b, reply) => {
        pending.set(b, reply);
        for (let r = pending.get(next); r; r = pending.get(next)) {
          pending.delete(next);
          const grams = ("grams" in r ? r.grams ?? [] : []).map((g) =>
            [g.name, matrix64(g.dim, g.dim, g.data)] as const
          );
          onGrams(grams, rowsOf(pass, next).batch * pass.seqLen);
          next++;
        }
      }, signal);
    },
    close: () => pool.close(),
  };
}
