/**
 * SmoothQuant and AWQ on a whole Llama model: per-input-channel scales computed from calibration statistics and folded
 * into the weights, so that the returned model computes exactly what the original does (up to float32 rounding) while
 * its linear layers are easier to quantize.
 *
 * Where a scale `s` of a linear input `X` goes (`X → X/s` in the producer, `W → W·diag(s)` in the consumers):
 *
 * | site      | consumers (columns × s)  | producer (÷ s)                                   | SmoothQuant | AWQ |
 * | --------- | ------------------------ | ------------------------------------------------ | ----------- | --- |
 * | `qkv`     | q_proj, k_proj, v_proj   | `input_layernorm` weight (one `s` for the three) | yes         | yes |
 * | `o`       | o_proj                   | v_proj rows (the attention output is linear in v) | no          | yes |
 * | `gate_up` | gate_proj, up_proj       | `post_attention_layernorm` weight                | yes         | yes |
 * | `down`    | down_proj                | up_proj rows (`silu(gate)⊙up` is linear in up)   | no          | yes |
 *
 * SmoothQuant's reference smooths only the norm-fed inputs (q/k/v and the MLP input), and so does this module. AWQ's
 * reference also scales v→o and up→down; it skips v→o under grouped-query attention, where v_proj has fewer rows than
 * o_proj has columns. Here the `o` scale is tied across the query heads that share a key/value head (their statistics
 * averaged), which makes the fold exact under grouped-query attention too.
 *
 * Statistics come layer by layer, as in the calibration driver: the residual stream of every window enters layer 0;
 * for each layer, one pass with a linear-input hook collects `max|X_j|`, `mean|X_j|` and (for AWQ's search) the Hessian
 * `2/N·XᵀX` of each site's input; the scales are chosen and folded; the stream goes on through the original layer
 * (folding is exact, so later layers see the same inputs either way). Memory holds one layer's statistics.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError, ShapeError } from "../core/errors.ts";
import type { Matrix } from "../core/tensor.ts";
import { type AwqQuantizer, awqSearch, scaleColumns } from "../algorithms/awq.ts";
import { createHessianAccumulator, type HessianAccumulator } from "../algorithms/hessian.ts";
import { smoothQuantScales } from "../algorithms/smoothquant.ts";
import { getBackend } from "../backends/registry.ts";
import type { LlamaConfig } from "./config.ts";
import {
  decoderLayerForward,
  embedTokens,
  type LinearKind,
  linearName,
  type LlamaLayerWeights,
  type LlamaModel,
  parseLinearName,
} from "./llama.ts";

/** Where a scale is folded; see the module table. */
export type SmoothSite = "qkv" | "o" | "gate_up" | "down";

/** Every site, in the order AWQ searches them. */
export const SMOOTH_SITES: readonly SmoothSite[] = ["qkv", "o", "gate_up", "down"];

/** Scales of one layer by site; each has one entry per consumer input column. */
export type LayerScales = Partial<Record<SmoothSite, Float32Array>>;

/** Options of {@link smoothModel}. */
export interface SmoothModelOptions {
  /** "smoothquant" (sites qkv, gate_up) or "awq" (every site). */
  readonly kind: "awq" | "smoothquant";
  /** Window length of the calibration tokens. */
  readonly seqLen: number;
  /** SmoothQuant: migration strength, default 0.5. AWQ: a fixed `α` instead of the grid search. */
  readonly alpha?: number;
  /** AWQ: grid points in [0, 1); default 20. */
  readonly gridSize?: number;
  /** AWQ's search: the quantizer the model will be quantized with (required unless `alpha` is given). */
  readonly quantize?: AwqQuantizer;
  /** Windows per forward pass; default 8. */
  readonly batch?: number;
  /** Hessian accumulation of AWQ's search; default "f32". */
  readonly precision?: "f32" | "f64";
  readonly backend?: Backend;
  /** "statistics": windows done in a layer's pass; "search": sites done in a layer. */
  readonly onProgress?: (
    p: { stage: "statistics" | "search"; layer: number; layers: number; done: number; total: number },
  ) => void;
}

/** What was chosen for one site. */
export interface SiteReport {
  readonly site: SmoothSite;
  /** The `α` used. */
  readonly alpha: number;
  /** Scale per consumer input column. */
  readonly scales: Float32Array;
  /** AWQ's search: the grid and the summed output error of the site's layers at each point. */
  readonly alphas?: Float64Array;
  readonly objectives?: Float64Array;
}

/** Result of {@link smoothModel}. */
export interface SmoothModelResult {
  /** A new model with the scales folded in; the original is unchanged. */
  readonly model: LlamaModel;
  /** Per decoder layer, the sites smoothed. */
  readonly layers: readonly (readonly SiteReport[])[];
}

/** The consumers of each site and the linear layer whose input hook reports the site's input. */
const CONSUMERS: Record<SmoothSite, readonly LinearKind[]> = {
  qkv: ["q_proj", "k_proj", "v_proj"],
  o: ["o_proj"],
  gate_up: ["gate_proj", "up_proj"],
  down: ["down_proj"],
};
const SITE_OF_HOOK: Partial<Record<LinearKind, SmoothSite>> = {
  q_proj: "qkv",
  o_proj: "o",
  gate_proj: "gate_up",
  down_proj: "down",
};
const FIELD: Record<LinearKind, "q" | "k" | "v" | "o" | "gate" | "up" | "down"> = {
  q_proj: "q",
  k_proj: "k",
  v_proj: "v",
  o_proj: "o",
  gate_proj: "gate",
  up_proj: "up",
  down_proj: "down",
};

/** Running statistics of one linear input. */
interface InputStats {
  readonly absMax: Float32Array;
  readonly absSum: Float64Array;
  rows: number;
  readonly hessian?: HessianAccumulator;
}

/**
 * SmoothQuant or AWQ scales for every decoder layer of `model`, folded into a new model.
 *
 * @param tokens calibration windows, `windows·seqLen` ids, batch-major.
 * @throws {OptionError} for a bad window layout, an unknown kind, or AWQ's search without a quantizer.
 *
 * @example
 * ```ts ignore
 * const { model: smoothed } = await smoothModel(model, calib, {
 *   kind: "awq",
 *   seqLen: 512,
 *   quantize: layerQuantizer("gptq", { bits: 3, groupSize: 128 }),
 * });
 * ```
 */
export async function smoothModel(
  model: LlamaModel,
  tokens: Int32Array,
  options: SmoothModelOptions,
): Promise<SmoothModelResult> {
  const { kind, seqLen, batch = 8, precision = "f32", onProgress } = options;
  const backend = options.backend ?? getBackend();
  if (kind !== "awq" && kind !== "smoothquant") throw new OptionError(`unknown smoothing "${kind}"`);
  if (!Number.isInteger(seqLen) || seqLen < 1 || tokens.length % seqLen !== 0 || tokens.length === 0) {
    throw new OptionError(`smoothing: ${tokens.length} tokens are not a whole number of windows of ${seqLen}`);
  }
  const search = kind === "awq" && options.alpha === undefined;
  if (search && !options.quantize) throw new OptionError(`AWQ's α search needs the quantizer (or a fixed alpha)`);
  const sites: readonly SmoothSite[] = kind === "awq" ? SMOOTH_SITES : ["qkv", "gate_up"];
  const windows = tokens.length / seqLen;
  const { config } = model;
  const layers = model.weights.layers.length;
  const hidden = config.hiddenSize;
  const reports: SiteReport[][] = [];
  const folded: LlamaLayerWeights[] = [];
  let stream: Matrix = embedTokens(model, tokens);

  for (let l = 0; l < layers; l++) {
    const weights = model.weights.layers[l];
    const stats = new Map<SmoothSite, InputStats>();
    const hook = async (name: string, x: Matrix) => {
      const parsed = parseLinearName(name);
      const site = parsed && SITE_OF_HOOK[parsed.kind];
      if (!site || !sites.includes(site)) return;
      let s = stats.get(site);
      if (!s) {
        const d = x.shape[1];
        s = {
          absMax: new Float32Array(d),
          absSum: new Float64Array(d),
          rows: 0,
          hessian: search ? createHessianAccumulator(d, { precision, backend }) : undefined,
        };
        stats.set(site, s);
      }
      observe(s, x);
      await s.hessian?.observe(x);
    };
    const next = new Float32Array(stream.data.length);
    for (let b0 = 0; b0 < windows; b0 += batch) {
      const nb = Math.min(batch, windows - b0);
      const rows = nb * seqLen;
      const x: Matrix = {
        data: stream.data.subarray(b0 * seqLen * hidden, (b0 * seqLen + rows) * hidden),
        shape: [rows, hidden],
      };
      const y = await decoderLayerForward(backend, config, l, weights, x, { batch: nb, seqLen }, hook);
      next.set(y.data, b0 * seqLen * hidden);
      onProgress?.({ stage: "statistics", layer: l, layers, done: b0 + nb, total: windows });
    }
    stream = { data: next, shape: stream.shape };

    const chosen: LayerScales = {};
    const layerReport: SiteReport[] = [];
    for (const [i, site] of sites.entries()) {
      const s = stats.get(site)!;
      const consumers = CONSUMERS[site].map((k) => ({ name: linearName(l, k), w: weights[FIELD[k]] }));
      if (kind === "smoothquant") {
        const alpha = options.alpha ?? 0.5;
        const scales = smoothQuantScales(s.absMax, consumers.map((c) => c.w), { alpha });
        chosen[site] = scales;
        layerReport.push({ site, alpha, scales });
      } else {
        const mean = Float32Array.from(s.absSum, (v) => v / s.rows);
        const r = await awqSearch(consumers, mean, {
          hessian: s.hessian?.finish(),
          quantize: options.quantize,
          alpha: options.alpha,
          gridSize: options.gridSize,
          tie: site === "o" ? kvTie(config) : undefined,
          backend,
        });
        chosen[site] = r.scales;
        layerReport.push({
          site,
          alpha: r.alpha,
          scales: r.scales,
          ...(search ? { alphas: r.alphas, objectives: r.objectives } : {}),
        });
      }
      onProgress?.({ stage: "search", layer: l, layers, done: i + 1, total: sites.length });
    }
    folded.push(foldLayer(weights, config, chosen));
    reports.push(layerReport);
  }
  return { model: { config, weights: { ...model.weights, layers: folded } }, layers: reports };
}

/**
 * A new model with the given scales folded into each layer (see the module table); the original is not modified.
 *
 * @param scales per decoder layer, the scales of the sites to fold (each one per consumer input column).
 * @throws {ShapeError} for a scale of the wrong length; {OptionError} for a non-positive scale, or an `o` scale that
 *   differs between query heads sharing a key/value head (it could not be folded into v_proj exactly).
 */
export function foldScales(model: LlamaModel, scales: ReadonlyMap<number, LayerScales>): LlamaModel {
  const layers = model.weights.layers.map((w, l) => {
    const s = scales.get(l);
    return s ? foldLayer(w, model.config, s) : w;
  });
  return { config: model.config, weights: { ...model.weights, layers } };
}

/** One layer with scales folded in: new arrays for every changed tensor, the rest shared. */
function foldLayer(w: LlamaLayerWeights, config: LlamaConfig, s: LayerScales): LlamaLayerWeights {
  const out: { -readonly [K in keyof LlamaLayerWeights]: LlamaLayerWeights[K] } = { ...w };
  const check = (site: SmoothSite, scale: Float32Array, cols: number) => {
    if (scale.length !== cols) throw new ShapeError(`${site}: ${scale.length} scales for ${cols} input columns`);
    for (const x of scale) {
      if (!(x > 0 && Number.isFinite(x))) throw new OptionError(`${site}: scales must be positive, got ${x}`);
    }
  };
  if (s.qkv) {
    check("qkv", s.qkv, config.hiddenSize);
    out.inputNorm = divide(w.inputNorm, s.qkv);
    out.q = scaleColumns(w.q, s.qkv);
    out.k = scaleColumns(w.k, s.qkv);
    out.v = scaleColumns(w.v, s.qkv);
  }
  if (s.o) {
    check("o", s.o, config.numHeads * config.headDim);
    out.v = scaleRows(out.v, kvRowScales(s.o, config));
    out.o = scaleColumns(w.o, s.o);
  }
  if (s.gate_up) {
    check("gate_up", s.gate_up, config.hiddenSize);
    out.postAttentionNorm = divide(w.postAttentionNorm, s.gate_up);
    out.gate = scaleColumns(w.gate, s.gate_up);
    out.up = scaleColumns(w.up, s.gate_up);
  }
  if (s.down) {
    check("down", s.down, config.intermediateSize);
    out.up = scaleRows(out.up, s.down);
    out.down = scaleColumns(w.down, s.down);
  }
  return out;
}

/** The v_proj row scales of an `o` scale: query head `h` reads key/value head `⌊h/group⌋`. */
function kvRowScales(so: Float32Array, config: LlamaConfig): Float32Array {
  const { numHeads, numKvHeads, headDim } = config;
  const group = numHeads / numKvHeads;
  const out = new Float32Array(numKvHeads * headDim);
  for (let h = 0; h < numHeads; h++) {
    for (let d = 0; d < headDim; d++) {
      const r = Math.floor(h / group) * headDim + d;
      const x = so[h * headDim + d];
      if (h % group === 0) out[r] = x;
      else if (out[r] !== x) {
        throw new OptionError(`o: query heads ${h - (h % group)} and ${h} share a key/value head but not their scales`);
      }
    }
  }
  return out;
}

/** Tie slots of the attention output: column `h·hd + d` → key/value channel `⌊h/group⌋·hd + d`. */
function kvTie(config: LlamaConfig): Int32Array {
  const { numHeads, numKvHeads, headDim } = config;
  const group = numHeads / numKvHeads;
  return Int32Array.from({ length: numHeads * headDim }, (_, c) => {
    const h = Math.floor(c / headDim);
    return Math.floor(h / group) * headDim + (c % headDim);
  });
}

function observe(s: InputStats, x: Matrix): void {
  const [rows, d] = x.shape;
  for (let t = 0; t < rows; t++) {
    const base = t * d;
    for (let j = 0; j < d; j++) {
      const a = Math.abs(x.data[base + j]);
      if (a > s.absMax[j]) s.absMax[j] = a;
      s.absSum[j] += a;
    }
  }
  s.rows += rows;
}

function divide(v: Float32Array, s: Float32Array): Float32Array {
  return Float32Array.from(v, (x, j) => x / s[j]);
}

function scaleRows(w: Matrix, s: Float32Array): Matrix {
  const [rows, cols] = w.shape;
  if (s.length !== rows) throw new ShapeError(`${s.length} row scales for ${rows} rows`);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * cols + j] = w.data[i * cols + j] / s[i];
  return { data: out, shape: [rows, cols] };
}
