/**
 * Worker of the calibration driver's pool (`quantizeSequential` with `workers`): receives a model configuration and a
 * backend name once, then runs one decoder layer over a batch of windows per request, on a single-threaded backend
 * of its own. The residual stream, the layer's weights and the outputs live in shared memory.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { Backend } from "../core/backend.ts";
import { assertFinite, type Matrix, matrix, matrix64 } from "../core/tensor.ts";
import type { LlamaConfig } from "./config.ts";
import { decoderLayerForward, decoderLayerInputs, type LinearKind, type LlamaLayerWeights } from "./llama.ts";
import { type PoolBackend, servePool, startPoolBackend, type WorkerError } from "./worker_pool.ts";

/** What the driver sends: first `init`, then one request per batch of windows. */
export type CalibrationRequest =
  | { readonly kind: "init"; readonly config: LlamaConfig; readonly backend: PoolBackend; readonly relaxed?: boolean }
  | {
    /** "propagate": the layer's output into `out`. "grams": `XᵀX` of the inputs of `names`, up to those of `last`. */
    readonly kind: "propagate" | "grams";
    readonly id: number;
    readonly layer: number;
    readonly weights: LlamaLayerWeights;
    /** The batch's rows of the residual stream entering the layer, `[batch·seqLen, hidden]`. */
    readonly x: Float32Array;
    readonly batch: number;
    readonly seqLen: number;
    /** "propagate": where the batch's outputs go. */
    readonly out?: Float32Array;
    /** "grams": the linear layers whose inputs are wanted, and the last of them in forward order. */
    readonly names?: readonly string[];
    readonly last?: LinearKind;
  };

/** One distinct input's full (both triangles) float64 `XᵀX` of a batch, under the first linear layer that reads it. */
export interface LinearInputGram {
  readonly name: string;
  readonly dim: number;
  readonly data: Float64Array;
}

/** The worker's answer: for "grams", one {@link LinearInputGram} per distinct input. */
export type CalibrationReply =
  | { readonly id: number; readonly grams?: readonly LinearInputGram[] }
  | ({ readonly id: number } & WorkerError);

/** What a worker keeps after `init`. */
type State = { readonly config: LlamaConfig; readonly backend: Backend };

servePool<Extract<CalibrationRequest, { kind: "init" }>, Exclude<CalibrationRequest, { kind: "init" }>, State>(
  self,
  "calibration worker",
  async (init) => ({ config: init.config, backend: await startPoolBackend(init.backend, init.relaxed) }),
  async ({ config, backend }, request) => {
    const shape = { batch: request.batch, seqLen: request.seqLen };
    const x: Matrix = matrix(request.x.length / config.hiddenSize, config.hiddenSize, request.x);
    if (request.kind === "propagate") {
      const y = await decoderLayerForward(backend, config, request.layer, request.weights, x, shape);
      request.out!.set(y.data);
      return {};
    }
    // A shared input is reported once per linear layer reading it: its Gram matrix is formed the first time only.
    const wanted = new Set(request.names), seen = new Set<Matrix>();
    const grams: LinearInputGram[] = [];
    await decoderLayerInputs(backend, config, request.layer, request.weights, x, shape, async (name, input) => {
      if (!wanted.has(name) || seen.has(input)) return;
      seen.add(input);
      assertFinite(input, "calibration input");
      // In float64, so that adding it to a float32 or float64 sum rounds once, as gramAccumulate into that sum does.
      const d = input.shape[1], gram = matrix64(d, d);
      await backend.gramAccumulate(gram, input, 1);
      grams.push({ name, dim: d, data: gram.data });
    }, request.last);
    return { reply: { grams }, transfer: grams.map((g) => g.data.buffer as ArrayBuffer) };
  },
);
