/**
 * One entry point for reading a model and its tokenizer from anything ptq reads or writes: a Hugging Face folder, a
 * llama2.c checkpoint, a GPTQ checkpoint folder, a ptq checkpoint (folder or `ptq.safetensors`), or a GGUF file.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { FormatError } from "../core/errors.ts";
import { isFile, isRecord, readJsonFile } from "./checkpoint_files.ts";
import { loadGgufModel } from "./gguf.ts";
import { readGptqCheckpoint, readGptqConfig } from "./gptq_format.ts";
import { loadHfModel } from "./hf_loader.ts";
import { llamaFromWeights, type LlamaModel } from "./llama.ts";
import { loadLlama2cModel } from "./llama2c.ts";
import { PTQ_FILE, readPtqCheckpoint } from "./ptq_format.ts";
import { openSafetensors } from "./safetensors.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";

/** What a path holds. */
export type ModelKind = "hf" | "llama2c" | "gptq" | "ptq" | "gguf" | "safetensors";

/** A path's kind and the file or folder that holds the model. */
export interface DetectedModel {
  readonly kind: ModelKind;
  /** The path as given. */
  readonly path: string;
  /** The folder holding the model (and its tokenizer). */
  readonly dir: string;
  /** The model file for single-file kinds (llama2.c `.bin`, `ptq.safetensors`, `.gguf`, a `.safetensors`). */
  readonly file?: string;
}

async function stat(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch {
    return undefined;
  }
}

async function startsWithGguf(path: string): Promise<boolean> {
  using f = await Deno.open(path, { read: true });
  const b = new Uint8Array(4);
  const n = await f.read(b);
  return n === 4 && String.fromCharCode(...b) === "GGUF";
}

/**
 * Works out what `path` holds, from the files present (never from the name alone where contents can say more).
 *
 * @throws {FormatError} when the path does not exist or holds nothing ptq reads.
 */
export async function detectModel(path: string): Promise<DetectedModel> {
  const p = path.replace(/(.)\/+$/, "$1");
  const info = await stat(p);
  if (!info) throw new FormatError(p, "no such file or folder");
  if (info.isFile) {
    const dir = dirname(p);
    if (p.endsWith(".gguf") || await startsWithGguf(p)) return { kind: "gguf", path, dir, file: p };
    if (p.endsWith(".safetensors")) {
      using st = await openSafetensors(p);
      return { kind: st.metadata.format === "ptq" ? "ptq" : "safetensors", path, dir, file: p };
    }
    if (p.endsWith(".bin")) return { kind: "llama2c", path, dir, file: p };
    throw new FormatError(p, "not a model file ptq reads (.gguf, .safetensors, llama2.c .bin)");
  }
  if (await isFile(join(p, PTQ_FILE))) return { kind: "ptq", path, dir: p, file: join(p, PTQ_FILE) };
  if (await isFile(join(p, "config.json"))) {
    return { kind: (await readGptqConfig(p)) ? "gptq" : "hf", path, dir: p };
  }
  const bins: string[] = [], ggufs: string[] = [];
  for await (const e of Deno.readDir(p)) {
    if (!e.isFile) continue;
    if (e.name.endsWith(".bin") && !/^tok.*\.bin$|^tokenizer\.bin$/.test(e.name)) bins.push(e.name);
    if (e.name.endsWith(".gguf")) ggufs.push(e.name);
  }
  if (bins.length === 1 && ggufs.length === 0) return { kind: "llama2c", path, dir: p, file: join(p, bins[0]) };
  if (ggufs.length === 1 && bins.length === 0) return { kind: "gguf", path, dir: p, file: join(p, ggufs[0]) };
  const found = [...bins, ...ggufs];
  throw new FormatError(
    p,
    found.length
      ? `holds several candidate models (${found.join(", ")}); name one file`
      : "holds no model (no config.json, ptq.safetensors, .gguf or llama2.c .bin)",
  );
}

/** A model ready for evaluation, its tokenizer, and what it was read from. */
export interface LoadedModelAndTokenizer {
  readonly model: LlamaModel;
  readonly tokenizer: Tokenizer;
  readonly kind: ModelKind;
  /** The folder or file the model came from. */
  readonly source: string;
}

/**
 * Loads a model and its tokenizer from a Hugging Face folder, a llama2.c checkpoint (tokenizer beside it), a GPTQ
 * checkpoint folder, a ptq checkpoint (folder or file, tokenizer beside it), or a GGUF file (tokenizer inside).
 * Quantized formats are dequantized to float32 weights, which is what ptq's evaluation runs.
 *
 * @example
 * ```ts ignore
 * const { model, tokenizer, kind } = await loadModel("out/llama-12m-gptq");
 * console.log(kind, (await perplexity(model, tokenizer.encode(text), { seqLen: 512 })).ppl);
 * ```
 * @throws {FormatError} naming the path when it holds no model, a file is malformed, or the tokenizer has more tokens
 *   than the model's vocabulary.
 */
export async function loadModel(path: string): Promise<LoadedModelAndTokenizer> {
  const d = await detectModel(path);
  let model: LlamaModel, tokenizer: Tokenizer | undefined;
  switch (d.kind) {
    case "hf": {
      const loaded = await loadHfModel(d.dir);
      model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n), d.dir);
      break;
    }
    case "llama2c": {
      const loaded = await loadLlama2cModel(d.file!);
      model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n), d.file);
      break;
    }
    case "gptq":
      model = (await readGptqCheckpoint(d.dir)).model;
      break;
    case "ptq":
      model = (await readPtqCheckpoint(d.file!)).model;
      break;
    case "gguf": {
      const g = await loadGgufModel(d.file!);
      model = g.model, tokenizer = g.tokenizer;
      break;
    }
    case "safetensors":
      throw new FormatError(d.file!, "a bare safetensors file has no config; pass its model folder");
  }
  tokenizer ??= await loadTokenizer(d.dir);
  if (tokenizer.vocabSize > model.config.vocabSize) {
    throw new FormatError(
      path,
      `the tokenizer has ${tokenizer.vocabSize} tokens, the model only ${model.config.vocabSize}`,
    );
  }
  return { model, tokenizer, kind: d.kind, source: d.file ?? d.dir };
}

/** The `config.json` of a folder as an object, or undefined (for tools that show it). */
export async function readConfigJson(dir: string): Promise<Record<string, unknown> | undefined> {
  if (!(await isFile(join(dir, "config.json")))) return undefined;
  const c = await readJsonFile(join(dir, "config.json"));
  return isRecord(c) ? c : undefined;
}
