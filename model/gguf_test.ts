import assert from "node:assert/strict";
import { join } from "node:path";
import { gguf } from "@huggingface/gguf";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { FormatError } from "../core/errors.ts";
import { createRng, randomNormal } from "../core/random.ts";
import { assertClose } from "../tests/assert_close.ts";
import { packableModel, quantizeAll, tempDir, writeHfFolder, writeTinyTokenizer } from "../tests/export_fixtures.ts";
import { sharedPath, sharedTest } from "../tests/shared.ts";
import { ropeRowSource } from "./checkpoint_files.ts";
import {
  dequantizeQ4_0,
  dequantizeQ4_K,
  dequantizeQ8_0,
  loadGgufModel,
  quantizeQ4_0,
  quantizeQ4_K,
  quantizeQ8_0,
  readGgufHeader,
  readGgufTensor,
  saveGguf,
} from "./gguf.ts";
import { loadHfModel } from "./hf_loader.ts";
import { forward, linearName, llamaFromWeights, type LlamaModel } from "./llama.ts";
import { loadLlama2cModel, loadLlama2cTokenizer } from "./llama2c.ts";
import { perplexity } from "./perplexity.ts";
import { loadTokenizer } from "./tokenizer.ts";

const f16 = (x: number) => f16BitsToF32(f32ToF16Bits(x));

Deno.test("Q8_0 and Q4_0 blocks follow llama.cpp's reference and dequantize within their rounding", () => {
  const x = randomNormal(createRng(1), 32 * 40, 0.05);
  x[5] = 0.5; // a block with one large value
  const q8 = quantizeQ8_0(x);
  assert.equal(q8.length, 40 * 34);
  const y8 = dequantizeQ8_0(q8, x.length);
  const q4 = quantizeQ4_0(x);
  assert.equal(q4.length, 40 * 18);
  const y4 = dequantizeQ4_0(q4, x.length);
  for (let b = 0; b < 40; b++) {
    const block = x.subarray(32 * b, 32 * b + 32);
    const amax = Math.max(...block.map(Math.abs));
    const d8 = f16(amax / 127);
    for (let j = 0; j < 32; j++) {
      // Half a step, plus the f16 rounding of d times the largest code.
      assert.ok(Math.abs(y8[32 * b + j] - block[j]) <= d8 / 2 + 127 * Math.abs(d8 - amax / 127) + 1e-7);
      // A full step at the clamped end (+amax maps to code 16, clamped to 15), half a step elsewhere.
      assert.ok(Math.abs(y4[32 * b + j] - block[j]) <= amax / 8 + 8 * Math.abs(f16(amax / 8) - amax / 8) + 1e-6);
    }
  }
  // Worked example: the block's extreme value is −8·d exactly, and 0.26 rounds to code 8 + round(0.26/0.125·…).
  const blk = new Float32Array(32);
  blk[0] = -1, blk[1] = 0.26, blk[2] = 0.875;
  const one = quantizeQ4_0(blk);
  assert.equal(f16BitsToF32(one[0] | (one[1] << 8)), 0.125);
  assert.equal(one[2] & 15, 0); // −1 / 0.125 + 8 = 0
  assert.equal(dequantizeQ4_0(one, 32)[1], 0.25);
  assert.equal(dequantizeQ4_0(one, 32)[2], 0.875);
  const q8one = quantizeQ8_0(blk);
  assert.equal((q8one[2] << 24) >> 24, -127);
  assert.equal((q8one[3] << 24) >> 24, Math.round(0.26 * 127));
});

Deno.test("Q4_K super-blocks stay within half a sub-block step", () => {
  const x = randomNormal(createRng(2), 256 * 6, 0.05);
  for (let i = 0; i < 256; i++) x[i] = Math.abs(x[i]) + 0.01; // a super-block with no negative value
  const q = quantizeQ4_K(x);
  assert.equal(q.length, 6 * 144);
  const y = dequantizeQ4_K(q, x.length);
  for (let s = 0; s < x.length / 32; s++) {
    const sub = x.subarray(32 * s, 32 * s + 32);
    const range = Math.max(...sub) - Math.min(0, ...sub);
    for (let l = 0; l < 32; l++) {
      const err = Math.abs(y[32 * s + l] - sub[l]);
      // A step is at most range/15 plus the 6-bit rounding of the scale; half a step plus float slack.
      assert.ok(err <= (range / 15) * 0.6 + 0.004, `sub-block ${s}: error ${err} for range ${range}`);
    }
  }
});

async function logits(model: LlamaModel, tokens: Int32Array): Promise<Float32Array> {
  return (await forward(model, tokens, { batch: 1, seqLen: tokens.length })).logits.data;
}

Deno.test("GGUF export parses with @huggingface/gguf: metadata, names, shapes, types, offsets", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    await writeHfFolder(join(dir, "src"), base);
    await writeTinyTokenizer(join(dir, "src"));
    const path = join(dir, "tiny.gguf");
    const s = await saveGguf(path, base, join(dir, "src"), { type: "q8_0" });
    const { metadata, tensorInfos, tensorDataOffset } = await gguf(path, { allowLocalFile: true });
    const m = metadata as Record<string, unknown>;
    assert.equal(m["general.architecture"], "llama");
    assert.equal(m["general.file_type"], 7);
    assert.equal(m["llama.embedding_length"], 32);
    assert.equal(m["llama.block_count"], 2);
    assert.equal(m["llama.feed_forward_length"], 64);
    assert.equal(m["llama.attention.head_count"], 4);
    assert.equal(m["llama.attention.head_count_kv"], 2);
    assert.equal(m["llama.rope.dimension_count"], 8);
    assert.equal(m["llama.context_length"], 64);
    assert.equal(m["llama.rope.freq_base"], 10000);
    assert.ok(Math.abs((m["llama.attention.layer_norm_rms_epsilon"] as number) - 1e-5) < 1e-10);
    assert.equal(m["tokenizer.ggml.model"], "gpt2");
    assert.equal(m["tokenizer.ggml.pre"], "gpt-2");
    assert.equal((m["tokenizer.ggml.tokens"] as string[]).length, 19);
    assert.equal((m["tokenizer.ggml.tokens"] as string[])[14], "ab");
    assert.deepEqual(m["tokenizer.ggml.merges"], ["a b", "Ġ a", "ab c"]);
    assert.deepEqual((m["tokenizer.ggml.token_type"] as number[]).slice(0, 4), [3, 3, 3, 1]);
    assert.equal(m["tokenizer.ggml.bos_token_id"], 1);
    const names = tensorInfos.map((t) => t.name);
    assert.deepEqual(names.slice(0, 11), [
      "token_embd.weight",
      "blk.0.attn_norm.weight",
      "blk.0.attn_q.weight",
      "blk.0.attn_k.weight",
      "blk.0.attn_v.weight",
      "blk.0.attn_output.weight",
      "blk.0.ffn_norm.weight",
      "blk.0.ffn_gate.weight",
      "blk.0.ffn_up.weight",
      "blk.0.ffn_down.weight",
      "blk.1.attn_norm.weight",
    ]);
    assert.deepEqual(names.slice(-2), ["output_norm.weight", "output.weight"]);
    const info = (n: string) => tensorInfos.find((t) => t.name === n)!;
    assert.deepEqual(info("blk.0.attn_k.weight").shape, [32n, 16n]);
    assert.deepEqual(info("blk.0.ffn_down.weight").shape, [64n, 32n]);
    assert.equal(info("blk.0.attn_q.weight").dtype, 8);
    assert.equal(info("blk.0.attn_norm.weight").dtype, 0);
    assert.deepEqual(s.types, { Q8_0: 16, F32: 5 });
    // Our reader agrees with the library on every tensor's absolute offset.
    const h = await readGgufHeader(path);
    for (const t of tensorInfos) {
      assert.equal(h.tensors.find((x) => x.name === t.name)!.offset, Number(tensorDataOffset + t.offset));
    }
    assert.equal(h.fileSize, s.bytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GGUF tensors dequantize back within Q8_0 rounding, q/k rows in llama.cpp's interleaved order", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    await writeHfFolder(join(dir, "src"), base);
    await writeTinyTokenizer(join(dir, "src"));
    const path = join(dir, "tiny.gguf");
    await saveGguf(path, base, join(dir, "src"), { type: "q8_0" });
    const h = await readGgufHeader(path);
    const q = base.weights.layers[1].q;
    const got = await readGgufTensor(h, "blk.1.attn_q.weight");
    const src = ropeRowSource(q.shape[0], 8, "interleaved");
    const cols = q.shape[1];
    for (let r = 0; r < q.shape[0]; r++) {
      const want = q.data.subarray(src[r] * cols, (src[r] + 1) * cols);
      const amax = Math.max(...want.map(Math.abs));
      // Half a step, plus the f16 rounding of d (2^-11 relative) times codes up to 127.
      assertClose(got.subarray(r * cols, (r + 1) * cols), want, { atol: amax / 127 * 0.57 + 1e-6, rtol: 0 });
    }
    // F32 export: exact weights, and the interleaved model gives the rotate-half model's logits.
    await saveGguf(join(dir, "f32.gguf"), base, join(dir, "src"), { type: "f32" });
    const back = await loadGgufModel(join(dir, "f32.gguf"));
    assert.equal(back.model.config.ropePairing, "interleaved");
    const tokens = Int32Array.from({ length: 16 }, (_, i) => (i * 11) % 19);
    assertClose(await logits(back.model, tokens), await logits(base, tokens), { atol: 1e-5, rtol: 1e-5 });
    const original = await loadTokenizer(join(dir, "src"));
    for (const text of ["abc ab", "a b c!", "xyz. ab"]) {
      assert.deepEqual(back.tokenizer.encode(text), original.encode(text), text);
    }
    assert.deepEqual(Array.from(back.tokenizer.encode("abc ab")), [16, 8, 14]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GGUF from quantized layers: aligned groups are written from their codes exactly", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    await writeHfFolder(join(dir, "src"), base);
    await writeTinyTokenizer(join(dir, "src"));
    const { layers, model } = await quantizeAll(base, "rtn", { bits: 4, groupSize: 32, symmetric: true });
    const s4 = await saveGguf(join(dir, "q4.gguf"), model, join(dir, "src"), { type: "q4_0", layers });
    assert.equal(s4.blocksFromCodes, (2 * (32 * 32 + 16 * 32 * 2 + 32 * 32 + 64 * 32 * 2 + 32 * 64)) / 32);
    const h = await readGgufHeader(join(dir, "q4.gguf"));
    const down = layers.get(linearName(0, "down_proj"))!;
    const got = await readGgufTensor(h, "blk.0.ffn_down.weight");
    // d = f16(scale), q = code: the layer's weights up to the f16 rounding of its scales.
    const p = down.params!;
    const expected = down.dequantized.data.map((_, k) => {
      const r = Math.floor(k / 64), c = k % 64, g = r * p.groups + down.groupIndex![c];
      return Math.fround(f16(p.scale[g]) * (down.codes![k] - p.zero[g]));
    });
    assert.deepEqual(got, expected);
    // Asymmetric 3-bit with act-order: groups do not align, so blocks are re-rounded; Q8_0 still holds them closely.
    const { layers: l3, model: m3 } = await quantizeAll(base, "gptq", { bits: 3, groupSize: 16, actOrder: true });
    const s8 = await saveGguf(join(dir, "q8.gguf"), m3, join(dir, "src"), { type: "q8_0", layers: l3 });
    assert.ok(s8.blocksFromCodes < s8.blocks);
    const back = await loadGgufModel(join(dir, "q8.gguf"));
    const up = l3.get(linearName(1, "up_proj"))!.dequantized;
    const amax = Math.max(...up.data.map(Math.abs));
    assertClose(back.model.weights.layers[1].up.data, up.data, { atol: amax / 127 * 0.6, rtol: 0 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GGUF of stories260K (llama2.c vocabulary, interleaved RoPE): q8_0 perplexity within 1%, q4_0 and q4_k load", async () => {
  const dir = await tempDir();
  try {
    const bin = new URL("../examples/data/stories260K/stories260K.bin", import.meta.url).pathname;
    const loaded = await loadLlama2cModel(bin);
    const model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n));
    const tok = await loadLlama2cTokenizer(bin.replace("stories260K.bin", "tok512.bin"), 512);
    const text =
      (await Deno.readTextFile(new URL("../examples/data/tinystories/tinystories-valid.txt", import.meta.url)))
        .slice(0, 20_000);
    const tokens = tok.encode(text);
    const ref = (await perplexity(model, tokens, { seqLen: 128, windows: 8, batch: 8 })).ppl;
    const s = await saveGguf(join(dir, "s.gguf"), model, bin, { type: "q8_0" });
    assert.equal(s.types.F16, 5, "down_proj rows of 172 values fall back to F16");
    const h = await readGgufHeader(join(dir, "s.gguf"));
    const tokens0 = h.metadata.get("tokenizer.ggml.tokens") as string[];
    assert.equal(h.metadata.get("tokenizer.ggml.model"), "llama");
    assert.equal(tokens0[1], "<s>");
    assert.ok(tokens0.includes("\u2581the") || tokens0.some((t) => t.startsWith("\u2581")));
    assert.equal((h.metadata.get("tokenizer.ggml.token_type") as number[])[3], 6, "<0x00> is a byte token");
    const back = await loadGgufModel(join(dir, "s.gguf"));
    assert.deepEqual(back.tokenizer.encode(text.slice(0, 500)), tok.encode(text.slice(0, 500)));
    const ppl8 = (await perplexity(back.model, tokens, { seqLen: 128, windows: 8, batch: 8 })).ppl;
    console.log(`stories260K: ppl ${ref.toFixed(3)} f32, ${ppl8.toFixed(3)} from GGUF Q8_0`);
    assert.ok(Math.abs(ppl8 - ref) / ref < 0.01);
    for (const type of ["q4_0", "q4_k"] as const) {
      await saveGguf(join(dir, `${type}.gguf`), model, bin, { type });
      const m = await loadGgufModel(join(dir, `${type}.gguf`));
      const p = (await perplexity(m.model, tokens, { seqLen: 128, windows: 8, batch: 8 })).ppl;
      console.log(`stories260K: ppl ${p.toFixed(3)} from GGUF ${type}`);
      assert.ok(p < ref * 1.5, `${type} perplexity ${p}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readGgufHeader: FormatError naming the file for foreign and truncated files", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(join(dir, "x.gguf"), "not a gguf file at all, clearly");
    await assert.rejects(
      readGgufHeader(join(dir, "x.gguf")),
      (e) => e instanceof FormatError && /GGUF magic/.test(e.message),
    );
    const base = packableModel();
    await writeHfFolder(join(dir, "src"), base);
    await writeTinyTokenizer(join(dir, "src"));
    await saveGguf(join(dir, "t.gguf"), base, join(dir, "src"), { type: "q4_0" });
    const bytes = await Deno.readFile(join(dir, "t.gguf"));
    await Deno.writeFile(join(dir, "cut.gguf"), bytes.subarray(0, bytes.length - 40));
    await assert.rejects(readGgufHeader(join(dir, "cut.gguf")), /runs past the end/);
    await Deno.writeFile(join(dir, "head.gguf"), bytes.subarray(0, 200));
    await assert.rejects(
      readGgufHeader(join(dir, "head.gguf")),
      (e) => e instanceof FormatError && e.message.includes("head.gguf"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest(
  "llama-12m: GGUF Q8_0 keeps perplexity within 0.5% and its byte-level BPE tokenizer round-trips",
  ["models/llama-12m/config.json", "data/heldout.txt"],
  async () => {
    const t0 = performance.now();
    const src = sharedPath("models/llama-12m");
    const loaded = await loadHfModel(src);
    const model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n), src);
    const tokenizer = await loadTokenizer(src);
    const text = (await Deno.readTextFile(sharedPath("data/heldout.txt"))).slice(0, 30_000);
    const tokens = tokenizer.encode(text);
    const opts = { seqLen: 256, windows: 4, batch: 4 };
    const ref = (await perplexity(model, tokens, opts)).ppl;
    const dir = await tempDir();
    try {
      await saveGguf(join(dir, "m.gguf"), model, src, { type: "q8_0" });
      const { metadata } = await gguf(join(dir, "m.gguf"), { allowLocalFile: true });
      assert.equal((metadata as Record<string, unknown>)["tokenizer.ggml.model"], "gpt2");
      const back = await loadGgufModel(join(dir, "m.gguf"));
      assert.deepEqual(back.tokenizer.encode(text.slice(0, 3000)), tokenizer.encode(text.slice(0, 3000)));
      const ppl = (await perplexity(back.model, tokens, opts)).ppl;
      console.log(
        `llama-12m: ppl ${ref.toFixed(4)} bf16, ${ppl.toFixed(4)} from GGUF Q8_0; ` +
          `${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      assert.ok(Math.abs(ppl - ref) / ref < 0.005);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
