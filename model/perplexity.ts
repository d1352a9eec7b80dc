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
import { forward, type LlamaModel, nextTokenTargets } from "./llama.ts";

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

  let nll = 0;
  for (let w0 = 0; w0 < totalWindows; w0 += batch) {
    const nb = Math.min(batch, totalWindows - w0);
    const ids = source.subarray(w0 * seqLen, (w0 + nb) * seqLen);
    const { logits } = await forward(model, ids, { batch: nb, seqLen, backend });
    // Position t predicts token t+1 of its window: positions 1..L−1 are scored, none across a window boundary.
    const { losses } = await backend.crossEntropy(logits, nextTokenTargets(ids, seqLen));
    for (let i = 0; i < losses.length; i++) nll += losses[i];
    const done = w0 + nb;
    onProgress?.({ windows: done, totalWindows, ppl: Math.exp(nll / (done * (seqLen - 1))) });
    signal?.throwIfAborted();
  }
  const predicted = totalWindows * (seqLen - 1);
  return { ppl: Math.exp(nll / predicted), windows: totalWindows, tokens: predicted, nll };
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
