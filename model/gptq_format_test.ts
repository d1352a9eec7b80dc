import assert from "node:assert/strict";
import { join } from "node:path";
import { gptq } from "../algorithms/gptq.ts";
import { hessianOf } from "../algorithms/hessian.ts";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { rtn } from "../algorithms/rtn.ts";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { FormatError, OptionError } from "../core/errors.ts";
import { NF4 } from "../core/grids/tables.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { matrix } from "../core/tensor.ts";
import { assertClose } from "../tests/assert_close.ts";
import { packableModel, quantizeAll, tempDir, writeHfFolder } from "../tests/export_fixtures.ts";
import { sharedPath, sharedTest } from "../tests/shared.ts";
import {
  gptqIncompatibility,
  packGptqLayer,
  readGptqCheckpoint,
  readGptqConfig,
  saveGptqCheckpoint,
  unpackGptqLayer,
} from "./gptq_format.ts";
import { loadHfModel } from "./hf_loader.ts";
import { forward, linearNames, llamaFromWeights, withLinearWeights } from "./llama.ts";
import { perplexity } from "./perplexity.ts";
import { quantizeModel } from "./quantize_model.ts";
import { openSafetensors, writeSafetensors } from "./safetensors.ts";
import { loadTokenizer } from "./tokenizer.ts";

/** A random layer [rows, cols] and a full-rank Hessian. */
async function randomLayer(rows: number, cols: number, seed = 1) {
  const rng = createRng(seed);
  const w = matrix(rows, cols, randomNormal(rng, rows * cols, 0.1));
  const h = await hessianOf(matrix(4 * cols, cols, randomNormal(rng, 4 * cols * cols)));
  return { w, h };
}

/** `layer` with scales rounded to f16 and its weights recomputed: what a GPTQ file holds exactly. */
function f16Rounded(layer: QuantizedLayer): QuantizedLayer {
  const p = layer.params!;
  const scale = p.scale.map((s) => f16BitsToF32(f32ToF16Bits(s)));
  const [rows, cols] = layer.dequantized.shape;
  const d = matrix(rows, cols);
  for (let i = 0; i < rows; i++) {
    for (let c = 0; c < cols; c++) {
      const k = i * p.groups + layer.groupIndex![c];
      d.data[i * cols + c] = Math.fround(scale[k] * Math.fround(layer.codes![i * cols + c] - p.zero[k]));
    }
  }
  return { ...layer, dequantized: d, params: { ...p, scale } };
}

/** GPTQ's 3-bit `pack` loop for one column of codes, written out the way the reference writes it (word by word). */
function referencePack3(codes: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array((codes.length / 32) * 3);
  let i = 0, row = 0;
  while (row < out.length) {
    for (let j = i; j < i + 10; j++) out[row] |= codes[j] << (3 * (j - i));
    i += 10;
    out[row] |= codes[i] << 30;
    row++;
    out[row] |= (codes[i] >> 2) & 1;
    i++;
    for (let j = i; j < i + 10; j++) out[row] |= codes[j] << (3 * (j - i) + 1);
    i += 10;
    out[row] |= codes[i] << 31;
    row++;
    out[row] |= (codes[i] >> 1) & 3;
    i++;
    for (let j = i; j < i + 10; j++) out[row] |= codes[j] << (3 * (j - i) + 2);
    i += 10;
    row++;
  }
  return out;
}

Deno.test("qweight packs codes along the input dimension: 4-bit nibbles and GPTQ's 3-bit cross-word layout", async () => {
  const { w } = await randomLayer(32, 64, 7);
  const l4 = await rtn(w, undefined, { bits: 4, groupSize: 32 });
  const p4 = packGptqLayer(l4);
  // Word w of column j holds codes 8w..8w+7 of row j, lowest nibble first.
  for (const [j, word] of [[0, 0], [5, 3], [31, 7]]) {
    let expected = 0;
    for (let k = 0; k < 8; k++) expected |= l4.codes![j * 64 + 8 * word + k] << (4 * k);
    assert.equal(p4.qweight[word * 32 + j], expected | 0);
  }
  const l3 = await rtn(w, undefined, { bits: 3 });
  const p3 = packGptqLayer(l3);
  assert.equal(p3.qweight.length, (64 * 3 / 32) * 32);
  for (let j = 0; j < 32; j++) {
    const ref = referencePack3(l3.codes!.subarray(j * 64, (j + 1) * 64));
    for (let r = 0; r < ref.length; r++) assert.equal(p3.qweight[r * 32 + j] >>> 0, ref[r], `column ${j} word ${r}`);
  }
});

Deno.test("qzeros store zero − 1 under v1 (symmetric 4-bit zeros are 0x77777777) and zero under v2", async () => {
  const { w } = await randomLayer(32, 64, 8);
  const sym = await rtn(w, undefined, { bits: 4, groupSize: 32, symmetric: true });
  const v1 = packGptqLayer(sym, "gptq");
  assert.equal(v1.qzeros.length, 2 * 4);
  assert.ok(Array.from(v1.qzeros).every((z) => z === 0x77777777));
  const v2 = packGptqLayer(sym, "gptq_v2");
  assert.ok(Array.from(v2.qzeros).every((z) => z === (0x88888888 | 0)));
});

for (const bits of [2, 3, 4, 8]) {
  for (
    const [label, opts] of [
      ["per-row", { groupSize: 0 }],
      ["g16", { groupSize: 16 }],
      ["g16 act-order", { groupSize: 16, actOrder: true }],
      ["g16 act-order static", { groupSize: 16, actOrder: true, staticGroups: true }],
    ] as const
  ) {
    Deno.test(`pack → unpack is bit-exact: ${bits}-bit GPTQ ${label}`, async () => {
      const { w, h } = await randomLayer(32, 64, bits);
      const layer = await gptq(w, h, { bits, ...opts });
      for (const format of ["gptq", "gptq_v2"] as const) {
        if (format === "gptq" && layer.params!.zero.some((z) => z === 0)) continue;
        const back = unpackGptqLayer(packGptqLayer(layer, format), { format });
        const exact = f16Rounded(layer);
        assert.deepEqual(back.codes, layer.codes);
        assert.deepEqual(back.params!.zero, layer.params!.zero);
        assert.deepEqual(back.params!.scale, exact.params!.scale);
        assert.deepEqual(back.groupIndex, layer.groupIndex);
        assert.deepEqual(back.dequantized.data, exact.dequantized.data);
        // f16 scales are the only rounding: within 2^-11 relative of the in-memory weights.
        assertClose(back.dequantized.data, layer.dequantized.data, { atol: 1e-7, rtol: 2 ** -11 });
      }
    });
  }
}

Deno.test("layers without a GPTQ encoding are named and refused; zero points of 0 need v2", async () => {
  const { w, h } = await randomLayer(32, 64, 9);
  const nf4 = await rtn(w, h, { grid: NF4, groupSize: 16 });
  assert.equal(gptqIncompatibility(nf4)?.kind, "content");
  assert.throws(() => packGptqLayer(nf4, "gptq", "L"), OptionError);
  const b5 = await rtn(w, h, { bits: 5 });
  assert.match(gptqIncompatibility(b5)!.reason, /5-bit/);
  const odd = await rtn(matrix(20, 64, w.data.subarray(0, 20 * 64)), undefined, { bits: 4 });
  assert.equal(gptqIncompatibility(odd)?.kind, "shape");
  // A layer whose weights carry more than its codes (a low-rank correction, say) is refused.
  const plus = await rtn(w, h, { bits: 4 });
  const extra = { ...plus, dequantized: matrix(32, 64, plus.dequantized.data.map((x) => x + 1e-3)) };
  assert.match(gptqIncompatibility(extra)!.reason, /not scale·\(code − zero\)/);
  // All-positive groups fit min-max grids with zero point 0.
  const positive = await rtn(matrix(32, 64, w.data.map(Math.abs)), undefined, { bits: 4, groupSize: 16 });
  assert.ok(positive.params!.zero.some((z) => z === 0));
  assert.throws(() => packGptqLayer(positive, "gptq"), /zero point 0/);
  const back = unpackGptqLayer(packGptqLayer(positive, "gptq_v2"), { format: "gptq_v2" });
  assert.deepEqual(back.dequantized.data, f16Rounded(positive).dequantized.data);
});

Deno.test("unpacking rejects misshapen tensors and out-of-range g_idx", async () => {
  const { w } = await randomLayer(32, 64, 10);
  const p = packGptqLayer(await rtn(w, undefined, { bits: 4, groupSize: 32 }));
  assert.throws(() => unpackGptqLayer({ ...p, qweight: p.qweight.subarray(1) }), FormatError);
  const g = p.gIdx.slice();
  g[3] = 2;
  assert.throws(() => unpackGptqLayer({ ...p, gIdx: g }), /g_idx\[3\] = 2/);
});

async function logitsOf(model: Parameters<typeof forward>[0], tokens: Int32Array) {
  return (await forward(model, tokens, { batch: 1, seqLen: tokens.length })).logits.data;
}

for (const pairing of ["half", "interleaved"] as const) {
  Deno.test(`a GPTQ checkpoint of a tiny Llama (${pairing} RoPE) loads back with the in-memory model's logits`, async () => {
    const dir = await tempDir();
    try {
      const base = packableModel({ pairing });
      await writeHfFolder(join(dir, "src"), base);
      const { layers, model } = await quantizeAll(base, "gptq", { bits: 4, groupSize: 16, actOrder: true });
      const summary = await saveGptqCheckpoint(join(dir, "out"), model, layers, join(dir, "src"));
      assert.equal(summary.packed.length, 14);
      assert.equal(summary.descAct, true);
      const ck = await readGptqCheckpoint(join(dir, "out"));
      assert.equal(ck.config.ropePairing, "half");
      assert.equal(ck.quantization.bits, 4);
      assert.equal(ck.quantization.groupSize, 16);
      const tokens = Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 19);
      const expected = withLinearWeights(
        base,
        new Map([...layers].map(([n, l]) => [n, f16Rounded(l).dequantized])),
      );
      const got = await logitsOf(ck.model, tokens);
      if (pairing === "half") {
        // Same weights bit for bit, same forward pass: identical logits.
        assert.deepEqual(got, await logitsOf(expected, tokens));
      } else {
        // Rows of q and k were permuted into rotate-half order: the same model up to float rounding.
        assertClose(got, await logitsOf(expected, tokens), { atol: 1e-5, rtol: 1e-5 });
      }
      // And close to the in-memory model, whose scales were float32.
      assertClose(got, await logitsOf(model, tokens), { atol: 1e-2, rtol: 1e-2 });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("saveGptqCheckpoint: config, dtypes, atomic replacement, unpackable layers kept dense", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel({ tied: true });
    await writeHfFolder(join(dir, "src"), base, "BF16");
    const loaded = await loadHfModel(join(dir, "src"));
    const bf = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n));
    const { layers, model } = await quantizeAll(bf, "rtn", { bits: 3, groupSize: 32, symmetric: true });
    const out = join(dir, "out");
    const s = await saveGptqCheckpoint(out, model, layers, join(dir, "src"));
    assert.equal(s.checkpointFormat, "gptq");
    assert.equal(s.sym, true);
    assert.equal(s.descAct, false);
    // k and v have 16 outputs: 16·3 bits do not fill 32-bit words, so they stay float32 (dequantized).
    assert.deepEqual(s.dense.map((d) => d.name.replace(/^model\.layers\.\d\./, "")), [
      "self_attn.k_proj",
      "self_attn.v_proj",
      "self_attn.k_proj",
      "self_attn.v_proj",
    ]);
    const cfg = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
    assert.equal(cfg.quantization_config.quant_method, "gptq");
    assert.equal(cfg.quantization_config.bits, 3);
    assert.equal(cfg.quantization_config.group_size, 32);
    assert.equal(cfg.quantization_config.checkpoint_format, "gptq");
    assert.deepEqual(cfg.quantization_config.modules_in_block_to_quantize, [
      ["self_attn.q_proj"],
      ["self_attn.o_proj"],
      ["mlp.gate_proj", "mlp.up_proj"],
      ["mlp.down_proj"],
    ]);
    assert.equal(cfg.tie_word_embeddings, true);
    using st = await openSafetensors(join(out, "model.safetensors"));
    assert.equal(st.metadata.format, "pt");
    assert.equal(st.info("model.embed_tokens.weight").dtype, "BF16");
    assert.equal(st.has("lm_head.weight"), false);
    const qw = st.info("model.layers.0.mlp.down_proj.qweight");
    assert.deepEqual([qw.dtype, ...qw.shape], ["I32", 64 * 3 / 32, 32]);
    assert.deepEqual(st.info("model.layers.0.mlp.down_proj.qzeros").shape, [2, 32 * 3 / 32]);
    assert.deepEqual(st.info("model.layers.0.mlp.down_proj.scales").shape, [2, 32]);
    assert.equal(st.info("model.layers.0.mlp.down_proj.scales").dtype, "F16");
    assert.deepEqual(st.info("model.layers.0.mlp.down_proj.g_idx").shape, [64]);
    // Unquantized tensors come back bit for bit from bf16.
    const ck = await readGptqCheckpoint(out);
    assert.deepEqual(ck.model.weights.embed.data, bf.weights.embed.data);
    // Writing again replaces the folder this library wrote; a foreign non-empty folder is refused.
    await saveGptqCheckpoint(out, model, layers, join(dir, "src"));
    await Deno.mkdir(join(dir, "foreign"));
    await Deno.writeTextFile(join(dir, "foreign", "notes.txt"), "keep me");
    await assert.rejects(saveGptqCheckpoint(join(dir, "foreign"), model, layers, join(dir, "src")), OptionError);
    assert.equal(await Deno.readTextFile(join(dir, "foreign", "notes.txt")), "keep me");
    const leftovers = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
      n.includes(".tmp-") || n.includes(".old-")
    );
    assert.deepEqual(leftovers, []);

    // Modules left unquantized are written as plain weights and left out of modules_in_block_to_quantize.
    const partial = new Map([...layers].filter(([n]) => !n.endsWith("mlp.down_proj")));
    const s2 = await saveGptqCheckpoint(join(dir, "partial"), model, partial, join(dir, "src"));
    const cfg2 = JSON.parse(await Deno.readTextFile(join(dir, "partial", "config.json")));
    assert.deepEqual(cfg2.quantization_config.modules_in_block_to_quantize, [
      ["self_attn.q_proj"],
      ["self_attn.o_proj"],
      ["mlp.gate_proj", "mlp.up_proj"],
    ]);
    assert.equal(s2.packed.length, 8);
    const ck2 = await readGptqCheckpoint(join(dir, "partial"));
    assert.equal(ck2.layers.size, 8);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a zero point of 0 makes the auto format v2; explicit v1 refuses; mixed settings are refused", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    const { layers, model } = await quantizeAll(base, "rtn", { bits: 2, groupSize: 16 });
    const name = linearNames(base.config)[0];
    const l = layers.get(name)!;
    const zero = l.params!.zero.slice();
    const codes = l.codes!.slice();
    // Force one group to zero point 0 with codes that stay valid, and recompute its weights.
    zero[0] = 0;
    const cols = l.dequantized.shape[1];
    const d = l.dequantized.data.slice();
    for (let c = 0; c < cols; c++) {
      if (l.groupIndex![c] === 0) d[c] = Math.fround(l.params!.scale[0] * Math.fround(codes[c] - 0));
    }
    layers.set(name, { ...l, params: { ...l.params!, zero }, dequantized: matrix(l.dequantized.shape[0], cols, d) });
    await writeHfFolder(join(dir, "src"), base);
    const s = await saveGptqCheckpoint(join(dir, "auto"), model, layers, join(dir, "src"));
    assert.equal(s.checkpointFormat, "gptq_v2");
    assert.match(s.formatReason!, /zero point of 0/);
    assert.equal((await readGptqConfig(join(dir, "auto")))!.checkpointFormat, "gptq_v2");
    const back = await readGptqCheckpoint(join(dir, "auto"));
    assert.equal(back.layers.get(name)!.params!.zero[0], 0);
    await assert.rejects(
      saveGptqCheckpoint(join(dir, "v1"), model, layers, join(dir, "src"), { checkpointFormat: "gptq" }),
      /zero point 0/,
    );
    const mixed = new Map(layers);
    mixed.set(name, await rtn(l.dequantized, undefined, { bits: 4, groupSize: 16 }));
    await assert.rejects(saveGptqCheckpoint(join(dir, "mixed"), model, mixed, join(dir, "src")), /one GPTQ checkpoint/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readGptqCheckpoint: FormatError for corrupt and truncated checkpoints; AutoGPTQ's file layout reads", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    await writeHfFolder(join(dir, "src"), base);
    const { layers, model } = await quantizeAll(base, "rtn", { bits: 4, groupSize: 32 });
    const out = join(dir, "out");
    await saveGptqCheckpoint(out, model, layers, join(dir, "src"));
    await saveGptqCheckpoint(join(dir, "ref"), model, layers, join(dir, "src"));
    const file = join(out, "model.safetensors");
    const bytes = await Deno.readFile(file);
    await Deno.writeFile(file, bytes.subarray(0, bytes.length - 100));
    await assert.rejects(readGptqCheckpoint(out), (e) => e instanceof FormatError && e.message.includes(file));
    // A qweight of the wrong shape.
    await Deno.writeFile(file, bytes);
    using st = await openSafetensors(file);
    const tensors = [];
    for (const n of st.names) {
      const info = st.info(n);
      const data = await st.read(n);
      if (n === "model.layers.1.mlp.up_proj.qweight") {
        tensors.push({ name: n, dtype: info.dtype, shape: [info.shape[1], info.shape[0]], data });
      } else tensors.push({ name: n, dtype: info.dtype, shape: info.shape, data });
    }
    st.close();
    await writeSafetensors(file, tensors, { format: "pt" });
    await assert.rejects(readGptqCheckpoint(out), /up_proj\.qweight has shape/);
    // AutoGPTQ's layout: quantize_config.json and a named weights file (no config quantization_config, no g_idx).
    const auto = join(dir, "autogptq");
    await Deno.mkdir(auto);
    const cfg = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
    const { quantization_config: qc, ...plainConfig } = cfg;
    await Deno.writeTextFile(join(auto, "config.json"), JSON.stringify(plainConfig));
    await Deno.writeTextFile(
      join(auto, "quantize_config.json"),
      JSON.stringify({ ...qc, model_file_base_name: "gptq_model-4bit-32g" }),
    );
    using ref = await openSafetensors(join(dir, "ref", "model.safetensors"));
    const autoTensors = [];
    for (const n of ref.names.filter((n) => !n.endsWith(".g_idx"))) {
      autoTensors.push({ name: n, dtype: ref.info(n).dtype, shape: ref.info(n).shape, data: await ref.read(n) });
    }
    await writeSafetensors(join(auto, "gptq_model-4bit-32g.safetensors"), autoTensors, { format: "pt" });
    const a = await readGptqCheckpoint(auto);
    assert.equal(a.layers.size, 14);
    assert.deepEqual(
      a.model.weights.layers[0].q.data,
      (await readGptqCheckpoint(join(dir, "ref"))).model.weights.layers[0].q.data,
    );
    cfg.quantization_config.bits = 5;
    await Deno.writeTextFile(join(out, "config.json"), JSON.stringify(cfg));
    await assert.rejects(
      readGptqCheckpoint(out),
      (e) => e instanceof FormatError && /bits must be one of/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest(
  "llama-12m: a 4-bit g128 GPTQ checkpoint loads back with the same perplexity",
  ["models/llama-12m/config.json", "data/heldout.txt"],
  async () => {
    const t0 = performance.now();
    const src = sharedPath("models/llama-12m");
    const loaded = await loadHfModel(src);
    const base = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n), src);
    const { model, layers } = await quantizeModel(base, { method: "rtn", options: { bits: 4, groupSize: 128 } });
    const tokenizer = await loadTokenizer(src);
    const tokens = tokenizer.encode((await Deno.readTextFile(sharedPath("data/heldout.txt"))).slice(0, 40_000));
    const opts = { seqLen: 256, windows: 4, batch: 4 };
    const before = await perplexity(model, tokens, opts);
    const dir = await tempDir();
    try {
      const s = await saveGptqCheckpoint(join(dir, "gptq"), model, layers, src);
      assert.equal(s.packed.length, 42);
      const after = await perplexity((await readGptqCheckpoint(join(dir, "gptq"))).model, tokens, opts);
      const rel = Math.abs(after.ppl - before.ppl) / before.ppl;
      console.log(
        `llama-12m rtn 4-bit g128: ppl ${before.ppl.toFixed(4)} in memory, ${
          after.ppl.toFixed(4)
        } from the checkpoint ` +
          `(rel. diff ${rel.toExponential(2)}), ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      assert.ok(rel < 1e-3, `perplexity moved by ${rel}`);
      // The tokenizer came along.
      assert.deepEqual((await loadTokenizer(join(dir, "gptq"))).encode("Hello world"), tokenizer.encode("Hello world"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
