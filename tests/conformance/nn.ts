/**
 * Conformance of the transformer kernels (RMSNorm, RoPE, causal GQA attention, SwiGLU, cross-entropy; forward and
 * backward) against the TS references in `core/nn/`, on odd shapes: one-token sequences, lengths that are not multiples
 * of any tile (7, 33), grouped-query ratios 1, 2 and 3, both RoPE pairings, ignored targets.
 *
 * @module
 */

import { rejects } from "node:assert/strict";
import type { AttentionShape, DecoderLayerWeights } from "../../core/backend.ts";
import { OptionError, ShapeError } from "../../core/errors.ts";
import { decoderLayerWith } from "../../core/nn/decoder_layer.ts";
import { tsBackend } from "../../backends/ts/mod.ts";
import { attention, attentionBackward } from "../../core/nn/attention.ts";
import { matmul } from "../../core/linalg/matmul.ts";
import { crossEntropy } from "../../core/nn/cross_entropy.ts";
import { rmsNorm, rmsNormBackward } from "../../core/nn/rms_norm.ts";
import { rope } from "../../core/nn/rope.ts";
import { swiglu, swigluBackward, swigluLinear } from "../../core/nn/swiglu.ts";
import { createRng, randomNormal, type Rng } from "../../core/random.ts";
import { type Matrix, matrix } from "../../core/tensor.ts";
import { assertClose } from "../assert_close.ts";
import type { ConformanceCase } from "./case.ts";

function randomMatrix(rng: Rng, rows: number, cols: number, scale = 1): Matrix {
  return matrix(rows, cols, randomNormal(rng, rows * cols, scale));
}

/** Compares with a tolerance relative to the largest reference value, so it does not depend on the data's scale. */
function close(got: Matrix | Float32Array, want: Matrix | Float32Array, tol: number, what: string): void {
  const g = "data" in got ? got : { data: got, shape: [got.length] };
  const w = "data" in want ? want : { data: want, shape: [want.length] };
  if (g.shape.join("×") !== w.shape.join("×")) throw new Error(`${what}: shape ${g.shape} ≠ expected ${w.shape}`);
  let maxRef = 0;
  for (const v of w.data) maxRef = Math.max(maxRef, Math.abs(v));
  assertClose(g.data, w.data, { atol: tol * Math.max(maxRef, 1e-30), rtol: tol }, what);
}

const ATTENTION_SHAPES: AttentionShape[] = [
  { batch: 1, seqLen: 1, heads: 2, kvHeads: 2, headDim: 8 },
  { batch: 3, seqLen: 1, heads: 3, kvHeads: 1, headDim: 4 },
  { batch: 2, seqLen: 7, heads: 4, kvHeads: 2, headDim: 6 },
  { batch: 1, seqLen: 7, heads: 3, kvHeads: 3, headDim: 16 },
  { batch: 2, seqLen: 33, heads: 6, kvHeads: 2, headDim: 8 },
  { batch: 1, seqLen: 33, heads: 4, kvHeads: 2, headDim: 64 },
];

/** Every nn kernel case. */
export const nnCases: ConformanceCase[] = [
  {
    name: "rmsNorm and rmsNormBackward",
    async run({ backend, toleranceScale }) {
      const rng = createRng(21);
      for (const [n, d] of [[1, 1], [7, 33], [66, 385]]) {
        const x = randomMatrix(rng, n, d, 3), dy = randomMatrix(rng, n, d);
        const w = randomNormal(rng, d);
        const tol = 2e-6 * toleranceScale;
        close(await backend.rmsNorm(x, w, 1e-5), rmsNorm(x, w, 1e-5), tol, `rmsNorm ${n}×${d}`);
        const got = await backend.rmsNormBackward(x, w, dy, 1e-5), want = rmsNormBackward(x, w, dy, 1e-5);
        close(got.dx, want.dx, 1e-5 * toleranceScale, `rmsNormBackward dx ${n}×${d}`);
        close(got.dweight, want.dweight, 1e-5 * Math.sqrt(n) * toleranceScale, `rmsNormBackward dweight ${n}×${d}`);
      }
    },
  },
  ...(["half", "interleaved"] as const).map((pairing): ConformanceCase => ({
    name: `rope ${pairing}, forward and inverse`,
    async run({ backend, toleranceScale }) {
      const rng = createRng(22);
      for (const [batch, seqLen, heads, headDim] of [[1, 1, 1, 2], [3, 7, 3, 8], [2, 33, 2, 64], [1, 600, 1, 16]]) {
        const x = randomMatrix(rng, batch * seqLen, heads * headDim);
        for (const inverse of [false, true]) {
          const options = { seqLen, headDim, theta: 10000, pairing, inverse };
          // Angles reach seqLen radians; a float32 angle carries an absolute error of about seqLen·6e-8.
          const tol = (2e-6 + 1.2e-7 * seqLen) * toleranceScale;
          close(await backend.rope(x, options), rope(x, options), tol, `rope ${batch}×${seqLen}×${heads}×${headDim}`);
        }
      }
    },
  })),
  {
    name: "attention and attentionBackward (GQA ratios 1, 2, 3)",
    async run({ backend, toleranceScale }) {
      const rng = createRng(23);
      for (const shape of ATTENTION_SHAPES) {
        const t = shape.batch * shape.seqLen, qc = shape.heads * shape.headDim, kc = shape.kvHeads * shape.headDim;
        const q = randomMatrix(rng, t, qc, 1.5), k = randomMatrix(rng, t, kc, 1.5), v = randomMatrix(rng, t, kc);
        const dout = randomMatrix(rng, t, qc);
        const label = Object.values(shape).join("×");
        const tol = 1e-5 * Math.sqrt(shape.seqLen) * toleranceScale;
        close(await backend.attention(q, k, v, shape), attention(q, k, v, shape), tol, `attention ${label}`);
        const got = await backend.attentionBackward(q, k, v, dout, shape);
        const want = attentionBackward(q, k, v, dout, shape);
        close(got.dq, want.dq, 2 * tol, `attentionBackward dq ${label}`);
        close(got.dk, want.dk, 2 * tol, `attentionBackward dk ${label}`);
        close(got.dv, want.dv, 2 * tol, `attentionBackward dv ${label}`);
      }
    },
  },
  {
    name: "swiglu and swigluBackward",
    async run({ backend, toleranceScale }) {
      const rng = createRng(24);
      for (const [n, d] of [[1, 1], [7, 33], [33, 1031]]) {
        const gate = randomMatrix(rng, n, d, 4), up = randomMatrix(rng, n, d), dy = randomMatrix(rng, n, d);
        const tol = 2e-6 * toleranceScale;
        close(await backend.swiglu(gate, up), swiglu(gate, up), tol, `swiglu ${n}×${d}`);
        const got = await backend.swigluBackward(gate, up, dy), want = swigluBackward(gate, up, dy);
        close(got.dgate, want.dgate, 2 * tol, `swigluBackward dgate ${n}×${d}`);
        close(got.dup, want.dup, 2 * tol, `swigluBackward dup ${n}×${d}`);
      }
    },
  },
  {
    name: "swigluLinear against matmul and swiglu composed; mismatched weights refused",
    async run({ backend, toleranceScale }) {
      const rng = createRng(26);
      // 100×385: more than one packed block of x deep and more than one thread's strips of rows.
      for (const [m, k, n] of [[1, 1, 1], [7, 33, 5], [100, 385, 70]]) {
        const x = randomMatrix(rng, m, k), gate = randomMatrix(rng, n, k, 0.2), up = randomMatrix(rng, n, k, 0.2);
        const tol = 1e-5 * Math.sqrt(k) * toleranceScale;
        close(await backend.swigluLinear(x, gate, up), swigluLinear(x, gate, up), tol, `swigluLinear ${m}×${k}→${n}`);
      }
      const x = randomMatrix(rng, 3, 4);
      await rejects(backend.swigluLinear(x, randomMatrix(rng, 2, 4), randomMatrix(rng, 3, 4)), ShapeError);
      await rejects(backend.swigluLinear(x, randomMatrix(rng, 2, 5), randomMatrix(rng, 2, 5)), ShapeError);
    },
  },
  {
    name: "crossEntropy with ignored targets and gradient scales",
    async run({ backend, toleranceScale }) {
      const rng = createRng(25);
      for (const [n, vocab] of [[1, 2], [7, 37], [33, 4099]]) {
        const logits = randomMatrix(rng, n, vocab, 5);
        const targets = new Int32Array(n);
        for (let t = 0; t < n; t++) targets[t] = t % 4 === 3 ? -1 : rng.int(vocab);
        const perToken = new Float32Array(n);
        for (let t = 0; t < n; t++) perToken[t] = rng.normal();
        const tol = 2e-6 * toleranceScale;
        for (const scale of [undefined, 1 / n, perToken]) {
          const got = await backend.crossEntropy(logits, targets, scale);
          const want = crossEntropy(logits, targets, scale);
          const label = `crossEntropy ${n}×${vocab} scale=${typeof scale === "object" ? "per token" : scale}`;
          close(got.losses, want.losses, tol, `${label} losses`);
          for (let t = 0; t < n; t++) {
            if (targets[t] === -1 && got.losses[t] !== 0) throw new Error(`${label}: ignored row ${t} has a loss`);
          }
          if (want.dlogits === undefined) continue;
          if (got.dlogits === undefined) throw new Error(`${label}: no gradient returned`);
          close(got.dlogits, want.dlogits, tol, `${label} dlogits`);
        }
      }
    },
  },
  {
    name: "linearCrossEntropy against the reference matmul then crossEntropy",
    async run({ backend, toleranceScale }) {
      const rng = createRng(26);
      // Rows past any row block (1, 37, 70), vocabularies that are not whole tiles (5, 4099), depths past one packed
      // block (800) and none at all (every logit 0: each counted loss is log(vocab)).
      for (const [n, hidden, vocab] of [[1, 3, 5], [37, 50, 13], [70, 800, 4099], [9, 0, 6]]) {
        const x = randomMatrix(rng, n, hidden, 0.5), w = randomMatrix(rng, vocab, hidden, 0.5);
        const targets = new Int32Array(n);
        for (let t = 0; t < n; t++) targets[t] = t % 5 === 4 ? -1 : rng.int(vocab);
        const got = await backend.linearCrossEntropy(x, w, targets);
        const want = crossEntropy(matmul(x, w, { transB: true }), targets).losses;
        const label = `linearCrossEntropy ${n}×${hidden} by ${vocab}`;
        close(got, want, 2e-5 * toleranceScale, label);
        for (let t = 0; t < n; t++) {
          if (targets[t] === -1 && got[t] !== 0) throw new Error(`${label}: ignored row ${t} has a loss`);
        }
      }
      const x = randomMatrix(rng, 3, 4), w = randomMatrix(rng, 6, 4);
      await rejects(backend.linearCrossEntropy(x, randomMatrix(rng, 6, 5), new Int32Array(3)), ShapeError);
      await rejects(backend.linearCrossEntropy(x, w, new Int32Array(2)), ShapeError);
      await rejects(backend.linearCrossEntropy(x, w, new Int32Array([0, 6, 1])), ShapeError);
    },
  },
  {
    name: "decoderLayer against the reference kernels composed (both RoPE pairings, GQA)",
    async run({ backend, toleranceScale }) {
      const rng = createRng(27);
      for (const pairing of ["half", "interleaved"] as const) {
        const attention: AttentionShape = { batch: 2, seqLen: 7, heads: 3, kvHeads: 1, headDim: 4 };
        const [hidden, f, T] = [10, 14, 14];
        const gains = (n: number) => Float32Array.from(randomNormal(rng, n, 0.2), (v) => 1 + v);
        const w: DecoderLayerWeights = {
          inputNorm: gains(hidden),
          q: randomMatrix(rng, 12, hidden, 0.3),
          k: randomMatrix(rng, 4, hidden, 0.3),
          v: randomMatrix(rng, 4, hidden, 0.3),
          o: randomMatrix(rng, hidden, 12, 0.3),
          postAttentionNorm: gains(hidden),
          gate: randomMatrix(rng, f, hidden, 0.3),
          up: randomMatrix(rng, f, hidden, 0.3),
          down: randomMatrix(rng, hidden, f, 0.3),
        };
        const options = { attention, eps: 1e-5, ropeTheta: 10000, ropePairing: pairing };
        const x = randomMatrix(rng, T, hidden);
        const got = await backend.decoderLayer(x, w, options);
        close(got, await decoderLayerWith(tsBackend, x, w, options), 2e-5 * toleranceScale, `decoderLayer ${pairing}`);
        await rejects(backend.decoderLayer(randomMatrix(rng, T - 1, hidden), w, options), ShapeError);
        await rejects(backend.decoderLayer(x, { ...w, down: randomMatrix(rng, hidden, f + 1) }, options), ShapeError);
        await rejects(
          backend.decoderLayer(x, w, { ...options, attention: { ...attention, kvHeads: 2, heads: 3 } }),
          OptionError,
        );
      }
    },
  },
];
