/**
 * The ptq checkpoint format: whatever a {@link QuantizedLayer} holds, in one self-describing safetensors file, for the
 * methods the GPTQ format cannot carry (table grids such as NF4, SpQR's outliers and non-integer zeros, BiLLM's binary
 * terms, and methods to come: VPTQ codebooks, LoRC low-rank factors).
 *
 * A checkpoint is a folder with `ptq.safetensors` and the source's tokenizer files. The safetensors `__metadata__`
 * holds `format: "ptq"` and `ptq`: a JSON document
 *
 * ```
 * { "version": 1, "config": LlamaConfig,
 *   "layers": { "<module>": { "method", "shape": [out, in], "reconstruction": "grid" | "billm" | "dense" | …,
 *                             "fields": <the layer's fields as JSON, typed arrays replaced by tensor references> } } }
 * ```
 *
 * Layers are serialized generically: every field of the layer object except `dequantized` is walked; typed arrays
 * anywhere inside become tensors named `<module>.<path>` (`model.layers.0.self_attn.q_proj.params.scale`,
 * `….outliers.values`) and are replaced in the JSON by `{"$tensor": name, "type": "Float32Array", …}`; numbers,
 * strings, booleans, arrays and plain objects stay JSON (non-finite numbers as `{"$number": "Infinity"}`). `Uint8Array`s
 * whose values fit in fewer bits (codes, masks) are bit-packed ({@link packBits}) with `bits` recorded. So a method that
 * adds a field (a codebook, a low-rank factor) is stored and loaded back under its own name with no format change.
 *
 * The dequantized weights are not stored when they can be recomputed bit for bit from the fields: `reconstruction`
 * names the rule (`grid`: `scale·(q − zero)` or `scale·levels[q]` per group through `groupIndex`, then outliers
 * written in; `billm`: the binary terms through `groupMask` and `rowStats`; `vptq`: codebook centroids through the
 * packed indices; more can be registered with
 * {@link registerReconstruction}). The writer checks the rule against the in-memory weights and stores them densely
 * (`dense`, float32 `<module>.dequantized`) when no rule reproduces them exactly, so loading is always exact.
 * Unquantized tensors keep their Hugging Face names, in the source's dtype (float32 otherwise).
 *
 * @module
 */

import { join } from "node:path";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { vptqDequantize, type VqData } from "../algorithms/vptq.ts";
import { FormatError, OptionError } from "../core/errors.ts";
import { packBits, unpackBits } from "../core/grids/pack.ts";
import { uniformValue } from "../core/grids/uniform.ts";
import type { GridParams, GridSpec } from "../core/grids/types.ts";
import { type Matrix, matrix } from "../core/tensor.ts";
import {
  copyTokenizerFiles,
  describeSource,
  isFile,
  nonLinearWeights,
  PTQ_VERSION,
  storedDtype,
  writeDirAtomically,
} from "./checkpoint_files.ts";
import { type LlamaConfig, validateLlamaConfig } from "./config.ts";
import { llamaWeightShapes } from "./hf_loader.ts";
import { linearNames, linearWeight, llamaFromWeights, type LlamaModel, parseLinearName } from "./llama.ts";
import {
  openSafetensors,
  type SafetensorsDtype,
  type SafetensorsReader,
  type TensorData,
  type TensorToWrite,
  writeSafetensors,
} from "./safetensors.ts";

/** File name of the tensors inside a ptq checkpoint folder. */
export const PTQ_FILE = "ptq.safetensors";

/** Version of the JSON document; readers refuse newer ones. */
export const PTQ_FORMAT_VERSION = 1;

/**
 * Recomputes a layer's weights `[rows, cols]` from its fields, or returns undefined when it does not apply. May be
 * async (a rule that runs backend kernels); it must be deterministic, since the writer keeps it only when it
 * reproduces the weights bit for bit.
 */
export type Reconstruction = (
  layer: Omit<QuantizedLayer, "dequantized">,
  rows: number,
  cols: number,
) => Matrix | undefined | Promise<Matrix | undefined>;

const RECONSTRUCTIONS = new Map<string, Reconstruction>();

/**
 * Registers a rule that recomputes dequantized weights from a layer's fields, so writers can leave the dense weights
 * out. Rules are tried in registration order; the writer keeps a rule only if it reproduces the weights bit for bit.
 *
 * @throws {OptionError} for the reserved name "dense".
 */
export function registerReconstruction(name: string, rule: Reconstruction): void {
  if (name === "dense") throw new OptionError(`"dense" is reserved`);
  RECONSTRUCTIONS.set(name, rule);
}

/** `scale·(q − zero)` (uniform) or `scale·levels[q]` (table) per group, then outliers written in. */
function gridReconstruction(
  layer: Omit<QuantizedLayer, "dequantized">,
  rows: number,
  cols: number,
): Matrix | undefined {
  const { grid, codes, params, groupIndex, outliers } = layer;
  if (!grid || !codes || !params || !groupIndex) return undefined;
  if (codes.length !== rows * cols || groupIndex.length !== cols || params.rows !== rows) return undefined;
  const { scale, zero, groups } = params;
  if (scale.length !== rows * groups || zero.length !== rows * groups) return undefined;
  for (let c = 0; c < cols; c++) if (!(groupIndex[c] >= 0 && groupIndex[c] < groups)) return undefined;
  const out = matrix(rows, cols);
  const D = out.data;
  if (grid.kind === "uniform") {
    for (let i = 0; i < rows; i++) {
      for (let c = 0; c < cols; c++) {
        const p = i * groups + groupIndex[c];
        D[i * cols + c] = uniformValue(codes[i * cols + c], scale[p], zero[p]);
      }
    }
  } else {
    const levels = grid.levels;
    for (let i = 0; i < rows; i++) {
      for (let c = 0; c < cols; c++) {
        const q = codes[i * cols + c];
        if (q >= levels.length) return undefined;
        D[i * cols + c] = Math.fround(scale[i * groups + groupIndex[c]] * levels[q]);
      }
    }
  }
  if (outliers) {
    for (let k = 0; k < outliers.values.length; k++) {
      const r = outliers.rows[k], c = outliers.cols[k];
      if (!(r >= 0 && r < rows && c >= 0 && c < cols)) return undefined;
      D[r * cols + c] = outliers.values[k];
    }
  }
  return out;
}

/** BiLLM's per-row statistics per block (see `algorithms/billm.ts`). */
const BILLM_STATS = 8;

/**
 * BiLLM: each weight is `α₁·s₁ + μ₁ + α₂·s₂ + μ₂` (salient, group 2) or `α·s + μ` of its group (0 concentrated,
 * 1 sparse), signs from the code bits, statistics from its block's row, evaluated exactly as the quantizer does.
 */
function billmReconstruction(
  layer: Omit<QuantizedLayer, "dequantized">,
  rows: number,
  cols: number,
): Matrix | undefined {
  const l = layer as Record<string, unknown>;
  const codes = layer.codes, mask = l.groupMask, stats = l.rowStats, blocks = l.blocks;
  if (layer.method !== "billm" || !codes || !(mask instanceof Uint8Array) || !(stats instanceof Float32Array)) {
    return undefined;
  }
  if (!Array.isArray(blocks) || codes.length !== rows * cols || mask.length !== rows * cols) return undefined;
  if (stats.length !== blocks.length * rows * BILLM_STATS) return undefined;
  const out = matrix(rows, cols);
  const D = out.data;
  for (let b = 0; b < blocks.length; b++) {
    const { start, end } = blocks[b] as { start: number; end: number };
    if (!(start >= 0 && end <= cols && start <= end)) return undefined;
    for (let r = 0; r < rows; r++) {
      const s = (b * rows + r) * BILLM_STATS;
      for (let j = start; j < end; j++) {
        const code = codes[r * cols + j], group = mask[r * cols + j];
        const s1 = code & 1 ? 1 : -1;
        if (group === 2) {
          const s2 = code & 2 ? 1 : -1;
          const b1 = stats[s + 1] * s1 + stats[s];
          D[r * cols + j] = b1 + stats[s + 3] * s2 + stats[s + 2];
        } else {
          const o = s + (group === 0 ? 4 : 6);
          D[r * cols + j] = stats[o + 1] * s1 + stats[o];
        }
      }
    }
  }
  return out;
}

/** VPTQ: each vector is its codebook centroid (plus its residual centroid), through the packed indices. */
function vptqReconstruction(
  layer: Omit<QuantizedLayer, "dequantized">,
  rows: number,
  cols: number,
): Matrix | undefined {
  const vq = (layer as { vq?: VqData }).vq;
  if (layer.method !== "vptq" || !vq) return undefined;
  try {
    return vptqDequantize(vq, rows, cols);
  } catch {
    return undefined; // fields that do not describe this shape: the writer falls back to dense weights
  }
}

registerReconstruction("grid", gridReconstruction);
registerReconstruction("billm", billmReconstruction);
registerReconstruction("vptq", vptqReconstruction);

// ---------------------------------------------------------------------------------------------------------------
// Generic (de)serialization of layer fields
// ---------------------------------------------------------------------------------------------------------------

type TypedArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array
  | BigInt64Array
  | BigUint64Array;

const ARRAY_TYPES: Record<string, { dtype: SafetensorsDtype; ctor: new (n: number) => TypedArray }> = {
  Float32Array: { dtype: "F32", ctor: Float32Array },
  Float64Array: { dtype: "F64", ctor: Float64Array },
  Int32Array: { dtype: "I32", ctor: Int32Array },
  Uint32Array: { dtype: "U32", ctor: Uint32Array },
  Int16Array: { dtype: "I16", ctor: Int16Array },
  Uint16Array: { dtype: "U16", ctor: Uint16Array },
  Int8Array: { dtype: "I8", ctor: Int8Array },
  Uint8Array: { dtype: "U8", ctor: Uint8Array },
  BigInt64Array: { dtype: "I64", ctor: BigInt64Array },
  BigUint64Array: { dtype: "U64", ctor: BigUint64Array },
};

/** A reference to a tensor in the JSON document. */
interface TensorRef {
  readonly $tensor: string;
  readonly type: string;
  readonly length: number;
  /** Bits per value when a Uint8Array was bit-packed. */
  readonly bits?: number;
}

function typedArrayName(v: unknown): string | undefined {
  if (!ArrayBuffer.isView(v) || v instanceof DataView) return undefined;
  const name = v.constructor.name;
  return Object.hasOwn(ARRAY_TYPES, name) ? name : undefined;
}

function bitsFor(values: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
  return max < 2 ? 1 : Math.ceil(Math.log2(max + 1));
}

/** Walks a field value, emitting tensors for typed arrays and returning its JSON form. */
function encodeField(value: unknown, name: string, tensors: TensorToWrite[], shape?: readonly number[]): unknown {
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") {
    return Number.isFinite(value) ? value : { $number: String(value) };
  }
  const type = typedArrayName(value);
  if (type) {
    const arr = value as TypedArray;
    const useShape = shape && shape.reduce((a, b) => a * b, 1) === arr.length ? [...shape] : [arr.length];
    if (arr instanceof Uint8Array) {
      const bits = bitsFor(arr);
      if (bits < 8) {
        const packed = packBits(arr, bits);
        tensors.push({ name, dtype: "U8", shape: [packed.length], data: packed });
        return { $tensor: name, type, length: arr.length, bits } satisfies TensorRef;
      }
    }
    tensors.push({ name, dtype: ARRAY_TYPES[type].dtype, shape: useShape, data: arr as TensorData });
    return { $tensor: name, type, length: arr.length } satisfies TensorRef;
  }
  if (Array.isArray(value)) return value.map((v, i) => encodeField(v, `${name}.${i}`, tensors));
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const obj = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    // A {data, shape} pair is a matrix: its tensor gets the shape, for tools that display it.
    const objShape = Array.isArray(obj.shape) && obj.shape.every((d) => Number.isInteger(d)) ? obj.shape : undefined;
    for (const [k, v] of Object.entries(obj)) {
      if (v === undefined) continue;
      out[k] = encodeField(v, `${name}.${k}`, tensors, k === "data" ? objShape : undefined);
    }
    return out;
  }
  throw new OptionError(
    `${name}: cannot store a value of type ${typeof value} (${Object.prototype.toString.call(value)})`,
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Rebuilds a field from its JSON form, reading the tensors it references. */
async function decodeField(json: unknown, st: SafetensorsReader): Promise<unknown> {
  if (json === null || typeof json !== "object") return json;
  if (Array.isArray(json)) return Promise.all(json.map((v) => decodeField(v, st)));
  const obj = json as Record<string, unknown>;
  if (typeof obj.$number === "string") return Number(obj.$number);
  if (typeof obj.$tensor === "string") return readRef(obj as unknown as TensorRef, st);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) out[k] = await decodeField(v, st);
  return out;
}

async function readRef(ref: TensorRef, st: SafetensorsReader): Promise<TypedArray> {
  const spec = ARRAY_TYPES[ref.type];
  if (!spec) throw new FormatError(st.path, `tensor ${ref.$tensor}: unknown array type ${JSON.stringify(ref.type)}`);
  if (!st.has(ref.$tensor)) throw new FormatError(st.path, `the metadata references a missing tensor ${ref.$tensor}`);
  const info = st.info(ref.$tensor);
  if (ref.bits !== undefined) {
    const bytes = await st.read(ref.$tensor);
    if (info.dtype !== "U8" || !Number.isInteger(ref.bits) || ref.bits < 1 || ref.bits > 8) {
      throw new FormatError(st.path, `tensor ${ref.$tensor}: bad bit-packed reference`);
    }
    try {
      return unpackBits(bytes, ref.bits, ref.length);
    } catch (e) {
      throw new FormatError(st.path, `tensor ${ref.$tensor}: ${(e as Error).message}`);
    }
  }
  if (info.dtype !== spec.dtype) {
    throw new FormatError(st.path, `tensor ${ref.$tensor} has dtype ${info.dtype}, the metadata says ${ref.type}`);
  }
  const { data } = await st.readArray(ref.$tensor);
  if (data.length !== ref.length) {
    throw new FormatError(st.path, `tensor ${ref.$tensor} has ${data.length} values, the metadata says ${ref.length}`);
  }
  return data as TypedArray;
}

// ---------------------------------------------------------------------------------------------------------------
// Writer and reader
// ---------------------------------------------------------------------------------------------------------------

/** How one layer was stored. */
export interface PtqLayerSummary {
  readonly name: string;
  readonly method: string;
  /** The rule that recomputes the weights, or "dense" when they are stored. */
  readonly reconstruction: string;
  /** Bytes of its tensors. */
  readonly bytes: number;
}

/** What {@link savePtqCheckpoint} wrote. */
export interface PtqSaveSummary {
  readonly dir: string;
  readonly files: readonly string[];
  readonly layers: readonly PtqLayerSummary[];
  /** Size of `ptq.safetensors`. */
  readonly bytes: number;
}

/** The JSON document in `__metadata__.ptq`. */
export interface PtqDocument {
  readonly version: number;
  readonly config: LlamaConfig;
  readonly layers: Readonly<
    Record<string, { method: string; shape: [number, number]; reconstruction: string; fields: Record<string, unknown> }>
  >;
  readonly quantizer?: string;
}

/**
 * Writes a ptq checkpoint folder atomically (`ptq.safetensors` + the source's tokenizer files).
 *
 * @param dir destination folder (an existing non-empty one must be a ptq checkpoint).
 * @param model the quantized model (unquantized tensors are written from it).
 * @param layers quantized linear layers by module name; decoder linear layers not in the map are stored plain.
 * @param sourceDir the model that was quantized, for dtypes and tokenizer files.
 * @throws {OptionError} for a layer name that is not a decoder linear layer, a layer of the wrong shape, or a field
 *   that cannot be serialized (a function, a class instance).
 */
export async function savePtqCheckpoint(
  dir: string,
  model: LlamaModel,
  layers: ReadonlyMap<string, QuantizedLayer>,
  sourceDir?: string,
): Promise<PtqSaveSummary> {
  const source = await describeSource(sourceDir);
  const tensors: TensorToWrite[] = [];
  for (const w of nonLinearWeights(model)) {
    tensors.push({ name: w.name, dtype: storedDtype(source, w.name), shape: w.shape, data: w.data });
  }
  const doc: Record<string, PtqDocument["layers"][string]> = {};
  const summaries: PtqLayerSummary[] = [];
  for (const name of layers.keys()) {
    if (!parseLinearName(name)) throw new OptionError(`"${name}" is not a decoder linear layer of a Llama model`);
  }
  for (const name of linearNames(model.config)) {
    const layer = layers.get(name);
    if (!layer) {
      const w = linearWeight(model, name);
      tensors.push({
        name: `${name}.weight`,
        dtype: storedDtype(source, `${name}.weight`),
        shape: w.shape,
        data: w.data,
      });
      continue;
    }
    const [rows, cols] = layer.dequantized.shape;
    const expected = linearWeight(model, name).shape;
    if (rows !== expected[0] || cols !== expected[1]) {
      throw new OptionError(`${name}: layer is ${rows}×${cols}, the model's weight ${expected[0]}×${expected[1]}`);
    }
    const { dequantized, ...fields } = layer;
    const layerTensors: TensorToWrite[] = [];
    const json = encodeField(fields, name, layerTensors) as Record<string, unknown>;
    let reconstruction = "dense";
    for (const [rule, fn] of RECONSTRUCTIONS) {
      const w = await fn(fields, rows, cols);
      if (w && sameBits(w.data, dequantized.data)) {
        reconstruction = rule;
        break;
      }
    }
    if (reconstruction === "dense") {
      layerTensors.push({ name: `${name}.dequantized`, dtype: "F32", shape: [rows, cols], data: dequantized.data });
    }
    const bytes = layerTensors.reduce((a, t) => a + (t.data as TensorData).byteLength, 0);
    tensors.push(...layerTensors);
    doc[name] = { method: layer.method, shape: [rows, cols], reconstruction, fields: json };
    summaries.push({ name, method: layer.method, reconstruction, bytes });
  }
  const document: PtqDocument = {
    version: PTQ_FORMAT_VERSION,
    config: model.config,
    layers: doc,
    quantizer: PTQ_VERSION,
  };
  const files: string[] = [];
  let bytes = 0;
  await writeDirAtomically(dir, async (tmp) => {
    await writeSafetensors(join(tmp, PTQ_FILE), tensors, { format: "ptq", ptq: JSON.stringify(document) });
    bytes = (await Deno.stat(join(tmp, PTQ_FILE))).size;
    files.push(PTQ_FILE, ...await copyTokenizerFiles(source, tmp));
  }, (d) => isFile(join(d, PTQ_FILE)));
  return { dir, files, layers: summaries, bytes };
}

/** True when the arrays hold the same float32 bit patterns (NaN-safe, −0 ≠ +0). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** A ptq checkpoint read back. */
export interface PtqCheckpoint {
  readonly model: LlamaModel;
  readonly config: LlamaConfig;
  /** Every quantized layer with all its fields, dequantized weights recomputed (or read when stored dense). */
  readonly layers: ReadonlyMap<string, QuantizedLayer>;
  readonly document: PtqDocument;
  /** The safetensors file read. */
  readonly file: string;
}

/** The `ptq.safetensors` of a checkpoint folder, or the path itself when it is a file. */
export async function ptqFilePath(path: string): Promise<string> {
  return (await isFile(path)) ? path : join(path, PTQ_FILE);
}

/**
 * Parses and checks the JSON document of a ptq file's metadata.
 *
 * @throws {FormatError} naming `path` when the metadata is missing, not JSON, of a newer version, or malformed.
 */
export function parsePtqDocument(metadata: Readonly<Record<string, string>>, path: string): PtqDocument {
  if (metadata.format !== "ptq" || metadata.ptq === undefined) {
    throw new FormatError(path, `not a ptq checkpoint (its __metadata__ has no "ptq" document)`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(metadata.ptq);
  } catch (e) {
    throw new FormatError(path, `the "ptq" metadata is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(doc) || typeof doc.version !== "number" || !isObject(doc.config) || !isObject(doc.layers)) {
    throw new FormatError(path, `the "ptq" metadata must hold version, config and layers`);
  }
  if (doc.version > PTQ_FORMAT_VERSION) {
    throw new FormatError(path, `format version ${doc.version} is newer than this reader (${PTQ_FORMAT_VERSION})`);
  }
  const config = validateLlamaConfig(doc.config as unknown as LlamaConfig, path);
  for (const [name, l] of Object.entries(doc.layers)) {
    const ok = isObject(l) && typeof l.method === "string" && Array.isArray(l.shape) && l.shape.length === 2 &&
      typeof l.reconstruction === "string" && isObject(l.fields) && parseLinearName(name) !== undefined;
    if (!ok) throw new FormatError(path, `layer entry "${name}" is malformed`);
  }
  return { ...(doc as unknown as PtqDocument), config };
}

/**
 * Reads a ptq checkpoint (folder or `ptq.safetensors` file): every layer's fields, its dequantized weights (recomputed
 * with the recorded rule, or read when stored dense), and a model ptq can evaluate.
 *
 * @throws {FormatError} naming the file when it is not a ptq checkpoint, is truncated, names an unknown
 *   reconstruction rule, or its tensors do not fit the config.
 */
export async function readPtqCheckpoint(path: string): Promise<PtqCheckpoint> {
  const file = await ptqFilePath(path);
  using st = await openSafetensors(file);
  const document = parsePtqDocument(st.metadata, file);
  const { config } = document;
  const weights = new Map<string, { data: Float32Array; shape: readonly number[] }>();
  const layers = new Map<string, QuantizedLayer>();
  for (const [name, entry] of Object.entries(document.layers)) {
    const fields = await decodeField(entry.fields, st) as Omit<QuantizedLayer, "dequantized">;
    const [rows, cols] = entry.shape;
    let dequantized: Matrix | undefined;
    if (entry.reconstruction === "dense") {
      const t = await st.readF32(`${name}.dequantized`);
      if (t.data.length !== rows * cols) {
        throw new FormatError(file, `${name}.dequantized does not hold ${rows}×${cols}`);
      }
      dequantized = matrix(rows, cols, t.data);
    } else {
      const rule = RECONSTRUCTIONS.get(entry.reconstruction);
      if (!rule) throw new FormatError(file, `${name}: unknown reconstruction "${entry.reconstruction}"`);
      dequantized = await rule(fields, rows, cols);
      if (!dequantized) {
        throw new FormatError(file, `${name}: its fields do not fit reconstruction "${entry.reconstruction}"`);
      }
    }
    layers.set(name, { ...fields, method: entry.method, dequantized } as QuantizedLayer);
    weights.set(`${name}.weight`, dequantized);
  }
  for (const [n] of llamaWeightShapes(config)) {
    if (!weights.has(n) && st.has(n)) weights.set(n, await st.readF32(n));
  }
  const model = llamaFromWeights(config, (n) => weights.get(n), file);
  return { model, config, layers, document, file };
}

/**
 * Loads a ptq checkpoint as a model ptq can evaluate (see {@link readPtqCheckpoint}).
 *
 * @throws {FormatError} as {@link readPtqCheckpoint}.
 */
export async function loadPtqCheckpoint(path: string): Promise<LlamaModel> {
  return (await readPtqCheckpoint(path)).model;
}

/** The grid and parameters of a layer as stored (for tools that display a checkpoint). */
export function describeLayerGrid(
  fields: { grid?: GridSpec; params?: GridParams; vq?: unknown; lowRank?: unknown },
): string {
  const g = fields.grid;
  const groups = fields.params ? `, ${fields.params.groups} group${fields.params.groups === 1 ? "" : "s"}/row` : "";
  let text = !g
    ? "-"
    : g.kind === "uniform"
    ? `uniform ${g.bits}-bit${g.symmetric ? " sym" : ""}${groups}`
    : `${g.name} (${g.levels.length} levels)${groups}`;
  const vq = fields.vq as { vectorSize?: number; main?: { bits?: number }; residual?: unknown } | undefined;
  if (vq?.main) text = `VQ v=${vq.vectorSize}, ${vq.main.bits}-bit indices${vq.residual ? " + residual" : ""}`;
  const lr = fields.lowRank as { rank?: number; kind?: string } | undefined;
  if (lr?.rank !== undefined) text += ` + ${lr.kind ?? "low"}-rank ${lr.rank}`;
  return text;
}
