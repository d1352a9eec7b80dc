/**
 * Bit-exact packing of small integer codes, as quantized checkpoints store them.
 *
 * Both layouts are the same little-endian, LSB-first bit stream: code `i` occupies stream bits
 * `[i·bits, (i+1)·bits)`, its least significant bit first, and stream bit `k` is bit `k mod 8` of byte `⌊k/8⌋`
 * ({@link packBits}) or bit `k mod 32` of word `⌊k/32⌋` ({@link packInt32}, the int32 `qweight` layout of GPTQ
 * checkpoints, where 3-bit codes straddle words exactly as they do in GPTQ's `pack`). On a little-endian machine the
 * bytes of `packInt32` are those of `packBits` padded with zeros to a multiple of 4. Unused high bits of the last byte or
 * word are zero.
 *
 * Widths 1 to 8 are supported: 1, 2, 4 and 8 divide the container, 3, 5, 6 and 7 straddle it.
 *
 * @module
 */

import { OptionError, ShapeError } from "../errors.ts";

function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) {
    throw new OptionError(`can pack codes of 1 to 8 bits, got ${bits}`);
  }
}

function checkCodes(codes: Uint8Array, bits: number): void {
  const limit = 2 ** bits;
  for (let i = 0; i < codes.length; i++) {
    if (codes[i] >= limit) throw new OptionError(`code ${codes[i]} at ${i} does not fit in ${bits} bits`);
  }
}

function checkCount(count: number, available: number, bits: number, unit: string): void {
  if (!Number.isInteger(count) || count < 0) throw new OptionError(`code count must be a non-negative integer`);
  if (count * bits > available) {
    throw new ShapeError(`${count} codes of ${bits} bits need ${count * bits} bits, the ${unit} hold ${available}`);
  }
}

/**
 * Packs codes into `⌈n·bits/8⌉` bytes, LSB first.
 *
 * @throws {OptionError} on `bits` outside 1..8 or a code `≥ 2^bits`.
 * @example
 * ```ts
 * import { packBits } from "./pack.ts";
 * // 3-bit codes 1, 2, 7: stream 001 010 111 (LSB first) → bytes 0b11_010_001, 0b0000000_1
 * console.assert(packBits(new Uint8Array([1, 2, 7]), 3).join() === "209,1");
 * ```
 */
export function packBits(codes: Uint8Array, bits: number): Uint8Array {
  checkBits(bits);
  checkCodes(codes, bits);
  if (bits === 8) return codes.slice();
  const out = new Uint8Array(Math.ceil((codes.length * bits) / 8));
  for (let i = 0, pos = 0; i < codes.length; i++, pos += bits) {
    const byte = pos >>> 3, off = pos & 7, c = codes[i];
    out[byte] |= c << off; // the store keeps the low 8 bits
    if (off + bits > 8) out[byte + 1] |= c >>> (8 - off);
  }
  return out;
}

/**
 * Unpacks `count` codes from a {@link packBits} stream.
 *
 * @throws {OptionError} on `bits` outside 1..8 or a negative or fractional `count`.
 * @throws {ShapeError} when `bytes` hold fewer than `count` codes.
 */
export function unpackBits(bytes: Uint8Array, bits: number, count: number): Uint8Array {
  checkBits(bits);
  checkCount(count, bytes.length * 8, bits, `${bytes.length} bytes`);
  if (bits === 8) return bytes.slice(0, count);
  const out = new Uint8Array(count), mask = (1 << bits) - 1;
  for (let i = 0, pos = 0; i < count; i++, pos += bits) {
    const byte = pos >>> 3, off = pos & 7;
    let v = bytes[byte] >>> off;
    if (off + bits > 8) v |= bytes[byte + 1] << (8 - off);
    out[i] = v & mask;
  }
  return out;
}

/**
 * Packs codes into `⌈n·bits/32⌉` 32-bit words, LSB first (GPTQ's int32 `qweight` order; reinterpret as `Int32Array`
 * for a signed view of the same bits).
 *
 * @throws {OptionError} on `bits` outside 1..8 or a code `≥ 2^bits`.
 * @example
 * ```ts
 * import { packInt32 } from "./pack.ts";
 * console.assert(packInt32(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 15]), 4)[0] === 0xf7654321);
 * ```
 */
export function packInt32(codes: Uint8Array, bits: number): Uint32Array {
  checkBits(bits);
  checkCodes(codes, bits);
  const out = new Uint32Array(Math.ceil((codes.length * bits) / 32));
  for (let i = 0, pos = 0; i < codes.length; i++, pos += bits) {
    const word = pos >>> 5, off = pos & 31, c = codes[i];
    out[word] |= c << off; // an int32 result, stored modulo 2^32
    if (off + bits > 32) out[word + 1] |= c >>> (32 - off);
  }
  return out;
}

/**
 * Unpacks `count` codes from a {@link packInt32} stream.
 *
 * @throws {OptionError} on `bits` outside 1..8 or a negative or fractional `count`.
 * @throws {ShapeError} when `words` hold fewer than `count` codes.
 */
export function unpackInt32(words: Uint32Array, bits: number, count: number): Uint8Array {
  checkBits(bits);
  checkCount(count, words.length * 32, bits, `${words.length} words`);
  const out = new Uint8Array(count), mask = (1 << bits) - 1;
  for (let i = 0, pos = 0; i < count; i++, pos += bits) {
    const word = pos >>> 5, off = pos & 31;
    let v = words[word] >>> off;
    if (off + bits > 32) v |= words[word + 1] << (32 - off);
    out[i] = v & mask;
  }
  return out;
}
