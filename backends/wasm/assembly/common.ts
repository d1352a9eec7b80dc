// Shared helpers of the kernels. Everything works on raw pointers into the one linear memory: the JS side lays out
// inputs and scratch space, the kernels never allocate.

/** `a·b + c` per lane: fused (relaxed SIMD) where the build enables it, else a multiply and an add. */
// @ts-ignore: decorator
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** Same as {@link madd} on two float64 lanes. */
// @ts-ignore: decorator
@inline export function madd64(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f64x2.relaxed_madd(a, b, c);
  return f64x2.add(f64x2.mul(a, b), c);
}

// V8 rebuilds a v128 constant from immediates at every use, also inside loops (three to four instructions each), so
// the exponentials read theirs from tables in memory: one load each, which binaryen cannot fold back into constants.

/** exp4's constants, four lanes each: clamp, log₂e, 1.5·2²³, ln 2 in two parts, polynomial, 1, 127 (as i32). */
const EXP4 = memory.data<f32>([
  -87.3, -87.3, -87.3, -87.3, 88.3, 88.3, 88.3, 88.3,
  1.4426950408889634, 1.4426950408889634, 1.4426950408889634, 1.4426950408889634,
  12582912, 12582912, 12582912, 12582912,
  0.693359375, 0.693359375, 0.693359375, 0.693359375,
  -2.12194440e-4, -2.12194440e-4, -2.12194440e-4, -2.12194440e-4,
  1.9875691500e-4, 1.9875691500e-4, 1.9875691500e-4, 1.9875691500e-4,
  1.3981999507e-3, 1.3981999507e-3, 1.3981999507e-3, 1.3981999507e-3,
  8.3334519073e-3, 8.3334519073e-3, 8.3334519073e-3, 8.3334519073e-3,
  4.1665795894e-2, 4.1665795894e-2, 4.1665795894e-2, 4.1665795894e-2,
  1.6666665459e-1, 1.6666665459e-1, 1.6666665459e-1, 1.6666665459e-1,
  5.0000001201e-1, 5.0000001201e-1, 5.0000001201e-1, 5.0000001201e-1,
  1, 1, 1, 1,
], 16);

/** The v128 at byte `offset` of a constant table. */
// @ts-ignore: decorator
@inline function k(table: usize, offset: usize): v128 {
  return v128.load(table + offset);
}

/**
 * `eˣ` per lane in float32 (Cephes' `expf`): `x = n·ln 2 + r` with `|r| ≤ ½ ln 2` (ln 2 split in two so that `n·ln 2`
 * is exact), a degree-6 polynomial for `eʳ`, and `2ⁿ` built in the exponent bits. Within 2 ulp of `eˣ` for `x` in
 * `[−87.3, 88.3]`; below that range the result is 0 (`eˣ` would be denormal), above it `e^88.3`; NaN stays NaN.
 */
// @ts-ignore: decorator
@inline export function exp4(x: v128): v128 {
  const underflow = f32x4.lt(x, k(EXP4, 0));
  // pmax/pmin (one instruction each, unlike max/min) with x first: NaN passes through, as it would through max/min.
  x = f32x4.pmin(f32x4.pmax(x, k(EXP4, 0)), k(EXP4, 16));
  // n = round-half-even(x·log₂e) by adding 1.5·2²³: the sum's low mantissa bits then hold n, for 2ⁿ below.
  const t = f32x4.add(f32x4.mul(x, k(EXP4, 32)), k(EXP4, 48));
  const n = f32x4.sub(t, k(EXP4, 48));
  let r = f32x4.sub(x, f32x4.mul(n, k(EXP4, 64)));
  r = f32x4.sub(r, f32x4.mul(n, k(EXP4, 80)));
  let p = madd(k(EXP4, 96), r, k(EXP4, 112));
  p = madd(p, r, k(EXP4, 128));
  p = madd(p, r, k(EXP4, 144));
  p = madd(p, r, k(EXP4, 160));
  p = madd(p, r, k(EXP4, 176));
  const y = f32x4.add(madd(f32x4.mul(p, r), r, r), k(EXP4, 192));
  const pow2n = i32x4.shl(i32x4.add(t, i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(y, pow2n), underflow);
}

/** exp2x64's constants, two lanes each: clamp, log₂e, 1.5·2⁵², ln 2 in two parts, P, Q, 1, 2. */
const EXP2X64 = memory.data<f64>([
  -708, -708, 709, 709, 1.4426950408889634073599, 1.4426950408889634073599, 6755399441055744, 6755399441055744,
  6.93145751953125e-1, 6.93145751953125e-1, 1.42860682030941723212e-6, 1.42860682030941723212e-6,
  1.26177193074810590878e-4, 1.26177193074810590878e-4, 3.02994407707441961300e-2, 3.02994407707441961300e-2,
  9.99999999999999999910e-1, 9.99999999999999999910e-1,
  3.00198505138664455042e-6, 3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.52448340349684104192e-3,
  2.27265548208155028766e-1, 2.27265548208155028766e-1, 2.00000000000000000009, 2.00000000000000000009,
  1, 1, 2, 2,
], 16);

/**
 * `eˣ` per lane in float64 (Cephes' `exp`): `x = n·ln 2 + r` (ln 2 in two parts, so that `n·ln 2` is exact), the
 * rational form `eʳ = 1 + 2r·P(r²) / (Q(r²) − r·P(r²))`, and `2ⁿ` built in the exponent bits. Within about 1 ulp of
 * `eˣ` for `x` in `[−708, 709]`; below that range the result is 0, above it `e^709`; NaN stays NaN.
 */
// @ts-ignore: decorator
@inline export function exp2x64(x: v128): v128 {
  const underflow = f64x2.lt(x, k(EXP2X64, 0));
  x = f64x2.pmin(f64x2.pmax(x, k(EXP2X64, 0)), k(EXP2X64, 16)); // as in exp4
  const t = f64x2.add(f64x2.mul(x, k(EXP2X64, 32)), k(EXP2X64, 48));
  const n = f64x2.sub(t, k(EXP2X64, 48)); // round-half-even(x·log₂e); t's low bits hold n
  let r = f64x2.sub(x, f64x2.mul(n, k(EXP2X64, 64)));
  r = f64x2.sub(r, f64x2.mul(n, k(EXP2X64, 80)));
  const rr = f64x2.mul(r, r);
  let p = f64x2.add(f64x2.mul(k(EXP2X64, 96), rr), k(EXP2X64, 112));
  p = f64x2.mul(f64x2.add(f64x2.mul(p, rr), k(EXP2X64, 128)), r);
  let q = f64x2.add(f64x2.mul(k(EXP2X64, 144), rr), k(EXP2X64, 160));
  q = f64x2.add(f64x2.mul(q, rr), k(EXP2X64, 176));
  q = f64x2.add(f64x2.mul(q, rr), k(EXP2X64, 192));
  const e = f64x2.add(k(EXP2X64, 208), f64x2.mul(k(EXP2X64, 224), f64x2.div(p, f64x2.sub(q, p))));
  const pow2n = i64x2.shl(i64x2.add(t, i64x2.splat(1023)), 52);
  return v128.andnot(f64x2.mul(e, pow2n), underflow);
}

/** Stores the transpose of the 4×4 block of rows `a0..a3` (f32x4 each) as four rows at `d0..d3`. */
// @ts-ignore: decorator
@inline export function transpose4(a0: v128, a1: v128, a2: v128, a3: v128, d0: usize, d1: usize, d2: usize, d3: usize): void {
  const t0 = i32x4.shuffle(a0, a1, 0, 4, 1, 5), t1 = i32x4.shuffle(a0, a1, 2, 6, 3, 7);
  const t2 = i32x4.shuffle(a2, a3, 0, 4, 1, 5), t3 = i32x4.shuffle(a2, a3, 2, 6, 3, 7);
  v128.store(d0, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
  v128.store(d1, i32x4.shuffle(t0, t2, 2, 3, 6, 7));
  v128.store(d2, i32x4.shuffle(t1, t3, 0, 1, 4, 5));
  v128.store(d3, i32x4.shuffle(t1, t3, 2, 3, 6, 7));
}

/** Reverses `count` values of type `T` at `a` in place: `J·M·J` of a square matrix is its storage read backwards. */
// @ts-ignore: decorator
@inline export function reverseValues<T>(a: usize, count: i32): void {
  let i: usize = a, j: usize = a + <usize>(count - 1) * sizeof<T>();
  while (i < j) {
    const t = load<T>(i);
    store<T>(i, load<T>(j));
    store<T>(j, t);
    i += sizeof<T>();
    j -= sizeof<T>();
  }
}

/** Start of the memory the JS side may use (above the module's static data), 64-byte aligned. */
export function heapBase(): usize {
  return (__heap_base + 63) & ~(63 as usize);
}

/** Stores `value` at `ptr` atomically: a signal for {@link spinWaitEqual} on another thread. */
export function atomicStore32(ptr: usize, value: i32): void {
  atomic.store<i32>(ptr, value);
}

/**
 * Spins until the i32 at `ptr` equals `value`, for at most `spins` checks, and stores 1 (seen) or 0 (gave up) at
 * `result`. With {@link atomicStore32} it shows that the shares of a parallel call really run at the same time.
 */
export function spinWaitEqual(ptr: usize, value: i32, spins: i32, result: usize): void {
  for (let i = 0; i < spins; i++) {
    if (atomic.load<i32>(ptr) == value) {
      store<i32>(result, 1);
      return;
    }
  }
  store<i32>(result, 0);
}
