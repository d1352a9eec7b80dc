import { deepEqual, equal, ok } from "node:assert/strict";
import { tsBackend } from "../backends/ts/mod.ts";
import type { Backend } from "../core/backend.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { type FloatArray, type Matrix, matrix } from "../core/tensor.ts";
import { correlatedInputs } from "../tests/numeric.ts";
import { hessianOf } from "./hessian.ts";
import { layerQuantizer } from "./methods.ts";
import { prepareLayer } from "./prepare.ts";

const rows = 16, cols = 32;
const w = matrix(rows, cols, randomNormal(createRng(3), rows * cols, 0.1));
const h = await hessianOf(correlatedInputs(256, cols, 4));

/** The TS backend, recording the element type of every Hessian it is asked to factor. */
function spy(): { backend: Backend; seen: string[] } {
  const seen: string[] = [];
  const backend: Backend = {
    ...tsBackend,
    upperCholeskyOfInverse: <A extends FloatArray>(m: Matrix<A>) => {
      seen.push(m.data.constructor.name);
      return tsBackend.upperCholeskyOfInverse(m);
    },
    reverseCholesky: <A extends FloatArray>(m: Matrix<A>) => {
      seen.push(m.data.constructor.name);
      return tsBackend.reverseCholesky(m);
    },
  };
  return { backend, seen };
}

Deno.test("factorPrecision reaches the factorisation in every Hessian engine (GPTQ, SpQR, BiLLM, VPTQ)", async () => {
  for (const method of ["gptq", "spqr", "billm", "vptq"]) {
    for (const [precision, type] of [["f64", "Float64Array"], ["f32", "Float32Array"]] as const) {
      const { backend, seen } = spy();
      const options = { bits: 3, vectorSize: 2, codebookSize: 16, factorPrecision: precision, backend };
      const q = await layerQuantizer(method, options)("layer", w, h);
      ok(Number.isFinite(q.stats.layerLoss), `${method} ${precision}`);
      ok(seen.length > 0, `${method} ${precision}: no factorisation`);
      deepEqual(new Set(seen), new Set([type]), `${method} ${precision}`);
    }
  }
});

Deno.test("prepareLayer: f32 and f64 factorisations give the same U to float32 accuracy", async () => {
  const [a, b] = await Promise.all(
    (["f64", "f32"] as const).map((p) =>
      prepareLayer(w, h, { damping: 0.01, order: true, factorPrecision: p, backend: tsBackend })
    ),
  );
  equal(b.u.data.constructor, Float32Array);
  deepEqual(a.permutation, b.permutation);
  let scale = 0, err = 0;
  for (let i = 0; i < cols * cols; i++) {
    scale = Math.max(scale, Math.abs(a.u.data[i]));
    err = Math.max(err, Math.abs(a.u.data[i] - b.u.data[i]));
  }
  ok(err <= 1e-5 * scale, `max |ΔU| ${err} of ${scale}`);
});

Deno.test("prepareLayer: the permuted Hessian is h[perm[i]][perm[j]] off the diagonal, from float32 or float64", async () => {
  const sources = [h, { data: Float64Array.from(h.data), shape: h.shape }];
  for (const source of sources) {
    for (const factorPrecision of ["f64", "f32"] as const) {
      const p = await prepareLayer(w, source, { damping: 0.01, order: true, factorPrecision, backend: tsBackend });
      const perm = p.permutation!;
      ok(perm.some((c, k) => c !== k), "act-order permutes this Hessian");
      equal(p.h.data.constructor, factorPrecision === "f32" ? Float32Array : Float64Array);
      const label = `${source.data.constructor.name} → ${factorPrecision}`;
      for (let i = 0; i < cols; i++) {
        for (let j = 0; j < cols; j++) {
          if (i === j) continue;
          const want = source.data[perm[i] * cols + perm[j]];
          equal(p.h.data[i * cols + j], factorPrecision === "f32" ? Math.fround(want) : want, `${label} (${i}, ${j})`);
        }
      }
    }
  }
});
