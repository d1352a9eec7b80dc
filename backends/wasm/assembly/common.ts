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
