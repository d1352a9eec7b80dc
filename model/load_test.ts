import assert from "node:assert/strict";
import { join } from "node:path";
import { FormatError, OptionError } from "../core/errors.ts";
import { assertClose } from "../tests/assert_close.ts";
import { packableModel, quantizeAll, tempDir, writeHfFolder, writeTinyTokenizer } from "../tests/export_fixtures.ts";
import { detectModel, loadModel } from "./load.ts";
import { forward, llamaFromWeights } from "./llama.ts";
import { loadLlama2cModel } from "./llama2c.ts";
import { perplexity } from "./perplexity.ts";
import { quantizeModel } from "./quantize_model.ts";
import { SAVE_FORMATS, saveQuantized } from "./save.ts";

const STORIES = new URL("../examples/data/stories260K/stories260K.bin", import.meta.url).pathname;

Deno.test("saveQuantized writes every format and loadModel reads each back as a runnable model", async () => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    await writeHfFolder(join(dir, "src"), base);
    await writeTinyTokenizer(join(dir, "src"));
    const { layers, model } = await quantizeAll(base, "rtn", { bits: 4, groupSize: 32, symmetric: true });
    const tokens = Int32Array.from({ length: 12 }, (_, i) => (i * 3) % 19);
    const want = (await forward(model, tokens, { batch: 1, seqLen: 12 })).logits.data;
    const expectedKind = { gptq: "gptq", ptq: "ptq", "gguf-q8_0": "gguf", "gguf-q4_0": "gguf", "gguf-q4_k": "gguf" };
    let fromGptq: Awaited<ReturnType<typeof loadModel>> | undefined;
    for (const format of SAVE_FORMATS) {
      const out = join(dir, format);
      const r = await saveQuantized(out, format, model, layers, join(dir, "src"));
      assert.ok(r.bytes > 0 && r.files.length > 0, format);
      if (format.startsWith("gguf")) assert.equal(r.path, join(out, `model-${format.slice(5)}.gguf`));
      const loaded = await loadModel(out);
      assert.equal(loaded.kind, expectedKind[format]);
      assert.deepEqual(
        loaded.tokenizer.encode("abc ab"),
        (await loadModel(join(dir, "src"))).tokenizer.encode("abc ab"),
      );
      const got = (await forward(loaded.model, tokens, { batch: 1, seqLen: 12 })).logits.data;
      if (format === "gptq") fromGptq = loaded;
      if (format === "gguf-q8_0" || format === "gguf-q4_0") {
        // Symmetric 4-bit groups of 32 go into Q8_0 and Q4_0 blocks from their codes: the very weights the GPTQ file
        // holds (f16 scales). q and k are compared elsewhere (their rows are in llama.cpp's order here).
        for (const [i, l] of loaded.model.weights.layers.entries()) {
          const g = fromGptq!.model.weights.layers[i];
          for (const k of ["v", "o", "gate", "up", "down"] as const) {
            assert.deepEqual(l[k].data, g[k].data, `${format} ${k}`);
          }
        }
      }
      // ptq is exact; GPTQ differs by f16 scales; GGUF also rounds the embedding and classifier to its block format,
      // which this random tiny model amplifies (4-bit embeddings change its logits outright).
      assert.ok(got.every(Number.isFinite));
      if (format === "gguf-q4_0" || format === "gguf-q4_k") continue;
      const tol = format === "ptq" ? 0 : format === "gptq" ? 1e-2 : 0.2;
      assertClose(got, want, { atol: tol, rtol: tol }, format);
    }
    await assert.rejects(saveQuantized(join(dir, "x"), "onnx", model, layers), OptionError);
    // A .gguf destination is the file itself.
    const r = await saveQuantized(join(dir, "one.gguf"), "gguf-q8_0", model, layers, join(dir, "src"));
    assert.equal(r.path, join(dir, "one.gguf"));
    assert.equal((await detectModel(join(dir, "one.gguf"))).kind, "gguf");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel: stories260K through GPTQ (MLP kept float: width 172) and ptq checkpoints", async () => {
  const dir = await tempDir();
  try {
    const loaded = await loadLlama2cModel(STORIES);
    const base = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n));
    const { model, layers } = await quantizeModel(base, { method: "rtn", options: { bits: 4, groupSize: 32 } });
    const src = await loadModel(STORIES);
    assert.equal(src.kind, "llama2c");
    const text =
      (await Deno.readTextFile(new URL("../examples/data/tinystories/tinystories-valid.txt", import.meta.url)))
        .slice(0, 12_000);
    const tokens = src.tokenizer.encode(text);
    const opts = { seqLen: 128, windows: 6, batch: 6 };
    const ref = (await perplexity(model, tokens, opts)).ppl;
    const g = await saveQuantized(join(dir, "gptq"), "gptq", model, layers, STORIES);
    assert.ok(g.notes.some((n) => /mlp\.down_proj kept as float32/.test(n)));
    assert.ok(g.files.includes("tokenizer.bin"));
    for (const format of ["gptq", "ptq"] as const) {
      if (format === "ptq") await saveQuantized(join(dir, "ptq"), "ptq", model, layers, STORIES);
      const back = await loadModel(join(dir, format));
      assert.equal(back.kind, format);
      assert.deepEqual(back.tokenizer.encode(text.slice(0, 400)), src.tokenizer.encode(text.slice(0, 400)));
      const ppl = (await perplexity(back.model, tokens, opts)).ppl;
      console.log(`stories260K rtn 4-bit g32: ppl ${ref.toFixed(4)} in memory, ${ppl.toFixed(4)} from ${format}`);
      assert.ok(Math.abs(ppl - ref) / ref < (format === "ptq" ? 1e-12 : 2e-3));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("detectModel/loadModel: FormatError naming the path for missing and ambiguous inputs", async () => {
  const dir = await tempDir();
  try {
    await assert.rejects(loadModel(join(dir, "nope")), (e) => e instanceof FormatError && e.message.includes("nope"));
    await assert.rejects(detectModel(dir), /holds no model/);
    await Deno.writeTextFile(join(dir, "a.bin"), "x");
    await Deno.writeTextFile(join(dir, "b.bin"), "y");
    await assert.rejects(detectModel(dir), /several candidate models/);
    await Deno.writeTextFile(join(dir, "notes.txt"), "x");
    await assert.rejects(detectModel(join(dir, "notes.txt")), FormatError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
