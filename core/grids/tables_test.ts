import assert from "node:assert/strict";
import { f16BitsToF32 } from "../dtype.ts";
import { OptionError } from "../errors.ts";
import { createRng } from "../random.ts";
import {
  BINARY,
  FP4_E2M1,
  FP8_E4M3,
  FP8_E5M2,
  minifloatGrid,
  type MinifloatOptions,
  nearestLevel,
  NF4,
  tableGrid,
  TERNARY,
} from "./tables.ts";

/** Sorted distinct finite values, normalised by the largest magnitude and rounded to float32. */
function normalised(values: number[]): Float32Array {
  const finite = [...new Set(values.filter(Number.isFinite).map((v) => v + 0))].sort((a, b) => a - b);
  const max = Math.max(...finite.map(Math.abs));
  return Float32Array.from(finite, (v) => v / max);
}

Deno.test("NF4: the exact bitsandbytes code book", () => {
  const bnb = [
    -1,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1,
  ];
  assert.equal(NF4.kind, "table");
  assert.equal(NF4.bits, 4);
  assert.deepEqual(NF4.levels, Float32Array.from(bnb));
  // The decimal literals are float32 values printed in full: nothing was rounded on the way in.
  for (let i = 0; i < 16; i++) assert.equal(NF4.levels[i], bnb[i]);
});

Deno.test("FP4 E2M1: ±{0, .5, 1, 1.5, 2, 3, 4, 6}/6, one zero", () => {
  const mags = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
  assert.deepEqual(FP4_E2M1.levels, normalised([...mags, ...mags.map((m) => -m)]));
  assert.equal(FP4_E2M1.levels.length, 15);
  assert.equal(FP4_E2M1.bits, 4);
  assert.equal(FP4_E2M1.levels[7], 0);
  assert.equal(FP4_E2M1.levels[8], Math.fround(0.5 / 6));
});

Deno.test("FP8 E4M3: the finite values of all 256 OCP byte patterns", () => {
  const values: number[] = [];
  for (let b = 0; b < 256; b++) {
    const s = b & 0x80 ? -1 : 1, e = (b >> 3) & 0xf, m = b & 7;
    if (e === 15 && m === 7) continue; // S.1111.111 is NaN, the only non-number; no infinities
    values.push(s * (e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7)));
  }
  assert.equal(Math.max(...values), 448);
  assert.equal(Math.min(...values.filter((v) => v > 0)), 2 ** -9);
  assert.deepEqual(FP8_E4M3.levels, normalised(values));
  assert.equal(FP8_E4M3.levels.length, 253);
  assert.equal(FP8_E4M3.bits, 8);
  assert.equal(FP8_E4M3.levels[0], -1);
});

Deno.test("FP8 E5M2: the finite values of all 256 byte patterns (the top byte of an IEEE half)", () => {
  const values: number[] = [];
  for (let b = 0; b < 256; b++) {
    const s = b & 0x80 ? -1 : 1, e = (b >> 2) & 0x1f, m = b & 3;
    if (e === 31) continue; // ±Inf and NaN
    const v = s * (e === 0 ? (m / 4) * 2 ** -14 : (1 + m / 4) * 2 ** (e - 15));
    // E5M2 is half precision with the low mantissa byte cut off.
    assert.ok(Object.is(v, f16BitsToF32(b << 8)), `pattern ${b}`);
    values.push(v);
  }
  assert.equal(Math.max(...values), 57344);
  assert.deepEqual(FP8_E5M2.levels, normalised(values));
  assert.equal(FP8_E5M2.levels.length, 247);
  assert.equal(FP8_E5M2.bits, 8);
});

/** Value of a minifloat pattern assembled as a float64 bit pattern (normals) or an integer multiple (subnormals). */
function decodeMinifloat(bits: number, e: number, m: number, bias: number): number {
  const sign = (bits >> (e + m)) & 1, ef = (bits >> m) & (2 ** e - 1), mf = bits & (2 ** m - 1);
  let v: number;
  if (ef === 0) {
    v = mf * 2 ** (1 - bias - m);
  } else {
    const dv = new DataView(new ArrayBuffer(8));
    dv.setBigUint64(0, (BigInt(ef - bias + 1023) << 52n) | (BigInt(mf) << BigInt(52 - m)));
    v = dv.getFloat64(0);
  }
  return sign ? -v : v;
}

Deno.test("minifloatGrid: every ExMy against an enumeration of its bit patterns", () => {
  const specials = ["ieee", "nan-only", "none"] as const;
  let formats = 0;
  for (let e = 1; e <= 7; e++) {
    for (let m = 0; e + m <= 7; m++) {
      for (const special of specials) {
        for (const subnormals of [true, false]) {
          const bias = 2 ** (e - 1) - 1;
          const values: number[] = [];
          const topE = 2 ** e - 1, topM = 2 ** m - 1;
          for (let b = 0; b < 2 ** (1 + e + m); b++) {
            const ef = (b >> m) & topE, mf = b & topM;
            if (special === "ieee" && ef === topE) continue;
            if (special === "nan-only" && ef === topE && mf === topM) continue;
            values.push(ef === 0 && !subnormals ? 0 : decodeMinifloat(b, e, m, bias));
          }
          const opts: MinifloatOptions = { special, subnormals };
          if (!values.some((v) => v !== 0)) {
            assert.throws(() => minifloatGrid(e, m, opts), OptionError);
            continue;
          }
          const g = minifloatGrid(e, m, opts);
          assert.deepEqual(g.levels, normalised(values), `E${e}M${m} ${special} subnormals=${subnormals}`);
          // Count: patterns that are numbers, ±0 merged, subnormals merged into zero when flushed.
          const numbers = (special === "ieee" ? topE : topE + 1) * 2 ** m - (special === "nan-only" ? 1 : 0);
          const flushed = subnormals ? 0 : topM;
          assert.equal(g.levels.length, 2 * (numbers - flushed) - 1);
          assert.equal(g.levels[g.levels.length - 1], 1);
          assert.equal(g.levels[0], -1);
          assert.equal(g.bits, Math.ceil(Math.log2(g.levels.length)));
          formats++;
        }
      }
    }
  }
  assert.ok(formats > 150);
  assert.deepEqual(minifloatGrid(4, 3, { special: "nan-only" }).levels, FP8_E4M3.levels);
  assert.deepEqual(minifloatGrid(5, 2).levels, FP8_E5M2.levels);
  assert.deepEqual(minifloatGrid(2, 1, { special: "none" }).levels, FP4_E2M1.levels);
  // A bias only rescales (normalisation removes it) unless it changes which values exist: here it does not.
  assert.deepEqual(minifloatGrid(3, 2, { bias: 7 }).levels, minifloatGrid(3, 2).levels);
  assert.equal(minifloatGrid(3, 2, { special: "none", subnormals: false }).name, "e3m2-none-ftz");
  assert.equal(minifloatGrid(3, 2, { bias: 2 }).name, "e3m2-b2");
  for (const [e, m] of [[0, 3], [4, 4], [1.5, 2], [3, -1]]) assert.throws(() => minifloatGrid(e, m), OptionError);
  assert.throws(() => minifloatGrid(3, 2, { bias: 0.5 }), OptionError);
});

Deno.test("binary and ternary", () => {
  assert.deepEqual([...BINARY.levels], [-1, 1]);
  assert.equal(BINARY.bits, 1);
  assert.deepEqual([...TERNARY.levels], [-1, 0, 1]);
  assert.equal(TERNARY.bits, 2);
});

Deno.test("tableGrid: sorts, merges ±0, normalises, rejects bad tables", () => {
  const g = tableGrid("t", [3, -0, 0, -1.5, 3]);
  assert.deepEqual([...g.levels], [-0.5, 0, 1]);
  assert.ok(Object.is(g.levels[1], 0));
  assert.equal(g.bits, 2);
  assert.equal(tableGrid("neg", [-4, 1]).levels[0], -1);
  assert.throws(() => tableGrid("z", [0, 0]), OptionError);
  assert.throws(() => tableGrid("one", [1]), OptionError);
  assert.throws(() => tableGrid("inf", [1, Infinity]), OptionError);
  assert.throws(() => tableGrid("big", Array.from({ length: 257 }, (_, i) => i)), OptionError);
  assert.throws(() => tableGrid("collide", [1, 1 + 1e-12]), OptionError);
  assert.equal(tableGrid("256", Array.from({ length: 256 }, (_, i) => i)).bits, 8);
});

/** Nearest index by linear scan, ties to the lower index. */
function nearestScan(levels: ArrayLike<number>, x: number): number {
  let best = 0;
  for (let i = 1; i < levels.length; i++) if (Math.abs(x - levels[i]) < Math.abs(x - levels[best])) best = i;
  return best;
}

Deno.test("nearestLevel: binary search equals a linear scan; ties go to the lower level", () => {
  const rng = createRng(3);
  for (const g of [NF4, FP4_E2M1, FP8_E4M3, FP8_E5M2, BINARY, TERNARY, minifloatGrid(3, 3)]) {
    const L = g.levels;
    for (let k = 0; k < 3000; k++) {
      const x = Math.fround((rng.float() * 2.2 - 1.1) * (k % 3 === 0 ? 0.01 : 1));
      assert.equal(nearestLevel(L, x), nearestScan(L, x), `${g.name} x=${x}`);
    }
    for (let i = 0; i < L.length; i++) {
      assert.equal(nearestLevel(L, L[i]), i);
      if (i > 0) {
        const mid = (L[i - 1] + L[i]) / 2; // exact in float64
        assert.equal(nearestLevel(L, mid), i - 1, `${g.name}: tie between ${L[i - 1]} and ${L[i]}`);
        const above = mid + Math.abs(mid) * 2 ** -50 + 2 ** -1074;
        assert.equal(nearestLevel(L, above), i);
      }
    }
    assert.equal(nearestLevel(L, -5), 0);
    assert.equal(nearestLevel(L, 5), L.length - 1);
    assert.equal(nearestLevel(L, NaN), 0);
  }
  assert.equal(nearestLevel(BINARY.levels, 0), 0);
  assert.equal(nearestLevel(TERNARY.levels, -0.5), 0);
  assert.equal(nearestLevel(TERNARY.levels, 0.5), 1);
});

Deno.test("normalisation keeps which format value is nearest (away from float32-rounded midpoints)", () => {
  const rng = createRng(4);
  for (const [g, max] of [[FP8_E4M3, 448], [FP8_E5M2, 57344], [FP4_E2M1, 6]] as const) {
    // The exact format values divided by max, in float64 (not representable in float32 when max is not a power of 2).
    const exact = Array.from(g.levels, (l) => Math.round(l * max * 2 ** 20) / 2 ** 20);
    const ratio = exact.map((v) => v / max);
    for (let i = 0; i < ratio.length; i++) assert.equal(g.levels[i], Math.fround(ratio[i]));
    let checked = 0;
    for (let k = 0; k < 20000; k++) {
      const t = Math.fround((rng.float() * 2 - 1) * 2 ** -rng.int(12));
      const want = nearestScan(ratio, t);
      const got = nearestLevel(g.levels, t);
      if (got === want) {
        checked++;
        continue;
      }
      // Only within a float32 rounding of a midpoint may the two disagree.
      const d = Math.abs(Math.abs(t - ratio[got]) - Math.abs(t - ratio[want]));
      assert.ok(d <= 2 ** -23 * Math.abs(t), `${g.name} t=${t}: ${got} vs ${want}`);
    }
    assert.ok(checked > 19990);
  }
});
