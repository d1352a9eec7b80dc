import assert from "node:assert/strict";
import { OptionError, ShapeError } from "../errors.ts";
import { createRng } from "../random.ts";
import { packBits, packInt32, unpackBits, unpackInt32 } from "./pack.ts";

/** The stream as an array of bits, LSB of each code first: the definition, written out. */
function bitStream(codes: Uint8Array, bits: number): number[] {
  const s: number[] = [];
  for (const c of codes) for (let b = 0; b < bits; b++) s.push((c >> b) & 1);
  return s;
}

/** Packs a bit stream into containers of `width` bits (8 or 32), bit k of the stream → bit k % width of k / width. */
function fromStream(stream: number[], width: number): number[] {
  const out = new Array(Math.ceil(stream.length / width)).fill(0);
  stream.forEach((bit, k) => out[Math.floor(k / width)] += bit * 2 ** (k % width));
  return out;
}

function randomCodes(seed: number, n: number, bits: number): Uint8Array {
  const rng = createRng(seed);
  return Uint8Array.from({ length: n }, () => rng.int(2 ** bits));
}

Deno.test("packBits / packInt32: known bit patterns", () => {
  assert.deepEqual([...packBits(new Uint8Array([1, 2, 7]), 3)], [0b11010001, 0b1]);
  assert.deepEqual([...packBits(new Uint8Array([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1)], [0b00001101, 0b1]);
  assert.deepEqual([...packBits(new Uint8Array([0, 1, 2, 3, 3]), 2)], [0b11100100, 0b11]);
  assert.deepEqual([...packBits(new Uint8Array([0xa, 0x5, 0xf]), 4)], [0x5a, 0x0f]);
  assert.deepEqual([...packBits(new Uint8Array([200, 3]), 8)], [200, 3]);
  assert.deepEqual([...packInt32(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 15]), 4)], [0xf7654321]);
  assert.deepEqual([...packInt32(new Uint8Array([0xff, 0x80, 1, 2, 9]), 8)], [0x020180ff, 9]);
  // 3 bits: ten codes fill bits 0..29, the eleventh straddles the word boundary (bits 30, 31 | 0).
  const c = new Uint8Array(11).fill(0);
  c[10] = 0b101;
  assert.deepEqual([...packInt32(c, 3)], [0b01 << 30 >>> 0, 0b1]);
  assert.deepEqual([...packBits(new Uint8Array(0), 3)], []);
});

/** GPTQ's `QuantLinear.pack` for 3 bits (gptq-for-llama), transcribed: 32 codes into 3 words, straddling twice. */
function gptqPack3(codes: number[]): number[] {
  const q = [0, 0, 0];
  let i = 0, row = 0;
  for (let j = i; j < i + 10; j++) q[row] |= codes[j] << (3 * (j - i));
  i += 10;
  q[row] |= codes[i] << 30;
  row++;
  q[row] |= (codes[i] >> 2) & 1;
  i++;
  for (let j = i; j < i + 10; j++) q[row] |= codes[j] << (3 * (j - i) + 1);
  i += 10;
  q[row] |= codes[i] << 31;
  row++;
  q[row] |= (codes[i] >> 1) & 0x3;
  i++;
  for (let j = i; j < i + 10; j++) q[row] |= codes[j] << (3 * (j - i) + 2);
  return q.map((v) => v >>> 0);
}

Deno.test("packInt32 3-bit matches GPTQ's checkpoint packing", () => {
  for (let seed = 0; seed < 20; seed++) {
    const codes = randomCodes(seed, 32, 3);
    assert.deepEqual([...packInt32(codes, 3)], gptqPack3([...codes]));
  }
});

Deno.test("packing: bit-exact on random codes of odd lengths, every width, round-trips", () => {
  for (let bits = 1; bits <= 8; bits++) {
    for (const n of [1, 3, 7, 31, 33, 97, 1001]) {
      const codes = randomCodes(bits * 10000 + n, n, bits);
      const stream = bitStream(codes, bits);
      const bytes = packBits(codes, bits);
      assert.deepEqual([...bytes], fromStream(stream, 8), `packBits ${bits} bits × ${n}`);
      assert.deepEqual(unpackBits(bytes, bits, n), codes);
      const words = packInt32(codes, bits);
      assert.deepEqual([...words], fromStream(stream, 32), `packInt32 ${bits} bits × ${n}`);
      assert.deepEqual(unpackInt32(words, bits, n), codes);
      // Little-endian words are the byte stream padded to whole words.
      const asBytes = new Uint8Array(words.buffer);
      assert.deepEqual(asBytes.subarray(0, bytes.length), bytes);
      assert.ok(asBytes.subarray(bytes.length).every((b) => b === 0));
      // Fewer codes than stored is fine (a prefix).
      assert.deepEqual(unpackBits(bytes, bits, n - 1), codes.subarray(0, n - 1));
    }
  }
});

Deno.test("packing: rejects unsupported widths, codes out of range, short buffers", () => {
  for (const b of [0, 9, 2.5, NaN]) {
    assert.throws(() => packBits(new Uint8Array([0]), b), OptionError);
    assert.throws(() => packInt32(new Uint8Array([0]), b), OptionError);
    assert.throws(() => unpackBits(new Uint8Array([0]), b, 1), OptionError);
    assert.throws(() => unpackInt32(new Uint32Array([0]), b, 1), OptionError);
  }
  assert.throws(() => packBits(new Uint8Array([0, 8]), 3), OptionError);
  assert.throws(() => packInt32(new Uint8Array([16]), 4), OptionError);
  assert.throws(() => packBits(new Uint8Array([2]), 1), OptionError);
  assert.throws(() => unpackBits(new Uint8Array(3), 3, 9), ShapeError);
  assert.throws(() => unpackInt32(new Uint32Array(1), 3, 11), ShapeError);
  assert.throws(() => unpackBits(new Uint8Array(3), 3, -1), OptionError);
  assert.equal(unpackBits(new Uint8Array(3), 3, 8).length, 8);
});
