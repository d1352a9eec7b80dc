import assert from "node:assert/strict";
import {
  bf16BitsToF32,
  bf16ToF32,
  f16BitsToF32,
  f16ToF32,
  f32ToBf16,
  f32ToBf16Bits,
  f32ToF16,
  f32ToF16Bits,
} from "./dtype.ts";
import { createRng } from "./random.ts";

const dv = new DataView(new ArrayBuffer(4));
/** The float32 whose bit pattern is `u`. */
function f32FromBits(u: number): number {
  dv.setUint32(0, u >>> 0);
  return dv.getFloat32(0);
}
/** The bit pattern of `x` rounded to float32. */
function bitsOfF32(x: number): number {
  dv.setFloat32(0, x);
  return dv.getUint32(0);
}
const isF16NaN = (b: number) => (b & 0x7c00) === 0x7c00 && (b & 0x3ff) !== 0;
const isBf16NaN = (b: number) => (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;

/**
 * Round to nearest even by definition: the two neighbouring patterns `p`, `p + 1` of `|x|` (positive patterns are
 * ordered like their values) and the exact float64 distances to both. The pattern after the largest finite one is
 * Infinity, given the value the next binade would have, which is exactly IEEE's overflow rule.
 */
function rneReference(x: number, value: (p: number) => number, infPattern: number, nanPattern: number): number {
  if (Number.isNaN(x)) return nanPattern;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  let lo = 0, hi = infPattern; // value(lo) <= a < value(hi)
  if (a >= value(infPattern)) return sign | infPattern;
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (value(mid) <= a) lo = mid;
    else hi = mid;
  }
  const d1 = a - value(lo), d2 = value(hi) - a;
  return sign | (d1 < d2 ? lo : d1 > d2 ? hi : (lo % 2 === 0 ? lo : hi));
}

/** Half-precision value of a pattern `p ≤ 0x7c00`, with 0x7c00 standing for 2^16 (the overflow boundary's binade). */
function halfValue(p: number): number {
  const e = p >> 10, m = p & 0x3ff;
  return e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15);
}
/** bfloat16 value of a positive pattern `p ≤ 0x7f80`, with 0x7f80 standing for 2^128. */
function bf16Value(p: number): number {
  return p === 0x7f80 ? 2 ** 128 : f32FromBits(p << 16);
}
const f16Ref = (x: number) => rneReference(x, halfValue, 0x7c00, 0x7e00);
const bf16Ref = (x: number) => rneReference(x, bf16Value, 0x7f80, 0x7fc0);

Deno.test("f32ToBf16Bits: round to nearest even on known patterns", () => {
  const cases: [number, number][] = [
    [0x3f800000, 0x3f80], // 1
    [0x3f808000, 0x3f80], // 1 + 2^-8: tie, 0x3f80 is even
    [0x3f818000, 0x3f82], // tie, 0x3f81 is odd → up
    [0x3f808001, 0x3f81], // just above the tie
    [0x3f807fff, 0x3f80], // just below
    [0xbf818000, 0xbf82], // negative tie, magnitude rounds the same way
    [0x00000000, 0x0000],
    [0x80000000, 0x8000], // −0
    [0x00018000, 0x0002], // subnormal tie → even
    [0x00008000, 0x0000], // subnormal tie → even (0)
    [0x00008001, 0x0001],
    [0x7f7fffff, 0x7f80], // largest float32 overflows to Infinity
    [0x7f7f7fff, 0x7f7f], // largest bfloat16 stays
    [0x7f7f8000, 0x7f80], // tie with an odd largest finite → Infinity
    [0x7f800000, 0x7f80], // Infinity
    [0xff800000, 0xff80], // −Infinity
  ];
  for (const [u, want] of cases) {
    assert.equal(f32ToBf16Bits(f32FromBits(u)), want, `0x${u.toString(16)}`);
  }
  assert.ok(isBf16NaN(f32ToBf16Bits(NaN)));
  assert.ok(isBf16NaN(f32ToBf16Bits(f32FromBits(0x7f800001)))); // a signalling NaN must not become Infinity
  assert.ok(isBf16NaN(f32ToBf16Bits(f32FromBits(0xffc00001))));
});

Deno.test("f32ToF16Bits: round to nearest even on known patterns", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [1 + 2 ** -11, 0x3c00], // tie → even
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even (up)
    [1 + 2 ** -11 + 2 ** -23, 0x3c01],
    [-2, 0xc000],
    [65504, 0x7bff], // largest half
    [65519.99609375, 0x7bff], // below the overflow tie
    [65520, 0x7c00], // the tie above the largest half goes to Infinity
    [1e10, 0x7c00],
    [-1e10, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // tie between 0 and 2^-24 → 0
    [2 ** -25 * 1.0000001, 0x0001],
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 → 2
    [5 * 2 ** -25, 0x0002], // tie between 2 and 3 → 2
    [1023.5 * 2 ** -24, 0x0400], // subnormal rounds up into the normals
    [2 ** -26, 0x0000],
    [-(2 ** -26), 0x8000], // underflow keeps the sign
    [0, 0x0000],
    [-0, 0x8000],
    [2049, 0x6800], // 2048 + 1: tie at ulp 2 → even
    [2051, 0x6802],
  ];
  for (const [x, want] of cases) assert.equal(f32ToF16Bits(x), want, `${x}`);
  assert.ok(isF16NaN(f32ToF16Bits(NaN)));
  assert.ok(isF16NaN(f32ToF16Bits(f32FromBits(0x7f800001)))); // payload only in the low bits: still a NaN
  assert.equal(f32ToF16Bits(f32FromBits(0xffc00000)) & 0x8000, 0x8000);
});

Deno.test("f16BitsToF32 and bf16BitsToF32 decode every pattern", () => {
  const hasF16 = typeof Float16Array === "function";
  const h = hasF16 ? new Float16Array(1) : undefined, hb = h ? new Uint16Array(h.buffer) : undefined;
  for (let p = 0; p < 65536; p++) {
    const v = f16BitsToF32(p);
    const e = (p >> 10) & 31, m = p & 0x3ff, s = p & 0x8000 ? -1 : 1;
    const want = e === 31 ? (m ? NaN : s * Infinity) : s * halfValue(p & 0x7fff);
    assert.ok(Object.is(v, want), `half 0x${p.toString(16)}: ${v} vs ${want}`);
    if (h && hb) {
      hb[0] = p;
      assert.ok(Object.is(v, h[0]), `half 0x${p.toString(16)} vs Float16Array`);
    }
    const b = bf16BitsToF32(p);
    assert.ok(Object.is(b, f32FromBits(p << 16)) || (Number.isNaN(b) && isBf16NaN(p)));
  }
});

Deno.test("all 65,536 half patterns round-trip f16 → f32 → f16 (NaNs stay NaNs)", () => {
  let exact = 0;
  for (let p = 0; p < 65536; p++) {
    const back = f32ToF16Bits(f16BitsToF32(p));
    if (isF16NaN(p)) {
      // A JS number cannot promise to carry a NaN payload, so every NaN comes back as a quiet NaN.
      assert.ok(isF16NaN(back), `NaN 0x${p.toString(16)} → 0x${back.toString(16)}`);
    } else {
      assert.equal(back, p, `0x${p.toString(16)}`);
      exact++;
    }
  }
  assert.equal(exact, 65536 - 2 * 1023); // 1023 NaN mantissas per sign
  // The bulk functions too.
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const back = f32ToF16(f16ToF32(all));
  for (let p = 0; p < 65536; p++) assert.ok(back[p] === p || (isF16NaN(p) && isF16NaN(back[p])));
});

Deno.test("all 65,536 bfloat16 patterns round-trip bf16 → f32 → bf16 (NaNs stay NaNs)", () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const back = f32ToBf16(bf16ToF32(all));
  for (let p = 0; p < 65536; p++) {
    const one = f32ToBf16Bits(bf16BitsToF32(p));
    if (isBf16NaN(p)) assert.ok(isBf16NaN(one) && isBf16NaN(back[p]));
    else assert.ok(one === p && back[p] === p, `0x${p.toString(16)}`);
  }
});

/** Float32 values that stress rounding: random bit patterns, and every half's midpoints with their neighbours. */
function stressValues(): Float32Array {
  const rng = createRng(99);
  const out: number[] = [];
  for (let i = 0; i < 60000; i++) out.push(f32FromBits(rng.uint32()));
  for (let p = 0; p < 0x7c00; p++) {
    const mid = Math.fround((halfValue(p) + halfValue(p + 1)) / 2);
    const u = bitsOfF32(mid);
    out.push(mid, f32FromBits(u + 1), f32FromBits(u - 1), -mid);
  }
  for (let i = 0; i < 20000; i++) {
    // bfloat16 midpoints: a bf16 pattern with the 0x8000 tie bit, and its neighbours.
    const u = ((rng.uint32() & 0xffff0000) | 0x8000) >>> 0;
    out.push(f32FromBits(u), f32FromBits(u + 1), f32FromBits(u - 1));
  }
  return Float32Array.from(out);
}

Deno.test("f32ToF16Bits and f32ToBf16Bits equal round-to-nearest-even by definition", () => {
  const values = stressValues();
  const hasF16Round = typeof Math.f16round === "function";
  for (const x of values) {
    const h = f32ToF16Bits(x), want = f16Ref(x);
    if (Number.isNaN(x)) assert.ok(isF16NaN(h));
    else {
      assert.equal(h, want, `half of ${x} (0x${bitsOfF32(x).toString(16)})`);
      if (hasF16Round) assert.ok(Object.is(f16BitsToF32(h), Math.f16round(x)), `Math.f16round(${x})`);
    }
    const b = f32ToBf16Bits(x);
    if (Number.isNaN(x)) assert.ok(isBf16NaN(b));
    else assert.equal(b, bf16Ref(x), `bf16 of ${x} (0x${bitsOfF32(x).toString(16)})`);
  }
});

Deno.test("bulk conversions agree with the scalar ones, and write into a given view", () => {
  const values = stressValues().subarray(0, 50000);
  const h = f32ToF16(values), b = f32ToBf16(values);
  for (let i = 0; i < values.length; i++) {
    assert.equal(h[i], f32ToF16Bits(values[i]));
    assert.equal(b[i], f32ToBf16Bits(values[i]));
  }
  const hf = f16ToF32(h), bf = bf16ToF32(b);
  for (let i = 0; i < values.length; i++) {
    assert.ok(Object.is(hf[i], Math.fround(f16BitsToF32(h[i]))));
    assert.ok(Object.is(bf[i], bf16BitsToF32(b[i])) || Number.isNaN(bf[i]));
  }
  // `out` may be a view into a larger buffer at an offset.
  const big = new Float32Array(10).fill(7);
  const src = new Uint16Array([0x3c00, 0xc000, 0x7c00]);
  f16ToF32(src, big.subarray(4, 7));
  assert.deepEqual([...big], [7, 7, 7, 7, 1, -2, Infinity, 7, 7, 7]);
  big.fill(7);
  bf16ToF32(new Uint16Array([0x3f80, 0xc000, 0x7f80]), big.subarray(3, 6));
  assert.deepEqual([...big], [7, 7, 7, 1, -2, Infinity, 7, 7, 7, 7]);
  // Plain arrays are accepted as sources.
  assert.deepEqual([...f32ToF16([1, -0, 65520])], [0x3c00, 0x8000, 0x7c00]);
  assert.deepEqual([...f32ToBf16([1, -0])], [0x3f80, 0x8000]);
});
