/**
 * Perplexity as GPTQ reports it (see ALGORITHMS.md): the text tokenized once, cut into `⌊n/L⌋` non-overlapping windows
 * of `L` tokens (no BOS added), the cross-entropy of positions `1..L−1` of each window summed, and
 * `ppl = exp(total / (windows·(L−1)))`. Windows are evaluated a batch at a time, so memory holds one batch.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError } from "../core/errors.ts";
import { getBackend } from "../backends/registry.ts";
import { forwardHidden, type LlamaModel, nextTokenTargets } from "./llama.ts";

/** Progress of {@link perplexity}, reported after each batch. */
export interface PerplexityProgress {
  /** Windows evaluated so far. */
  readonly windows: number;
  /** Windows to evaluate in all. */
  readonly totalWindows: number;
  /** Perplexity of the windows evaluated so far. */
  readonly ppl: number;
}

/** Options of {@link perplexity}. */
export interface PerplexityOptions {
  /** Window length `L` in tokens; default 512. At least 2. */
  readonly seqLen?: number;
  /** Windows per forward pass; default 1. Larger batches trade memory for fewer kernel calls. */
  readonly batch?: number;
  /** Evaluate only `windows` of the `⌊n/L⌋` windows (default all): the first ones, or spread ones with `spread`. */
  readonly windows?: number;
  /**
   * With `windows`: take windows `⌊i·total/windows⌋` (evenly spread over the text) instead of the first ones, so a
   * subset samples every part of a text that changes subject along its length. Default false.
   */
  readonly spread?: boolean;
  /** Defaults to the current backend. */
  readonly backend?: Backend;
  /** Called after each batch. */
  readonly onProgress?: (progress: PerplexityProgress) => void;
  /** Cancels the work: checked between batches of windows and between layers; the signal's reason is thrown. */
  readonly signal?: AbortSignal;
}

/** Result of {@link perplexity}. */
export interface PerplexityResult {
  /** `exp(nll / tokens)`. */
  readonly ppl: number;
  /** Windows evaluated. */
  readonly windows: number;
  /** Predicted tokens: `windows · (L − 1)`. */
  readonly tokens: number;
  /** Total negative log-likelihood of the predicted tokens, in nats. */
  readonly nll: number;
}

/**
 * Perplexity of `model` on an already tokenized text.
 *
 * @param tokens the whole text's token ids, without BOS.
 * @throws {OptionError} for a window shorter than 2, a bad batch or window count, or a text shorter than one window.
 *
 * @example
 * ```ts ignore
 * const { ppl } = await perplexity(model, tokenizer.encode(text), { seqLen: 512, batch: 4 });
 * ```
 */
export async function perplexity(
  model: LlamaModel,
  tokens: Int32Array,
  options: PerplexityOptions = {},
): Promise<PerplexityResult> {
  const { seqLen = 512, batch = 1, onProgress, signal } = options;
  const backend = options.backend ?? getBackend();
  const { source, totalWindows } = evaluationWindows(tokens, options);
  let nll = 0;
  for (let w0 = 0; w0 < totalWindows; w0 += batch) {
    const nb = Math.min(batch, totalWindows - w0);
    nll = addLosses(nll, await windowLosses(model, source.subarray(w0 * seqLen, (w0 + nb) * seqLen), seqLen, backend));
    const done = w0 + nb;
    onProgress?.({ windows: done, totalWindows, ppl: Math.exp(nll / (done * (seqLen - 1))) });
    signal?.throwIfAborted();
  }
  return perplexityResult(nll, totalWindows, seqLen);
}

/**
 * The windows {@link perplexity} evaluates, one after another in `source`, after checking the options.
 * @throws {OptionError} as {@link perplexity} does.
 */
export function evaluationWindows(
  tokens: Int32Array,
  options: Pick<PerplexityOptions, "seqLen" | "batch" | "windows" | "spread">,
): { source: Int32Array; totalWindows: number } {
  const { seqLen = 512, batch = 1 } = options;
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new OptionError(`seqLen must be an integer ≥ 2, got ${seqLen}`);
  if (!Number.isInteger(batch) || batch < 1) throw new OptionError(`batch must be a positive integer, got ${batch}`);
  const available = Math.floor(tokens.length / seqLen);
  if (available === 0) {
    throw new OptionError(`the text has ${tokens.length} tokens, fewer than one window of ${seqLen}`);
  }
  const limit = options.windows;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
    throw new OptionError(`windows must be a positive integer, got ${limit}`);
  }
  const totalWindows = Math.min(available, limit ?? available);
  const source = options.spread && totalWindows < available
    ? spreadWindows(tokens, seqLen, available, totalWindows)
    : tokens;
  return { source, totalWindows };
}

/**
 * The cross-entropy of every position of a run of whole windows (`ids`, `seqLen` tokens each) in one forward pass:
 * position t predicts token t+1 of its window, so positions 1..L−1 are scored and the last of each window is 0. The
 * classifier and the loss run as one kernel (`Backend.linearCrossEntropy`): the logits are never all in memory.
 */
export async function windowLosses(
  model: LlamaModel,
  ids: Int32Array,
  seqLen: number,
  backend: Backend,
): Promise<Float32Array> {
  const { finalHidden } = await forwardHidden(model, ids, { batch: ids.length / seqLen, seqLen, backend });
  return backend.linearCrossEntropy(finalHidden, model.weights.lmHead, nextTokenTargets(ids, seqLen));
}

/** `nll` plus the losses, added in order: the one summation order every way of evaluating shares. */
export function addLosses(nll: number, losses: Float32Array): number {
  for (let i = 0; i < losses.length; i++) nll += losses[i];
  return nll;
}

/** The result of {@link perplexity} from the total NLL of `windows` windows. */
export function perplexityResult(nll: number, windows: number, seqLen: number): PerplexityResult {
  const predicted = windows * (seqLen - 1);
  return { ppl: Math.exp(nll / predicted), windows, tokens: predicted, nll };
}

/** The windows `⌊i·available/count⌋`, `i < count`, copied one after another. */
function spreadWindows(tokens: Int32Array, seqLen: number, available: number, count: number): Int32Array {
  const out = new Int32Array(count * seqLen);
  for (let i = 0; i < count; i++) {
    const w = Math.floor(i * available / count);
    out.set(tokens.subarray(w * seqLen, (w + 1) * seqLen), i * seqLen);
  }
  return out;
}
