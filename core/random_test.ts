import assert from "node:assert/strict";
import { createRng, permutation, randomNormal } from "./random.ts";

const M32 = 0xffffffffn;
const rotl = (v: bigint, k: bigint) => ((v << k) | (v >> (32n - k))) & M32;

/** xoshiro128** (Blackman and Vigna) in BigInt arithmetic, from a given state. */
function* xoshiro128ss(state: readonly bigint[]): Generator<number> {
  const s = [...state];
  while (true) {
    const result = (rotl((s[1] * 5n) & M32, 7n) * 9n) & M32;
    const t = (s[1] << 9n) & M32;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11n);
    yield Number(result);
  }
}

/**
 * The BigInt generator seeded like `createRng` (four outputs of a splitmix32-style Weyl sequence with the murmur3
 * finaliser): an independent check of the 32-bit integer tricks of the implementation.
 */
function referenceStream(seed: number): Generator<number> {
  let x = BigInt(seed >>> 0);
  const splitmix = () => {
    x = (x + 0x9e3779b9n) & M32;
    let z = x;
    z = ((z ^ (z >> 16n)) * 0x85ebca6bn) & M32;
    z = ((z ^ (z >> 13n)) * 0xc2b2ae35n) & M32;
    return (z ^ (z >> 16n)) & M32;
  };
  return xoshiro128ss([splitmix(), splitmix(), splitmix(), splitmix()]);
}

Deno.test("the BigInt reference reproduces xoshiro128**'s published outputs from state {1, 2, 3, 4}", () => {
  const g = xoshiro128ss([1n, 2n, 3n, 4n]);
  assert.deepEqual(Array.from({ length: 6 }, () => g.next().value), [
    11520,
    0,
    5927040,
    70819200,
    2031721883,
    1637235492,
  ]);
});

Deno.test("uint32 is xoshiro128** (checked against a BigInt implementation)", () => {
  for (const seed of [0, 1, 42, 0xffffffff, -7]) {
    const rng = createRng(seed), ref = referenceStream(seed);
    for (let i = 0; i < 2000; i++) assert.equal(rng.uint32(), ref.next().value, `seed ${seed}, output ${i}`);
  }
});

Deno.test("same seed, same sequence; different seeds differ", () => {
  const a = createRng(123), b = createRng(123), c = createRng(124);
  const sa = Array.from({ length: 100 }, () => a.uint32());
  const sb = Array.from({ length: 100 }, () => b.uint32());
  const sc = Array.from({ length: 100 }, () => c.uint32());
  assert.deepEqual(sa, sb);
  assert.ok(sa.filter((v, i) => v === sc[i]).length <= 1);
  assert.deepEqual(randomNormal(createRng(5), 50), randomNormal(createRng(5), 50));
  assert.deepEqual(permutation(createRng(5), 50), permutation(createRng(5), 50));
  assert.notDeepEqual(permutation(createRng(5), 50), permutation(createRng(6), 50));
  // Generators do not share state.
  const x = createRng(9), y = createRng(9);
  x.uint32();
  x.normal();
  assert.equal(createRng(9).uint32(), y.uint32());
});

Deno.test("uint32, float and int stay in range", () => {
  const rng = createRng(7);
  for (let i = 0; i < 20000; i++) {
    const u = rng.uint32();
    assert.ok(Number.isInteger(u) && u >= 0 && u <= 0xffffffff);
    const f = rng.float();
    assert.ok(f >= 0 && f < 1);
  }
  for (const n of [1, 2, 3, 7, 10, 1000, 2 ** 31 + 5]) {
    for (let i = 0; i < 2000; i++) {
      const k = rng.int(n);
      assert.ok(Number.isInteger(k) && k >= 0 && k < n, `int(${n}) = ${k}`);
    }
  }
});

Deno.test("int(n) is uniform (chi-square over 10 bins)", () => {
  const rng = createRng(8), n = 100000, counts = new Array(10).fill(0);
  for (let i = 0; i < n; i++) counts[rng.int(10)]++;
  const chi2 = counts.reduce((s, c) => s + (c - n / 10) ** 2 / (n / 10), 0);
  // 9 degrees of freedom: P(χ² > 33.7) ≈ 1e-4.
  assert.ok(chi2 < 33.7, `chi² = ${chi2}, counts ${counts}`);
});

Deno.test("normal: mean 0 and variance 1 within statistical bounds on 100k samples", () => {
  for (const seed of [1, 2]) {
    const rng = createRng(seed), n = 100000;
    let s1 = 0, s2 = 0, s4 = 0, tail = 0;
    for (let i = 0; i < n; i++) {
      const z = rng.normal();
      assert.ok(Number.isFinite(z));
      s1 += z, s2 += z * z, s4 += z ** 4;
      if (Math.abs(z) > 1.959964) tail++;
    }
    const mean = s1 / n, variance = s2 / n - mean * mean;
    // Standard errors: mean 1/√n ≈ 0.0032, variance √(2/n) ≈ 0.0045, fourth moment √(96/n) ≈ 0.031; 5σ bounds.
    assert.ok(Math.abs(mean) < 5 / Math.sqrt(n), `mean ${mean}`);
    assert.ok(Math.abs(variance - 1) < 5 * Math.sqrt(2 / n), `variance ${variance}`);
    assert.ok(Math.abs(s4 / n - 3) < 5 * Math.sqrt(96 / n), `fourth moment ${s4 / n}`);
    // 5% outside ±1.96; binomial standard error √(0.05·0.95/n) ≈ 0.0007.
    assert.ok(Math.abs(tail / n - 0.05) < 5 * Math.sqrt(0.05 * 0.95 / n), `tail ${tail / n}`);
  }
  const scaled = randomNormal(createRng(3), 20000, 0.1);
  const m2 = scaled.reduce((s, v) => s + v * v, 0) / scaled.length;
  assert.ok(Math.abs(m2 - 0.01) < 5 * 0.01 * Math.sqrt(2 / 20000), `scaled second moment ${m2}`);
});

Deno.test("permutation is a permutation, and shuffles", () => {
  const rng = createRng(11);
  for (const n of [0, 1, 2, 5, 100, 1001]) {
    const p = permutation(rng, n);
    assert.equal(p.length, n);
    assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  }
  const p = permutation(rng, 1000);
  const fixed = p.filter((v, i) => v === i).length;
  // Fixed points of a random permutation are ≈ Poisson(1).
  assert.ok(fixed < 10, `${fixed} fixed points`);
  // Every position of a 3-permutation equally likely: each of the 6 orders about 1/6 of the time.
  const counts = new Map<string, number>();
  for (let i = 0; i < 6000; i++) {
    const key = permutation(rng, 3).join();
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  assert.equal(counts.size, 6);
  for (const c of counts.values()) assert.ok(Math.abs(c - 1000) < 5 * Math.sqrt(6000 * (1 / 6) * (5 / 6)));
});
