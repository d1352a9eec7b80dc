import assert from "node:assert/strict";
import { join } from "node:path";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { FormatError } from "../core/errors.ts";
import { NF4 } from "../core/grids/tables.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import { packableModel, quantizeAll, tempDir, writeHfFolder } from "../tests/export_fixtures.ts";
import { forward, linearNames, withLinearWeights } from "./llama.ts";
import { readPtqCheckpoint, savePtqCheckpoint } from "./ptq_format.ts";
import { openSafetensors, writeSafetensors } from "./safetensors.ts";

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** A plain-object tree with undefined-valued keys removed (typed arrays kept as they are). */
function withoutUndefined(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutUndefined);
  if (typeof v !== "object" || v === null || ArrayBuffer.isView(v)) return v;
  return Object.fromEntries(
    Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, withoutUndefined(x)]),
  );
}

/** Asserts two layers hold the same fields, typed arrays compared element for element and weights bit for bit. */
function assertSameLayer(got: QuantizedLayer, want: QuantizedLayer): void {
  assert.deepEqual(bits(got.dequantized.data), bits(want.dequantized.data));
  assert.deepEqual(got.dequantized.shape, want.dequantized.shape);
  const { dequantized: _a, ...g } = got;
  const { dequantized: _b, ...w } = want;
  // A field present with the value undefined (SpQR's permutation without act-order) is not stored: the same layer.
  assert.deepEqual(g, withoutUndefined(w));
}

const CASES: [string, string, Record<string, unknown>, string][] = [
  ["rtn 3-bit g16", "rtn", { bits: 3, groupSize: 16 }, "grid"],
  ["gptq 4-bit g16 act-order", "gptq", { bits: 4, groupSize: 16, actOrder: true }, "grid"],
  ["rtn nf4 g32", "rtn", { grid: NF4, groupSize: 32 }, "grid"],
  ["spqr 3-bit with outliers", "spqr", { bits: 3, groupSize: 16, outlierThreshold: 0.05 }, "grid"],
  ["billm", "billm", {}, "billm"],
  ["vptq with residual and outlier codebooks", "vptq", {
    vectorSize: 4,
    codebookSize: 16,
    residualCodebookSize: 4,
    outlierFraction: 0.1,
  }, "vptq"],
];

for (const [label, method, options, rule] of CASES) {
  Deno.test(`ptq format round trip is exact: ${label}`, async () => {
    const dir = await tempDir();
    try {
      const base = packableModel();
      await writeHfFolder(join(dir, "src"), base);
      const { layers, model } = await quantizeAll(base, method, options);
      if (method === "spqr") {
        const n = [...layers.values()].reduce((a, l) => a + (l.outliers?.values.length ?? 0), 0);
        assert.ok(n > 0, "the SpQR case should keep some outliers");
      }
      const s = await savePtqCheckpoint(join(dir, "out"), model, layers, join(dir, "src"));
      assert.ok(
        s.layers.every((l) => l.reconstruction === rule),
        JSON.stringify(s.layers.map((l) => l.reconstruction)),
      );
      const ck = await readPtqCheckpoint(join(dir, "out"));
      assert.equal(ck.layers.size, layers.size);
      for (const [name, l] of layers) assertSameLayer(ck.layers.get(name)!, l);
      const tokens = Int32Array.from({ length: 10 }, (_, i) => (i * 5) % 19);
      const a = await forward(ck.model, tokens, { batch: 1, seqLen: 10 });
      const b = await forward(model, tokens, { batch: 1, seqLen: 10 });
      assert.deepEqual(a.logits.data, b.logits.data);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("ptq format carries unknown fields by name and stores weights densely when no rule reproduces them", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel({ pairing: "interleaved", tied: true });
    const { layers, model: _ } = await quantizeAll(base, "rtn", { bits: 2, groupSize: 32 });
    // A LoRC-like layer: the grid plus a rank-2 correction A·B that no registered rule knows.
    const rng = createRng(4);
    const name = linearNames(base.config)[3];
    const l = layers.get(name)!;
    const [rows, cols] = l.dequantized.shape;
    const a = matrix(rows, 2, randomNormal(rng, rows * 2, 0.01)), b = matrix(2, cols, randomNormal(rng, 2 * cols));
    const d = l.dequantized.data.slice();
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        d[i * cols + j] += a.data[2 * i] * b.data[j] + a.data[2 * i + 1] * b.data[cols + j];
      }
    }
    const lorc = { ...l, method: "lorc", dequantized: matrix(rows, cols, d), lowRank: { a, b, rank: 2, note: "x" } };
    layers.set(name, lorc as QuantizedLayer);
    const model = withLinearWeights(base, new Map([...layers].map(([n, q]) => [n, q.dequantized])));
    const s = await savePtqCheckpoint(join(dir, "out"), model, layers);
    assert.equal(s.layers.find((x) => x.name === name)!.reconstruction, "dense");
    using st = await openSafetensors(join(dir, "out", "ptq.safetensors"));
    assert.deepEqual(st.info(`${name}.lowRank.a.data`).shape, [rows, 2]);
    assert.equal(st.info(`${name}.codes`).dtype, "U8");
    assert.equal(st.info(`${name}.codes`).shape[0], rows * cols * 2 / 8, "2-bit codes are bit-packed");
    const ck = await readPtqCheckpoint(join(dir, "out", "ptq.safetensors"));
    assertSameLayer(ck.layers.get(name)!, lorc as QuantizedLayer);
    assert.equal(ck.config.ropePairing, "interleaved");
    assert.equal(ck.model.weights.lmHead, ck.model.weights.embed);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ptq format: FormatError naming the file for foreign, corrupt and truncated files", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    const { layers, model } = await quantizeAll(base, "rtn", { bits: 4, groupSize: 16 });
    await savePtqCheckpoint(join(dir, "out"), model, layers);
    const file = join(dir, "out", "ptq.safetensors");
    const bytes = await Deno.readFile(file);
    await Deno.writeFile(file, bytes.subarray(0, bytes.length - 7));
    await assert.rejects(
      readPtqCheckpoint(join(dir, "out")),
      (e) => e instanceof FormatError && e.message.includes(file),
    );
    await writeSafetensors(join(dir, "plain.safetensors"), [{
      name: "x",
      dtype: "F32",
      shape: [1],
      data: new Float32Array(1),
    }]);
    await assert.rejects(readPtqCheckpoint(join(dir, "plain.safetensors")), /not a ptq checkpoint/);
    // A document that references a tensor the file lacks.
    await Deno.writeFile(file, bytes);
    using st = await openSafetensors(file);
    const doc = JSON.parse(st.metadata.ptq);
    const first = Object.keys(doc.layers)[0];
    doc.layers[first].fields.codes.$tensor = "nope";
    const tensors = [];
    for (const n of st.names) {
      tensors.push({ name: n, dtype: st.info(n).dtype, shape: st.info(n).shape, data: await st.read(n) });
    }
    await writeSafetensors(join(dir, "bad.safetensors"), tensors, { format: "ptq", ptq: JSON.stringify(doc) });
    await assert.rejects(readPtqCheckpoint(join(dir, "bad.safetensors")), /missing tensor nope/);
    doc.version = 99;
    await writeSafetensors(join(dir, "new.safetensors"), tensors, { format: "ptq", ptq: JSON.stringify(doc) });
    await assert.rejects(readPtqCheckpoint(join(dir, "new.safetensors")), /newer than this reader/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
