/**
 * Reference SwiGLU gating of Llama's MLP: `silu(gate) ⊙ up` with `silu(g) = g·σ(g)`, and its backward pass.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import { matmul } from "../linalg/matmul.ts";
import { type FloatArray, type Matrix, zerosLike } from "../tensor.ts";

function checkSame(what: string, a: Matrix<FloatArray>, b: Matrix<FloatArray>, names: string): void {
  if (a.shape[0] !== b.shape[0] || a.shape[1] !== b.shape[1] || a.data.length !== b.data.length) {
    throw new ShapeError(`${what}: ${names} differ in shape, ${a.shape.join("×")} vs ${b.shape.join("×")}`);
  }
}

/** `1/(1+e^(−g))` without overflow for large negative `g`. */
function sigmoid(g: number): number {
  if (g >= 0) return 1 / (1 + Math.exp(-g));
  const e = Math.exp(g);
  return e / (1 + e);
}

/**
 * `silu(gate) ⊙ up`, element-wise.
 *
 * @returns a matrix of the element type of `gate`.
 * @throws {ShapeError} when the operands differ in shape.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { swiglu } from "./swiglu.ts";
 * const y = swiglu(fromRows([[0, 1]]), fromRows([[3, 2]]));
 * console.assert(y.data[0] === 0 && Math.abs(y.data[1] - 2 / (1 + Math.exp(-1))) < 1e-6);
 * ```
 */
export function swiglu<A extends FloatArray>(gate: Matrix<A>, up: Matrix<FloatArray>): Matrix<A> {
  checkSame("swiglu", gate, up, "gate and up");
  const out = zerosLike(gate);
  const G = gate.data, U = up.data, Y = out.data;
  for (let i = 0; i < G.length; i++) Y[i] = G[i] * sigmoid(G[i]) * U[i];
  return out;
}

/**
 * Gradients of {@link swiglu}: `dup = dy·silu(g)`, `dgate = dy·up·σ(g)·(1 + g·(1 − σ(g)))`.
 *
 * @throws {ShapeError} when the operands differ in shape.
 */
export function swigluBackward<A extends FloatArray>(
  gate: Matrix<A>,
  up: Matrix<FloatArray>,
  dy: Matrix<FloatArray>,
): { dgate: Matrix<A>; dup: Matrix<A> } {
  checkSame("swigluBackward", gate, up, "gate and up");
  checkSame("swigluBackward", gate, dy, "gate and dy");
  const dgate = zerosLike(gate), dup = zerosLike(gate);
  const G = gate.data, U = up.data, DY = dy.data, DG = dgate.data, DU = dup.data;
  for (let i = 0; i < G.length; i++) {
    const g = G[i], s = sigmoid(g), d = DY[i];
    DU[i] = d * g * s;
    DG[i] = d * U[i] * s * (1 + g * (1 - s));
  }
  return { dgate, dup };
}

/**
 * The first half of a gated MLP: `silu(x·Gᵀ) ⊙ (x·Uᵀ)` for `[out, in]` weights `G` and `U` (LLaMA's
 * `act_fn(gate_proj(x)) * up_proj(x)`), composed from the reference matmul and {@link swiglu}.
 *
 * @throws {ShapeError} when the weights differ in shape or do not take rows of `x`.
 *
 * @example
 * ```ts
 * import { fromRows } from "../tensor.ts";
 * import { swigluLinear } from "./swiglu.ts";
 * const y = swigluLinear(fromRows([[1, 0]]), fromRows([[0, 0]]), fromRows([[5, 7]])); // silu(0) · 5
 * console.assert(y.data[0] === 0);
 * ```
 */
export function swigluLinear(x: Matrix, gate: Matrix, up: Matrix): Matrix {
  checkSwigluLinear(x, gate, up);
  return swiglu(matmul(x, gate, { transB: true }), matmul(x, up, { transB: true }));
}

/** The shape checks of {@link swigluLinear}, shared by the backends. */
export function checkSwigluLinear(x: Matrix, gate: Matrix, up: Matrix): void {
  checkSame("swigluLinear", gate, up, "gate and up weights");
  if (gate.shape[1] !== x.shape[1]) {
    throw new ShapeError(`swigluLinear: weights take ${gate.shape[1]} inputs, rows of x have ${x.shape[1]}`);
  }
}
