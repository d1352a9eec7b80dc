/**
 * Low-rank error reconstruction after any base quantizer ("GPTQ 3-bit, then QERA rank 32"): {@link withLowRank} wraps a
 * layer quantizer so that the layer it returns is `Ŵ + A·B`. The calibration driver therefore propagates through the
 * corrected layer, and later layers calibrate on what the corrected model really computes.
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import { OptionError } from "../core/errors.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";
import { getBackend } from "../backends/registry.ts";
import { layerLoss } from "./layer_loss.ts";
import { addLowRank, lorc, lowRankBitsPerWeight, type LowRankFactors } from "./lorc.ts";
import { qera } from "./qera.ts";
import type { QuantizedLayer } from "./result.ts";
import type { LayerExtras } from "./methods.ts";

/** The reconstructions: LoRC (weight error), QERA-exact and QERA-approx (output error). */
export const LOW_RANK_KINDS = ["lorc", "qera", "qera-approx"] as const;

/** One of {@link LOW_RANK_KINDS}. */
export type LowRankKind = typeof LOW_RANK_KINDS[number];

/** A quantized layer with a low-rank correction; its `dequantized` already includes `A·B`. */
export interface LowRankLayer extends QuantizedLayer {
  /**
   * The factors (float16 values unless asked otherwise) and how they were made. The base quantizer's fields (codes,
   * grid, ...) are kept as they were, so its own weights are those fields' reconstruction; `dequantized` adds `A·B`.
   */
  readonly lowRank: LowRankFactors & { readonly kind: LowRankKind; readonly rank: number };
}

/** Options of {@link withLowRank}. */
export interface WithLowRankOptions {
  /** Which reconstruction. */
  readonly kind: LowRankKind;
  /** Rank `r ≥ 0` (clipped to the layer's smaller dimension). */
  readonly rank: number;
  /** Factor precision; default "f16" (what the bit count assumes). */
  readonly precision?: "f16" | "f32";
  /** Kernels; default the current backend. */
  readonly backend?: Backend;
}

/** A layer quantizer as `layerQuantizer` returns it; the Hessian may be absent for methods that need none (RTN). */
export type BaseLayerQuantizer = (
  name: string,
  w: Matrix,
  h: Matrix<FloatArray> | undefined,
  extras?: LayerExtras,
) => Promise<QuantizedLayer>;

/**
 * A layer quantizer that runs `quantizer`, then adds a low-rank reconstruction of its error.
 *
 * The layer's stats are updated: `layerLoss` is recomputed on `Ŵ + A·B` (with the Hessian given, 0 without one) and
 * `avgBits` grows by `16·r·(rows + cols)/(rows·cols)`. QERA uses the Hessian given for the layer as `R` (the factors are
 * invariant to its scale; see `qera.ts`); `method` becomes e.g. `"gptq+qera"`.
 *
 * @throws {OptionError} for an unknown kind or a bad rank (at once), or, when a layer is quantized, for QERA without a
 *   Hessian.
 *
 * @example
 * ```ts
 * import { withLowRank } from "./low_rank.ts";
 * import { layerQuantizer } from "./methods.ts";
 * const quantize = withLowRank(layerQuantizer("gptq", { bits: 3 }), { kind: "qera", rank: 32 });
 * console.assert(typeof quantize === "function");
 * ```
 */
export function withLowRank(
  quantizer: BaseLayerQuantizer,
  options: WithLowRankOptions,
): (
  name: string,
  w: Matrix,
  h: Matrix<FloatArray> | undefined,
  extras?: LayerExtras,
) => Promise<LowRankLayer> {
  const { kind, rank, precision = "f16" } = options;
  if (!(LOW_RANK_KINDS as readonly string[]).includes(kind)) {
    throw new OptionError(`unknown low-rank kind "${kind}"; available: ${LOW_RANK_KINDS.join(", ")}`);
  }
  if (!Number.isInteger(rank) || rank < 0) throw new OptionError(`low-rank rank must be an integer ≥ 0, got ${rank}`);
  return async (name, w, h, extras) => {
    const backend = options.backend ?? getBackend();
    const base = await quantizer(name, w, h, extras);
    const t0 = performance.now();
    let factors: LowRankFactors;
    if (kind === "lorc") {
      factors = await lorc(w, base.dequantized, rank, { precision, backend });
    } else {
      if (!h) throw new OptionError(`${name}: ${kind} needs the layer's calibration Hessian`);
      factors = await qera(w, base.dequantized, h, rank, { exact: kind === "qera", precision, backend });
    }
    const dequantized = await addLowRank(base.dequantized, factors, backend);
    const [rows, cols] = w.shape;
    const r = factors.a.shape[1];
    return {
      ...base,
      method: `${base.method}+${kind}`,
      dequantized,
      lowRank: { ...factors, kind, rank: r },
      stats: {
        ...base.stats,
        layerLoss: h ? await layerLoss(w, dequantized, h, backend) : 0,
        avgBits: base.stats.avgBits + lowRankBitsPerWeight(rows, cols, r),
        seconds: base.stats.seconds + (performance.now() - t0) / 1000,
      },
    };
  };
}
