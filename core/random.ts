/**
 * A small seeded generator (xoshiro128**, seeded through splitmix32) for reproducible sampling: calibration windows,
 * k-means++ seeding, random test matrices. The state lives in the returned object, never in a module global.
 *
 * @module
 */

/** A seeded stream of pseudo-random numbers. */
export interface Rng {
  /** Uniform 32-bit unsigned integer. */
  uint32(): number;
  /** Uniform float in [0, 1) with 32 random bits. */
  float(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Standard normal (Box-Muller). */
  normal(): number;
}

/**
 * A generator whose sequence depends only on `seed`.
 *
 * @example
 * ```ts
 * import { createRng } from "./random.ts";
 * const a = createRng(7), b = createRng(7);
 * console.assert(a.uint32() === b.uint32());
 * ```
 */
export function createRng(seed: number): Rng {
  let x = seed >>> 0;
  const splitmix = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const s = new Uint32Array([splitmix(), splitmix(), splitmix(), splitmix()]);
  let spare: number | undefined;
  const uint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  const float = () => uint32() / 4294967296;
  return {
    uint32,
    float,
    int: (n) => Math.floor(float() * n),
    normal: () => {
      if (spare !== undefined) {
        const v = spare;
        spare = undefined;
        return v;
      }
      let u = 0;
      while (u === 0) u = float();
      const r = Math.sqrt(-2 * Math.log(u)), a = 2 * Math.PI * float();
      spare = r * Math.sin(a);
      return r * Math.cos(a);
    },
  };
}

function rotl(v: number, k: number): number {
  return ((v << k) | (v >>> (32 - k))) >>> 0;
}

/** A float32 array of standard normal values. */
export function randomNormal(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * scale;
  return out;
}

/** Fisher-Yates shuffle of `0..n-1`. */
export function permutation(rng: Rng, n: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
