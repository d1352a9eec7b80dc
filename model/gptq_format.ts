/**
 * The GPTQ checkpoint format that Hugging Face transformers (through optimum / GPTQModel), vLLM, AutoGPTQ and
 * GPTQModel load: a Hugging Face model folder whose quantized linear layers `<module>` are stored as four tensors
 * instead of `<module>.weight`, and whose `config.json` carries a `quantization_config`.
 *
 * Per quantized linear layer `W` of shape `[out, in]` (`bits` ∈ {2, 3, 4, 8}, `G` groups):
 *
 * | tensor    | dtype | shape                | content |
 * | --------- | ----- | -------------------- | ------- |
 * | `qweight` | I32   | `[in·bits/32, out]`  | codes packed along the input dimension: column `j` of `qweight` is the LSB-first bit stream of `q[j, 0..in)` (eight 4-bit codes per word; 3-bit codes straddle words, 32 codes per 3 words, as GPTQ's `pack`) |
 * | `qzeros`  | I32   | `[G, out·bits/32]`   | zero points packed the same way along the output dimension, row `g` holding group `g` |
 * | `scales`  | F16   | `[G, out]`           | the grid step of each group and output |
 * | `g_idx`   | I32   | `[in]`               | the group of each input column (act-order makes it non-monotonic) |
 *
 * and `ŵ[j, i] = scales[g, j] · (q[j, i] − zero[g, j])` with `g = g_idx[i]`.
 *
 * Zero points: `checkpoint_format: "gptq"` (v1, what transformers/optimum write and read by default, and the only
 * convention vLLM's and AutoGPTQ's kernels implement) stores `zero − 1` in each field and readers add 1 back; a zero of
 * 0 (an asymmetric group with no negative weight) has no v1 encoding (GPTQModel's own v1 writer lets it underflow and
 * corrupt the neighbouring field). `checkpoint_format: "gptq_v2"` (GPTQModel) stores `zero` itself. The writer uses v1
 * whenever every zero is at least 1 and, with `checkpointFormat: "auto"` (the default), v2 otherwise, saying so in its
 * summary; the loader reads both.
 *
 * `quantization_config` holds `quant_method: "gptq"`, `bits`, `group_size` (−1 for one group per row), `desc_act`
 * (true whenever some `g_idx` is not `i / group_size`, which runtimes then must honour, or act-order was used),
 * `static_groups`, `sym`, `checkpoint_format`, `lm_head: false`, `meta.quantizer`, and `modules_in_block_to_quantize`
 * when some layers stay unquantized.
 * Layers that cannot be packed (a dimension not a multiple of `32/gcd(bits, 32)`, e.g. llama2.c stories260K's MLP of
 * width 172) are stored as ordinary float32 `.weight` tensors holding their dequantized values and left out of
 * `modules_in_block_to_quantize`, which is how transformers is told not to replace them. Every other tensor is copied in
 * the source's dtype (bf16 stays bf16; float32 for llama2.c sources).
 *
 * llama2.c models rotate interleaved pairs; Hugging Face Llama rotate-half pairs, so the rows of q and k (codes,
 * scales, zeros alike: quantization is per output row) are permuted into the rotate-half order on the way out, and
 * the checkpoint is an ordinary `LlamaForCausalLM`.
 *
 * Limits: scales are stored as f16 (as every runtime reads them), so a loaded layer equals `f16(scale)·(q − zero)`,
 * within 2^-11 relative of the in-memory one; vLLM further needs `group_size` to divide `in`.
 *
 * @module
 */

import { join } from "node:path";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { FormatError, OptionError } from "../core/errors.ts";
import { packInt32, unpackInt32 } from "../core/grids/pack.ts";
import { uniformValue } from "../core/grids/uniform.ts";
import { type Matrix, matrix } from "../core/tensor.ts";
import {
  copyTokenizerFiles,
  describeSource,
  hfConfigObject,
  isFile,
  isRecord,
  nonLinearWeights,
  permuteMatrixRows,
  permuteRows,
  PTQ_VERSION,
  readJsonFile,
  ropeRowSource,
  storedDtype,
  writeDirAtomically,
  writeTextAtomically,
} from "./checkpoint_files.ts";
import { type LlamaConfig, parseHfConfig } from "./config.ts";
import { llamaWeightShapes } from "./hf_loader.ts";
import { linearNames, linearWeight, llamaFromWeights, type LlamaModel, parseLinearName } from "./llama.ts";
import {
  openSafetensorsFolder,
  type SafetensorsReader,
  type TensorToWrite,
  writeSafetensorsSharded,
} from "./safetensors.ts";

/** Zero-point conventions: v1 stores `zero − 1`, v2 stores `zero`. */
export type GptqCheckpointFormat = "gptq" | "gptq_v2";

/** Code widths the GPTQ format and its kernels support. */
export const GPTQ_BITS: readonly number[] = [2, 3, 4, 8];

/** One linear layer in GPTQ's packed form (arrays row-major in the shapes listed). */
export interface GptqPackedLayer {
  readonly bits: number;
  /** `in`: columns of the weight. */
  readonly inFeatures: number;
  /** `out`: rows of the weight. */
  readonly outFeatures: number;
  /** `G`: groups per row. */
  readonly groups: number;
  /** `[in·bits/32, out]`. */
  readonly qweight: Int32Array;
  /** `[G, out·bits/32]`. */
  readonly qzeros: Int32Array;
  /** `[G, out]` f16 bits. */
  readonly scales: Uint16Array;
  /** `[in]`. */
  readonly gIdx: Int32Array;
}

/**
 * Why `layer` has no GPTQ encoding, or undefined when it has one. `shape` problems are separated from the rest because
 * a writer can keep such a layer in float instead.
 */
export function gptqIncompatibility(layer: QuantizedLayer): { kind: "shape" | "content"; reason: string } | undefined {
  const { grid, codes, params, groupIndex, outliers } = layer;
  if (!grid || grid.kind !== "uniform" || !codes || !params || !groupIndex) {
    return { kind: "content", reason: `method ${layer.method} has no uniform integer grid (codes, scales, zeros)` };
  }
  if (!GPTQ_BITS.includes(grid.bits)) {
    return { kind: "content", reason: `${grid.bits}-bit codes (GPTQ has 2, 3, 4, 8)` };
  }
  if (outliers && outliers.values.length > 0) {
    return { kind: "content", reason: `${outliers.values.length} full-precision outliers` };
  }
  const [rows, cols] = layer.dequantized.shape;
  if ((cols * grid.bits) % 32 !== 0 || (rows * grid.bits) % 32 !== 0) {
    return {
      kind: "shape",
      reason: `shape [${rows}, ${cols}] does not pack into 32-bit words at ${grid.bits} bits`,
    };
  }
  const maxq = 2 ** grid.bits - 1;
  for (let k = 0; k < params.zero.length; k++) {
    const z = params.zero[k];
    if (!Number.isInteger(z) || z < 0 || z > maxq) {
      return { kind: "content", reason: `zero point ${z} is not an integer in 0..${maxq}` };
    }
  }
  // The format holds codes and grids only: a layer whose weights carry more (low-rank terms, corrections) would load
  // back different, so that is refused rather than silently dropped.
  const { scale, zero, groups } = params;
  const W = layer.dequantized.data;
  for (let i = 0; i < rows; i++) {
    for (let c = 0; c < cols; c++) {
      const p = i * groups + groupIndex[c];
      if (uniformValue(codes[i * cols + c], scale[p], zero[p]) !== W[i * cols + c]) {
        return { kind: "content", reason: `its dequantized weights are not scale·(code − zero) (at [${i}, ${c}])` };
      }
    }
  }
  return undefined;
}

/** True when some zero point of the layer is 0, which the v1 format cannot store. */
function hasZeroZero(layer: QuantizedLayer): boolean {
  return layer.params!.zero.some((z) => z === 0);
}

/**
 * Packs a layer into GPTQ's tensors.
 *
 * @param format zero-point convention (v1 stores `zero − 1`).
 * @param name names the layer in errors.
 * @throws {OptionError} when the layer has no GPTQ encoding ({@link gptqIncompatibility}), a zero is 0 under v1, or a
 *   scale does not fit f16.
 */
export function packGptqLayer(
  layer: QuantizedLayer,
  format: GptqCheckpointFormat = "gptq",
  name = "layer",
): GptqPackedLayer {
  const why = gptqIncompatibility(layer);
  if (why) throw new OptionError(`${name}: no GPTQ encoding: ${why.reason}`);
  const bits = layer.grid!.bits;
  const codes = layer.codes!, { scale, zero, groups } = layer.params!;
  const [out, inF] = layer.dequantized.shape;
  const wordsIn = (inF * bits) / 32, wordsOut = (out * bits) / 32;

  const qweight = new Int32Array(wordsIn * out);
  for (let j = 0; j < out; j++) {
    const words = packInt32(codes.subarray(j * inF, (j + 1) * inF), bits);
    for (let w = 0; w < wordsIn; w++) qweight[w * out + j] = words[w];
  }

  const offset = format === "gptq" ? 1 : 0;
  const qzeros = new Int32Array(groups * wordsOut);
  const scales = new Uint16Array(groups * out);
  const fields = new Uint8Array(out);
  for (let g = 0; g < groups; g++) {
    for (let j = 0; j < out; j++) {
      const z = zero[j * groups + g] - offset;
      if (z < 0) {
        throw new OptionError(
          `${name}: group ${g} of row ${j} has zero point 0, which checkpoint_format "gptq" (v1, stores zero − 1) ` +
            `cannot hold; write "gptq_v2" or use a symmetric grid`,
        );
      }
      fields[j] = z;
      const s = scale[j * groups + g], h = f32ToF16Bits(s);
      const back = f16BitsToF32(h);
      if (!Number.isFinite(back) || (s !== 0 && back === 0)) {
        throw new OptionError(`${name}: scale ${s} of group ${g}, row ${j} does not fit float16`);
      }
      scales[g * out + j] = h;
    }
    qzeros.set(new Int32Array(packInt32(fields, bits).buffer), g * wordsOut);
  }
  return {
    bits,
    inFeatures: inF,
    outFeatures: out,
    groups,
    qweight,
    qzeros,
    scales,
    gIdx: Int32Array.from(layer.groupIndex!),
  };
}

/** Options of {@link unpackGptqLayer}. */
export interface UnpackOptions {
  /** Zero-point convention of the file; default "gptq" (v1). */
  readonly format?: GptqCheckpointFormat;
  /** `sym` of the config, recorded in the returned grid; default false. */
  readonly symmetric?: boolean;
  /** `group_size` of the config (0 for per-row), recorded in the result; default from `groups`. */
  readonly groupSize?: number;
  /** Names the source in errors. */
  readonly path?: string;
}

/**
 * Unpacks GPTQ tensors into a {@link QuantizedLayer}: codes `[out, in]`, float32 scales (exact f16 values) and zeros
 * `[out, G]`, `g_idx` as the group index, and `ŵ = scale·(q − zero)` computed in float32 (exact: an f16 scale times a
 * small integer).
 *
 * @throws {FormatError} when the arrays do not have the shapes the dimensions imply or `g_idx` is out of range.
 */
export function unpackGptqLayer(p: GptqPackedLayer, options: UnpackOptions = {}): QuantizedLayer {
  const { bits, inFeatures: inF, outFeatures: out, groups } = p;
  const path = options.path ?? "GPTQ layer";
  if (!GPTQ_BITS.includes(bits)) throw new FormatError(path, `${bits}-bit GPTQ codes are not supported`);
  if ((inF * bits) % 32 !== 0 || (out * bits) % 32 !== 0) {
    throw new FormatError(path, `[${out}, ${inF}] does not pack at ${bits} bits`);
  }
  const wordsIn = (inF * bits) / 32, wordsOut = (out * bits) / 32;
  const expect = (what: string, got: number, want: number) => {
    if (got !== want) throw new FormatError(path, `${what} has ${got} values, expected ${want}`);
  };
  expect("qweight", p.qweight.length, wordsIn * out);
  expect("qzeros", p.qzeros.length, groups * wordsOut);
  expect("scales", p.scales.length, groups * out);
  expect("g_idx", p.gIdx.length, inF);
  for (let i = 0; i < inF; i++) {
    if (p.gIdx[i] < 0 || p.gIdx[i] >= groups) {
      throw new FormatError(path, `g_idx[${i}] = ${p.gIdx[i]} is outside 0..${groups - 1}`);
    }
  }

  const codes = new Uint8Array(out * inF);
  const column = new Uint32Array(wordsIn);
  const qw = new Uint32Array(p.qweight.buffer, p.qweight.byteOffset, p.qweight.length);
  for (let j = 0; j < out; j++) {
    for (let w = 0; w < wordsIn; w++) column[w] = qw[w * out + j];
    codes.set(unpackInt32(column, bits, inF), j * inF);
  }
  const offset = (options.format ?? "gptq") === "gptq" ? 1 : 0;
  const scale = new Float32Array(out * groups), zero = new Float32Array(out * groups);
  const qz = new Uint32Array(p.qzeros.buffer, p.qzeros.byteOffset, p.qzeros.length);
  for (let g = 0; g < groups; g++) {
    const z = unpackInt32(qz.subarray(g * wordsOut, (g + 1) * wordsOut), bits, out);
    for (let j = 0; j < out; j++) {
      zero[j * groups + g] = z[j] + offset;
      scale[j * groups + g] = f16BitsToF32(p.scales[g * out + j]);
    }
  }
  const deq = matrix(out, inF);
  const D = deq.data;
  for (let j = 0; j < out; j++) {
    for (let i = 0; i < inF; i++) {
      const q = j * groups + p.gIdx[i];
      D[j * inF + i] = uniformValue(codes[j * inF + i], scale[q], zero[q]);
    }
  }
  const groupSize = options.groupSize ?? (groups === 1 ? 0 : Math.ceil(inF / groups));
  const g = groupSize === 0 ? inF : Math.min(groupSize, inF);
  return {
    method: "gptq",
    dequantized: deq,
    grid: { kind: "uniform", bits, symmetric: options.symmetric ?? false },
    codes,
    params: { rows: out, groups, scale, zero },
    groupIndex: Int32Array.from(p.gIdx),
    groupSize,
    stats: { layerLoss: 0, avgBits: bits + (16 + bits) / g + 32 / out, seconds: 0 },
  };
}

/** A layer with its output rows reordered (codes, grid parameters and weights alike). */
function permuteLayerRows(layer: QuantizedLayer, src: Int32Array): QuantizedLayer {
  const cols = layer.dequantized.shape[1];
  const p = layer.params!;
  return {
    ...layer,
    dequantized: permuteMatrixRows(layer.dequantized, src),
    codes: permuteRows(layer.codes!, cols, src),
    params: { ...p, scale: permuteRows(p.scale, p.groups, src), zero: permuteRows(p.zero, p.groups, src) },
  };
}

/** Options of {@link saveGptqCheckpoint}. */
export interface SaveGptqOptions {
  /** "gptq" (v1), "gptq_v2", or "auto": v1 unless a zero point is 0 (default). */
  readonly checkpointFormat?: GptqCheckpointFormat | "auto";
  /** Largest safetensors shard in bytes; default 5 GB. */
  readonly maxShardBytes?: number;
}

/** What {@link saveGptqCheckpoint} wrote. */
export interface GptqSaveSummary {
  readonly dir: string;
  readonly checkpointFormat: GptqCheckpointFormat;
  /** Why v2 was chosen under "auto", when it was. */
  readonly formatReason?: string;
  readonly bits: number;
  /** `group_size` as written (−1 = per row). */
  readonly groupSize: number;
  readonly descAct: boolean;
  readonly sym: boolean;
  /** Linear layers written packed. */
  readonly packed: readonly string[];
  /** Quantized layers written as float32 dequantized weights (not packable), with the reason. */
  readonly dense: readonly { readonly name: string; readonly reason: string }[];
  /** Files in the folder. */
  readonly files: readonly string[];
}

/** The `quantization_config` fields this module reads. */
export interface GptqQuantizationConfig {
  readonly bits: number;
  /** −1 = one group per row. */
  readonly groupSize: number;
  readonly descAct: boolean;
  readonly sym: boolean;
  readonly checkpointFormat: GptqCheckpointFormat;
  /** The JSON object as found. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/**
 * Writes a GPTQ checkpoint folder (see the module documentation for the layout) atomically: everything is written to
 * `<dir>.tmp-<random>`, which then replaces `dir` (an existing non-empty `dir` must be a checkpoint ptq wrote).
 *
 * @param dir destination folder.
 * @param model the quantized model (its unquantized tensors are written from it, in the source's dtypes).
 * @param layers the quantized linear layers by module name (`model.layers.0.self_attn.q_proj`); decoder linear layers
 *   not in the map are written unquantized.
 * @param sourceDir the model that was quantized (Hugging Face folder or llama2.c checkpoint): its `config.json`,
 *   dtypes and tokenizer files are carried over.
 * @throws {OptionError} when a layer has no GPTQ encoding other than its shape (non-uniform grid, outliers, 5-7 bits,
 *   low-rank terms), layers disagree on bits, group size or symmetry, or `dir` may not be replaced.
 * @throws {FormatError} when the source is malformed.
 */
export async function saveGptqCheckpoint(
  dir: string,
  model: LlamaModel,
  layers: ReadonlyMap<string, QuantizedLayer>,
  sourceDir?: string,
  options: SaveGptqOptions = {},
): Promise<GptqSaveSummary> {
  const source = await describeSource(sourceDir);
  const config = model.config;
  for (const name of layers.keys()) {
    if (!parseLinearName(name)) throw new OptionError(`"${name}" is not a decoder linear layer of a Llama model`);
  }

  // Which layers pack, and the one bits / group size / symmetry they share.
  const packedNames: string[] = [];
  const dense: { name: string; reason: string }[] = [];
  for (const name of linearNames(config)) {
    const layer = layers.get(name);
    if (!layer) continue;
    const why = gptqIncompatibility(layer);
    if (why?.kind === "content") {
      throw new OptionError(`${name}: the GPTQ format cannot hold this layer: ${why.reason}; use the ptq format`);
    }
    if (why) dense.push({ name, reason: why.reason });
    else packedNames.push(name);
  }
  if (packedNames.length === 0) throw new OptionError("no layer can be written in the GPTQ format");
  // A GPTQ config names the quantized modules once for every block, so each kind is packed in all blocks or none.
  for (const kind of new Set(packedNames.map((n) => parseLinearName(n)!.kind))) {
    const missing = linearNames(config).filter((n) => parseLinearName(n)!.kind === kind && !packedNames.includes(n));
    if (missing.length > 0) {
      throw new OptionError(
        `${kind} is quantized in some blocks but not in ${missing[0]}; GPTQ needs every block alike`,
      );
    }
  }
  const first = layers.get(packedNames[0])!;
  const bits = first.grid!.bits;
  const sym = first.grid!.kind === "uniform" && (first.grid!.symmetric ?? false);
  const groupSize = first.groupSize ?? inferGroupSize(first);
  for (const name of packedNames) {
    const l = layers.get(name)!;
    const g = l.groupSize ?? inferGroupSize(l);
    const s = l.grid!.kind === "uniform" && (l.grid!.symmetric ?? false);
    if (l.grid!.bits !== bits || g !== groupSize || s !== sym) {
      throw new OptionError(
        `${name} has ${l.grid!.bits} bits, group ${g}${s ? ", symmetric" : ""}, unlike ${packedNames[0]} ` +
          `(${bits} bits, group ${groupSize}${sym ? ", symmetric" : ""}); one GPTQ checkpoint has one setting`,
      );
    }
  }

  let format: GptqCheckpointFormat, formatReason: string | undefined;
  const zeroZero = packedNames.find((n) => hasZeroZero(layers.get(n)!));
  const requested = options.checkpointFormat ?? "auto";
  if (requested === "auto") {
    format = zeroZero ? "gptq_v2" : "gptq";
    if (zeroZero) formatReason = `${zeroZero} has a zero point of 0, which v1 ("gptq") cannot store`;
  } else format = requested;

  // Trivial g_idx (i / group_size) lets runtimes skip it; anything else needs desc_act so they honour it.
  const descAct = packedNames.some((n) => {
    const l = layers.get(n)!;
    return l.permutation !== undefined || !trivialGroupIndex(l.groupIndex!, groupSize);
  });

  const interleaved = config.ropePairing === "interleaved";
  const rowOrder = (name: string, rows: number) => {
    const kind = parseLinearName(name)?.kind;
    return interleaved && (kind === "q_proj" || kind === "k_proj")
      ? ropeRowSource(rows, config.headDim, "half")
      : undefined;
  };

  const tensors: TensorToWrite[] = [];
  const plain = new Map(nonLinearWeights(model).map((w) => [w.name, w]));
  for (const [weightName, [r, c]] of llamaWeightShapes(config)) {
    const w = plain.get(weightName);
    if (w) {
      tensors.push({
        name: weightName,
        dtype: storedDtype(source, weightName),
        shape: r === 1 ? [c] : [r, c],
        data: w.data,
      });
      continue;
    }
    if (weightName === "lm_head.weight") continue; // tied
    const module = weightName.slice(0, -".weight".length);
    const src = rowOrder(module, r);
    if (packedNames.includes(module)) {
      let layer = layers.get(module)!;
      if (src) layer = permuteLayerRows(layer, src);
      const packed = packGptqLayer(layer, format, module);
      const wordsIn = (c * bits) / 32, wordsOut = (r * bits) / 32;
      tensors.push({ name: `${module}.qweight`, dtype: "I32", shape: [wordsIn, r], data: packed.qweight });
      tensors.push({ name: `${module}.qzeros`, dtype: "I32", shape: [packed.groups, wordsOut], data: packed.qzeros });
      tensors.push({ name: `${module}.scales`, dtype: "F16", shape: [packed.groups, r], data: packed.scales });
      tensors.push({ name: `${module}.g_idx`, dtype: "I32", shape: [c], data: packed.gIdx });
    } else {
      const quantized = layers.get(module);
      let m: Matrix = quantized ? quantized.dequantized : linearWeight(model, module);
      if (src) m = permuteMatrixRows(m, src);
      // Dequantized weights are stored exactly (float32); untouched weights go back in the source's dtype.
      tensors.push({
        name: weightName,
        dtype: quantized ? "F32" : storedDtype(source, weightName),
        shape: [r, c],
        data: m.data,
      });
    }
  }

  const quantizationConfig: Record<string, unknown> = {
    quant_method: "gptq",
    bits,
    group_size: groupSize === 0 ? -1 : groupSize,
    desc_act: descAct,
    sym,
    // Act-order with groups fitted before quantizing (GPTQ's static groups) leaves g_idx trivial.
    static_groups: groupSize > 0 && packedNames.some((n) => {
      const l = layers.get(n)!;
      return l.permutation !== undefined && trivialGroupIndex(l.groupIndex!, groupSize);
    }),
    checkpoint_format: format,
    lm_head: false,
    meta: { quantizer: [PTQ_VERSION], method: first.method },
  };
  const packedKinds = new Set(packedNames.map((n) => n.replace(/^model\.layers\.\d+\./, "")));
  if (packedKinds.size < 7) {
    // One list per sub-block, in the order GPTQ quantizes them; transformers replaces only the modules listed.
    quantizationConfig.modules_in_block_to_quantize = [
      ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
      ["self_attn.o_proj"],
      ["mlp.gate_proj", "mlp.up_proj"],
      ["mlp.down_proj"],
    ].map((ms) => ms.filter((m) => packedKinds.has(m))).filter((ms) => ms.length > 0);
  }
  const base = source.config ?? {};
  const configJson = hfConfigObject(config, base);
  configJson.quantization_config = quantizationConfig;
  if (configJson.torch_dtype === undefined && configJson.dtype === undefined) configJson.torch_dtype = "float16";

  const files: string[] = [];
  await writeDirAtomically(dir, async (tmp) => {
    files.push(
      ...await writeSafetensorsSharded(tmp, tensors, {
        maxShardBytes: options.maxShardBytes,
        metadata: { format: "pt" },
      }),
    );
    files.push(...await copyTokenizerFiles(source, tmp));
    await writeTextAtomically(join(tmp, "config.json"), JSON.stringify(configJson, null, 2) + "\n");
    files.push("config.json");
  }, isPtqGptqCheckpoint);
  return {
    dir,
    checkpointFormat: format,
    formatReason,
    bits,
    groupSize: groupSize === 0 ? -1 : groupSize,
    descAct,
    sym,
    packed: packedNames,
    dense,
    files,
  };
}

function inferGroupSize(layer: QuantizedLayer): number {
  const groups = layer.params?.groups ?? 1;
  return groups === 1 ? 0 : Math.ceil(layer.dequantized.shape[1] / groups);
}

function trivialGroupIndex(g: Int32Array, groupSize: number): boolean {
  for (let i = 0; i < g.length; i++) if (g[i] !== (groupSize === 0 ? 0 : Math.floor(i / groupSize))) return false;
  return true;
}

/** True for a folder holding a GPTQ checkpoint that ptq wrote (it may be replaced by a new one). */
async function isPtqGptqCheckpoint(dir: string): Promise<boolean> {
  if (!(await isFile(join(dir, "config.json")))) return false;
  try {
    const c = await readJsonFile(join(dir, "config.json"));
    const q = isRecord(c) && isRecord(c.quantization_config) ? c.quantization_config : undefined;
    const meta = q && isRecord(q.meta) ? q.meta : undefined;
    return Array.isArray(meta?.quantizer) && meta.quantizer.some((s) => typeof s === "string" && s.startsWith("ptq"));
  } catch {
    return false;
  }
}

/**
 * The GPTQ `quantization_config` of a folder: `config.json`'s `quantization_config`, else AutoGPTQ's
 * `quantize_config.json`; undefined when the folder has neither (not a GPTQ checkpoint).
 *
 * @throws {FormatError} naming the file for a config that is not GPTQ or has invalid fields.
 */
export async function readGptqConfig(dir: string): Promise<GptqQuantizationConfig | undefined> {
  let raw: unknown, path = join(dir, "config.json");
  if (await isFile(path)) {
    const c = await readJsonFile(path);
    if (isRecord(c) && c.quantization_config !== undefined) raw = c.quantization_config;
  }
  if (raw === undefined && await isFile(join(dir, "quantize_config.json"))) {
    path = join(dir, "quantize_config.json");
    raw = await readJsonFile(path);
  }
  if (raw === undefined) return undefined;
  if (!isRecord(raw)) throw new FormatError(path, "quantization_config must be an object");
  const method = raw.quant_method ?? "gptq";
  if (method !== "gptq") throw new FormatError(path, `quant_method ${JSON.stringify(method)} is not "gptq"`);
  const bits = raw.bits;
  if (typeof bits !== "number" || !GPTQ_BITS.includes(bits)) {
    throw new FormatError(path, `bits must be one of ${GPTQ_BITS.join(", ")}, got ${JSON.stringify(bits)}`);
  }
  const groupSize = raw.group_size ?? -1;
  if (typeof groupSize !== "number" || !Number.isInteger(groupSize) || (groupSize !== -1 && groupSize <= 0)) {
    throw new FormatError(path, `group_size must be -1 or a positive integer, got ${JSON.stringify(raw.group_size)}`);
  }
  const format = raw.checkpoint_format ?? "gptq";
  if (format !== "gptq" && format !== "gptq_v2") {
    throw new FormatError(path, `checkpoint_format ${JSON.stringify(format)} is not supported (gptq, gptq_v2)`);
  }
  return {
    bits,
    groupSize,
    descAct: raw.desc_act === true,
    sym: raw.sym !== false,
    checkpointFormat: format,
    raw,
  };
}

/**
 * Where a GPTQ folder keeps its tensors: the folder itself when it has `model.safetensors` or a sharded index (what
 * transformers and ptq write), else AutoGPTQ's `<model_file_base_name>.safetensors`, else its single `.safetensors`.
 *
 * @throws {FormatError} when none of these exists or several candidates do.
 */
export async function gptqWeightsPath(dir: string, q?: GptqQuantizationConfig): Promise<string> {
  if (await isFile(join(dir, "model.safetensors")) || await isFile(join(dir, "model.safetensors.index.json"))) {
    return dir;
  }
  const base = q?.raw.model_file_base_name;
  if (typeof base === "string" && await isFile(join(dir, `${base}.safetensors`))) {
    return join(dir, `${base}.safetensors`);
  }
  const found: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile && e.name.endsWith(".safetensors")) found.push(e.name);
  if (found.length === 1) return join(dir, found[0]);
  throw new FormatError(
    dir,
    found.length ? `several safetensors files (${found.sort().join(", ")}) and no index` : "no safetensors weights",
  );
}

/** A GPTQ checkpoint read back: the runnable model and what it was made of. */
export interface GptqCheckpoint {
  /** The model with every quantized layer dequantized (rotate-half RoPE, as every Hugging Face Llama). */
  readonly model: LlamaModel;
  readonly config: LlamaConfig;
  readonly quantization: GptqQuantizationConfig;
  /** The packed layers, unpacked, by module name. */
  readonly layers: ReadonlyMap<string, QuantizedLayer>;
}

async function readInt32(st: SafetensorsReader, name: string, shape: readonly number[]): Promise<Int32Array> {
  const info = st.info(name);
  if (info.dtype !== "I32" && info.dtype !== "U32") {
    throw new FormatError(info.file, `${name} has dtype ${info.dtype}, expected I32`);
  }
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw new FormatError(info.file, `${name} has shape [${info.shape}], expected [${shape}]`);
  }
  const { data } = await st.readArray(name);
  return data instanceof Int32Array ? data : new Int32Array((data as Uint32Array).buffer, data.byteOffset, data.length);
}

/**
 * Reads a GPTQ checkpoint folder: unpacks every packed layer (`ŵ = scale·(q − zero)` per group through `g_idx`,
 * adding 1 to stored zeros under v1), reads every other tensor as float32, and builds a model ptq can evaluate.
 *
 * @throws {FormatError} naming the file when the folder is not a GPTQ checkpoint of a Llama model, a tensor is
 *   missing, misshapen or of the wrong dtype, or the files are truncated.
 */
export async function readGptqCheckpoint(dir: string): Promise<GptqCheckpoint> {
  const quantization = await readGptqConfig(dir);
  if (!quantization) throw new FormatError(dir, "no quantization_config in config.json (not a GPTQ checkpoint)");
  const configPath = join(dir, "config.json");
  const config = parseHfConfig(await readJsonFile(configPath), configPath);
  const { bits, checkpointFormat } = quantization;
  using st = await openSafetensorsFolder(await gptqWeightsPath(dir, quantization));
  const weights = new Map<string, { data: Float32Array; shape: readonly number[] }>();
  const layers = new Map<string, QuantizedLayer>();
  const used = new Set<string>();
  for (const [weightName, [r, c]] of llamaWeightShapes(config)) {
    const module = weightName.slice(0, -".weight".length);
    if (st.has(`${module}.qweight`)) {
      const groupsInfo = st.info(`${module}.scales`);
      const groups = groupsInfo.shape[0];
      if (groupsInfo.shape.length !== 2 || groupsInfo.shape[1] !== r || !(groups >= 1)) {
        throw new FormatError(
          groupsInfo.file,
          `${module}.scales has shape [${groupsInfo.shape}], expected [groups, ${r}]`,
        );
      }
      if (groupsInfo.dtype !== "F16" && groupsInfo.dtype !== "BF16" && groupsInfo.dtype !== "F32") {
        throw new FormatError(groupsInfo.file, `${module}.scales has dtype ${groupsInfo.dtype}, expected F16`);
      }
      const scalesF32 = (await st.readF32(`${module}.scales`)).data;
      const scales = Uint16Array.from(scalesF32, (v) => f32ToF16Bits(v));
      const gIdx = st.has(`${module}.g_idx`)
        ? await readInt32(st, `${module}.g_idx`, [c])
        : Int32Array.from({ length: c }, (_, i) =>
          quantization.groupSize === -1 ? 0 : Math.floor(i / quantization.groupSize));
      const packed: GptqPackedLayer = {
        bits,
        inFeatures: c,
        outFeatures: r,
        groups,
        qweight: await readInt32(st, `${module}.qweight`, [(c * bits) / 32, r]),
        qzeros: await readInt32(st, `${module}.qzeros`, [groups, (r * bits) / 32]),
        scales,
        gIdx,
      };
      const layer = unpackGptqLayer(packed, {
        format: checkpointFormat,
        symmetric: quantization.sym,
        groupSize: quantization.groupSize === -1 ? 0 : quantization.groupSize,
        path: `${st.path}: ${module}`,
      });
      // f16 → f32 → f16 is the identity, so scales read from an F16 file are the stored values exactly.
      layers.set(module, layer);
      weights.set(weightName, layer.dequantized);
      for (const t of ["qweight", "qzeros", "scales", "g_idx"]) used.add(`${module}.${t}`);
    } else if (st.has(weightName)) {
      const t = await st.readF32(weightName);
      weights.set(weightName, t);
      used.add(weightName);
    } else if (!(weightName === "lm_head.weight" && config.tieWordEmbeddings)) {
      throw new FormatError(st.path, `missing ${weightName} (neither packed nor plain)`);
    }
  }
  for (const name of st.names) {
    if (used.has(name) || name.endsWith(".rotary_emb.inv_freq")) continue;
    if (name.endsWith(".bias")) {
      const b = (await st.readF32(name)).data;
      if (b.every((v) => v === 0)) continue; // AutoGPTQ stores zero biases for bias-free layers
    }
    throw new FormatError(st.path, `unexpected tensor "${name}" for a Llama GPTQ checkpoint`);
  }
  const model = llamaFromWeights(config, (n) => weights.get(n), dir);
  return { model, config, quantization, layers };
}

/**
 * Loads a GPTQ checkpoint folder as a model ptq can evaluate (see {@link readGptqCheckpoint} for the details kept).
 *
 * @example
 * ```ts ignore
 * const model = await loadGptqCheckpoint("out/llama-12m-gptq-4bit");
 * console.log((await perplexity(model, tokens, { seqLen: 512 })).ppl);
 * ```
 * @throws {FormatError} as {@link readGptqCheckpoint}.
 */
export async function loadGptqCheckpoint(dir: string): Promise<LlamaModel> {
  return (await readGptqCheckpoint(dir)).model;
}
