// Row-wise kernels of the forward pass that keep a decoder layer in WASM memory: RMSNorm, RoPE and the residual add.
// Each repeats its reference in `core/nn/` operation for operation in float64 (scalar, in the same order), so the
// results are the reference's to the bit.

/** `y = x / sqrt(mean(x²) + eps) · w` for rows `[r0, r1)` of `[n, d]`: `core/nn/rms_norm.ts`'s `rmsNorm`. */
export function rmsNormRows(x: usize, w: usize, eps: f64, d: i32, y: usize, r0: i32, r1: i32): void {
  for (let i = r0; i < r1; i++) {
    const row = x + (<usize>(i * d) << 2), out = y + (<usize>(i * d) << 2);
    let ss: f64 = 0;
    for (let j = 0; j < d; j++) {
      const v = <f64>load<f32>(row + (<usize>j << 2));
      ss += v * v;
    }
    const r = 1 / Math.sqrt(ss / <f64>d + eps);
    for (let j = 0; j < d; j++) {
      const o = <usize>j << 2;
      store<f32>(out + o, <f32>(<f64>load<f32>(row + o) * r * <f64>load<f32>(w + o)));
    }
  }
}

/**
 * RoPE of tokens `[t0, t1)` of `[n, cols]` (heads of `2·half` values) in place, `core/nn/rope.ts`'s `rope`: token `t`
 * at position `t mod seqLen`, pair `i` of each head rotated by the float64 tables `cos`/`sin` (`[seqLen, half]`) times
 * `sign`. Elements `i·stride` and `i·stride + partner` form pair `i` ("half": 1 and `half`; "interleaved": 2 and 1).
 */
export function ropeRows(
  x: usize, cols: i32, half: i32, cos: usize, sin: usize, seqLen: i32, stride: i32, partner: i32, sign: f64,
  t0: i32, t1: i32,
): void {
  const heads = cols / (2 * half);
  for (let t = t0; t < t1; t++) {
    const tab = <usize>((t % seqLen) * half) << 3;
    for (let h = 0; h < heads; h++) {
      const base = x + (<usize>(t * cols + h * 2 * half) << 2);
      for (let i = 0; i < half; i++) {
        const c = load<f64>(cos + tab + (<usize>i << 3)), s = sign * load<f64>(sin + tab + (<usize>i << 3));
        const pa = base + (<usize>(i * stride) << 2), pb = pa + (<usize>partner << 2);
        const a = <f64>load<f32>(pa), b = <f64>load<f32>(pb);
        store<f32>(pa, <f32>(a * c - b * s));
        store<f32>(pb, <f32>(a * s + b * c));
      }
    }
  }
}

/** `y[i] = a[i] + b[i]` for `i` in `[i0, i1)` (float32, `i0` a multiple of 4). */
export function addRange(a: usize, b: usize, y: usize, i0: i32, i1: i32): void {
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, load<f32>(a + o) + load<f32>(b + o));
  }
}
