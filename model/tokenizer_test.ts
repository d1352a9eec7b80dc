import assert from "node:assert/strict";
import { join } from "node:path";
import { FormatError, OptionError } from "../core/errors.ts";
import { sharedPath, sharedTest } from "../tests/shared.ts";
import { Llama2cTokenizer } from "./llama2c.ts";
import { Tokenizer as LibraryTokenizer } from "@huggingface/tokenizers";
import { createRng } from "../core/random.ts";
import { ByteLevelBpe, HfTokenizer, loadTokenizer } from "./tokenizer.ts";

const FIXTURE = "fixtures/llama-12m.tokens.json";
const LLAMA = "models/llama-12m";

async function sha256(ids: Int32Array): Promise<string> {
  // The fixture hashes the ids as int32 little-endian, which is Int32Array's layout on every supported host.
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", ids.buffer as ArrayBuffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

sharedTest(
  "llama-12m tokenizer.json reproduces the reference ids of all three data files",
  [`${LLAMA}/tokenizer.json`, FIXTURE, "data/heldout.txt", "data/wiki.test.raw", "data/calib.txt"],
  async () => {
    const tok = await loadTokenizer(sharedPath(LLAMA));
    assert.ok(tok instanceof HfTokenizer);
    assert.ok(tok.fastPath, "llama-12m's byte-level BPE should take the fast path");
    const fx = JSON.parse(await Deno.readTextFile(sharedPath(FIXTURE)));
    let bytes = 0, ms = 0;
    for (const [file, key] of [["heldout.txt", "heldout"], ["wiki.test.raw", "wiki"], ["calib.txt", "calib"]]) {
      const text = await Deno.readTextFile(sharedPath(`data/${file}`));
      const t0 = performance.now();
      const ids = tok.encode(text);
      ms += performance.now() - t0;
      bytes += new TextEncoder().encode(text).length;
      assert.equal(ids.length, fx[`${key}_tokens`], `${file} token count`);
      assert.equal(await sha256(ids), fx[`${key}_sha256_int32le`], `${file} ids`);
      if (key === "heldout") assert.deepEqual(Array.from(ids.subarray(0, 64)), fx.heldout_first_64);
    }
    console.log(
      `HF tokenizer: ${(bytes / 1e6).toFixed(2)} MB in ${ms.toFixed(0)} ms (${(bytes / 1e3 / ms).toFixed(2)} MB/s)`,
    );
  },
);

sharedTest(
  "llama-12m tokenizer: specials, options and decoding",
  [`${LLAMA}/tokenizer.json`, "data/heldout.txt"],
  async () => {
    const tok = await loadTokenizer(sharedPath(`${LLAMA}/tokenizer.json`));
    assert.equal(tok.vocabSize, 4096);
    assert.equal(tok.bosId, 1);
    assert.equal(tok.eosId, 2);
    const plain = tok.encode("Fourscore and seven years ago");
    const both = tok.encode("Fourscore and seven years ago", { bos: true, eos: true });
    assert.deepEqual(Array.from(both), [1, ...plain, 2]);
    assert.equal(tok.decode(both), "Fourscore and seven years ago");
    const text = (await Deno.readTextFile(sharedPath("data/heldout.txt"))).slice(0, 20000);
    assert.equal(tok.decode(tok.encode(text)), text);
    assert.equal(tok.encode("").length, 0);
    assert.throws(() => tok.decode([4096]), OptionError);
  },
);

sharedTest(
  "loadTokenizer picks llama2.c's format by the files present",
  ["models/stories260K/tok512.bin"],
  async () => {
    const tok = await loadTokenizer(sharedPath("models/stories260K"));
    assert.ok(tok instanceof Llama2cTokenizer);
    assert.equal(tok.vocabSize, 512);
    assert.equal(tok.bosId, 1);
    const direct = await loadTokenizer(sharedPath("models/stories260K/tok512.bin"));
    assert.deepEqual(direct.encode("Once upon a time"), tok.encode("Once upon a time"));
  },
);

Deno.test("loadTokenizer: clear errors for missing, empty and ambiguous folders", async () => {
  const isFormat = (pattern: RegExp) => (e: unknown) => e instanceof FormatError && pattern.test(e.message);
  await assert.rejects(loadTokenizer("/nonexistent/model"), isFormat(/not found/));
  const dir = await Deno.makeTempDir({ prefix: "ptq-tok-" });
  try {
    await assert.rejects(loadTokenizer(dir), isFormat(/no tokenizer found/));
    await Deno.writeTextFile(join(dir, "tok1.bin"), "");
    await Deno.writeTextFile(join(dir, "tok2.bin"), "");
    await assert.rejects(loadTokenizer(dir), isFormat(/several llama2.c tokenizers \(tok1.bin, tok2.bin\)/));
    await assert.rejects(loadTokenizer(join(dir, "tok1.bin")), isFormat(/too short/));
    await Deno.writeTextFile(join(dir, "tokenizer.json"), "[1]");
    await assert.rejects(loadTokenizer(dir), isFormat(/tokenizer.json/));
    await Deno.writeTextFile(join(dir, "vocab.txt"), "");
    await assert.rejects(loadTokenizer(join(dir, "vocab.txt")), isFormat(/unknown tokenizer file type/));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Strings that stress the pre-tokenizer, the merges and added-token splitting. */
function adversarialTexts(sample: string): string[] {
  const rng = createRng(11);
  const alphabet = [
    ..."abcXYZ019 '\t\n\r.,;:!?-_()[]{}\"/\\",
    "'s",
    "'ll",
    "'VE",
    "  ",
    "\u00a0",
    "\u0085",
    "\ufeff",
    "\u2028",
    "é",
    "ß",
    "中文",
    "😀",
    "\ud83c",
    "١٢٣",
    "<s>",
    "</s>",
    "<unk>",
    "<s",
    "</",
  ];
  const texts = [
    "",
    " ",
    "<s>",
    "a<s>b</s><unk>",
    "<s><s>",
    " ".repeat(1000) + "x",
    "\n".repeat(50),
    "It's we'll they've I'M",
    "x".repeat(3000),
  ];
  for (let i = 0; i < 300; i++) {
    const n = 1 + rng.int(40);
    texts.push(Array.from({ length: n }, () => alphabet[rng.int(alphabet.length)]).join(""));
  }
  for (let i = 0; i < 50; i++) {
    const at = rng.int(sample.length - 2000);
    texts.push(sample.slice(at, at + rng.int(2000)));
  }
  return texts;
}

sharedTest("byte-level fast path agrees with @huggingface/tokenizers on adversarial text", [
  `${LLAMA}/tokenizer.json`,
  "data/wiki.test.raw",
], async () => {
  const json = JSON.parse(await Deno.readTextFile(sharedPath(`${LLAMA}/tokenizer.json`)));
  const fast = ByteLevelBpe.from(json);
  assert.ok(fast);
  const library = new LibraryTokenizer(json, {});
  const sample = await Deno.readTextFile(sharedPath("data/wiki.test.raw"));
  for (const text of adversarialTexts(sample)) {
    const expected = library.encode(text, { add_special_tokens: false }).ids;
    assert.deepEqual(Array.from(fast.encode(text)), expected, JSON.stringify(text.slice(0, 80)));
  }
});

sharedTest("configurations outside the fast path fall back to the library", [`${LLAMA}/tokenizer.json`], async () => {
  const json = JSON.parse(await Deno.readTextFile(sharedPath(`${LLAMA}/tokenizer.json`)));
  const variants = [
    { ...json, normalizer: { type: "NFC" } },
    { ...json, pre_tokenizer: { ...json.pre_tokenizer, add_prefix_space: true } },
    { ...json, model: { ...json.model, byte_fallback: true } },
    { ...json, added_tokens: [...json.added_tokens, { id: 5, content: "#", lstrip: true, special: false }] },
  ];
  for (const v of variants) {
    assert.equal(ByteLevelBpe.from(v), null);
    const tok = new HfTokenizer(v, {}, "variant");
    assert.equal(tok.fastPath, false);
    assert.deepEqual(
      Array.from(tok.encode("Hello world")),
      new LibraryTokenizer(v, {}).encode("Hello world", {
        add_special_tokens: false,
      }).ids,
    );
  }
  assert.equal(ByteLevelBpe.from([]), null);
  assert.throws(() => new HfTokenizer(42, {}, "bad.json"), FormatError);
});
