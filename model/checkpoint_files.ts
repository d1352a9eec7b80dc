/**
 * Plumbing shared by the checkpoint writers (`gptq_format.ts`, `ptq_format.ts`, `gguf.ts`): what the source model
 * folder holds (its `config.json`, each tensor's stored dtype, its tokenizer files), atomic writes of whole folders
 * and single files, the Hugging Face `config.json` of a {@link LlamaConfig}, and the row order that converts q/k
 * projections between RoPE pairings.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { FormatError, OptionError } from "../core/errors.ts";
import type { Matrix } from "../core/tensor.ts";
import type { LlamaConfig } from "./config.ts";
import type { LlamaModel } from "./llama.ts";
import { openSafetensorsFolder, type SafetensorsDtype } from "./safetensors.ts";

/** Version string written into checkpoints' metadata (`meta.quantizer`, GGUF `general.*`). */
export const PTQ_VERSION = "ptq:0.1.0";

/** What a writer learns from the model a checkpoint was quantized from. */
export interface SourceModel {
  /** `hf`: a Hugging Face folder; `llama2c`: a llama2.c checkpoint; `none`: nothing given. */
  readonly kind: "hf" | "llama2c" | "none";
  /** The folder holding the model (and its tokenizer). */
  readonly dir?: string;
  /** The llama2.c checkpoint file (`kind: "llama2c"`). */
  readonly checkpoint?: string;
  /** The parsed `config.json` (`kind: "hf"`). */
  readonly config?: Readonly<Record<string, unknown>>;
  /** Stored dtype of each float tensor (`kind: "hf"`), so unquantized tensors are written back as they came. */
  readonly dtypes: ReadonlyMap<string, SafetensorsDtype>;
}

async function stat(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch {
    return undefined;
  }
}

/** True when `path` is a regular file. */
export async function isFile(path: string): Promise<boolean> {
  return (await stat(path))?.isFile ?? false;
}

/** Reads and parses a JSON file. @throws {FormatError} naming the file when it is missing or not JSON. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new FormatError(path, e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, `not valid JSON: ${(e as Error).message}`);
  }
}

/** True for a plain JSON object. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Describes the model a checkpoint is written from: a Hugging Face folder (reads `config.json` and the dtype of every
 * stored tensor, not the values), a llama2.c `.bin` or a folder holding one, or nothing.
 *
 * @throws {FormatError} when `sourceDir` does not exist or its files are malformed.
 */
export async function describeSource(sourceDir?: string): Promise<SourceModel> {
  if (sourceDir === undefined) return { kind: "none", dtypes: new Map() };
  const path = sourceDir.replace(/(.)\/+$/, "$1");
  const info = await stat(path);
  if (!info) throw new FormatError(path, "source model not found");
  if (info.isFile) {
    if (!path.endsWith(".bin")) throw new FormatError(path, "source model must be a folder or a llama2.c .bin");
    return { kind: "llama2c", dir: dirname(path), checkpoint: path, dtypes: new Map() };
  }
  if (await isFile(join(path, "config.json"))) {
    const config = await readJsonFile(join(path, "config.json"));
    if (!isRecord(config)) throw new FormatError(join(path, "config.json"), "must be a JSON object");
    const dtypes = new Map<string, SafetensorsDtype>();
    using st = await openSafetensorsFolder(path);
    for (const name of st.names) dtypes.set(name, st.info(name).dtype);
    return { kind: "hf", dir: path, config, dtypes };
  }
  const bins: string[] = [];
  for await (const e of Deno.readDir(path)) {
    if (e.isFile && e.name.endsWith(".bin") && !/^tok.*\.bin$|^tokenizer\.bin$/.test(e.name)) bins.push(e.name);
  }
  if (bins.length === 1) return { kind: "llama2c", dir: path, checkpoint: join(path, bins[0]), dtypes: new Map() };
  return { kind: "none", dir: path, dtypes: new Map() };
}

/** Tokenizer-side files of a Hugging Face folder, copied as they are. */
const HF_TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
  "generation_config.json",
  "chat_template.jinja",
];

/**
 * The llama2.c tokenizer file of a source: `tokenizer.bin`, else the single `tok*.bin` beside the checkpoint.
 * Undefined when there is none (or several).
 */
export async function llama2cTokenizerPath(source: SourceModel): Promise<string | undefined> {
  if (!source.dir) return undefined;
  if (await isFile(join(source.dir, "tokenizer.bin"))) return join(source.dir, "tokenizer.bin");
  const bins: string[] = [];
  for await (const e of Deno.readDir(source.dir)) if (e.isFile && /^tok.*\.bin$/.test(e.name)) bins.push(e.name);
  return bins.length === 1 ? join(source.dir, bins[0]) : undefined;
}

/**
 * Copies the source's tokenizer into `dest`: the Hugging Face tokenizer files present, or a llama2.c tokenizer as
 * `tokenizer.bin` (the name ptq's loader looks for first).
 *
 * @returns the names of the files written in `dest`.
 */
export async function copyTokenizerFiles(source: SourceModel, dest: string): Promise<string[]> {
  const written: string[] = [];
  if (!source.dir) return written;
  for (const f of HF_TOKENIZER_FILES) {
    if (await isFile(join(source.dir, f))) {
      await Deno.copyFile(join(source.dir, f), join(dest, f));
      written.push(f);
    }
  }
  if (!written.includes("tokenizer.json")) {
    const tok = await llama2cTokenizerPath(source);
    if (tok) {
      await Deno.copyFile(tok, join(dest, "tokenizer.bin"));
      written.push("tokenizer.bin");
    }
  }
  return written;
}

/**
 * A Hugging Face `config.json` object for `config` (the `LlamaForCausalLM` fields transformers, vLLM and ptq read).
 * Fields of `base` (the source's own `config.json`) are kept unless the config overrides them.
 */
export function hfConfigObject(
  config: LlamaConfig,
  base: Readonly<Record<string, unknown>> = {},
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  Object.assign(out, {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    rms_norm_eps: config.rmsNormEps,
    max_position_embeddings: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_act: "silu",
  });
  // Keep the source's spelling of the RoPE base (top-level or `rope_parameters`), else the classic top-level key.
  if (isRecord(base.rope_parameters) && base.rope_parameters.rope_theta !== undefined) {
    out.rope_parameters = { ...base.rope_parameters, rope_theta: config.ropeTheta };
  } else {
    out.rope_theta = config.ropeTheta;
  }
  if (config.bosTokenId !== undefined && out.bos_token_id === undefined) out.bos_token_id = config.bosTokenId;
  if (config.eosTokenId !== undefined && out.eos_token_id === undefined) out.eos_token_id = config.eosTokenId;
  return out;
}

/**
 * The source row of each destination row when converting a q or k projection between RoPE pairings, head by head
 * (heads of `headDim` rows). Hugging Face's rotate-half layout pairs rows `(j, j + d/2)`; the interleaved layout of
 * llama2.c and llama.cpp pairs `(2j, 2j + 1)`; both rotate pair `j` by `θ^(−2j/d)`, so interleaved row `2j + p` is
 * rotate-half row `p·d/2 + j`. `to: "interleaved"` is llama.cpp's `permute` in `convert_hf_to_gguf.py`;
 * `to: "half"` its inverse.
 *
 * @example
 * ```ts
 * import { ropeRowSource } from "./checkpoint_files.ts";
 * console.assert(ropeRowSource(4, 4, "interleaved").join() === "0,2,1,3");
 * ```
 * @throws {OptionError} unless `rows` is a multiple of an even `headDim`.
 */
export function ropeRowSource(rows: number, headDim: number, to: "half" | "interleaved"): Int32Array {
  if (headDim % 2 !== 0 || rows % headDim !== 0) {
    throw new OptionError(`cannot permute ${rows} rows in heads of ${headDim} for RoPE`);
  }
  const half = headDim / 2;
  const src = new Int32Array(rows);
  for (let h = 0; h < rows; h += headDim) {
    for (let j = 0; j < half; j++) {
      for (let p = 0; p < 2; p++) {
        const interleaved = h + 2 * j + p, rotateHalf = h + p * half + j;
        if (to === "interleaved") src[interleaved] = rotateHalf;
        else src[rotateHalf] = interleaved;
      }
    }
  }
  return src;
}

/** Rows of a row-major `[rows, cols]` array reordered: destination row `r` is source row `src[r]`. */
export function permuteRows<A extends Float32Array | Uint8Array | Int32Array>(
  data: A,
  cols: number,
  src: ArrayLike<number>,
): A {
  const out = new (data.constructor as new (n: number) => A)(data.length);
  for (let r = 0; r < src.length; r++) out.set(data.subarray(src[r] * cols, (src[r] + 1) * cols), r * cols);
  return out;
}

/** A matrix with its rows reordered (see {@link permuteRows}). */
export function permuteMatrixRows(m: Matrix, src: ArrayLike<number>): Matrix {
  return { data: permuteRows(m.data, m.shape[1], src), shape: [m.shape[0], m.shape[1]] };
}

/** One unquantized tensor of a Llama model under its Hugging Face name. */
export interface NamedWeight {
  readonly name: string;
  /** `[n]` for norms, `[rows, cols]` for matrices. */
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/**
 * The model's tensors other than the decoder's linear layers, in checkpoint order: embedding, each layer's two norms,
 * the final norm, and `lm_head.weight` unless tied to the embedding.
 */
export function nonLinearWeights(model: LlamaModel): NamedWeight[] {
  const { weights, config } = model;
  const d = config.hiddenSize;
  const out: NamedWeight[] = [{
    name: "model.embed_tokens.weight",
    shape: weights.embed.shape,
    data: weights.embed.data,
  }];
  weights.layers.forEach((l, i) => {
    out.push({ name: `model.layers.${i}.input_layernorm.weight`, shape: [d], data: l.inputNorm });
    out.push({ name: `model.layers.${i}.post_attention_layernorm.weight`, shape: [d], data: l.postAttentionNorm });
  });
  out.push({ name: "model.norm.weight", shape: [d], data: weights.finalNorm });
  if (!config.tieWordEmbeddings && weights.lmHead !== weights.embed) {
    out.push({ name: "lm_head.weight", shape: weights.lmHead.shape, data: weights.lmHead.data });
  }
  return out;
}

/**
 * The dtype to store an unquantized tensor in: the source's own float dtype for that name (so bf16 values come back
 * bit for bit), else float32 (llama2.c sources and tensors the source did not have).
 */
export function storedDtype(source: SourceModel, name: string): "F32" | "F16" | "BF16" {
  const d = source.dtypes.get(name);
  return d === "F16" || d === "BF16" ? d : "F32";
}

function tempName(path: string, tag = "tmp"): string {
  const rnd = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  return `${path}.${tag}-${rnd}`;
}

async function isEmptyDir(path: string): Promise<boolean> {
  for await (const _ of Deno.readDir(path)) return false;
  return true;
}

/**
 * Writes a folder atomically: `build` fills `<dir>.tmp-<random>`, which then replaces `dir`. An existing `dir` is
 * replaced only when it is empty or `replaceable(dir)` says it is a checkpoint this library wrote (so a mistyped
 * `--out ~` cannot delete a home folder); the old folder is moved aside first and removed last, so `dir` is at every
 * moment either the old checkpoint or the complete new one. On failure the temporary folder is removed.
 *
 * @throws {OptionError} when `dir` exists and is a file, or a folder that may not be replaced.
 */
export async function writeDirAtomically(
  dir: string,
  build: (tmp: string) => Promise<void>,
  replaceable: (dir: string) => Promise<boolean>,
): Promise<void> {
  const target = dir.replace(/(.)\/+$/, "$1");
  const existing = await stat(target);
  if (existing && !existing.isDirectory) throw new OptionError(`${target} exists and is not a folder`);
  if (existing && !(await isEmptyDir(target)) && !(await replaceable(target))) {
    throw new OptionError(`${target} exists and is not empty (and is not a checkpoint ptq wrote); choose a new folder`);
  }
  await Deno.mkdir(dirname(target), { recursive: true });
  const tmp = tempName(target);
  await Deno.mkdir(tmp);
  try {
    await build(tmp);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  if (!existing) {
    await Deno.rename(tmp, target);
    return;
  }
  const old = tempName(target, "old");
  await Deno.rename(target, old);
  try {
    await Deno.rename(tmp, target);
  } catch (e) {
    await Deno.rename(old, target).catch(() => {});
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  await Deno.remove(old, { recursive: true });
}

/**
 * Writes a file atomically: `body` writes into `<path>.tmp-<random>` (in the same folder), which is then renamed over
 * `path`; on failure the temporary file is removed.
 */
export async function writeFileAtomically(path: string, body: (file: Deno.FsFile) => Promise<void>): Promise<void> {
  const tmp = tempName(path);
  const file = await Deno.open(tmp, { write: true, createNew: true });
  let open = true;
  try {
    await body(file);
    await file.syncData();
    file.close();
    open = false;
    await Deno.rename(tmp, path);
  } catch (e) {
    if (open) file.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Writes all of `bytes` to `file`. */
export async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
}

/** A text file written atomically. */
export function writeTextAtomically(path: string, text: string): Promise<void> {
  return writeFileAtomically(path, (f) => writeAll(f, new TextEncoder().encode(text)));
}

/** The last path component without a trailing slash (for messages). */
export function baseName(path: string): string {
  return basename(path.replace(/(.)\/+$/, "$1"));
}
