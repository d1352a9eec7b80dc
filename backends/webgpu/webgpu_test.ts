/**
 * WebGPU-specific tests beyond the conformance suite: the GPTQ column loop and the whole-layer GPU GPTQ against the
 * TS references, the blocked linear algebra on sizes that straddle its 64-wide blocks, the k-means assignment step,
 * adapter refusal messages, and the float32 vs vec4 matmul paths. Uses the adapter the conformance test picks.
 *
 * @module
 */

import assert from "node:assert/strict";
import { gptq } from "../../algorithms/gptq.ts";
import type { Backend } from "../../core/backend.ts";
import { BackendError, NotPositiveDefiniteError } from "../../core/errors.ts";
import { fitGrid } from "../../core/grids/fit.ts";
import { NF4 } from "../../core/grids/tables.ts";
import type { GridSpec } from "../../core/grids/types.ts";
import { cholesky, choleskyInverse } from "../../core/linalg/cholesky.ts";
import { gramAccumulate } from "../../core/linalg/gram.ts";
import { nearestCentroids } from "../../core/linalg/kmeans.ts";
import { triangularSolve } from "../../core/linalg/triangular.ts";
import { gptqQuantize } from "../../core/quant/gptq_kernel.ts";
import { createRng, randomNormal, type Rng } from "../../core/random.ts";
import { eye, type Matrix, matrix, matrix64, transpose } from "../../core/tensor.ts";
import { tsBackend } from "../ts/mod.ts";
import { assertClose, maxRelativeError } from "../../tests/assert_close.ts";
import type { AdapterChoice } from "./adapter.ts";
import { gpuNearestCentroids } from "./kmeans.ts";
import { uploadF32 } from "./upload.ts";
import { createWebGpuBackend, type WebGpuBackend } from "./mod.ts";

async function pickAdapter(): Promise<AdapterChoice | undefined> {
  const forced = Deno.env.get("PTQ_WEBGPU_ADAPTER") as AdapterChoice | undefined;
  if (forced) return forced;
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return undefined;
  const hw = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (hw && !hw.info.isFallbackAdapter) return "hardware";
  return (hw ?? await gpu.requestAdapter({ forceFallbackAdapter: true })) ? "software" : undefined;
}

const adapter = await pickAdapter();
let backend: Promise<WebGpuBackend> | undefined;
const gpuBackend = () => backend ??= createWebGpuBackend({ adapter });

function test(name: string, fn: (b: WebGpuBackend) => Promise<void>): void {
  Deno.test({
    name: `webgpu: ${name}`,
    ignore: adapter === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => fn(await gpuBackend()),
  });
}

function spd(rng: Rng, n: number): Matrix<Float64Array> {
  const h = matrix64(n, n);
  gramAccumulate(h, matrix(2 * n + 3, n, randomNormal(rng, (2 * n + 3) * n)), 1 / n);
  for (let i = 0; i < n; i++) h.data[i * n + i] += 0.1;
  return h;
}

function sameCodes(a: Uint8Array, b: Uint8Array): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) same += +(a[i] === b[i]);
  return same / a.length;
}

test("gptqQuantize matches the reference kernel (uniform, symmetric, MSE, NF4, fixed groups)", async (b) => {
  const rng = createRng(3);
  const cases: [number, number, number, GridSpec, "perrow" | number][] = [
    [37, 300, 128, { kind: "uniform", bits: 4 }, 128],
    [37, 300, 128, { kind: "uniform", bits: 3, symmetric: true }, 64],
    [16, 130, 32, { kind: "uniform", bits: 4, mse: true }, 48],
    [33, 200, 128, NF4, 128],
    [20, 90, 128, { kind: "uniform", bits: 4 }, "perrow"],
  ];
  for (const [rows, cols, blockSize, grid, g] of cases) {
    const w = matrix(rows, cols, randomNormal(rng, rows * cols));
    const r = transpose(cholesky(spd(rng, cols))); // any upper factor with a positive diagonal will do
    const groups = g === "perrow"
      ? { kind: "fixed" as const, params: fitGrid(w, grid, 0), groupOfColumn: new Int32Array(cols) }
      : { kind: "dynamic" as const, groupSize: g };
    const args = { w, r, grid, blockSize, groups };
    const got = await b.gptqQuantize(args), want = gptqQuantize(args);
    assert.ok(sameCodes(got.codes, want.codes) > 0.999, `codes ${JSON.stringify(grid)} g=${g}`);
    assert.ok(maxRelativeError(got.dequantized.data, want.dequantized.data) < 1e-5);
    assertClose(got.params.scale, want.params.scale, { atol: 0, rtol: 1e-6 });
  }
});

test("gptqFromHessian matches algorithms/gptq on the TS backend (act-order, static groups, per-row, NF4)", async (b) => {
  const rng = createRng(9);
  const cases: [number, number, Record<string, unknown>][] = [
    [40, 300, { bits: 4, groupSize: 128, actOrder: true }],
    [33, 200, { bits: 3, groupSize: 0, actOrder: true }],
    [33, 200, { bits: 4, groupSize: 64, actOrder: true, staticGroups: true }],
    [20, 150, { grid: NF4, groupSize: 32, actOrder: false }],
  ];
  for (const [rows, cols, opts] of cases) {
    const w = matrix(rows, cols, randomNormal(rng, rows * cols, 0.05));
    const x = matrix(2 * cols, cols, randomNormal(rng, 2 * cols * cols));
    for (let t = 0; t < 2 * cols; t++) {
      for (let j = 1; j < cols; j++) x.data[t * cols + j] += 0.7 * x.data[t * cols + j - 1];
    }
    const h = matrix64(cols, cols);
    gramAccumulate(h, x, 1 / cols);
    for (let i = 0; i < cols; i++) h.data[5 * cols + i] = h.data[i * cols + 5] = 0; // a dead column
    const want = await gptq(w, h, { ...opts, backend: tsBackend });
    const grid = (opts.grid as GridSpec | undefined) ?? { kind: "uniform", bits: opts.bits as number };
    const got = await b.gptqFromHessian(w, h, { ...opts, grid });
    assert.ok(sameCodes(got.codes, want.codes!) > 0.995, `codes ${JSON.stringify(opts)}`);
    assert.deepEqual([...got.groupIndex], [...want.groupIndex!]);
    assert.deepEqual(got.permutation && [...got.permutation], want.permutation && [...want.permutation]);
    assertClose([got.layerLoss, got.damping], [want.stats.layerLoss, want.stats.damping!], { atol: 0, rtol: 1e-3 });
  }
});

test("blocked Cholesky, triangular solves and inverse agree with the float64 references", async (b) => {
  const rng = createRng(5);
  for (const n of [1, 5, 64, 65, 130]) {
    const h = spd(rng, n);
    const l = cholesky(h);
    assert.ok(maxRelativeError((await b.cholesky(h)).data, l.data) < 2e-6, `cholesky ${n}`);
    const u = transpose(l);
    for (const lower of [true, false]) {
      for (const trans of [false, true]) {
        const t = lower ? l : u;
        const rhs = matrix64(n, 7, Float64Array.from(randomNormal(rng, n * 7)));
        const opts = { lower, transpose: trans };
        assert.ok(
          maxRelativeError((await b.triangularSolve(t, rhs, opts)).data, triangularSolve(t, rhs, opts).data) < 1e-5,
        );
        assert.ok(
          maxRelativeError((await b.triangularSolve(t, eye(n), opts)).data, triangularSolve(t, eye(n), opts).data) <
            1e-5,
        );
      }
    }
    assert.ok(maxRelativeError((await b.choleskyInverse(l)).data, choleskyInverse(l).data) < 1e-5, `inverse ${n}`);
  }
  await assert.rejects(() => b.cholesky(matrix64(3, 3, new Float64Array([1, 0, 0, 0, -1, 0, 0, 0, 1]))), (e) => {
    return e instanceof NotPositiveDefiniteError && e.pivot === 1 && e.value === -1;
  });
});

test("nearest-centroid assignment matches the reference", async (b) => {
  const rng = createRng(1);
  const p = matrix(500, 7, randomNormal(rng, 3500)), c = matrix(37, 7, randomNormal(rng, 37 * 7));
  const got = await gpuNearestCentroids(b.context, p, c), want = nearestCentroids(p, c);
  assert.deepEqual([...got.assignments], [...want.assignments]);
  assertClose(got.distances, want.distances, { atol: 1e-6, rtol: 1e-5 });
});

test("matmul on shapes that mix the vec4 and scalar paths", async (b: Backend) => {
  const rng = createRng(2);
  const a = matrix(130, 68, randomNormal(rng, 130 * 68)), c = matrix(68, 132, randomNormal(rng, 68 * 132));
  const got = await b.matmul(a, c);
  const ref = matrix(130, 132);
  for (let i = 0; i < 130; i++) {
    for (let j = 0; j < 132; j++) {
      let s = 0;
      for (let k = 0; k < 68; k++) s += a.data[i * 68 + k] * c.data[k * 132 + j];
      ref.data[i * 132 + j] = s;
    }
  }
  assertClose(got.data, ref.data, { atol: 1e-4, rtol: 1e-4 });
});

Deno.test("webgpu: an unknown adapter choice is refused with a BackendError", async () => {
  await assert.rejects(() => createWebGpuBackend({ adapter: "gpu0" as AdapterChoice }), BackendError);
});

test("float64 uploads are narrowed on the GPU exactly as Math.fround (ties to even, overflow, NaN, −0)", async (b) => {
  const rng = createRng(4);
  const values = [
    1 + 2 ** -24,
    1 + 3 * 2 ** -24,
    -(1 + 2 ** -24),
    3.5e38,
    -3.5e38,
    NaN,
    -0,
    0,
    1e-30,
    2 ** 127 * 1.9999999,
  ];
  for (let i = 0; i < 54; i++) values.push(rng.normal() * 10 ** (rng.int(20) - 10));
  const m = matrix64(8, 8, Float64Array.from(values));
  const batch = b.context.batch();
  const buf = uploadF32(b.context, batch, m, 8);
  const got = new Float32Array(await batch.read(buf, 64 * 4));
  buf.destroy();
  assert.deepEqual([...got].map(String), values.map((v) => String(Math.fround(v))));
});
