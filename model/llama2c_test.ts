import assert from "node:assert/strict";
import { FormatError, OptionError } from "../core/errors.ts";
import { sharedPath, sharedTest } from "../tests/shared.ts";
import {
  Llama2cTokenizer,
  loadLlama2cModel,
  loadLlama2cTokenizer,
  parseLlama2cCheckpoint,
  parseLlama2cTokenizer,
} from "./llama2c.ts";
import { llamaWeightShapes } from "./hf_loader.ts";

const MODEL = "models/stories260K/stories260K.bin";
const TOKENIZER = "models/stories260K/tok512.bin";

function rejectsFormat(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

/**
 * A synthetic legacy checkpoint whose every float encodes which tensor it belongs to (tensor index · 1000 + position
 * within the tensor, mod 1000), so the mapping to Hugging Face names can be checked value by value.
 */
function syntheticCheckpoint(
  h: { dim: number; hidden: number; layers: number; heads: number; kvHeads: number; vocab: number; seqLen: number },
): { bytes: Uint8Array; sections: Float32Array[] } {
  const hs = h.dim / h.heads, kv = h.kvHeads * hs, V = Math.abs(h.vocab), L = h.layers;
  const sizes = [
    V * h.dim,
    L * h.dim,
    L * h.dim * h.dim,
    L * kv * h.dim,
    L * kv * h.dim,
    L * h.dim * h.dim,
    L * h.dim,
    L * h.hidden * h.dim,
    L * h.dim * h.hidden,
    L * h.hidden * h.dim,
    h.dim,
    h.seqLen * hs / 2,
    h.seqLen * hs / 2,
    ...(h.vocab < 0 ? [V * h.dim] : []),
  ];
  const sections = sizes.map((n, k) => Float32Array.from({ length: n }, (_, i) => k * 1000 + (i % 1000)));
  const total = sizes.reduce((a, b) => a + b, 0);
  const bytes = new Uint8Array(28 + 4 * total);
  new Int32Array(bytes.buffer, 0, 7).set([h.dim, h.hidden, h.layers, h.heads, h.kvHeads, h.vocab, h.seqLen]);
  let off = 7;
  const f = new Float32Array(bytes.buffer);
  for (const s of sections) f.set(s, off), off += s.length;
  return { bytes, sections };
}

const SMALL = { dim: 8, hidden: 12, layers: 2, heads: 4, kvHeads: 2, vocab: 16, seqLen: 6 };

sharedTest("stories260K: header, config and weight shapes", [MODEL], async () => {
  const path = sharedPath(MODEL);
  const { config, weights } = await loadLlama2cModel(path);
  assert.deepEqual(config, {
    architecture: "llama",
    hiddenSize: 64,
    intermediateSize: 172,
    numLayers: 5,
    numHeads: 8,
    numKvHeads: 4,
    headDim: 8,
    vocabSize: 512,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: true,
    maxPositionEmbeddings: 512,
    ropePairing: "interleaved",
    bosTokenId: 1,
    eosTokenId: 2,
  });
  const shapes = llamaWeightShapes(config);
  assert.deepEqual([...weights.keys()].sort(), [...shapes.keys()].sort());
  for (const [name, shape] of shapes) assert.deepEqual(weights.get(name)!.shape, shape, name);
  assert.deepEqual(weights.get("model.layers.0.self_attn.k_proj.weight")!.shape, [32, 64]);
  assert.deepEqual(weights.get("model.layers.4.mlp.down_proj.weight")!.shape, [64, 172]);
  assert.equal(weights.get("lm_head.weight"), weights.get("model.embed_tokens.weight"));
  // Spot checks against the raw file: the first embedding value and the final norm's first value.
  const raw = new DataView((await Deno.readFile(path)).buffer);
  assert.equal(weights.get("model.embed_tokens.weight")!.data[0], raw.getFloat32(28, true));
  const L = 5, d = 64, hd = 172, kv = 32;
  const rmsFinalAt = 28 + 4 * (512 * d + L * d + L * d * d + 2 * L * kv * d + L * d * d + L * d + 3 * L * hd * d);
  assert.equal(weights.get("model.norm.weight")!.data[0], raw.getFloat32(rmsFinalAt, true));
  for (const w of weights.values()) assert.ok(w.data.every(Number.isFinite));
});

Deno.test("synthetic checkpoint: llama2.c tensors map to Hugging Face names (w1 gate, w3 up, w2 down)", () => {
  const { bytes, sections } = syntheticCheckpoint(SMALL);
  const { config, weights } = parseLlama2cCheckpoint(bytes, "tiny.bin");
  assert.equal(config.tieWordEmbeddings, true);
  const layer = (k: number, i: number, n: number) => sections[k].subarray(i * n, (i + 1) * n);
  const expect: [string, Float32Array][] = [["model.embed_tokens.weight", sections[0]], [
    "model.norm.weight",
    sections[10],
  ]];
  for (let i = 0; i < 2; i++) {
    const p = `model.layers.${i}.`;
    expect.push(
      [`${p}input_layernorm.weight`, layer(1, i, 8)],
      [`${p}self_attn.q_proj.weight`, layer(2, i, 64)],
      [`${p}self_attn.k_proj.weight`, layer(3, i, 32)],
      [`${p}self_attn.v_proj.weight`, layer(4, i, 32)],
      [`${p}self_attn.o_proj.weight`, layer(5, i, 64)],
      [`${p}post_attention_layernorm.weight`, layer(6, i, 8)],
      [`${p}mlp.gate_proj.weight`, layer(7, i, 96)],
      [`${p}mlp.down_proj.weight`, layer(8, i, 96)],
      [`${p}mlp.up_proj.weight`, layer(9, i, 96)],
    );
  }
  for (const [name, v] of expect) assert.deepEqual(weights.get(name)!.data, v, name);
  assert.deepEqual(weights.get("model.layers.1.mlp.down_proj.weight")!.shape, [8, 12]);
});

Deno.test("synthetic checkpoint: a negative vocab_size means an unshared classifier after freq_cis", () => {
  const { bytes, sections } = syntheticCheckpoint({ ...SMALL, vocab: -16 });
  const { config, weights } = parseLlama2cCheckpoint(bytes, "tiny.bin");
  assert.equal(config.tieWordEmbeddings, false);
  assert.equal(config.vocabSize, 16);
  assert.deepEqual(weights.get("lm_head.weight")!.data, sections[13]);
  assert.notEqual(weights.get("lm_head.weight"), weights.get("model.embed_tokens.weight"));
});

Deno.test("checkpoint validation: truncated, oversized, bad header, versioned export", () => {
  const { bytes } = syntheticCheckpoint(SMALL);
  rejectsFormat(() => parseLlama2cCheckpoint(bytes.subarray(0, bytes.length - 4), "t.bin"), /truncated/);
  rejectsFormat(() => parseLlama2cCheckpoint(bytes.subarray(0, 20), "t.bin"), /shorter than the 28-byte/);
  const longer = new Uint8Array(bytes.length + 8);
  longer.set(bytes);
  rejectsFormat(() => parseLlama2cCheckpoint(longer, "t.bin"), /8 bytes beyond/);
  const edit = (field: number, value: number) => {
    const b = bytes.slice();
    new DataView(b.buffer).setInt32(4 * field, value, true);
    return b;
  };
  rejectsFormat(() => parseLlama2cCheckpoint(edit(0, 0), "t.bin"), /dim is 0/);
  rejectsFormat(() => parseLlama2cCheckpoint(edit(5, 0), "t.bin"), /vocab_size is 0/);
  rejectsFormat(() => parseLlama2cCheckpoint(edit(3, 3), "t.bin"), /dim 8 is not divisible by 3 heads/);
  rejectsFormat(() => parseLlama2cCheckpoint(edit(4, 3), "t.bin"), /not divisible by 3 key\/value heads/);
  rejectsFormat(() => parseLlama2cCheckpoint(edit(0, 0x616b3432), "t.bin"), /versioned llama2.c export/);
});

sharedTest("stories260K loader: a missing file is a FormatError", [MODEL], async () => {
  await assert.rejects(
    loadLlama2cModel(sharedPath("models/stories260K/nope.bin")),
    (e) => e instanceof FormatError && /file not found/.test(e.message),
  );
});

// Token ids from llama2.c's own run.c `encode` (commit 350e04f, compiled with gcc), bos = eos = 0 unless noted.
const REFERENCE: [string, number[]][] = [
  ["", []],
  [" ", [410, 410]],
  ["a", [261]],
  ["Hello, world!", [346, 306, 414, 432, 263, 304, 341, 443]],
  ["héllo wörld — naïve café", [
    270,
    485,
    306,
    414,
    263,
    198,
    185,
    420,
    341,
    410,
    481,
    297,
    412,
    198,
    178,
    360,
    280,
    412,
    431,
    485,
  ]],
  ["中文 日本語 😀🎉", [
    410,
    231,
    187,
    176,
    233,
    153,
    138,
    410,
    233,
    154,
    168,
    233,
    159,
    175,
    235,
    173,
    161,
    410,
    243,
    162,
    155,
    131,
    243,
    162,
    145,
    140,
  ]],
  ["tab\tnew\nline  two  spaces", [
    259,
    412,
    430,
    12,
    416,
    411,
    424,
    13,
    421,
    271,
    411,
    410,
    259,
    424,
    414,
    410,
    262,
    427,
    412,
    331,
    419,
  ]],
  ["ÿ€𝄞", [410, 198, 194, 503, 243, 160, 135, 161]],
];

async function sha256(ids: Int32Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", ids.buffer as ArrayBuffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

sharedTest("tok512: encode matches llama2.c's run.c exactly", [TOKENIZER, "data/tinystories-valid.txt"], async () => {
  const tok = await loadLlama2cTokenizer(sharedPath(TOKENIZER), 512);
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.maxTokenLength, 7);
  for (const [text, ids] of REFERENCE) assert.deepEqual(Array.from(tok.encode(text)), ids, JSON.stringify(text));
  assert.deepEqual(
    Array.from(tok.encode("Once upon a time, there was a little girl named Lily.", { bos: true })),
    [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426],
  );
  assert.deepEqual(Array.from(tok.encode("Hi", { bos: true, eos: true })), [1, 320, 417, 2]);
  assert.deepEqual(Array.from(tok.encode("", { bos: true, eos: true })), [1, 2]);
  // The first 20,000 characters of the TinyStories sample: 9,691 tokens from run.c (which takes 40 s on them).
  const text = (await Deno.readTextFile(sharedPath("data/tinystories-valid.txt"))).slice(0, 20000);
  const ids = tok.encode(text);
  assert.equal(ids.length, 9691);
  assert.equal(await sha256(ids), "991bd379a4ce03b6d2345bd5f927bcca237f7f60749766dec19353791dd68301");
  assert.equal(tok.decode(ids), text);
});

sharedTest(
  "tok512: decode drops the dummy prefix after BOS, skips BOS/EOS and joins byte tokens",
  [TOKENIZER],
  async () => {
    const tok = await loadLlama2cTokenizer(sharedPath(TOKENIZER));
    assert.equal(tok.vocabSize, 512);
    for (const [text] of REFERENCE) {
      if (text.trim() === "") continue; // a text of spaces loses its first space, as with SentencePiece
      assert.equal(tok.decode(tok.encode(text, { bos: true, eos: true })), text);
      assert.equal(tok.decode(tok.encode(text)), text);
    }
    // Byte tokens <0xE4><0xB8><0xAD> spell "中" in UTF-8; an incomplete sequence decodes to U+FFFD.
    assert.equal(tok.decode([3 + 0xe4, 3 + 0xb8, 3 + 0xad]), "中");
    assert.equal(tok.decode([3 + 0xe4]), "\ufffd");
    assert.throws(() => tok.decode([512]), OptionError);
    assert.throws(() => tok.decode([-1]), OptionError);
  },
);

Deno.test("tokenizer file validation", () => {
  const build = (pieces: string[], maxLen = 4): Uint8Array => {
    const enc = new TextEncoder();
    const parts = pieces.map((p) => enc.encode(p));
    const out = new Uint8Array(4 + parts.reduce((a, p) => a + 8 + p.length, 0));
    const v = new DataView(out.buffer);
    v.setInt32(0, maxLen, true);
    let off = 4;
    parts.forEach((p, i) => {
      v.setFloat32(off, -i, true);
      v.setInt32(off + 4, p.length, true);
      out.set(p, off + 8);
      off += 8 + p.length;
    });
    return out;
  };
  const pieces = ["<unk>", "\n<s>\n", "\n</s>\n", " ", "a", " a"];
  const tok = parseLlama2cTokenizer(build(pieces), "t.bin");
  assert.ok(tok instanceof Llama2cTokenizer);
  assert.equal(tok.vocabSize, 6);
  // " " + "a" → " a" (id 5); an unknown character falls back to byte tokens at 3 + byte.
  assert.deepEqual(Array.from(tok.encode("a")), [5]);
  assert.deepEqual(Array.from(tok.encode("b")), [3, 3 + 0x62]);
  const bytes = build(pieces);
  rejectsFormat(() => parseLlama2cTokenizer(bytes.subarray(0, bytes.length - 1), "t.bin"), /past the end/);
  rejectsFormat(() => parseLlama2cTokenizer(bytes.subarray(0, bytes.length - 6), "t.bin"), /truncated record/);
  rejectsFormat(() => parseLlama2cTokenizer(bytes, "t.bin", 7), /holds 6 tokens, the model's vocabulary has 7/);
  rejectsFormat(() => parseLlama2cTokenizer(bytes, "t.bin", 5), /bytes after the last token/);
  rejectsFormat(() => parseLlama2cTokenizer(build(pieces, 0), "t.bin"), /max_token_length is 0/);
  rejectsFormat(() => parseLlama2cTokenizer(new Uint8Array(2), "t.bin"), /too short/);
  assert.throws(() => parseLlama2cTokenizer(build(["<unk>", "x", "y"]), "t.bin").encode("z"), OptionError);
});
