import assert from "node:assert/strict";
import { join } from "node:path";
import { llamaFromWeights } from "../model/llama.ts";
import { loadLlama2cModel } from "../model/llama2c.ts";
import { quantizeModel } from "../model/quantize_model.ts";
import { saveQuantized } from "../model/save.ts";
import { writeSafetensors } from "../model/safetensors.ts";
import { packableModel, quantizeAll, tempDir, writeHfFolder, writeTinyTokenizer } from "../tests/export_fixtures.ts";
import { formatBytes, inspectCommand, type InspectReport } from "./inspect.ts";

const STORIES = new URL("../examples/data/stories260K/stories260K.bin", import.meta.url).pathname;

/** Runs the command with console.log/console.error captured. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  try {
    return { code: await inspectCommand(args), out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log, console.error = error;
  }
}

Deno.test("ptq inspect describes each kind of model, as text and as JSON", async (t) => {
  const dir = await tempDir();
  try {
    const base = packableModel();
    await writeHfFolder(join(dir, "hf"), base, "BF16");
    await writeTinyTokenizer(join(dir, "hf"));
    const { layers, model } = await quantizeAll(base, "gptq", { bits: 4, groupSize: 16, actOrder: true });
    await saveQuantized(join(dir, "gptq"), "gptq", model, layers, join(dir, "hf"));
    await saveQuantized(join(dir, "ptq"), "ptq", model, layers, join(dir, "hf"));
    await saveQuantized(join(dir, "m.gguf"), "gguf-q8_0", model, layers, join(dir, "hf"));
    await writeSafetensors(join(dir, "x.safetensors"), [{
      name: "w",
      dtype: "F16",
      shape: [2, 3],
      data: new Float32Array(6),
    }]);

    const cases: [string, string, RegExp[]][] = [
      ["hf", join(dir, "hf"), [
        /Hugging Face model folder, 21 tensors/,
        /model\.layers\.1\.mlp\.down_proj\.weight\s+BF16\s+\[32, 64\]\s+4\.00 KiB/,
      ]],
      ["gptq", join(dir, "gptq"), [
        /GPTQ checkpoint/,
        /quant_method: gptq/,
        /desc_act: true/,
        /model\.layers\.0\.self_attn\.q_proj\s+gptq\s+uniform 4-bit, 2 groups\/row\s+6\.250/,
        /model\.layers\.0\.self_attn\.q_proj\.qweight\s+I32\s+\[4, 32\]/,
      ]],
      ["ptq", join(dir, "ptq"), [
        /ptq checkpoint/,
        /model\.layers\.1\.mlp\.up_proj\s+gptq\s+uniform 4-bit, 2 groups\/row/,
        /grid$/m,
      ]],
      ["gguf", join(dir, "m.gguf"), [
        /GGUF file, 21 tensors/,
        /block_count: 2/,
        /tokenizer\.ggml\.model: gpt2/,
        /blk\.0\.attn_q\.weight\s+Q8_0\s+\[32, 32\]\s+1\.06 KiB/,
      ]],
      ["llama2c", STORIES, [/llama2\.c checkpoint, 13 tensors/, /hiddenDim: 172/, /w2\s+F32\s+\[5, 64, 172\]/]],
      ["safetensors", join(dir, "x.safetensors"), [/safetensors file, 1 tensors/, /w\s+F16\s+\[2, 3\]\s+12 B/]],
    ];
    for (const [kind, path, patterns] of cases) {
      await t.step(kind, async () => {
        const text = await run([path]);
        assert.equal(text.code, 0, text.err);
        for (const p of patterns) assert.match(text.out, p);
        const json = await run([path, "--json"]);
        const report = JSON.parse(json.out) as InspectReport;
        assert.equal(report.kind, kind);
        assert.equal(report.totals.tensors, report.tensors.length);
        assert.ok(report.tensors.every((x) => x.bytes > 0 && x.shape.length > 0));
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ptq inspect: stories260K GPTQ checkpoint lists its float-kept MLP, and errors exit 1 or 2", async () => {
  const dir = await tempDir();
  try {
    const loaded = await loadLlama2cModel(STORIES);
    const base = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n));
    const { model, layers } = await quantizeModel(base, { method: "rtn", options: { bits: 3, groupSize: 32 } });
    await saveQuantized(join(dir, "g"), "gptq", model, layers, STORIES);
    const r = await run([join(dir, "g"), "--json"]);
    const report = JSON.parse(r.out) as InspectReport;
    assert.deepEqual(report.quantization?.modules_in_block_to_quantize, [
      ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
      ["self_attn.o_proj"],
    ]);
    assert.equal(report.layers?.length, 20);
    assert.ok(report.tensors.some((x) => x.name === "model.layers.0.mlp.down_proj.weight" && x.dtype === "F32"));
    assert.equal((await run([join(dir, "missing")])).code, 1);
    assert.match((await run([join(dir, "missing")])).err, /no such file or folder/);
    assert.equal((await run([])).code, 2);
    assert.equal((await run(["--bogus", "x"])).code, 2);
    assert.equal((await run(["--help"])).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("formatBytes", () => {
  assert.equal(formatBytes(12), "12 B");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(25 * 1024 * 1024), "25.0 MiB");
});
