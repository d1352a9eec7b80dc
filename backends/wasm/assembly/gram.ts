// Gram accumulation: `gemm` computes the upper triangle of XᵀX in float32 (tiles that reach it), then these kernels
// fold `alpha ·` that symmetric matrix into the caller's float32 or float64 accumulator.

/** Tile edge of the symmetric fold: the transposed reads of the lower triangle stay within cached lines. */
const T: i32 = 32;

/**
 * `acc[i][j] += alpha · C[min(i,j)][max(i,j)]` for rows `[r0, r1)`, with `acc` float64 (`f64acc` nonzero) or float32.
 * `C` is `[d, d]` float32 whose upper triangle (diagonal included) holds XᵀX.
 */
export function gramFold(acc: usize, f64acc: i32, c: usize, d: i32, alpha: f64, r0: i32, r1: i32): void {
  for (let i0 = r0; i0 < r1; i0 += T) {
    const i1 = min(i0 + T, r1);
    for (let j0 = 0; j0 < d; j0 += T) {
      const j1 = min(j0 + T, d);
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) {
          const v = <f64>(i <= j ? load<f32>(c + (<usize>(i * d + j) << 2)) : load<f32>(c + (<usize>(j * d + i) << 2)));
          const o = <usize>(i * d + j);
          if (f64acc) {
            store<f64>(acc + (o << 3), load<f64>(acc + (o << 3)) + alpha * v);
          } else {
            store<f32>(acc + (o << 2), <f32>(<f64>load<f32>(acc + (o << 2)) + alpha * v));
          }
        }
      }
    }
  }
}
