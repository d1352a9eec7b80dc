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

/**
 * `eˣ` per lane in float32 (Cephes' `expf`): `x = n·ln 2 + r` with `|r| ≤ ½ ln 2` (ln 2 split in two so that `n·ln 2`
 * is exact), a degree-6 polynomial for `eʳ`, and `2ⁿ` built in the exponent bits. Within 2 ulp of `eˣ` for `x` in
 * `[−87.3, 88.3]`; below that range the result is 0 (`eˣ` would be denormal), above it `e^88.3`; NaN stays NaN.
 */
// @ts-ignore: decorator
@inline export function exp4(x: v128): v128 {
  const underflow = f32x4.lt(x, f32x4.splat(-87.3));
  x = f32x4.min(f32x4.max(x, f32x4.splat(-87.3)), f32x4.splat(88.3));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = madd(p, r, f32x4.splat(1.3981999507e-3));
  p = madd(p, r, f32x4.splat(8.3334519073e-3));
  p = madd(p, r, f32x4.splat(4.1665795894e-2));
  p = madd(p, r, f32x4.splat(1.6666665459e-1));
  p = madd(p, r, f32x4.splat(5.0000001201e-1));
  const y = f32x4.add(madd(f32x4.mul(p, r), r, r), f32x4.splat(1));
  const pow2n = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(y, pow2n), underflow);
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
