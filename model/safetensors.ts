/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header
 * (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the tensors' bytes.
 *
 * Three layers, so that the format logic is runtime-free and the file access stays small:
 * - pure functions: {@link readHeaderLength}, {@link parseSafetensorsHeader}, {@link decodeTensor},
 *   {@link decodeToF32}, {@link encodeTensor}, {@link encodeHeader} (no `Deno.*`);
 * - a reader over any {@link ByteSource} ({@link openSafetensorsSource}), which reads one tensor at a time by offset;
 * - the Deno layer: {@link openSafetensors}, {@link openSafetensorsFolder} (sharded checkpoints with
 *   `model.safetensors.index.json`), {@link writeSafetensors} and {@link writeSafetensorsSharded} (atomic writes).
 *
 * Validation is as strict as the reference implementation's: every malformed or truncated file raises a
 * {@link FormatError} naming the file, never a `RangeError` or `SyntaxError` from deep inside.
 *
 * @example
 * ```ts ignore
 * import { openSafetensors } from "./safetensors.ts";
 * using st = await openSafetensors("model.safetensors");
 * const { data, shape } = await st.readF32("model.norm.weight");
 * ```
 * @module
 */

import { isAbsolute, join, normalize } from "node:path";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../core/dtype.ts";
import { FormatError, OptionError, ShapeError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";

// ---------------------------------------------------------------------------------------------------------------
// Dtypes
// ---------------------------------------------------------------------------------------------------------------

/** Element types of safetensors files that this module reads and writes. */
export type SafetensorsDtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_SIZES: Readonly<Record<SafetensorsDtype, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
});

/** True for the dtypes that hold floating-point values. */
export function isFloatDtype(dtype: SafetensorsDtype): boolean {
  return dtype === "F64" || dtype === "F32" || dtype === "F16" || dtype === "BF16" || dtype === "F8_E4M3" ||
    dtype === "F8_E5M2";
}

function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZES, s);
}

/** A typed array holding the values of one dtype (see {@link decodeTensor}). */
export type TensorArray =
  | Float64Array
  | Float32Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array;

// ---------------------------------------------------------------------------------------------------------------
// Header parsing (pure)
// ---------------------------------------------------------------------------------------------------------------

/** Where one tensor lives and what it holds. */
export interface TensorInfo {
  /** Tensor name as in the header. */
  readonly name: string;
  /** Element type. */
  readonly dtype: SafetensorsDtype;
  /** Dimensions, row-major (`[]` for a scalar). */
  readonly shape: readonly number[];
  /** `[begin, end)` relative to the start of the data section, as written in the header. */
  readonly dataOffsets: readonly [number, number];
  /** Absolute byte offset of the tensor in its file. */
  readonly byteOffset: number;
  /** Size in bytes (`product(shape) · itemsize`). */
  readonly byteLength: number;
  /** The file that holds the tensor. */
  readonly file: string;
}

/** A parsed, validated header. */
export interface SafetensorsHeader {
  /** Tensors by name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Tensor names in file order (by offset), so a sequential pass reads the file front to back. */
  readonly names: readonly string[];
  /** The `__metadata__` string map (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute offset of the data section: `8 + header length`. */
  readonly dataStart: number;
}

/**
 * Largest header accepted. The reference implementation refuses headers over 100 MB; the limit also keeps a
 * corrupted length field from making a reader allocate gigabytes.
 */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * Reads and checks the 8-byte little-endian header length at the start of a file.
 *
 * @param prefix The file's first bytes (at least 8 of them when the file is that long).
 * @param fileSize The whole file's size in bytes.
 * @param path Names the file in errors.
 * @returns The header length in bytes.
 * @throws {FormatError} when the file is shorter than 8 bytes, or the length is below 2, above
 *   {@link MAX_HEADER_BYTES}, or larger than the rest of the file.
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, path: string): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new FormatError(path, `file is ${fileSize} bytes, too short for the 8-byte safetensors header length`);
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = view.getUint32(0, true), hi = view.getUint32(4, true);
  // Anything with high bits set is far beyond MAX_HEADER_BYTES; checking `hi` first avoids unsafe integers.
  const n = hi === 0 ? lo : Infinity;
  if (n > MAX_HEADER_BYTES) {
    throw new FormatError(
      path,
      `header length ${hi === 0 ? lo : `${hi}·2^32 + ${lo}`} exceeds the ${MAX_HEADER_BYTES}-byte limit` +
        " (not a safetensors file?)",
    );
  }
  if (n > fileSize - 8) {
    throw new FormatError(path, `header length ${n} is larger than the file (${fileSize} bytes); truncated file?`);
  }
  if (n < 2) throw new FormatError(path, `header length ${n} is too small for a JSON object`);
  return n;
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parses and validates a safetensors JSON header.
 *
 * Checks, each with a message naming the file and the tensor: valid UTF-8 JSON object; known dtype; shape an array
 * of non-negative integers; `data_offsets` two integers `begin ≤ end` whose difference is
 * `product(shape) · itemsize`; offsets that tile the data section exactly (no overlap, no gap, nothing past the end,
 * no trailing bytes); `__metadata__` a string → string map.
 *
 * @param headerBytes The JSON bytes (the `n` bytes after the 8-byte length), including any space padding.
 * @param fileSize The whole file's size in bytes.
 * @param path Names the file in errors and in each {@link TensorInfo.file}.
 * @returns The validated header.
 * @throws {FormatError} on any violation listed above.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, fileSize: number, path: string): SafetensorsHeader {
  const dataStart = 8 + headerBytes.length;
  if (dataStart > fileSize) {
    throw new FormatError(path, `header of ${headerBytes.length} bytes does not fit in a file of ${fileSize} bytes`);
  }
  const dataSize = fileSize - dataStart;
  let json: unknown;
  try {
    json = JSON.parse(utf8Strict.decode(headerBytes));
  } catch (e) {
    // TextDecoder throws TypeError on invalid UTF-8, JSON.parse SyntaxError (or RangeError on absurd nesting).
    throw new FormatError(path, `header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) {
    throw new FormatError(path, `header must be a JSON object, got ${Array.isArray(json) ? "an array" : typeof json}`);
  }

  let metadata: Record<string, string> = {};
  const entries: TensorInfo[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(raw, path);
      continue;
    }
    entries.push(parseEntry(name, raw, dataStart, path));
  }

  // Sorting by (begin, end) lets one pass detect overlaps and gaps: each tensor must start where the previous ended.
  entries.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let expected = 0, previous = "";
  for (const t of entries) {
    const [begin, end] = t.dataOffsets;
    if (begin < expected) {
      throw new FormatError(
        path,
        `tensor "${t.name}" at [${begin}, ${end}) overlaps "${previous}" ending at ${expected}`,
      );
    }
    if (begin > expected) {
      throw new FormatError(
        path,
        `gap of ${begin - expected} bytes before tensor "${t.name}" at [${begin}, ${end})` +
          (previous ? ` after "${previous}"` : ""),
      );
    }
    if (end > dataSize) {
      throw new FormatError(
        path,
        `tensor "${t.name}" ends at data byte ${end} but the file has only ${dataSize} data bytes; truncated file?`,
      );
    }
    expected = end, previous = t.name;
  }
  if (expected !== dataSize) {
    throw new FormatError(path, `${dataSize - expected} trailing bytes after the last tensor`);
  }

  const tensors = new Map<string, TensorInfo>();
  for (const t of entries) tensors.set(t.name, t);
  return { tensors, names: entries.map((t) => t.name), metadata, dataStart };
}

function parseMetadata(raw: unknown, path: string): Record<string, string> {
  if (!isPlainObject(raw)) throw new FormatError(path, `__metadata__ must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== "string") {
      throw new FormatError(path, `__metadata__["${k}"] must be a string, got ${v === null ? "null" : typeof v}`);
    }
    out[k] = v;
  }
  return out;
}

function parseEntry(name: string, raw: unknown, dataStart: number, path: string): TensorInfo {
  const what = `tensor "${name}"`;
  if (!isPlainObject(raw)) throw new FormatError(path, `${what}: entry must be an object`);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (!isDtype(dtype)) {
    throw new FormatError(
      path,
      `${what}: unknown dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_SIZES).join(", ")})`,
    );
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(
      path,
      `${what}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
    );
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]
  ) {
    throw new FormatError(
      path,
      `${what}: data_offsets must be two non-negative integers [begin, end] with begin ≤ end, got ` +
        JSON.stringify(offsets),
    );
  }
  let count = 1;
  for (const d of shape as number[]) count *= d;
  const byteLength = count * DTYPE_SIZES[dtype];
  const [begin, end] = offsets as [number, number];
  if (!Number.isSafeInteger(byteLength) || byteLength !== end - begin) {
    throw new FormatError(
      path,
      `${what}: ${dtype} of shape [${shape.join(", ")}] needs ${byteLength} bytes, but data_offsets span ${
        end - begin
      }`,
    );
  }
  return {
    name,
    dtype,
    shape: Object.freeze([...(shape as number[])]),
    dataOffsets: [begin, end],
    byteOffset: dataStart + begin,
    byteLength,
    file: path,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding and encoding values (pure)
// ---------------------------------------------------------------------------------------------------------------

/** Files are little-endian; every platform Deno runs on is too, but a byte swap keeps big-endian hosts correct. */
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function swapped(bytes: Uint8Array, size: number): Uint8Array {
  if (HOST_LITTLE_ENDIAN || size === 1) return bytes;
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += size) for (let j = 0; j < size; j++) out[i + j] = bytes[i + size - 1 - j];
  return out;
}

/** A view of `bytes` aligned for `size`-byte elements: shares storage when already aligned, else copies. */
function aligned(bytes: Uint8Array, size: number): Uint8Array {
  const b = swapped(bytes, size);
  return b.byteOffset % size === 0 ? b : b.slice();
}

let f8e4m3Table: Float32Array | undefined, f8e5m2Table: Float32Array | undefined;

/** float8 e4m3fn (bias 7, no infinities, S.1111.111 is NaN), as PyTorch's `float8_e4m3fn`. */
function e4m3Table(): Float32Array {
  if (!f8e4m3Table) {
    f8e4m3Table = new Float32Array(256);
    for (let b = 0; b < 256; b++) {
      const s = b & 0x80 ? -1 : 1, e = (b >> 3) & 0xf, m = b & 7;
      f8e4m3Table[b] = e === 15 && m === 7 ? NaN : e === 0 ? s * m * 2 ** -9 : s * (1 + m / 8) * 2 ** (e - 7);
    }
  }
  return f8e4m3Table;
}

/** float8 e5m2 (bias 15, IEEE-like infinities and NaNs), as PyTorch's `float8_e5m2`. */
function e5m2Table(): Float32Array {
  if (!f8e5m2Table) {
    f8e5m2Table = new Float32Array(256);
    for (let b = 0; b < 256; b++) {
      const s = b & 0x80 ? -1 : 1, e = (b >> 2) & 0x1f, m = b & 3;
      f8e5m2Table[b] = e === 31
        ? (m ? NaN : s * Infinity)
        : e === 0
        ? s * m * 2 ** -16
        : s * (1 + m / 4) * 2 ** (e - 15);
    }
  }
  return f8e5m2Table;
}

/**
 * The values of a tensor's raw little-endian bytes in their natural typed array: `Float64Array` for F64,
 * `Float32Array` for F32, F16, BF16 and F8 (decoded exactly), `BigInt64Array`/`BigUint64Array` for I64/U64,
 * `Uint8Array` for U8 and BOOL, and the matching integer array otherwise. Shares storage with `bytes` when the
 * dtype needs no conversion and `bytes` is aligned.
 *
 * @throws {ShapeError} when `bytes.length` is not a multiple of the dtype's size.
 */
export function decodeTensor(dtype: SafetensorsDtype, bytes: Uint8Array): TensorArray {
  const size = DTYPE_SIZES[dtype];
  if (bytes.length % size !== 0) throw new ShapeError(`${bytes.length} bytes is not a whole number of ${dtype} values`);
  const n = bytes.length / size;
  const b = aligned(bytes, size);
  const { buffer, byteOffset } = b;
  switch (dtype) {
    case "F64":
      return new Float64Array(buffer, byteOffset, n);
    case "F32":
      return new Float32Array(buffer, byteOffset, n);
    case "F16":
      return f16ToF32(new Uint16Array(buffer, byteOffset, n));
    case "BF16":
      return bf16ToF32(new Uint16Array(buffer, byteOffset, n));
    case "F8_E4M3":
    case "F8_E5M2": {
      const t = dtype === "F8_E4M3" ? e4m3Table() : e5m2Table();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = t[b[i]];
      return out;
    }
    case "I64":
      return new BigInt64Array(buffer, byteOffset, n);
    case "U64":
      return new BigUint64Array(buffer, byteOffset, n);
    case "I32":
      return new Int32Array(buffer, byteOffset, n);
    case "U32":
      return new Uint32Array(buffer, byteOffset, n);
    case "I16":
      return new Int16Array(buffer, byteOffset, n);
    case "U16":
      return new Uint16Array(buffer, byteOffset, n);
    case "I8":
      return new Int8Array(buffer, byteOffset, n);
    case "U8":
    case "BOOL":
      return b;
  }
}

/**
 * A tensor's values as float32. Float dtypes convert exactly (F64 rounds to nearest); integer dtypes convert by
 * value, so integers beyond ±2^24 round. Shares storage with `bytes` for aligned F32 data.
 *
 * @throws {ShapeError} when `bytes.length` is not a multiple of the dtype's size.
 */
export function decodeToF32(dtype: SafetensorsDtype, bytes: Uint8Array): Float32Array {
  const v = decodeTensor(dtype, bytes);
  if (v instanceof Float32Array) return v;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) {
    const out = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
    return out;
  }
  return Float32Array.from(v);
}

/**
 * Values a writer accepts: raw little-endian bytes (`Uint8Array`, written as is for any dtype), the dtype's natural
 * typed array (as {@link decodeTensor} returns), `Uint16Array` bits for F16/BF16, or `Float32Array`/`Float64Array`
 * values for F64, F32, F16 and BF16, converted with round-to-nearest-even (float64 values for F16/BF16 round to
 * float32 first).
 */
export type TensorData = TensorArray;

const NATURAL: Partial<Record<SafetensorsDtype, new (n: number) => TensorArray>> = {
  F64: Float64Array,
  F32: Float32Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
  I32: Int32Array,
  U32: Uint32Array,
  I16: Int16Array,
  U16: Uint16Array,
  I8: Int8Array,
  F16: Uint16Array,
  BF16: Uint16Array,
};

function asBytes(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Encodes a tensor's values as the little-endian bytes of `dtype` (see {@link TensorData} for what is accepted).
 *
 * @param dtype Target dtype.
 * @param data Values or raw bytes.
 * @param count Expected number of elements (`product(shape)`).
 * @param name Names the tensor in errors.
 * @returns Bytes to write; may share storage with `data`.
 * @throws {OptionError} when the array type does not fit the dtype.
 * @throws {ShapeError} when the number of values or bytes does not match `count`.
 */
export function encodeTensor(dtype: SafetensorsDtype, data: TensorData, count: number, name = "tensor"): Uint8Array {
  const size = DTYPE_SIZES[dtype];
  if (data instanceof Uint8Array) {
    if (data.length !== count * size) {
      throw new ShapeError(`${name}: ${dtype} × ${count} needs ${count * size} bytes, got ${data.length}`);
    }
    return data;
  }
  if (data.length !== count) throw new ShapeError(`${name}: shape holds ${count} values, data has ${data.length}`);
  const natural = NATURAL[dtype];
  if (natural && data instanceof natural) return swapped(asBytes(data), size);
  if (data instanceof Float32Array || data instanceof Float64Array) {
    switch (dtype) {
      case "F64":
        return swapped(asBytes(Float64Array.from(data)), 8);
      case "F32":
        return swapped(asBytes(Float32Array.from(data)), 4);
      case "F16":
        return swapped(asBytes(f32ToF16(data)), 2);
      case "BF16":
        return swapped(asBytes(f32ToBf16(data)), 2);
    }
  }
  throw new OptionError(
    `${name}: cannot write a ${data.constructor.name} as ${dtype}; pass raw bytes as a Uint8Array` +
      (natural ? ` or a ${natural.name}` : "") + (isFloatDtype(dtype) && size >= 2 ? " or Float32Array values" : ""),
  );
}

/** One tensor's header entry for {@link encodeHeader}. */
export interface HeaderEntry {
  /** Tensor name (not `__metadata__`). */
  readonly name: string;
  /** Element type. */
  readonly dtype: SafetensorsDtype;
  /** Dimensions. */
  readonly shape: readonly number[];
}

/**
 * The 8-byte length plus JSON header for tensors laid out back to back in the given order, padded with spaces so the
 * data section starts on an 8-byte boundary, as the reference writer does.
 *
 * @returns The header bytes and each tensor's byte size.
 * @throws {OptionError} on a duplicate or reserved name, an invalid shape, or a non-string metadata value.
 */
export function encodeHeader(
  entries: readonly HeaderEntry[],
  metadata?: Readonly<Record<string, string>>,
): { bytes: Uint8Array; sizes: number[] } {
  // Built by hand rather than with one JSON.stringify of an object: JS objects move integer-like keys ("0") first,
  // and the header should list tensors in the order the data follows.
  const parts: string[] = [];
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new OptionError(`metadata["${k}"] must be a string, got ${typeof v}`);
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const seen = new Set<string>();
  const sizes: number[] = [];
  let offset = 0;
  for (const { name, dtype, shape } of entries) {
    if (name === "__metadata__") throw new OptionError(`"__metadata__" is reserved and cannot name a tensor`);
    if (seen.has(name)) throw new OptionError(`duplicate tensor name "${name}"`);
    seen.add(name);
    if (!isDtype(dtype)) throw new OptionError(`tensor "${name}": unknown dtype ${JSON.stringify(dtype)}`);
    if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new OptionError(`tensor "${name}": shape must be non-negative integers, got [${shape.join(", ")}]`);
    }
    const size = shape.reduce((a, d) => a * d, 1) * DTYPE_SIZES[dtype];
    sizes.push(size);
    parts.push(
      `${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${shape.join(",")}],"data_offsets":[${offset},${
        offset + size
      }]}`,
    );
    offset += size;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const bytes = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.set(json, 8);
  return { bytes, sizes };
}

// ---------------------------------------------------------------------------------------------------------------
// Reader over a byte source (runtime-free)
// ---------------------------------------------------------------------------------------------------------------

/** Random access to a file's bytes: what a safetensors reader needs from the runtime. */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** Exactly `length` bytes at `offset` in a fresh buffer; rejects if fewer are available. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases the underlying handle; idempotent. */
  close(): void;
}

/** A {@link ByteSource} over bytes in memory (tests, fuzzing, or a file already read). */
export function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.length,
    read(offset, length) {
      if (offset < 0 || offset + length > bytes.length) {
        return Promise.reject(new RangeError(`read [${offset}, ${offset + length}) past ${bytes.length} bytes`));
      }
      return Promise.resolve(bytes.slice(offset, offset + length));
    },
    close() {},
  };
}

/** Read access to the tensors of one safetensors file or of a sharded checkpoint. */
export interface SafetensorsReader extends Disposable {
  /** The file, or the folder of a sharded checkpoint. */
  readonly path: string;
  /** Tensor names, in file order (shard by shard for a folder). */
  readonly names: readonly string[];
  /** `__metadata__` (merged over shards for a folder, the first shard's value winning). */
  readonly metadata: Readonly<Record<string, string>>;
  /** True when the tensor exists. */
  has(name: string): boolean;
  /** Dtype, shape and byte range. @throws {FormatError} when there is no such tensor. */
  info(name: string): TensorInfo;
  /** The tensor's raw little-endian bytes, read from disk now. @throws {FormatError} when missing or truncated. */
  read(name: string): Promise<Uint8Array>;
  /** The tensor's values in their natural typed array ({@link decodeTensor}). @throws {FormatError} */
  readArray(name: string): Promise<{ data: TensorArray; shape: readonly number[] }>;
  /** The tensor's values as float32 ({@link decodeToF32}). @throws {FormatError} */
  readF32(name: string): Promise<Tensor>;
  /** Releases the file handles; later reads throw. Idempotent. */
  close(): void;
}

function missingTensor(path: string, name: string, names: readonly string[]): FormatError {
  const sample = names.slice(0, 5).map((n) => `"${n}"`).join(", ");
  return new FormatError(
    path,
    `no tensor "${name}" (it has ${names.length}${names.length ? `: ${sample}${names.length > 5 ? ", …" : ""}` : ""})`,
  );
}

/** Builds the read API over a lookup of infos and a raw-bytes reader; shared by files and folders. */
function makeReader(
  path: string,
  names: readonly string[],
  metadata: Readonly<Record<string, string>>,
  lookup: (name: string) => TensorInfo | undefined,
  readBytes: (info: TensorInfo) => Promise<Uint8Array>,
  close: () => void,
): SafetensorsReader {
  const info = (name: string): TensorInfo => {
    const t = lookup(name);
    if (!t) throw missingTensor(path, name, names);
    return t;
  };
  const read = (name: string) => {
    try {
      return readBytes(info(name));
    } catch (e) {
      return Promise.reject(e);
    }
  };
  return {
    path,
    names,
    metadata,
    has: (name) => lookup(name) !== undefined,
    info,
    read,
    async readArray(name) {
      const t = info(name);
      return { data: decodeTensor(t.dtype, await readBytes(t)), shape: t.shape };
    },
    async readF32(name) {
      const t = info(name);
      return { data: decodeToF32(t.dtype, await readBytes(t)), shape: t.shape };
    },
    close,
    [Symbol.dispose]: close,
  };
}

/**
 * Opens a safetensors file through any {@link ByteSource}: reads and validates the header only; tensors are read one
 * at a time on request. The source is closed when the header is invalid.
 *
 * @param source The bytes.
 * @param path Names the file in errors.
 * @throws {FormatError} on a malformed or truncated file.
 */
export async function openSafetensorsSource(source: ByteSource, path: string): Promise<SafetensorsReader> {
  let header: SafetensorsHeader;
  try {
    const size = source.size;
    const n = readHeaderLength(size >= 8 ? await readExact(source, 0, 8, path) : new Uint8Array(0), size, path);
    header = parseSafetensorsHeader(await readExact(source, 8, n, path), size, path);
  } catch (e) {
    source.close();
    throw e;
  }
  let closed = false;
  return makeReader(
    path,
    header.names,
    header.metadata,
    (name) => header.tensors.get(name),
    (t) => {
      if (closed) return Promise.reject(new FormatError(path, `read of "${t.name}" after close()`));
      return readExact(source, t.byteOffset, t.byteLength, path);
    },
    () => {
      if (!closed) closed = true, source.close();
    },
  );
}

async function readExact(source: ByteSource, offset: number, length: number, path: string): Promise<Uint8Array> {
  try {
    const b = await source.read(offset, length);
    if (b.length !== length) throw new Error(`got ${b.length} bytes`);
    return b;
  } catch (e) {
    if (e instanceof FormatError) throw e;
    // A file that shrank after its header was read, or an I/O error: either way the file cannot be used.
    throw new FormatError(path, `cannot read ${length} bytes at offset ${offset}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Deno layer: files, folders, atomic writes
// ---------------------------------------------------------------------------------------------------------------

/** A {@link ByteSource} over a file on disk; reads are serialised because seek + read share one file position. */
async function fileSource(path: string): Promise<ByteSource> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new FormatError(path, "file not found");
    if (e instanceof Deno.errors.IsADirectory) throw new FormatError(path, "is a directory, not a file");
    throw new FormatError(path, `cannot open: ${(e as Error).message}`);
  }
  const { size, isFile } = await file.stat();
  if (!isFile) {
    file.close();
    throw new FormatError(path, "is not a regular file");
  }
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  return {
    size,
    read(offset, length) {
      const job = queue.then(async () => {
        if (closed) throw new Error("file is closed");
        await file.seek(offset, Deno.SeekMode.Start);
        const buf = new Uint8Array(length);
        let filled = 0;
        while (filled < length) {
          const n = await file.read(buf.subarray(filled));
          if (n === null) throw new Error(`end of file after ${filled} bytes; the file is truncated`);
          filled += n;
        }
        return buf;
      });
      queue = job.catch(() => {});
      return job;
    },
    close() {
      if (!closed) closed = true, file.close();
    },
  };
}

/**
 * Opens one safetensors file for reading tensor by tensor (only the header is read now; a multi-gigabyte file is
 * never loaded whole).
 *
 * @example
 * ```ts ignore
 * using st = await openSafetensors("model.safetensors");
 * for (const name of st.names) console.log(name, st.info(name).shape);
 * ```
 * @param path The `.safetensors` file.
 * @throws {FormatError} when the file is missing, unreadable, malformed or truncated.
 */
export async function openSafetensors(path: string): Promise<SafetensorsReader> {
  return openSafetensorsSource(await fileSource(path), path);
}

/** The index file of a sharded Hugging Face checkpoint. */
export const INDEX_FILE = "model.safetensors.index.json";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Opens the weights of a Hugging Face model folder: the shards listed by `model.safetensors.index.json`, or else a
 * single `model.safetensors` (a path to a `.safetensors` file is opened as that file). Checks that every shard the index names exists, that each tensor is in the shard the
 * index says, and that no shard holds a tensor the index does not list. The returned reader reads across shards.
 *
 * @param dir The model folder.
 * @throws {FormatError} when the folder or a shard is missing, the index is malformed or disagrees with the shards,
 *   or a shard is malformed.
 */
export async function openSafetensorsFolder(dir: string): Promise<SafetensorsReader> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch {
    throw new FormatError(dir, "model folder not found");
  }
  // A single file is accepted too, so callers can take "a model" without caring how it is stored.
  if (stat.isFile) return openSafetensors(dir);
  if (!stat.isDirectory) throw new FormatError(dir, "is neither a folder nor a file");
  const indexPath = join(dir, INDEX_FILE);
  if (!(await exists(indexPath))) {
    const single = join(dir, "model.safetensors");
    if (!(await exists(single))) {
      throw new FormatError(dir, `has neither ${INDEX_FILE} nor model.safetensors`);
    }
    return openSafetensors(single);
  }

  let indexText: string;
  try {
    indexText = await Deno.readTextFile(indexPath);
  } catch (e) {
    throw new FormatError(indexPath, `cannot read: ${(e as Error).message}`);
  }
  const weightMap = parseIndex(indexText, indexPath);
  const shardNames = [...new Set(weightMap.values())].sort();
  const shards = new Map<string, SafetensorsReader>();
  try {
    for (const shard of shardNames) {
      const p = join(dir, shard);
      if (!(await exists(p))) throw new FormatError(indexPath, `lists shard "${shard}", which does not exist`);
      shards.set(shard, await openSafetensors(p));
    }
    for (const [name, shard] of weightMap) {
      if (!shards.get(shard)!.has(name)) {
        throw new FormatError(indexPath, `says tensor "${name}" is in "${shard}", but that shard does not hold it`);
      }
    }
    for (const [shard, reader] of shards) {
      for (const name of reader.names) {
        const listed = weightMap.get(name);
        if (listed !== shard) {
          throw new FormatError(
            reader.path,
            `holds tensor "${name}", which ${INDEX_FILE} ${listed ? `places in "${listed}"` : "does not list"}`,
          );
        }
      }
    }
  } catch (e) {
    for (const r of shards.values()) r.close();
    throw e;
  }

  const names = [...shards.values()].flatMap((r) => r.names);
  const metadata: Record<string, string> = {};
  for (const r of [...shards.values()].reverse()) Object.assign(metadata, r.metadata);
  const lookup = (name: string) => {
    const shard = weightMap.get(name);
    return shard === undefined ? undefined : shards.get(shard)!.info(name);
  };
  return makeReader(
    dir,
    names,
    metadata,
    lookup,
    (t) => shards.get(weightMap.get(t.name)!)!.read(t.name),
    () => shards.forEach((r) => r.close()),
  );
}

/** `weight_map` of an index file, validated: tensor name → shard file name (a plain relative path). */
function parseIndex(text: string, path: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, `not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json) || !isPlainObject(json.weight_map)) {
    throw new FormatError(path, `must be a JSON object with a "weight_map" object`);
  }
  const map = new Map<string, string>();
  for (const [name, file] of Object.entries(json.weight_map)) {
    if (typeof file !== "string" || file === "") {
      throw new FormatError(path, `weight_map["${name}"] must be a file name, got ${JSON.stringify(file)}`);
    }
    // A shard must stay inside the model folder: no absolute paths, no "..".
    if (isAbsolute(file) || normalize(file).split(/[\\/]/).includes("..")) {
      throw new FormatError(path, `weight_map["${name}"] = "${file}" points outside the model folder`);
    }
    map.set(name, file);
  }
  if (map.size === 0) throw new FormatError(path, `weight_map is empty`);
  return map;
}

/** One tensor to write: `data` may be a function so that only one tensor's values need be in memory at a time. */
export interface TensorToWrite {
  /** Tensor name, unique in the file (not `__metadata__`). */
  readonly name: string;
  /** Element type to store. */
  readonly dtype: SafetensorsDtype;
  /** Dimensions; `data` must hold their product of values. */
  readonly shape: readonly number[];
  /** Values or raw bytes ({@link TensorData}), or a function producing them when the writer reaches this tensor. */
  readonly data: TensorData | (() => TensorData | Promise<TensorData>);
}

async function collect(tensors: Iterable<TensorToWrite> | AsyncIterable<TensorToWrite>): Promise<TensorToWrite[]> {
  const out: TensorToWrite[] = [];
  for await (const t of tensors) out.push(t);
  return out;
}

function tempName(path: string): string {
  const rnd = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  return `${path}.tmp-${rnd}`;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
}

/**
 * Writes `path` atomically: `body` writes into `<path>.tmp-<random>`, which is then renamed over `path`; on any error
 * the temporary file is removed and the error rethrown, so `path` is either the old file or the complete new one.
 */
async function atomicWrite(path: string, body: (file: Deno.FsFile) => Promise<void>): Promise<void> {
  const tmp = tempName(path);
  const file = await Deno.open(tmp, { write: true, createNew: true });
  let open = true;
  try {
    await body(file);
    await file.syncData();
    file.close();
    open = false;
    await Deno.rename(tmp, path);
  } catch (e) {
    if (open) file.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Writes a safetensors file: the header (tensors back to back in the given order, padded with spaces to an 8-byte
 * boundary), then each tensor's bytes in order. Names, dtypes and shapes are gathered first (the header needs all
 * offsets); values are encoded and written one tensor at a time, so passing `data` as a function bounds memory to
 * one tensor. The file appears atomically (temporary file, then rename); on failure nothing is left behind.
 *
 * @example
 * ```ts ignore
 * await writeSafetensors("out.safetensors", [{ name: "w", dtype: "BF16", shape: [2, 2], data: new Float32Array(4) }]);
 * ```
 * @param path Destination file.
 * @param tensors The tensors, in the order to write them.
 * @param metadata Optional `__metadata__` string map.
 * @throws {OptionError} on a duplicate name, unknown dtype, bad metadata, or data of a type the dtype cannot take.
 * @throws {ShapeError} when a tensor's data does not hold `product(shape)` values.
 * @throws {Deno.errors.NotFound} (and other I/O errors) when the folder of `path` does not exist or is not writable.
 */
export async function writeSafetensors(
  path: string,
  tensors: Iterable<TensorToWrite> | AsyncIterable<TensorToWrite>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const list = await collect(tensors);
  const { bytes, sizes } = encodeHeader(list, metadata);
  await atomicWrite(path, async (file) => {
    await writeAll(file, bytes);
    for (let i = 0; i < list.length; i++) {
      const t = list[i];
      const values = typeof t.data === "function" ? await t.data() : t.data;
      const size = DTYPE_SIZES[t.dtype];
      await writeAll(file, encodeTensor(t.dtype, values, sizes[i] / size, `tensor "${t.name}"`));
    }
  });
}

/** Options of {@link writeSafetensorsSharded}. */
export interface ShardOptions {
  /** Largest shard in bytes of tensor data (a tensor larger than this gets a shard of its own). Default 5 GB. */
  readonly maxShardBytes?: number;
  /** `__metadata__` of every shard. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/**
 * Writes tensors as a Hugging Face checkpoint in `dir`: one `model.safetensors` when everything fits in a shard,
 * else `model-0000i-of-0000N.safetensors` files (filled greedily in order, as `save_pretrained` does) and
 * `model.safetensors.index.json`. Each file is written atomically; the index is written last.
 *
 * @param dir Existing destination folder.
 * @param tensors The tensors, in order.
 * @param options Shard size and metadata.
 * @returns The file names written (relative to `dir`), the index last when there is one.
 * @throws {OptionError} on a non-positive shard size and as {@link writeSafetensors}.
 * @throws {ShapeError} as {@link writeSafetensors}.
 */
export async function writeSafetensorsSharded(
  dir: string,
  tensors: Iterable<TensorToWrite> | AsyncIterable<TensorToWrite>,
  options: ShardOptions = {},
): Promise<string[]> {
  const maxBytes = options.maxShardBytes ?? 5e9;
  if (!(maxBytes > 0)) throw new OptionError(`maxShardBytes must be positive, got ${maxBytes}`);
  const list = await collect(tensors);
  const { sizes } = encodeHeader(list, options.metadata); // validates names and shapes before anything is written
  const groups: TensorToWrite[][] = [];
  let current: TensorToWrite[] = [], bytes = 0;
  list.forEach((t, i) => {
    if (current.length && bytes + sizes[i] > maxBytes) groups.push(current), current = [], bytes = 0;
    current.push(t), bytes += sizes[i];
  });
  if (current.length || !groups.length) groups.push(current);

  if (groups.length === 1) {
    await writeSafetensors(join(dir, "model.safetensors"), groups[0], options.metadata);
    return ["model.safetensors"];
  }
  const pad = (k: number) => String(k).padStart(5, "0");
  const files = groups.map((_, k) => `model-${pad(k + 1)}-of-${pad(groups.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  for (let k = 0; k < groups.length; k++) {
    await writeSafetensors(join(dir, files[k]), groups[k], options.metadata);
    for (const t of groups[k]) weightMap[t.name] = files[k];
  }
  const total = sizes.reduce((a, b) => a + b, 0);
  const index = JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n";
  await atomicWrite(join(dir, INDEX_FILE), (file) => writeAll(file, new TextEncoder().encode(index)));
  return [...files, INDEX_FILE];
}
