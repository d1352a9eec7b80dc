import assert from "node:assert/strict";
import { OptionError } from "../errors.ts";
import { createRng, randomNormal } from "../random.ts";
import { sharedPath, sharedTest } from "../../tests/shared.ts";
import {
  fitUniformRow,
  MSE_STEPS,
  quantizeUniform,
  roundHalfEven,
  uniformCode,
  uniformError,
  uniformMaxq,
  uniformValue,
} from "./uniform.ts";

// Independent float32 helpers: rounding through a Float32Array store rather than Math.fround.
const f32buf = new Float32Array(1);
const r32 = (x: number): number => (f32buf[0] = x, f32buf[0]);
/** Half to even via floor, a different formula from the library's. */
function rne(x: number): number {
  const fl = Math.floor(x), d = x - fl;
  return d < 0.5 ? fl : d > 0.5 ? fl + 1 : (fl % 2 === 0 ? fl : fl + 1);
}

Deno.test("roundHalfEven: ties to even, others to nearest", () => {
  const cases: [number, number][] = [
    [0.5, 0],
    [1.5, 2],
    [2.5, 2],
    [3.5, 4],
    [-0.5, -0],
    [-1.5, -2],
    [-2.5, -2],
    [2.4999999, 2],
    [2.5000001, 3],
    [-2.5000001, -3],
    [7, 7],
    [2 ** 23 + 0.5, 2 ** 23],
    [2 ** 52, 2 ** 52],
  ];
  for (const [x, want] of cases) assert.ok(Object.is(roundHalfEven(x), want), `round(${x}) = ${roundHalfEven(x)}`);
  const rng = createRng(1);
  for (let i = 0; i < 10000; i++) {
    const x = (rng.int(2001) - 1000) / 2 + (rng.int(4) === 0 ? 0 : rng.float() - 0.5);
    assert.ok(roundHalfEven(x) === rne(x), `x = ${x}`); // === : −0 and 0 both fine
  }
});

Deno.test("uniformMaxq: 2^bits − 1, and bits outside 1..8 are rejected", () => {
  assert.deepEqual([1, 2, 3, 4, 8].map(uniformMaxq), [1, 3, 7, 15, 255]);
  for (const b of [0, 9, 2.5, NaN]) assert.throws(() => uniformMaxq(b), OptionError);
  assert.throws(() => fitUniformRow([1], 0), OptionError);
});

Deno.test("fitUniformRow: closed forms of min-max, asymmetric and symmetric", () => {
  // [-1, 0.5, 2], 2 bits: range 3 over 3 steps.
  assert.deepEqual(fitUniformRow(new Float32Array([-1, 0.5, 2]), 2), { scale: 1, zero: 1 });
  // All positive: xmin is clamped to 0, zero = 0.
  assert.deepEqual(fitUniformRow(new Float32Array([0.5, 1, 3]), 4), { scale: r32(3 / 15), zero: 0 });
  // All negative: xmax is clamped to 0, zero = maxq.
  assert.deepEqual(fitUniformRow(new Float32Array([-3, -1]), 4), { scale: r32(3 / 15), zero: 15 });
  // Asymmetric zero = round(−xmin/scale): −xmin = 1, scale = 4/15 → 3.75 → 4.
  assert.deepEqual(fitUniformRow(new Float32Array([-1, 3]), 4), { scale: r32(4 / 15), zero: 4 });
  // Symmetric: xmax = max|x| = 3, range [−3, 3], zero = 2^(bits−1).
  assert.deepEqual(fitUniformRow(new Float32Array([-3, 1]), 4, true), { scale: r32(6 / 15), zero: 8 });
  assert.deepEqual(fitUniformRow(new Float32Array([-1, 3]), 3, true), { scale: r32(6 / 7), zero: 4 });
  // Symmetric without negatives keeps xmin = 0 (the reference's quirk): half the codes are unused.
  assert.deepEqual(fitUniformRow(new Float32Array([1, 2]), 4, true), { scale: r32(2 / 15), zero: 8 });
  // 8 bits, 1 bit.
  assert.deepEqual(fitUniformRow(new Float32Array([-1, 1]), 8), {
    scale: r32(2 / 255),
    zero: rne(r32(1 / r32(2 / 255))),
  });
  assert.deepEqual(fitUniformRow(new Float32Array([-0.25, 0.75]), 1), { scale: 1, zero: 0 });
});

Deno.test("fitUniformRow: the all-zero row becomes [−1, 1]", () => {
  for (const bits of [1, 2, 3, 4, 8]) {
    const maxq = 2 ** bits - 1, scale = r32(2 / maxq);
    for (const row of [new Float32Array(5), new Float32Array([0, -0]), new Float32Array(0)]) {
      const asym = fitUniformRow(row, bits);
      assert.equal(asym.scale, scale);
      // round(1/scale) in float32: for 4 bits 1/0.13333334 = 7.4999996 → 7, not 8.
      assert.ok(Object.is(asym.zero, rne(r32(1 / scale))), `bits ${bits}: zero ${asym.zero}`);
      assert.deepEqual(fitUniformRow(row, bits, true), { scale, zero: 2 ** (bits - 1) });
      assert.deepEqual(fitUniformRow(row, bits, false, true).scale > 0, true);
    }
  }
  assert.equal(fitUniformRow(new Float32Array(4), 4).zero, 7);
});

Deno.test("quantizeUniform: rounding half to even, clamping, float32 products", () => {
  // scale 1, zero 0: ties go to even codes.
  const codes = [0.5, 1.5, 2.5, 3.5, 14.5, -0.5, 20, -3].map((x) => uniformCode(x, 1, 0, 15));
  assert.deepEqual(codes, [0, 2, 2, 4, 14, 0, 15, 0]);
  // With zero = 1: −0.5 rounds to −0, code 1; −1.5 rounds to −2, clamped to 0.
  assert.deepEqual([-0.5, -1.5, 0.5].map((x) => uniformCode(x, 1, 1, 3)), [1, 0, 1]);
  const q = quantizeUniform(0.26, r32(0.1), 3, 15);
  assert.equal(q.code, 6);
  assert.equal(q.value, r32(r32(0.1) * 3));
  assert.equal(uniformValue(0, r32(0.1), 3), r32(r32(0.1) * -3));
  // x / scale is rounded to float32 before rounding to an integer: 0.35 / 0.1 in float32 is 3.4999998 → 3.
  assert.equal(uniformCode(r32(0.35), r32(0.1), 0, 15), rne(r32(r32(0.35) / r32(0.1))));
  // A zero scale (a range that underflows) gives code 0 instead of NaN.
  assert.equal(uniformCode(1, 0, 0, 15), 15);
  assert.equal(uniformCode(0, 0, 0, 15), 0);
});

/** A random row with a few outliers, as weight rows have. */
function testRow(seed: number, n: number, shift = 0): Float32Array {
  const rng = createRng(seed);
  const row = randomNormal(rng, n, 0.02);
  for (let i = 0; i < n; i++) row[i] += shift;
  if (n > 4) row[rng.int(n)] *= 8;
  return row;
}

Deno.test("quantize error ≤ scale/2 inside the range, codes round-trip", () => {
  for (const bits of [1, 2, 3, 4, 8]) {
    const maxq = 2 ** bits - 1;
    for (const [sym, mse] of [[false, false], [true, false], [false, true], [true, true]]) {
      for (const seed of [1, 2, 3]) {
        const row = testRow(seed * 10 + bits, 97, seed === 3 ? 0.01 : 0);
        const { scale, zero } = fitUniformRow(row, bits, sym, mse);
        assert.ok(scale > 0 && Number.isInteger(zero) && zero >= 0 && zero <= maxq + 1);
        const lo = scale * (0 - zero), hi = scale * (maxq - zero);
        for (const x of row) {
          const { code, value } = quantizeUniform(x, scale, zero, maxq);
          assert.ok(Number.isInteger(code) && code >= 0 && code <= maxq);
          if (x >= lo && x <= hi) {
            // Float32 rounding of x/scale and of the product can add an ulp of x at exact ties.
            assert.ok(Math.abs(value - x) <= scale / 2 + 2 ** -22 * Math.abs(x), `|${value} − ${x}| > ${scale}/2`);
          }
        }
        // Every code's value quantizes back to that code.
        for (let c = 0; c <= maxq; c++) assert.equal(uniformCode(uniformValue(c, scale, zero), scale, zero, maxq), c);
      }
    }
  }
});

/** Brute force of GPTQ's MSE search in independent float32 code: errors of all candidates, first minimum wins. */
function bruteMse(row: Float32Array, bits: number, sym: boolean): { scale: number; zero: number; errors: number[] } {
  const maxq = 2 ** bits - 1;
  let xmin = Math.min(0, ...row), xmax = Math.max(0, ...row);
  if (sym) {
    xmax = Math.max(-xmin, xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin === 0 && xmax === 0) xmin = -1, xmax = 1;
  const zeroSym = (maxq + 1) / 2;
  const errors: number[] = [];
  let best = { scale: NaN, zero: NaN, err: Infinity };
  for (let i = 0; i < 80; i++) {
    const p = r32(1 - i / 100);
    const a = r32(p * xmin), b = r32(p * xmax);
    const scale = r32(r32(b - a) / maxq);
    const zero = sym ? zeroSym : rne(r32(-a / scale));
    let err = 0;
    for (const x of row) {
      const q = Math.min(maxq, Math.max(0, r32(rne(r32(x / scale)) + zero)));
      const d = r32(r32(scale * r32(q - zero)) - x);
      err += r32(Math.pow(Math.abs(d), r32(2.4)));
    }
    errors.push(err);
    if (err < best.err) best = { scale, zero: zero + 0, err };
  }
  return { scale: best.scale, zero: best.zero, errors };
}

Deno.test("MSE: equals a brute-force search over the same 80 candidates, never worse than min-max", () => {
  assert.equal(MSE_STEPS, 80);
  let shrunk = 0;
  for (const bits of [2, 3, 4, 8]) {
    for (const sym of [false, true]) {
      for (let seed = 0; seed < 6; seed++) {
        const row = testRow(100 * bits + seed, 64 + seed * 13, seed % 2 ? 0.015 : 0);
        const got = fitUniformRow(row, bits, sym, true);
        const want = bruteMse(row, bits, sym);
        assert.deepEqual(got, { scale: want.scale, zero: want.zero }, `bits ${bits} sym ${sym} seed ${seed}`);
        const plain = fitUniformRow(row, bits, sym, false);
        const maxq = 2 ** bits - 1;
        const eMse = uniformError(row, got.scale, got.zero, maxq),
          ePlain = uniformError(row, plain.scale, plain.zero, maxq);
        assert.ok(eMse <= ePlain, `MSE error ${eMse} > min-max error ${ePlain}`);
        assert.equal(eMse, Math.min(...want.errors));
        assert.equal(ePlain, want.errors[0]);
        if (got.scale !== plain.scale) shrunk++;
      }
    }
  }
  // The search does something on rows with outliers.
  assert.ok(shrunk > 10, `only ${shrunk} rows shrunk`);
});

Deno.test("fitUniformRow: a strided view equals the same values copied out", () => {
  const rng = createRng(5);
  const cols = 9, rows = 40;
  const data = randomNormal(rng, rows * cols);
  for (const [sym, mse] of [[false, false], [true, true], [false, true]]) {
    for (let j = 0; j < cols; j++) {
      const column = new Float32Array(rows);
      for (let i = 0; i < rows; i++) column[i] = data[i * cols + j];
      assert.deepEqual(
        fitUniformRow(data, 3, sym, mse, { offset: j, stride: cols }),
        fitUniformRow(column, 3, sym, mse),
      );
      assert.deepEqual(
        fitUniformRow(data, 3, sym, mse, { offset: j, stride: cols, length: 7 }),
        fitUniformRow(column.subarray(0, 7), 3, sym, mse),
      );
    }
  }
  assert.throws(() => fitUniformRow(data, 3, false, false, { offset: 9, stride: cols, length: rows }), OptionError);
  assert.throws(() => fitUniformRow(data, 3, false, false, { stride: 0 }), OptionError);
});

/** Float32 tensors of a safetensors file (enough of the format for the fixture). */
async function readSafetensors(path: string, names: string[]): Promise<Map<string, Float32Array>> {
  const bytes = await Deno.readFile(path);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const out = new Map<string, Float32Array>();
  for (const name of names) {
    const { dtype, data_offsets: [a, b] } = header[name];
    assert.equal(dtype, "F32");
    out.set(name, new Float32Array(bytes.slice(8 + n + a, 8 + n + b).buffer));
  }
  return out;
}

const FIXTURE = "fixtures/llama-12m.safetensors";

sharedTest("fitUniformRow matches the grids of PyTorch's reference GPTQ output", [FIXTURE], async () => {
  const W = "weight.model.layers.0.self_attn.q_proj", H = "hessian.model.layers.0.self_attn.q_proj";
  const t = await readSafetensors(sharedPath(FIXTURE), [W, H, "gptq.w3_perrow.dequantized", "gptq.w2_g64.dequantized"]);
  const w = t.get(W)!, h = t.get(H)!, n = 384;
  // Per row (3 bits): find_params runs once on the original weights, before dead columns are zeroed. Every
  // dequantized value of a row must be exactly scale·(q − zero) for an integer code q: this pins scale and zero.
  // Groups (2 bits, g = 64, no act-order): the first group is fitted on W[:, 0:64] before any update, after dead
  // columns are zeroed.
  const wDead = w.slice();
  for (let j = 0; j < n; j++) if (h[j * n + j] === 0) { for (let i = 0; i < n; i++) wDead[i * n + j] = 0; }
  const settings = [
    { name: "gptq.w3_perrow.dequantized", bits: 3, src: w, cols: n },
    { name: "gptq.w2_g64.dequantized", bits: 2, src: wDead, cols: 64 },
  ];
  for (const { name, bits, src, cols } of settings) {
    const dq = t.get(name)!, maxq = 2 ** bits - 1;
    let bad = 0;
    for (let i = 0; i < n; i++) {
      const { scale, zero } = fitUniformRow(src, bits, false, false, { offset: i * n, length: cols });
      for (let j = 0; j < cols; j++) {
        const v = dq[i * n + j];
        const q = rne(v / scale) + zero;
        if (!(q >= 0 && q <= maxq && uniformValue(q, scale, zero) === v)) bad++;
      }
    }
    assert.equal(bad, 0, `${name}: ${bad} of ${n * cols} values are not on the fitted grid`);
  }
});
