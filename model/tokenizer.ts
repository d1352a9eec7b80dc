/**
 * Tokenizers behind one interface: Hugging Face `tokenizer.json` and llama2.c's `tokenizer.bin` format
 * ({@link Llama2cTokenizer}). {@link loadTokenizer} picks one by the files present.
 *
 * Hugging Face tokenizers are built with `@huggingface/tokenizers`, which reproduces the reference token ids of the
 * shared data exactly but encodes about 1 MB/s. For the common GPT-2-style configuration (byte-level pre-tokenizer,
 * BPE model, no normalizer) {@link HfTokenizer} encodes with {@link ByteLevelBpe} instead: the same algorithm as the
 * library (same pre-tokenizer regex, same leftmost-lowest-rank merge order, same added-token splitting), several
 * times faster; tests check it against the library and against the reference ids.
 *
 * @module
 */

import { Tokenizer as HfJsTokenizer } from "@huggingface/tokenizers";
import { FormatError, OptionError } from "../core/errors.ts";
import { loadLlama2cTokenizer, mergeAdjacent } from "./llama2c.ts";

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend the BOS token. Default false. */
  readonly bos?: boolean;
  /** Append the EOS token. Default false. */
  readonly eos?: boolean;
}

/** Text ↔ token ids. */
export interface Tokenizer {
  /** Number of token ids (largest id + 1). */
  readonly vocabSize: number;
  /** Beginning-of-sequence id, when the vocabulary has one. */
  readonly bosId?: number;
  /** End-of-sequence id, when the vocabulary has one. */
  readonly eosId?: number;
  /**
   * Token ids of `text`. No special tokens are added unless asked for, whatever the tokenizer's own post-processor
   * would do, so callers always know what they get.
   *
   * @throws {OptionError} when `bos`/`eos` is asked for and the vocabulary has none.
   */
  encode(text: string, options?: EncodeOptions): Int32Array;
  /**
   * Text of `ids`, leaving out BOS/EOS and other special tokens.
   *
   * @throws {OptionError} on an id outside the vocabulary.
   */
  decode(ids: ArrayLike<number>): string;
}

function addSpecials(ids: ArrayLike<number>, options: EncodeOptions, bosId?: number, eosId?: number): Int32Array {
  const bos = options.bos ?? false, eos = options.eos ?? false;
  if (bos && bosId === undefined) throw new OptionError("this tokenizer has no BOS token");
  if (eos && eosId === undefined) throw new OptionError("this tokenizer has no EOS token");
  const out = new Int32Array(ids.length + (bos ? 1 : 0) + (eos ? 1 : 0));
  if (bos) out[0] = bosId!;
  out.set(ids as ArrayLike<number>, bos ? 1 : 0);
  if (eos) out[out.length - 1] = eosId!;
  return out;
}

/** GPT-2's pre-tokenizer pattern, as `@huggingface/tokenizers` writes it for the ByteLevel pre-tokenizer. */
const BYTE_LEVEL_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's reversible byte → printable character map (bytes that print stay, the others move to U+0100 and up). */
function bytesToUnicode(): string[] {
  const keep = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCharCode(keep(b) ? b : 256 + n++);
  return out;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Byte-level BPE encoding for `tokenizer.json` files of the GPT-2 kind. {@link ByteLevelBpe.from} returns null for
 * any configuration it does not reproduce exactly (a normalizer, another pre-tokenizer, prefix spaces, BPE
 * dropout, byte fallback, suffixes, added tokens that strip spaces, merges or bytes missing from the vocabulary), so
 * the caller can fall back to the library.
 */
export class ByteLevelBpe {
  readonly #byteChar = bytesToUnicode();
  /** `left · vocabSize + right` → `[rank, merged id]`. */
  readonly #merges = new Map<number, readonly [number, number]>();
  readonly #charId = new Int32Array(256);
  readonly #vocabSize: number;
  /** Added tokens, longest first so that the alternation matches leftmost-longest, like the library's trie. */
  readonly #added: RegExp | null;
  readonly #addedIds: Map<string, number>;
  /** Ids of each pre-tokenized piece already seen (the text's vocabulary of words is small). */
  #cache = new Map<string, readonly number[]>();
  readonly #encoder = new TextEncoder();

  private constructor(vocab: Map<string, number>, merges: [string, string][], added: Map<string, number>) {
    let max = -1;
    for (const id of vocab.values()) max = Math.max(max, id);
    for (const id of added.values()) max = Math.max(max, id);
    this.#vocabSize = max + 1;
    for (let b = 0; b < 256; b++) this.#charId[b] = vocab.get(this.#byteChar[b])!;
    merges.forEach(([a, b], rank) => {
      // A later duplicate overrides an earlier one, as in the library's Map of ranks.
      this.#merges.set(vocab.get(a)! * this.#vocabSize + vocab.get(b)!, [rank, vocab.get(a + b)!]);
    });
    this.#addedIds = added;
    const escaped = [...added.keys()].sort((x, y) => y.length - x.length).map((c) =>
      c.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&")
    );
    this.#added = escaped.length ? new RegExp(escaped.join("|"), "g") : null;
  }

  /**
   * A fast encoder for `tokenizerJson`, or null when its configuration is outside what this class reproduces.
   *
   * @param tokenizerJson Parsed `tokenizer.json`.
   */
  static from(tokenizerJson: unknown): ByteLevelBpe | null {
    if (!isRecord(tokenizerJson)) return null;
    const { normalizer, pre_tokenizer: pre, model, added_tokens: addedTokens } = tokenizerJson;
    if (normalizer !== null && normalizer !== undefined) return null;
    if (!isRecord(pre) || pre.type !== "ByteLevel" || pre.add_prefix_space === true || pre.use_regex === false) {
      return null;
    }
    if (!isRecord(model) || model.type !== "BPE" || !isRecord(model.vocab) || !Array.isArray(model.merges)) return null;
    if (model.dropout || model.continuing_subword_prefix || model.end_of_word_suffix) return null;
    if (model.byte_fallback || model.ignore_merges) return null;
    const vocab = new Map<string, number>();
    for (const [k, v] of Object.entries(model.vocab)) {
      if (typeof v !== "number") return null;
      vocab.set(k, v);
    }
    const merges: [string, string][] = [];
    for (const m of model.merges) {
      const pair = typeof m === "string" ? m.split(" ") : m;
      if (!Array.isArray(pair) || pair.length !== 2) return null;
      const [a, b] = pair as [string, string];
      if (!vocab.has(a) || !vocab.has(b) || !vocab.has(a + b)) return null;
      merges.push([a, b]);
    }
    const added = new Map<string, number>();
    for (const t of Array.isArray(addedTokens) ? addedTokens : []) {
      if (!isRecord(t) || typeof t.content !== "string" || typeof t.id !== "number") return null;
      if (t.lstrip || t.rstrip || t.single_word || t.content === "") return null;
      // The library lets an added token's id override the vocabulary's for the same string; keep to files where they agree.
      if (vocab.has(t.content) && vocab.get(t.content) !== t.id) return null;
      added.set(t.content, t.id);
    }
    const chars = bytesToUnicode();
    if (!chars.every((c) => vocab.has(c))) return null;
    return new ByteLevelBpe(vocab, merges, added);
  }

  /** Token ids of `text`, without special tokens other than added tokens written literally in the text. */
  encode(text: string): Int32Array {
    const out: number[] = [];
    if (!this.#added) {
      this.#encodeSection(text, out);
    } else {
      let start = 0;
      for (const m of text.matchAll(this.#added)) {
        this.#encodeSection(text.slice(start, m.index), out);
        out.push(this.#addedIds.get(m[0])!);
        start = m.index + m[0].length;
      }
      this.#encodeSection(text.slice(start), out);
    }
    return Int32Array.from(out);
  }

  #encodeSection(text: string, out: number[]): void {
    if (this.#cache.size > 200_000) this.#cache = new Map(); // bound memory on huge, varied inputs
    for (const [piece] of text.matchAll(BYTE_LEVEL_PATTERN)) {
      let ids = this.#cache.get(piece);
      if (!ids) {
        const bytes = this.#encoder.encode(piece);
        const V = this.#vocabSize;
        ids = mergeAdjacent(Array.from(bytes, (b) => this.#charId[b]), (a, b) => this.#merges.get(a * V + b));
        this.#cache.set(piece, ids);
      }
      for (const id of ids) out.push(id);
    }
  }
}

/** A Hugging Face `tokenizer.json` tokenizer. */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosId?: number;
  readonly #tok: HfJsTokenizer;
  readonly #fast: ByteLevelBpe | null;

  /**
   * A tokenizer from the parsed JSON files (see {@link loadHfTokenizer} to read them from disk).
   *
   * @param tokenizerJson Parsed `tokenizer.json`.
   * @param tokenizerConfig Parsed `tokenizer_config.json` (may be `{}`): supplies the BOS/EOS token strings.
   * @param path Names the source in errors.
   * @throws {FormatError} when the library cannot build a tokenizer from the JSON.
   */
  constructor(tokenizerJson: unknown, tokenizerConfig: Record<string, unknown>, path: string) {
    if (typeof tokenizerJson !== "object" || tokenizerJson === null) {
      throw new FormatError(path, "tokenizer.json must be a JSON object");
    }
    try {
      this.#tok = new HfJsTokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new FormatError(path, `unsupported or malformed tokenizer: ${(e as Error).message}`);
    }
    this.#fast = ByteLevelBpe.from(tokenizerJson);
    let max = -1;
    for (const id of this.#tok.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
    const special = (key: string): number | undefined => {
      let v = tokenizerConfig[key];
      // tokenizer_config.json spells a token either as a string or as an AddedToken object with `content`.
      if (v && typeof v === "object") v = (v as Record<string, unknown>).content;
      return typeof v === "string" ? this.#tok.token_to_id(v) : undefined;
    };
    this.bosId = special("bos_token");
    this.eosId = special("eos_token");
  }

  /** See {@link Tokenizer.encode}. */
  encode(text: string, options: EncodeOptions = {}): Int32Array {
    const ids = this.#fast ? this.#fast.encode(text) : this.#tok.encode(text, { add_special_tokens: false }).ids;
    return addSpecials(ids, options, this.bosId, this.eosId);
  }

  /** True when encoding uses {@link ByteLevelBpe} rather than the library. */
  get fastPath(): boolean {
    return this.#fast !== null;
  }

  /** See {@link Tokenizer.decode}. */
  decode(ids: ArrayLike<number>): string {
    const list = Array.from(ids);
    if (list.length === 0) return ""; // the library refuses an empty list
    for (const id of list) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new OptionError(`token id ${id} is outside the vocabulary of ${this.vocabSize}`);
      }
    }
    return this.#tok.decode(list, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }
}

async function readJson(path: string): Promise<unknown> {
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

/**
 * Loads a Hugging Face tokenizer from `tokenizer.json` and, when present beside it, `tokenizer_config.json`.
 *
 * @param path The `tokenizer.json` file.
 * @throws {FormatError} when a file is missing, not JSON, or not a tokenizer the library supports.
 */
export async function loadHfTokenizer(path: string): Promise<HfTokenizer> {
  const json = await readJson(path);
  const cfgPath = path.replace(/[^/]*$/, "tokenizer_config.json");
  let config: Record<string, unknown> = {};
  if (await isFile(cfgPath)) {
    const c = await readJson(cfgPath);
    if (typeof c !== "object" || c === null || Array.isArray(c)) {
      throw new FormatError(cfgPath, "must be a JSON object");
    }
    config = c as Record<string, unknown>;
  }
  return new HfTokenizer(json, config, path);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * The tokenizer of a model folder, picked by the files present: `tokenizer.json` (Hugging Face), else llama2.c's
 * `tokenizer.bin` or a single `tok*.bin`. `path` may also name one of those files directly.
 *
 * @example
 * ```ts ignore
 * const tok = await loadTokenizer("../shared/models/llama-12m");
 * const ids = tok.encode("Hello world");
 * ```
 * @throws {FormatError} when the path does not exist, holds no tokenizer, holds several `tok*.bin` candidates, or the
 *   tokenizer file is malformed.
 */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch {
    throw new FormatError(path, "not found");
  }
  if (stat.isFile) {
    if (path.endsWith(".json")) return loadHfTokenizer(path);
    if (path.endsWith(".bin")) return loadLlama2cTokenizer(path);
    throw new FormatError(path, "unknown tokenizer file type (expected tokenizer.json or a llama2.c .bin)");
  }
  const dir = path.replace(/\/+$/, "");
  if (await isFile(`${dir}/tokenizer.json`)) return loadHfTokenizer(`${dir}/tokenizer.json`);
  if (await isFile(`${dir}/tokenizer.bin`)) return loadLlama2cTokenizer(`${dir}/tokenizer.bin`);
  const bins: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile && /^tok.*\.bin$/.test(e.name)) bins.push(e.name);
  if (bins.length === 1) return loadLlama2cTokenizer(`${dir}/${bins[0]}`);
  if (bins.length > 1) {
    throw new FormatError(dir, `several llama2.c tokenizers (${bins.sort().join(", ")}); name one file directly`);
  }
  throw new FormatError(dir, "no tokenizer found (looked for tokenizer.json, tokenizer.bin, tok*.bin)");
}
