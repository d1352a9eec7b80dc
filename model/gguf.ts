/**
 * GGUF, llama.cpp's model file: export of a Llama model with Q8_0, Q4_0 or Q4_K weights (F32 norms), the metadata
 * llama.cpp needs, and a reader that dequantizes it back (for tests, `ptq inspect` and `ptq eval`).
 *
 * File layout (version 3, little-endian): `"GGUF"`, u32 version, u64 tensor count, u64 metadata count; the metadata
 * (GGUF string key, u32 value type, value; strings are u64 length + UTF-8; arrays are u32 element type + u64 count +
 * elements); the tensor infos (name, u32 dims, u64 dims innermost first, u32 ggml type, u64 offset into the data
 * section); padding to `general.alignment` (32); the tensor data, each tensor starting on an aligned offset.
 * A `[out, in]` weight is stored with dims `[in, out]` (ggml's `ne[0]` is the contiguous one).
 *
 * Block formats (llama.cpp's reference `quantize_row_*_ref`, reproduced here):
 * - Q8_0: blocks of 32: f16 `d = amax/127`, int8 `q = round(x/d)`; `x = d·q`. 34 bytes.
 * - Q4_0: blocks of 32: f16 `d = m/−8` (`m` the value of largest magnitude), 16 bytes of nibbles
 *   (`q = min(15, trunc(x/d + 8.5))`, element `j` in the low nibble of byte `j`, `j + 16` in its high nibble);
 *   `x = d·(q − 8)`. 18 bytes.
 * - Q4_K: super-blocks of 256 = 8 sub-blocks of 32: f16 `d`, f16 `dmin`, 12 bytes of 6-bit sub-block scales and mins,
 *   128 bytes of nibbles; `x = d·sc_j·q − dmin·m_j`. 144 bytes. This module fits scales by min-max per sub-block (not
 *   llama.cpp's iterative `make_qkx2_quants` search): a valid Q4_K of slightly lower quality.
 *
 * When the quantized layers are given, a 32-column block whose columns share one group of a uniform grid is written
 * from the codes themselves instead of re-rounding the dequantized weights: Q8_0 with `d = f16(scale)` and
 * `q = code − zero` (exact for grids up to 7 bits), Q4_0 with `d = f16(scale)` and the code (exact for symmetric
 * 4-bit grids, zero 8). Other blocks (act-order groups, NF4, outliers…) are re-rounded, as llama.cpp's own quantizer
 * would.
 *
 * Hugging Face Llama checkpoints use rotate-half RoPE; llama.cpp's `llama` architecture rotates interleaved pairs, so
 * the rows of q and k are permuted as `convert_hf_to_gguf.py`'s `permute` does. llama2.c models are interleaved
 * already and go in as they are. A row length that does not divide into blocks falls back as llama.cpp does (Q4_K →
 * Q4_0 → F16; Q8_0, Q4_0 → F16); `output.weight` is written Q8_0 under Q4_0 and Q4_K (llama.cpp keeps the
 * classifier at higher precision too, Q6_K).
 *
 * Tokenizers: Hugging Face byte-level BPE (`tokenizer.json` with a ByteLevel pre-tokenizer) becomes
 * `tokenizer.ggml.model = "gpt2"` with tokens, merges, token types and `tokenizer.ggml.pre = "gpt-2"`; llama2.c's
 * scored vocabulary becomes `"llama"` (SentencePiece style: spaces as `▁`, scores, `<0xXX>` byte tokens).
 *
 * @module
 */

import { join } from "node:path";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { bf16ToF32, f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { FormatError, OptionError } from "../core/errors.ts";
import type { Matrix } from "../core/tensor.ts";
import {
  describeSource,
  isFile,
  isRecord,
  llama2cTokenizerPath,
  PTQ_VERSION,
  readJsonFile,
  ropeRowSource,
  type SourceModel,
  writeAll,
  writeFileAtomically,
} from "./checkpoint_files.ts";
import { type LlamaConfig, validateLlamaConfig } from "./config.ts";
import { Llama2cTokenizer } from "./llama2c.ts";
import { LINEAR_KINDS, type LinearKind, linearName, linearWeight, llamaFromWeights, type LlamaModel } from "./llama.ts";
import { HfTokenizer, type Tokenizer } from "./tokenizer.ts";

// ---------------------------------------------------------------------------------------------------------------
// Types and block formats
// ---------------------------------------------------------------------------------------------------------------

/** GGUF metadata value types. */
export const GGUF_VALUE = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** ggml tensor types: id, elements per block and bytes per block (for sizes of any file `inspect` meets). */
export const GGML_TYPES: Readonly<Record<string, { id: number; block: number; bytes: number }>> = {
  F32: { id: 0, block: 1, bytes: 4 },
  F16: { id: 1, block: 1, bytes: 2 },
  Q4_0: { id: 2, block: 32, bytes: 18 },
  Q4_1: { id: 3, block: 32, bytes: 20 },
  Q5_0: { id: 6, block: 32, bytes: 22 },
  Q5_1: { id: 7, block: 32, bytes: 24 },
  Q8_0: { id: 8, block: 32, bytes: 34 },
  Q8_1: { id: 9, block: 32, bytes: 36 },
  Q2_K: { id: 10, block: 256, bytes: 84 },
  Q3_K: { id: 11, block: 256, bytes: 110 },
  Q4_K: { id: 12, block: 256, bytes: 144 },
  Q5_K: { id: 13, block: 256, bytes: 176 },
  Q6_K: { id: 14, block: 256, bytes: 210 },
  Q8_K: { id: 15, block: 256, bytes: 292 },
  I8: { id: 24, block: 1, bytes: 1 },
  I16: { id: 25, block: 1, bytes: 2 },
  I32: { id: 26, block: 1, bytes: 4 },
  I64: { id: 27, block: 1, bytes: 8 },
  F64: { id: 28, block: 1, bytes: 8 },
  BF16: { id: 30, block: 1, bytes: 2 },
};

/** The name of a ggml type id ("Q8_0"), or `type<id>` for ids this module does not know. */
export function ggmlTypeName(id: number): string {
  for (const [name, t] of Object.entries(GGML_TYPES)) if (t.id === id) return name;
  return `type${id}`;
}

/** Bytes of a tensor of `elements` values of ggml type `id`; undefined for unknown types. */
export function ggmlTensorBytes(id: number, elements: number): number | undefined {
  const t = GGML_TYPES[ggmlTypeName(id)];
  return t ? (elements / t.block) * t.bytes : undefined;
}

/** Tensor types this module writes and dequantizes. */
export type GgufTensorType = "F32" | "F16" | "Q8_0" | "Q4_0" | "Q4_K";

/** Export presets: the type of the linear layers and the embedding. */
export type GgufExportType = "q8_0" | "q4_0" | "q4_k" | "f16" | "f32";

const fround = Math.fround;

/** C's `roundf`: halves away from zero. */
function roundAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function setF16(out: Uint8Array, off: number, x: number): void {
  const h = f32ToF16Bits(x);
  out[off] = h & 0xff;
  out[off + 1] = h >>> 8;
}

function getF16(b: Uint8Array, off: number): number {
  return f16BitsToF32(b[off] | (b[off + 1] << 8));
}

function checkBlocks(n: number, block: number, what: string): void {
  if (n % block !== 0) throw new OptionError(`${what} needs a multiple of ${block} values, got ${n}`);
}

/**
 * Quantizes values to Q8_0 blocks exactly as llama.cpp's `quantize_row_q8_0_ref` (float32 arithmetic, `roundf`).
 *
 * @throws {OptionError} unless `x.length` is a multiple of 32.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  checkBlocks(x.length, 32, "Q8_0");
  const out = new Uint8Array((x.length / 32) * 34);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const d = fround(amax / 127), id = d ? fround(1 / d) : 0;
    setF16(out, b * 34, d);
    for (let j = 0; j < 32; j++) out[b * 34 + 2 + j] = roundAway(fround(x[b * 32 + j] * id)) & 0xff;
  }
  return out;
}

/** Dequantizes `n` values of Q8_0 blocks: `d·q`. */
export function dequantizeQ8_0(bytes: Uint8Array, n: number): Float32Array {
  checkBlocks(n, 32, "Q8_0");
  const out = new Float32Array(n);
  for (let b = 0; b < n / 32; b++) {
    const d = getF16(bytes, b * 34);
    for (let j = 0; j < 32; j++) out[b * 32 + j] = fround(d * ((bytes[b * 34 + 2 + j] << 24) >> 24));
  }
  return out;
}

/**
 * Quantizes values to Q4_0 blocks exactly as llama.cpp's `quantize_row_q4_0_ref`.
 *
 * @throws {OptionError} unless `x.length` is a multiple of 32.
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  checkBlocks(x.length, 32, "Q4_0");
  const out = new Uint8Array((x.length / 32) * 18);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[b * 32 + j];
      if (amax < Math.abs(v)) amax = Math.abs(v), max = v;
    }
    const d = fround(max / -8), id = d ? fround(1 / d) : 0;
    setF16(out, b * 18, d);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(fround(fround(x[b * 32 + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(fround(fround(x[b * 32 + 16 + j] * id) + 8.5)));
      out[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** Dequantizes `n` values of Q4_0 blocks: `d·(q − 8)`. */
export function dequantizeQ4_0(bytes: Uint8Array, n: number): Float32Array {
  checkBlocks(n, 32, "Q4_0");
  const out = new Float32Array(n);
  for (let b = 0; b < n / 32; b++) {
    const d = getF16(bytes, b * 18);
    for (let j = 0; j < 16; j++) {
      const q = bytes[b * 18 + 2 + j];
      out[b * 32 + j] = fround(((q & 15) - 8) * d);
      out[b * 32 + 16 + j] = fround(((q >> 4) - 8) * d);
    }
  }
  return out;
}

/**
 * Quantizes values to Q4_K super-blocks: per sub-block of 32 the min-max range (minimum clipped to ≤ 0, as llama.cpp
 * does), 6-bit scales and mins relative to the super-block's f16 `d` and `dmin`, rounded up so each sub-block's range
 * stays covered, then 4-bit codes.
 *
 * @throws {OptionError} unless `x.length` is a multiple of 256.
 */
export function quantizeQ4_K(x: Float32Array): Uint8Array {
  checkBlocks(x.length, 256, "Q4_K");
  const out = new Uint8Array((x.length / 256) * 144);
  const lo = new Float64Array(8), hi = new Float64Array(8), ls = new Uint8Array(8), lm = new Uint8Array(8);
  for (let sb = 0; sb < x.length / 256; sb++) {
    const base = sb * 256, o = sb * 144;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      let a = Infinity, b = -Infinity;
      for (let l = 0; l < 32; l++) a = Math.min(a, x[base + 32 * j + l]), b = Math.max(b, x[base + 32 * j + l]);
      lo[j] = Math.min(a, 0), hi[j] = b;
      maxMin = Math.max(maxMin, -lo[j]);
    }
    const dmin = f16BitsToF32(f32ToF16Bits(maxMin / 63));
    let maxScale = 0;
    for (let j = 0; j < 8; j++) {
      lm[j] = dmin > 0 ? Math.min(63, Math.ceil(-lo[j] / dmin)) : 0;
      maxScale = Math.max(maxScale, (hi[j] + dmin * lm[j]) / 15);
    }
    const d = f16BitsToF32(f32ToF16Bits(maxScale / 63));
    for (let j = 0; j < 8; j++) ls[j] = d > 0 ? Math.min(63, Math.ceil((hi[j] + dmin * lm[j]) / 15 / d)) : 0;
    setF16(out, o, d);
    setF16(out, o + 2, dmin);
    // 6-bit scales and mins: j < 4 in the low 6 bits of bytes j and j + 4, j ≥ 4 split into bytes j + 4 (low nibbles)
    // and the top 2 bits of bytes j − 4 (scale) and j (min): the inverse of llama.cpp's get_scale_min_k4.
    const sc = out.subarray(o + 4, o + 16);
    for (let j = 0; j < 4; j++) {
      sc[j] = (ls[j] & 63) | ((ls[j + 4] >> 4) << 6);
      sc[j + 4] = (lm[j] & 63) | ((lm[j + 4] >> 4) << 6);
      sc[j + 8] = (ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4);
    }
    const qs = out.subarray(o + 16, o + 144);
    for (let j = 0; j < 8; j++) {
      const step = fround(d * ls[j]), shift = fround(dmin * lm[j]);
      for (let l = 0; l < 32; l++) {
        const v = x[base + 32 * j + l];
        const q = step > 0 ? Math.max(0, Math.min(15, Math.round((v + shift) / step))) : 0;
        qs[32 * (j >> 1) + l] |= j & 1 ? q << 4 : q;
      }
    }
  }
  return out;
}

/** Scale and min of sub-block `j` of a Q4_K super-block's 12 packed bytes (llama.cpp's `get_scale_min_k4`). */
function scaleMinK4(j: number, q: Uint8Array): [number, number] {
  if (j < 4) return [q[j] & 63, q[j + 4] & 63];
  return [(q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)];
}

/** Dequantizes `n` values of Q4_K super-blocks as llama.cpp's `dequantize_row_q4_K`. */
export function dequantizeQ4_K(bytes: Uint8Array, n: number): Float32Array {
  checkBlocks(n, 256, "Q4_K");
  const out = new Float32Array(n);
  for (let sb = 0; sb < n / 256; sb++) {
    const o = sb * 144;
    const d = getF16(bytes, o), dmin = getF16(bytes, o + 2);
    const sc = bytes.subarray(o + 4, o + 16), qs = bytes.subarray(o + 16, o + 144);
    for (let j = 0; j < 8; j++) {
      const [s, m] = scaleMinK4(j, sc);
      const d1 = fround(d * s), m1 = fround(dmin * m);
      for (let l = 0; l < 32; l++) {
        const q = j & 1 ? qs[32 * (j >> 1) + l] >> 4 : qs[32 * (j >> 1) + l] & 15;
        out[sb * 256 + 32 * j + l] = fround(fround(d1 * q) - m1);
      }
    }
  }
  return out;
}

/** Bytes of `n` values of `type`. */
function typeBytes(type: GgufTensorType, n: number): number {
  const t = GGML_TYPES[type];
  return (n / t.block) * t.bytes;
}

/**
 * Dequantizes a tensor's bytes of ggml type `typeId` (F32, F16, BF16, Q8_0, Q4_0, Q4_K).
 *
 * @throws {OptionError} for another type or a count that is not whole blocks.
 */
export function dequantizeGguf(typeId: number, bytes: Uint8Array, n: number): Float32Array {
  const b = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  switch (ggmlTypeName(typeId)) {
    case "F32":
      return new Float32Array(b.buffer, b.byteOffset, n).slice();
    case "F16": {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = getF16(bytes, 2 * i);
      return out;
    }
    case "BF16":
      return bf16ToF32(new Uint16Array(b.buffer, b.byteOffset, n));
    case "Q8_0":
      return dequantizeQ8_0(bytes, n);
    case "Q4_0":
      return dequantizeQ4_0(bytes, n);
    case "Q4_K":
      return dequantizeQ4_K(bytes, n);
    default:
      throw new OptionError(`cannot dequantize ggml type ${ggmlTypeName(typeId)}`);
  }
}

/** Encodes row-major values as `type`. */
function encodeValues(type: GgufTensorType, x: Float32Array): Uint8Array {
  switch (type) {
    case "F32":
      return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    case "F16": {
      const out = new Uint8Array(x.length * 2);
      for (let i = 0; i < x.length; i++) setF16(out, 2 * i, x[i]);
      return out;
    }
    case "Q8_0":
      return quantizeQ8_0(x);
    case "Q4_0":
      return quantizeQ4_0(x);
    case "Q4_K":
      return quantizeQ4_K(x);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Metadata encoding
// ---------------------------------------------------------------------------------------------------------------

/** One metadata entry to write. */
export type GgufEntry =
  | {
    readonly key: string;
    readonly type: "u32" | "i32" | "f32" | "bool" | "string" | "u64";
    readonly value: number | string | boolean;
  }
  | {
    readonly key: string;
    readonly type: "string[]" | "f32[]" | "i32[]";
    readonly value: readonly (string | number)[];
  };

/** A growable little-endian byte buffer. */
class ByteWriter {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #reserve(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    let size = this.#buf.length;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u8(v: number) {
    this.#reserve(1);
    this.#view.setUint8(this.length, v);
    this.length += 1;
  }
  u32(v: number) {
    this.#reserve(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number) {
    this.#reserve(4);
    this.#view.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number) {
    this.#reserve(4);
    this.#view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number) {
    this.#reserve(8);
    this.#view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  string(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.#reserve(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  bytes(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

function writeEntry(w: ByteWriter, e: GgufEntry): void {
  w.string(e.key);
  switch (e.type) {
    case "u32":
      w.u32(GGUF_VALUE.UINT32), w.u32(e.value as number);
      break;
    case "i32":
      w.u32(GGUF_VALUE.INT32), w.i32(e.value as number);
      break;
    case "u64":
      w.u32(GGUF_VALUE.UINT64), w.u64(e.value as number);
      break;
    case "f32":
      w.u32(GGUF_VALUE.FLOAT32), w.f32(e.value as number);
      break;
    case "bool":
      w.u32(GGUF_VALUE.BOOL), w.u8(e.value ? 1 : 0);
      break;
    case "string":
      w.u32(GGUF_VALUE.STRING), w.string(e.value as string);
      break;
    case "string[]":
      w.u32(GGUF_VALUE.ARRAY), w.u32(GGUF_VALUE.STRING), w.u64(e.value.length);
      for (const s of e.value) w.string(s as string);
      break;
    case "f32[]":
      w.u32(GGUF_VALUE.ARRAY), w.u32(GGUF_VALUE.FLOAT32), w.u64(e.value.length);
      for (const v of e.value) w.f32(v as number);
      break;
    case "i32[]":
      w.u32(GGUF_VALUE.ARRAY), w.u32(GGUF_VALUE.INT32), w.u64(e.value.length);
      for (const v of e.value) w.i32(v as number);
      break;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer metadata
// ---------------------------------------------------------------------------------------------------------------

/** llama.cpp token types. */
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/**
 * `tokenizer.ggml.*` entries for the source's tokenizer, padded with unused tokens to the model's vocabulary.
 *
 * @throws {OptionError} when the source has no tokenizer or one llama.cpp's formats cannot express from here.
 */
export async function tokenizerEntries(source: SourceModel, config: LlamaConfig): Promise<GgufEntry[]> {
  if (source.dir && await isFile(join(source.dir, "tokenizer.json"))) return hfTokenizerEntries(source.dir, config);
  const tok = await llama2cTokenizerPath(source);
  if (tok) return llama2cTokenizerEntries(tok, config);
  throw new OptionError(
    `GGUF needs a tokenizer: ${source.dir ?? "no source model"} has no tokenizer.json or llama2.c tokenizer`,
  );
}

async function hfTokenizerEntries(dir: string, config: LlamaConfig): Promise<GgufEntry[]> {
  const path = join(dir, "tokenizer.json");
  const json = await readJsonFile(path);
  if (!isRecord(json) || !isRecord(json.model)) throw new FormatError(path, "not a tokenizer.json");
  const model = json.model, pre = json.pre_tokenizer;
  const byteLevel = isRecord(pre) &&
    (pre.type === "ByteLevel" ||
      (pre.type === "Sequence" && Array.isArray(pre.pretokenizers) &&
        pre.pretokenizers.some((p) => isRecord(p) && p.type === "ByteLevel")));
  if (model.type !== "BPE" || !byteLevel || !isRecord(model.vocab)) {
    throw new OptionError(
      `${path}: GGUF export supports byte-level BPE tokenizers (GPT-2 style) and llama2.c vocabularies; this one is ` +
        `${String(model.type)} with pre-tokenizer ${isRecord(pre) ? String(pre.type) : "none"}`,
    );
  }
  const tokens: string[] = [];
  for (const [t, id] of Object.entries(model.vocab)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw new FormatError(path, `bad id for ${t}`);
    tokens[id] = t;
  }
  const types: number[] = tokens.map(() => TOKEN_TYPE.NORMAL);
  for (const a of Array.isArray(json.added_tokens) ? json.added_tokens : []) {
    if (!isRecord(a) || typeof a.id !== "number" || typeof a.content !== "string") continue;
    tokens[a.id] = a.content;
    types[a.id] = a.special ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
  }
  if (tokens.length > config.vocabSize) {
    throw new OptionError(`${path}: ${tokens.length} tokens for a model vocabulary of ${config.vocabSize}`);
  }
  // Holes and padding up to the embedding's rows, as llama.cpp's converter pads: "[PAD<id>]", unused.
  for (let i = 0; i < config.vocabSize; i++) {
    if (tokens[i] === undefined) tokens[i] = `[PAD${i}]`, types[i] = TOKEN_TYPE.UNUSED;
  }
  const merges = (Array.isArray(model.merges) ? model.merges : []).map((m) =>
    Array.isArray(m) ? m.join(" ") : String(m)
  );
  let tc: Record<string, unknown> = {};
  if (await isFile(join(dir, "tokenizer_config.json"))) {
    const c = await readJsonFile(join(dir, "tokenizer_config.json"));
    if (isRecord(c)) tc = c;
  }
  const special = (key: string): number | undefined => {
    let v = tc[key];
    if (isRecord(v)) v = v.content;
    const id = typeof v === "string" ? tokens.indexOf(v) : -1;
    return id >= 0 ? id : undefined;
  };
  const entries: GgufEntry[] = [
    { key: "tokenizer.ggml.model", type: "string", value: "gpt2" },
    { key: "tokenizer.ggml.pre", type: "string", value: "gpt-2" },
    { key: "tokenizer.ggml.tokens", type: "string[]", value: tokens },
    { key: "tokenizer.ggml.token_type", type: "i32[]", value: types },
    { key: "tokenizer.ggml.merges", type: "string[]", value: merges },
  ];
  const bos = special("bos_token") ?? config.bosTokenId, eos = special("eos_token") ?? config.eosTokenId;
  const unk = special("unk_token");
  if (bos !== undefined) entries.push({ key: "tokenizer.ggml.bos_token_id", type: "u32", value: bos });
  if (eos !== undefined) entries.push({ key: "tokenizer.ggml.eos_token_id", type: "u32", value: eos });
  if (unk !== undefined) entries.push({ key: "tokenizer.ggml.unknown_token_id", type: "u32", value: unk });
  entries.push({ key: "tokenizer.ggml.add_bos_token", type: "bool", value: tc.add_bos_token === true });
  return entries;
}

/** The pieces and scores of a llama2.c tokenizer file (run.c's format: max length, then score, length, bytes). */
export function readLlama2cVocab(bytes: Uint8Array, path: string): { pieces: Uint8Array[]; scores: number[] } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) throw new FormatError(path, "too short for a llama2.c tokenizer");
  const pieces: Uint8Array[] = [], scores: number[] = [];
  for (let off = 4; off < bytes.length;) {
    if (off + 8 > bytes.length) throw new FormatError(path, `truncated record for token ${pieces.length}`);
    const score = v.getFloat32(off, true), len = v.getInt32(off + 4, true);
    off += 8;
    if (len < 0 || off + len > bytes.length) throw new FormatError(path, `token ${pieces.length} runs past the end`);
    pieces.push(bytes.slice(off, off + len));
    scores.push(score);
    off += len;
  }
  return { pieces, scores };
}

async function llama2cTokenizerEntries(path: string, config: LlamaConfig): Promise<GgufEntry[]> {
  const { pieces, scores } = readLlama2cVocab(await Deno.readFile(path), path);
  const decoder = new TextDecoder();
  const tokens: string[] = [], types: number[] = [];
  pieces.forEach((p, i) => {
    // llama2.c's exporter turned SentencePiece's "▁" into spaces and wrapped BOS/EOS in newlines; undo both.
    let t = decoder.decode(p);
    if (i === 0) t = "<unk>";
    else if (i === 1) t = "<s>";
    else if (i === 2) t = "</s>";
    else t = t.replaceAll(" ", "\u2581");
    tokens.push(t);
    types.push(
      i === 0
        ? TOKEN_TYPE.UNKNOWN
        : i <= 2
        ? TOKEN_TYPE.CONTROL
        : /^<0x[0-9A-F]{2}>$/.test(t)
        ? TOKEN_TYPE.BYTE
        : TOKEN_TYPE.NORMAL,
    );
  });
  if (tokens.length !== config.vocabSize) {
    throw new OptionError(`${path}: ${tokens.length} tokens for a model vocabulary of ${config.vocabSize}`);
  }
  return [
    { key: "tokenizer.ggml.model", type: "string", value: "llama" },
    { key: "tokenizer.ggml.tokens", type: "string[]", value: tokens },
    { key: "tokenizer.ggml.scores", type: "f32[]", value: scores },
    { key: "tokenizer.ggml.token_type", type: "i32[]", value: types },
    { key: "tokenizer.ggml.bos_token_id", type: "u32", value: 1 },
    { key: "tokenizer.ggml.eos_token_id", type: "u32", value: 2 },
    { key: "tokenizer.ggml.unknown_token_id", type: "u32", value: 0 },
    { key: "tokenizer.ggml.add_bos_token", type: "bool", value: true },
    { key: "tokenizer.ggml.add_space_prefix", type: "bool", value: true },
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------------------------

/** llama.cpp's tensor name of each linear kind. */
const GGUF_LINEAR: Record<LinearKind, string> = {
  q_proj: "attn_q",
  k_proj: "attn_k",
  v_proj: "attn_v",
  o_proj: "attn_output",
  gate_proj: "ffn_gate",
  up_proj: "ffn_up",
  down_proj: "ffn_down",
};

/** llama.cpp's `general.file_type` (`llama_ftype`) of each preset. */
const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k: 14 };

/** Options of {@link saveGguf}. */
export interface GgufExportOptions {
  /** Type of the linear layers and the embedding. */
  readonly type: GgufExportType;
  /** The quantized layers (so aligned groups are written from their codes). */
  readonly layers?: ReadonlyMap<string, QuantizedLayer>;
  /** `general.name`; default the source folder's name. */
  readonly name?: string;
}

/** One tensor of the file: ggml dims (innermost first), type, and a producer of its bytes. */
interface PlannedTensor {
  readonly name: string;
  readonly dims: number[];
  readonly type: GgufTensorType;
  readonly encode: () => Uint8Array;
}

/** What {@link saveGguf} wrote. */
export interface GgufSaveSummary {
  readonly path: string;
  readonly bytes: number;
  /** Tensor count by type. */
  readonly types: Readonly<Record<string, number>>;
  /** 32-value blocks written from the layers' codes rather than re-rounded. */
  readonly blocksFromCodes: number;
  readonly blocks: number;
}

function fallbackType(type: GgufTensorType, rowLength: number): GgufTensorType {
  const chain: GgufTensorType[] = type === "Q4_K" ? ["Q4_K", "Q4_0", "F16"] : [type, "F16"];
  for (const t of chain) if (rowLength % GGML_TYPES[t].block === 0) return t;
  return "F16";
}

/**
 * Q8_0/Q4_0 bytes of one weight row, block by block: from the layer's codes where the block's 32 columns share one
 * group and the code maps exactly, else llama.cpp's reference rounding of the dequantized values.
 */
function encodeRowFromCodes(
  type: "Q8_0" | "Q4_0",
  layer: QuantizedLayer,
  row: number,
  counter: { fromCodes: number; blocks: number },
): Uint8Array {
  const cols = layer.dequantized.shape[1];
  const values = layer.dequantized.data.subarray(row * cols, (row + 1) * cols);
  const size = type === "Q8_0" ? 34 : 18;
  const out = new Uint8Array((cols / 32) * size);
  const { grid, codes, params, groupIndex, outliers } = layer;
  const usable = grid?.kind === "uniform" && codes && params && groupIndex && !(outliers && outliers.values.length);
  for (let b = 0; b < cols / 32; b++) {
    counter.blocks++;
    const block = values.subarray(32 * b, 32 * b + 32);
    let done = false;
    if (usable) {
      const g = groupIndex![32 * b];
      let aligned = true;
      for (let j = 1; j < 32 && aligned; j++) aligned = groupIndex![32 * b + j] === g;
      const s = params!.scale[row * params!.groups + g], z = params!.zero[row * params!.groups + g];
      const q = codes!.subarray(row * cols + 32 * b, row * cols + 32 * b + 32);
      if (aligned && Number.isInteger(z)) {
        if (type === "Q8_0" && q.every((c) => c - z >= -128 && c - z <= 127)) {
          setF16(out, b * 34, s);
          for (let j = 0; j < 32; j++) out[b * 34 + 2 + j] = (q[j] - z) & 0xff;
          done = true;
        } else if (type === "Q4_0" && z === 8 && grid!.bits === 4) {
          setF16(out, b * 18, s);
          for (let j = 0; j < 16; j++) out[b * 18 + 2 + j] = q[j] | (q[16 + j] << 4);
          done = true;
        }
      }
    }
    if (done) counter.fromCodes++;
    else out.set(type === "Q8_0" ? quantizeQ8_0(block) : quantizeQ4_0(block), b * size);
  }
  return out;
}

/**
 * Writes a Llama model as a GGUF file (atomically: a temporary file renamed into place).
 *
 * @param path destination `.gguf` file.
 * @param model the (quantized) model; its weights are what the file holds.
 * @param sourceDir the model that was quantized, for the tokenizer (`tokenizer.json` or a llama2.c tokenizer).
 * @throws {OptionError} when the tokenizer cannot be expressed in GGUF or is missing.
 */
export async function saveGguf(
  path: string,
  model: LlamaModel,
  sourceDir: string | undefined,
  options: GgufExportOptions,
): Promise<GgufSaveSummary> {
  const config = model.config;
  const source = await describeSource(sourceDir);
  const main: GgufTensorType = ({ q8_0: "Q8_0", q4_0: "Q4_0", q4_k: "Q4_K", f16: "F16", f32: "F32" } as const)[
    options.type
  ];
  const counter = { fromCodes: 0, blocks: 0 };
  const planned: PlannedTensor[] = [];
  const f32 = (name: string, data: Float32Array) =>
    planned.push({ name, dims: [data.length], type: "F32", encode: () => encodeValues("F32", data) });
  const mat = (name: string, m: Matrix, type: GgufTensorType, layer?: QuantizedLayer, rows?: Int32Array) => {
    const [r, c] = m.shape;
    const t = fallbackType(type, c);
    planned.push({
      name,
      dims: [c, r],
      type: t,
      encode: () => {
        if (layer && (t === "Q8_0" || t === "Q4_0")) {
          const out = new Uint8Array(typeBytes(t, r * c));
          const rowBytes = typeBytes(t, c);
          for (let i = 0; i < r; i++) out.set(encodeRowFromCodes(t, layer, rows ? rows[i] : i, counter), i * rowBytes);
          return out;
        }
        let data = m.data;
        if (rows) {
          data = new Float32Array(r * c);
          for (let i = 0; i < r; i++) data.set(m.data.subarray(rows[i] * c, (rows[i] + 1) * c), i * c);
        }
        if (t === "Q8_0" || t === "Q4_0") counter.blocks += (r * c) / 32;
        return encodeValues(t, data);
      },
    });
  };

  mat("token_embd.weight", model.weights.embed, main);
  const half = config.ropePairing === "half";
  model.weights.layers.forEach((l, i) => {
    f32(`blk.${i}.attn_norm.weight`, l.inputNorm);
    for (const kind of LINEAR_KINDS) {
      const name = linearName(i, kind);
      const w = linearWeight(model, name);
      const permute = half && (kind === "q_proj" || kind === "k_proj");
      const rows = permute ? ropeRowSource(w.shape[0], config.headDim, "interleaved") : undefined;
      mat(`blk.${i}.${GGUF_LINEAR[kind]}.weight`, w, main, options.layers?.get(name), rows);
      if (kind === "o_proj") f32(`blk.${i}.ffn_norm.weight`, l.postAttentionNorm);
    }
  });
  f32("output_norm.weight", model.weights.finalNorm);
  if (!config.tieWordEmbeddings && model.weights.lmHead !== model.weights.embed) {
    mat("output.weight", model.weights.lmHead, main === "Q4_0" || main === "Q4_K" ? "Q8_0" : main);
  }

  const name = options.name ?? (source.dir ? source.dir.replace(/\/+$/, "").split("/").pop()! : "ptq model");
  const entries: GgufEntry[] = [
    { key: "general.architecture", type: "string", value: "llama" },
    { key: "general.name", type: "string", value: name },
    { key: "general.file_type", type: "u32", value: FILE_TYPE[options.type] },
    { key: "general.quantization_version", type: "u32", value: 2 },
    { key: "general.alignment", type: "u32", value: ALIGNMENT },
    { key: "general.quantized_by", type: "string", value: PTQ_VERSION },
    { key: "llama.context_length", type: "u32", value: config.maxPositionEmbeddings },
    { key: "llama.embedding_length", type: "u32", value: config.hiddenSize },
    { key: "llama.block_count", type: "u32", value: config.numLayers },
    { key: "llama.feed_forward_length", type: "u32", value: config.intermediateSize },
    { key: "llama.attention.head_count", type: "u32", value: config.numHeads },
    { key: "llama.attention.head_count_kv", type: "u32", value: config.numKvHeads },
    { key: "llama.rope.freq_base", type: "f32", value: config.ropeTheta },
    { key: "llama.attention.layer_norm_rms_epsilon", type: "f32", value: config.rmsNormEps },
    { key: "llama.rope.dimension_count", type: "u32", value: config.headDim },
    { key: "llama.vocab_size", type: "u32", value: config.vocabSize },
  ];
  if (config.headDim * config.numHeads !== config.hiddenSize) {
    entries.push({ key: "llama.attention.key_length", type: "u32", value: config.headDim });
    entries.push({ key: "llama.attention.value_length", type: "u32", value: config.headDim });
  }
  entries.push(...await tokenizerEntries(source, config));

  const header = new ByteWriter();
  for (const c of "GGUF") header.u8(c.charCodeAt(0));
  header.u32(3);
  header.u64(planned.length);
  header.u64(entries.length);
  for (const e of entries) writeEntry(header, e);
  let offset = 0;
  const types: Record<string, number> = {};
  for (const t of planned) {
    header.string(t.name);
    header.u32(t.dims.length);
    for (const d of t.dims) header.u64(d);
    header.u32(GGML_TYPES[t.type].id);
    header.u64(offset);
    offset += align(typeBytes(t.type, t.dims.reduce((a, b) => a * b, 1)));
    types[t.type] = (types[t.type] ?? 0) + 1;
  }
  const head = header.bytes();
  const padded = new Uint8Array(align(head.length));
  padded.set(head);
  let bytes = 0;
  await writeFileAtomically(path, async (file) => {
    await writeAll(file, padded);
    bytes += padded.length;
    for (const t of planned) {
      const data = t.encode();
      await writeAll(file, data);
      const pad = align(data.length) - data.length;
      if (pad) await writeAll(file, new Uint8Array(pad));
      bytes += data.length + pad;
    }
  });
  return { path, bytes, types, blocksFromCodes: counter.fromCodes, blocks: counter.blocks };
}

/** `general.alignment`: llama.cpp's default. */
const ALIGNMENT = 32;

function align(n: number, a = ALIGNMENT): number {
  return Math.ceil(n / a) * a;
}

// ---------------------------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------------------------

/** A metadata value as read: numbers (u64/i64 as bigint), strings, booleans, arrays. */
export type GgufValue = number | bigint | string | boolean | GgufValue[];

/** One tensor's entry in a GGUF file. */
export interface GgufTensorInfo {
  readonly name: string;
  /** Dimensions innermost first (ggml's `ne`). */
  readonly dims: readonly number[];
  readonly type: number;
  /** Absolute byte offset in the file. */
  readonly offset: number;
  /** Bytes, when the type is known. */
  readonly byteLength?: number;
}

/** A parsed GGUF header. */
export interface GgufHeader {
  readonly path: string;
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  readonly tensors: readonly GgufTensorInfo[];
  readonly alignment: number;
  /** Absolute offset of the data section. */
  readonly dataStart: number;
  readonly fileSize: number;
}

/** Pulls bytes from an open file on demand, so a header of any size is read without loading the tensors. */
class FileCursor {
  #buf = new Uint8Array(0);
  #start = 0;
  pos = 0;
  constructor(readonly file: Deno.FsFile, readonly size: number, readonly path: string) {}

  need(n: number): DataView {
    if (this.pos + n > this.size) {
      throw new FormatError(this.path, `truncated: needs ${n} bytes at offset ${this.pos}, the file has ${this.size}`);
    }
    if (this.pos < this.#start || this.pos + n > this.#start + this.#buf.length) {
      const len = Math.min(this.size - this.pos, Math.max(n, 1 << 20));
      const buf = new Uint8Array(len);
      this.file.seekSync(this.pos, Deno.SeekMode.Start);
      for (let filled = 0; filled < len;) {
        const r = this.file.readSync(buf.subarray(filled));
        if (r === null) throw new FormatError(this.path, `truncated at ${this.pos + filled}`);
        filled += r;
      }
      this.#buf = buf, this.#start = this.pos;
    }
    const view = new DataView(this.#buf.buffer, this.pos - this.#start, n);
    this.pos += n;
    return view;
  }
  u32() {
    return this.need(4).getUint32(0, true);
  }
  u64(): number {
    const v = this.need(8).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new FormatError(this.path, `length ${v} at ${this.pos - 8} is absurd`);
    }
    return Number(v);
  }
  string(): string {
    const n = this.u64();
    if (n > this.size) throw new FormatError(this.path, `string of ${n} bytes at ${this.pos - 8} exceeds the file`);
    const v = this.need(n);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(v.buffer, v.byteOffset, n));
    } catch {
      throw new FormatError(this.path, `invalid UTF-8 string at ${this.pos - n}`);
    }
  }
  value(type: number, depth = 0): GgufValue {
    switch (type) {
      case GGUF_VALUE.UINT8:
        return this.need(1).getUint8(0);
      case GGUF_VALUE.INT8:
        return this.need(1).getInt8(0);
      case GGUF_VALUE.UINT16:
        return this.need(2).getUint16(0, true);
      case GGUF_VALUE.INT16:
        return this.need(2).getInt16(0, true);
      case GGUF_VALUE.UINT32:
        return this.u32();
      case GGUF_VALUE.INT32:
        return this.need(4).getInt32(0, true);
      case GGUF_VALUE.FLOAT32:
        return this.need(4).getFloat32(0, true);
      case GGUF_VALUE.BOOL:
        return this.need(1).getUint8(0) !== 0;
      case GGUF_VALUE.STRING:
        return this.string();
      case GGUF_VALUE.UINT64:
        return this.need(8).getBigUint64(0, true);
      case GGUF_VALUE.INT64:
        return this.need(8).getBigInt64(0, true);
      case GGUF_VALUE.FLOAT64:
        return this.need(8).getFloat64(0, true);
      case GGUF_VALUE.ARRAY: {
        if (depth > 4) throw new FormatError(this.path, `arrays nested too deeply at ${this.pos}`);
        const t = this.u32(), n = this.u64();
        if (n > this.size) throw new FormatError(this.path, `array of ${n} values exceeds the file`);
        const out: GgufValue[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.value(t, depth + 1);
        return out;
      }
      default:
        throw new FormatError(this.path, `unknown metadata value type ${type} at ${this.pos - 4}`);
    }
  }
}

/**
 * Reads and checks a GGUF file's header (metadata and tensor infos), not its tensors.
 *
 * @throws {FormatError} naming the file when it is not GGUF, is of an unsupported version, is truncated, or has
 *   tensors outside the file or misaligned.
 */
export async function readGgufHeader(path: string): Promise<GgufHeader> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new FormatError(path, e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message);
  }
  try {
    const size = (await file.stat()).size;
    const c = new FileCursor(file, size, path);
    if (size < 24) throw new FormatError(path, `file is ${size} bytes, too short for a GGUF header`);
    const magic = new Uint8Array(c.need(4).buffer, 0, 4);
    if (String.fromCharCode(...new Uint8Array(magic.buffer, magic.byteOffset, 4)) !== "GGUF") {
      throw new FormatError(path, "not a GGUF file (no GGUF magic)");
    }
    const version = c.u32();
    if (version !== 2 && version !== 3) throw new FormatError(path, `GGUF version ${version} is not supported (2, 3)`);
    const nTensors = c.u64(), nKv = c.u64();
    if (nTensors > size || nKv > size) throw new FormatError(path, `absurd counts: ${nTensors} tensors, ${nKv} keys`);
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < nKv; i++) {
      const key = c.string();
      metadata.set(key, c.value(c.u32()));
    }
    const alignment = typeof metadata.get("general.alignment") === "number"
      ? metadata.get("general.alignment") as number
      : ALIGNMENT;
    if (!(alignment > 0) || alignment % 8 !== 0) {
      throw new FormatError(path, `general.alignment ${alignment} is invalid`);
    }
    const raw: { name: string; dims: number[]; type: number; rel: number }[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = c.string();
      const nd = c.u32();
      if (nd > 4) throw new FormatError(path, `tensor ${name} has ${nd} dimensions`);
      const dims = Array.from({ length: nd }, () => c.u64());
      raw.push({ name, dims, type: c.u32(), rel: c.u64() });
    }
    const dataStart = align(c.pos, alignment);
    const tensors = raw.map((t): GgufTensorInfo => {
      const n = t.dims.reduce((a, b) => a * b, 1);
      const byteLength = ggmlTensorBytes(t.type, n);
      if (t.rel % alignment !== 0) throw new FormatError(path, `tensor ${t.name} at ${t.rel} is not aligned`);
      if (byteLength !== undefined && dataStart + t.rel + byteLength > size) {
        throw new FormatError(path, `tensor ${t.name} runs past the end of the file (truncated?)`);
      }
      return { name: t.name, dims: t.dims, type: t.type, offset: dataStart + t.rel, byteLength };
    });
    return { path, version, metadata, tensors, alignment, dataStart, fileSize: size };
  } finally {
    file.close();
  }
}

/**
 * A tensor's values as float32 (row-major, innermost dimension contiguous).
 *
 * @throws {FormatError} for a type this module cannot dequantize, or a read error.
 */
export async function readGgufTensor(header: GgufHeader, name: string): Promise<Float32Array> {
  const t = header.tensors.find((x) => x.name === name);
  if (!t) throw new FormatError(header.path, `no tensor ${name}`);
  if (t.byteLength === undefined) throw new FormatError(header.path, `${name}: unknown type ${t.type}`);
  using file = await Deno.open(header.path, { read: true });
  await file.seek(t.offset, Deno.SeekMode.Start);
  const buf = new Uint8Array(t.byteLength);
  for (let filled = 0; filled < buf.length;) {
    const r = await file.read(buf.subarray(filled));
    if (r === null) throw new FormatError(header.path, `${name}: truncated`);
    filled += r;
  }
  try {
    return dequantizeGguf(t.type, buf, t.dims.reduce((a, b) => a * b, 1));
  } catch (e) {
    throw new FormatError(header.path, `${name}: ${(e as Error).message}`);
  }
}

function metaNumber(h: GgufHeader, key: string, fallback?: number): number {
  const v = h.metadata.get(key);
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (fallback !== undefined) return fallback;
  throw new FormatError(h.path, `missing metadata ${key}`);
}

/** The {@link LlamaConfig} a llama GGUF file describes (interleaved RoPE, llama.cpp's layout). */
export function ggufLlamaConfig(h: GgufHeader): LlamaConfig {
  const arch = h.metadata.get("general.architecture");
  if (arch !== "llama") throw new FormatError(h.path, `architecture ${JSON.stringify(arch)} is not llama`);
  const hidden = metaNumber(h, "llama.embedding_length"), heads = metaNumber(h, "llama.attention.head_count");
  const embd = h.tensors.find((t) => t.name === "token_embd.weight");
  if (!embd) throw new FormatError(h.path, "no token_embd.weight");
  return validateLlamaConfig({
    architecture: "llama",
    hiddenSize: hidden,
    intermediateSize: metaNumber(h, "llama.feed_forward_length"),
    numLayers: metaNumber(h, "llama.block_count"),
    numHeads: heads,
    numKvHeads: metaNumber(h, "llama.attention.head_count_kv", heads),
    headDim: metaNumber(h, "llama.attention.key_length", metaNumber(h, "llama.rope.dimension_count", hidden / heads)),
    vocabSize: embd.dims[1],
    rmsNormEps: metaNumber(h, "llama.attention.layer_norm_rms_epsilon"),
    ropeTheta: metaNumber(h, "llama.rope.freq_base", 10000),
    tieWordEmbeddings: !h.tensors.some((t) => t.name === "output.weight"),
    maxPositionEmbeddings: metaNumber(h, "llama.context_length"),
    ropePairing: "interleaved",
    bosTokenId: h.metadata.has("tokenizer.ggml.bos_token_id")
      ? metaNumber(h, "tokenizer.ggml.bos_token_id")
      : undefined,
    eosTokenId: h.metadata.has("tokenizer.ggml.eos_token_id")
      ? metaNumber(h, "tokenizer.ggml.eos_token_id")
      : undefined,
  }, h.path);
}

/** The tokenizer a GGUF file carries: byte-level BPE ("gpt2") or a llama2.c-style scored vocabulary ("llama"). */
export function ggufTokenizer(h: GgufHeader): Tokenizer {
  const model = h.metadata.get("tokenizer.ggml.model");
  const tokens = h.metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) {
    throw new FormatError(h.path, "no tokenizer.ggml.tokens");
  }
  const types = h.metadata.get("tokenizer.ggml.token_type");
  if (model === "llama") {
    const scores = h.metadata.get("tokenizer.ggml.scores");
    if (!Array.isArray(scores)) throw new FormatError(h.path, "no tokenizer.ggml.scores");
    const enc = new TextEncoder();
    const pieces = (tokens as string[]).map((t) => enc.encode(t.replaceAll("\u2581", " ")));
    const maxLen = Math.max(...pieces.map((p) => p.length));
    return new Llama2cTokenizer(pieces, Float32Array.from(scores as number[]), maxLen);
  }
  if (model === "gpt2") {
    const merges = h.metadata.get("tokenizer.ggml.merges");
    const vocab: Record<string, number> = {};
    const added: Record<string, unknown>[] = [];
    (tokens as string[]).forEach((t, i) => {
      const type = Array.isArray(types) ? types[i] : TOKEN_TYPE.NORMAL;
      if (type === TOKEN_TYPE.UNUSED && /^\[PAD\d+\]$/.test(t)) return;
      vocab[t] = i;
      if (type === TOKEN_TYPE.CONTROL || type === TOKEN_TYPE.USER_DEFINED) {
        added.push({
          id: i,
          content: t,
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: false,
          special: type === TOKEN_TYPE.CONTROL,
        });
      }
    });
    const json = {
      version: "1.0",
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges: Array.isArray(merges) ? (merges as string[]).map((m) => m.split(" ")) : [],
      },
    };
    const name = (key: string) => {
      const id = h.metadata.get(key);
      return typeof id === "number" ? (tokens as string[])[id] : undefined;
    };
    return new HfTokenizer(json, {
      bos_token: name("tokenizer.ggml.bos_token_id"),
      eos_token: name("tokenizer.ggml.eos_token_id"),
    }, h.path);
  }
  throw new FormatError(h.path, `tokenizer model ${JSON.stringify(model)} is not supported (gpt2, llama)`);
}

/**
 * Loads a llama GGUF file as a model ptq can evaluate: every tensor dequantized to float32, q/k left in llama.cpp's
 * interleaved order (the config says so), and the tokenizer it carries.
 *
 * @throws {FormatError} when the file is not a llama GGUF, a tensor is missing or of a type ptq cannot dequantize.
 */
export async function loadGgufModel(
  path: string,
): Promise<{ model: LlamaModel; tokenizer: Tokenizer; header: GgufHeader }> {
  const header = await readGgufHeader(path);
  const config = ggufLlamaConfig(header);
  const names = new Map<string, string>([["model.embed_tokens.weight", "token_embd.weight"]]);
  for (let i = 0; i < config.numLayers; i++) {
    names.set(`model.layers.${i}.input_layernorm.weight`, `blk.${i}.attn_norm.weight`);
    names.set(`model.layers.${i}.post_attention_layernorm.weight`, `blk.${i}.ffn_norm.weight`);
    for (const kind of LINEAR_KINDS) names.set(`${linearName(i, kind)}.weight`, `blk.${i}.${GGUF_LINEAR[kind]}.weight`);
  }
  names.set("model.norm.weight", "output_norm.weight");
  if (!config.tieWordEmbeddings) names.set("lm_head.weight", "output.weight");
  const weights = new Map<string, { data: Float32Array; shape: readonly number[] }>();
  for (const [hf, gg] of names) {
    const info = header.tensors.find((t) => t.name === gg);
    if (!info) throw new FormatError(path, `missing tensor ${gg}`);
    weights.set(hf, { data: await readGgufTensor(header, gg), shape: [...info.dims].reverse() });
  }
  const model = llamaFromWeights(config, (n) => weights.get(n), path);
  return { model, tokenizer: ggufTokenizer(header), header };
}
