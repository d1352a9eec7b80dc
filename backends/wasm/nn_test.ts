/**
 * The WASM attention kernels on sequences longer than one block of queries (the conformance suite's sequences fit in
 * one), against the reference in `core/nn/attention.ts`, with one and several threads.
 *
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import type { AttentionShape } from "../../core/backend.ts";
import { attention, attentionBackward } from "../../core/nn/attention.ts";
import { crossEntropy } from "../../core/nn/cross_entropy.ts";
import { decoderLayerWith } from "../../core/nn/decoder_layer.ts";
import { swiglu } from "../../core/nn/swiglu.ts";
import { createRng, randomNormal } from "../../core/random.ts";
import { type Matrix, matrix } from "../../core/tensor.ts";
import { assertClose } from "../../tests/assert_close.ts";
import { createWasmBackend } from "./mod.ts";
import { wasmThreadsTest } from "./testing.ts";

function close(got: Matrix, want: Matrix, tol: number, what: string): void {
  let maxRef = 0;
  for (const v of want.data) maxRef = Math.max(maxRef, Math.abs(v));
  assertClose(got.data, want.data, { atol: tol * maxRef, rtol: tol }, what);
}

wasmThreadsTest(
  "wasm attention over several query blocks matches the reference; threads do not change it",
  async (one, many) => {
    const rng = createRng(31);
    const shape: AttentionShape = { batch: 2, seqLen: 203, heads: 4, kvHeads: 2, headDim: 24 };
    const t = shape.batch * shape.seqLen, qc = shape.heads * shape.headDim, kc = shape.kvHeads * shape.headDim;
    const q = matrix(t, qc, randomNormal(rng, t * qc, 1.5)), k = matrix(t, kc, randomNormal(rng, t * kc, 1.5));
    const v = matrix(t, kc, randomNormal(rng, t * kc)), dout = matrix(t, qc, randomNormal(rng, t * qc));
    const tol = 1e-5 * Math.sqrt(shape.seqLen);
    const out = await one.attention(q, k, v, shape);
    close(out, attention(q, k, v, shape), tol, "attention");
    deepStrictEqual((await many.attention(q, k, v, shape)).data, out.data);
    const got = await one.attentionBackward(q, k, v, dout, shape);
    const want = attentionBackward(q, k, v, dout, shape);
    close(got.dq, want.dq, 2 * tol, "dq");
    close(got.dk, want.dk, 2 * tol, "dk");
    close(got.dv, want.dv, 2 * tol, "dv");
    const got3 = await many.attentionBackward(q, k, v, dout, shape);
    deepStrictEqual([got3.dq.data, got3.dk.data, got3.dv.data], [got.dq.data, got.dk.data, got.dv.data]);
  },
);

Deno.test("wasm swiglu: the vectorised exponential keeps silu within 3 ulp (relative 3·2⁻²³) of float64 over [−80, 80]", async () => {
  // silu(g) = g·σ(g) with σ built from e^−|g|: every exponent from −80 to 0 goes through the float32 `exp4`.
  const n = 40_003; // not a multiple of 4: the scalar tail is covered too
  const g = Float32Array.from({ length: n }, (_, i) => -80 + (160 * i) / (n - 1));
  const ones = new Float32Array(n).fill(1);
  for (const relaxed of [false, true]) {
    const wasm = await createWasmBackend({ threads: 1, relaxed });
    try {
      const y = (await wasm.swiglu(matrix(1, n, g), matrix(1, n, ones))).data;
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const x = g[i], want = x / (1 + Math.exp(-x));
        if (want !== 0) worst = Math.max(worst, Math.abs(y[i] - want) / Math.abs(want));
      }
      ok(worst <= 3 * 2 ** -23, `relaxed ${relaxed}: worst relative error ${worst.toExponential(2)}`);
      const three = Float32Array.of(1, 1, 1);
      const special = (await wasm.swiglu(matrix(1, 3, Float32Array.of(NaN, Infinity, -Infinity)), matrix(1, 3, three)))
        .data;
      // As the reference computes them: silu(−∞) = −∞·σ(−∞) = −∞·0 is NaN there too.
      const want = swiglu(matrix(1, 3, Float32Array.of(NaN, Infinity, -Infinity)), matrix(1, 3, three)).data;
      deepStrictEqual([...special], [...want], "NaN, ±∞");
    } finally {
      wasm.dispose();
    }
  }
});

Deno.test("wasm crossEntropy: the vectorised float64 exponential gives the float64 reference's losses and gradients to float32 rounding", async () => {
  // Rows of 1001 logits (odd: the scalar tail is covered) spread over [−900, 60]: exponents down to −960 go through
  // the underflow branch, the others through the rational form.
  const rows = 5, vocab = 1001, rng = createRng(9);
  const z = Float32Array.from({ length: rows * vocab }, (_, i) => -900 + 960 * ((i * 7919) % vocab) / vocab);
  for (let i = 0; i < z.length; i += 37) z[i] = 60 * rng.float() - 10;
  const targets = Int32Array.of(0, 500, 1000, -1, 77), logits = matrix(rows, vocab, z);
  const want = crossEntropy(logits, targets, 0.25);
  for (const relaxed of [false, true]) {
    const wasm = await createWasmBackend({ threads: 1, relaxed });
    try {
      const got = await wasm.crossEntropy(logits, targets, 0.25);
      for (let t = 0; t < rows; t++) {
        ok(Math.abs(got.losses[t] - want.losses[t]) <= 2 ** -23 * Math.abs(want.losses[t]), `loss ${t}`);
      }
      let worst = 0;
      for (let i = 0; i < z.length; i++) {
        const w = want.dlogits!.data[i], g = got.dlogits!.data[i];
        worst = Math.max(worst, Math.abs(g - w) / Math.max(Math.abs(w), 2 ** -126));
      }
      ok(worst <= 2 ** -23, `relaxed ${relaxed}: worst relative gradient error ${worst.toExponential(2)}`);
    } finally {
      wasm.dispose();
    }
  }
});

wasmThreadsTest(
  "wasm linearCrossEntropy equals its own matmul then crossEntropy to the bit, on one thread and several",
  async (one, many) => {
    const rng = createRng(32);
    // 101 rows: three whole blocks of 32 and a partial one; 523 columns: past one packed block of depth.
    const [n, hidden, vocab] = [101, 523, 1030];
    const x = matrix(n, hidden, randomNormal(rng, n * hidden, 0.3));
    const w = matrix(vocab, hidden, randomNormal(rng, vocab * hidden, 0.3));
    const targets = Int32Array.from({ length: n }, (_, t) => t % 9 === 8 ? -1 : rng.int(vocab));
    const composed = (await one.crossEntropy(await one.matmul(x, w, { transB: true }), targets)).losses;
    deepStrictEqual(await one.linearCrossEntropy(x, w, targets), composed);
    deepStrictEqual(await many.linearCrossEntropy(x, w, targets), composed);
  },
);

wasmThreadsTest(
  "wasm decoderLayer equals its own kernels composed to the bit, on one thread and several",
  async (one, many) => {
    const rng = createRng(33);
    // Rows that are not whole register tiles or row blocks; both pairings; two queries per kv head.
    const attention: AttentionShape = { batch: 3, seqLen: 45, heads: 4, kvHeads: 2, headDim: 8 };
    const [hidden, f, T] = [40, 72, 135];
    const m = (rows: number, cols: number) => matrix(rows, cols, randomNormal(rng, rows * cols, 0.2));
    const gains = () => Float32Array.from(randomNormal(rng, hidden, 0.2), (v) => 1 + v);
    const w = {
      inputNorm: gains(),
      q: m(32, hidden),
      k: m(16, hidden),
      v: m(16, hidden),
      o: m(hidden, 32),
      postAttentionNorm: gains(),
      gate: m(f, hidden),
      up: m(f, hidden),
      down: m(hidden, f),
    };
    const x = m(T, hidden);
    for (const ropePairing of ["half", "interleaved"] as const) {
      const options = { attention, eps: 1e-6, ropeTheta: 500000, ropePairing };
      const composed = await decoderLayerWith(one, x, w, options);
      deepStrictEqual((await one.decoderLayer(x, w, options)).data, composed.data);
      deepStrictEqual((await many.decoderLayer(x, w, options)).data, composed.data);
    }
    // An MLP of width 0 adds nothing (its empty sums are zeros, not what the arena held before).
    const empty = { ...w, gate: m(0, hidden), up: m(0, hidden), down: m(hidden, 0) };
    const options = { attention, eps: 1e-6, ropeTheta: 10000, ropePairing: "half" as const };
    await one.decoderLayer(x, w, options); // leaves the arena dirty
    deepStrictEqual(
      (await one.decoderLayer(x, empty, options)).data,
      (await decoderLayerWith(one, x, empty, options)).data,
    );
  },
);
