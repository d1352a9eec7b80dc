/**
 * Andrej Karpathy's llama2.c formats: the legacy checkpoint (`stories260K.bin`: seven int32 header fields, then
 * float32 tensors) and the tokenizer (`tok512.bin`). The checkpoint loads into the same `{ config, weights }` as
 * {@link loadHfModel}, under Hugging Face names, with `ropePairing: "interleaved"` because llama2.c rotates the
 * pairs (2i, 2i+1) and its exporter does not permute q/k into Hugging Face's rotate-half layout.
 *
 * @module
 */

import { FormatError, OptionError } from "../core/errors.ts";
import { matrix } from "../core/tensor.ts";
import { type LlamaConfig, validateLlamaConfig } from "./config.ts";
import { checkLlamaWeights, type LoadedModel, type ModelWeights } from "./hf_loader.ts";
import type { EncodeOptions, Tokenizer } from "./tokenizer.ts";

/** Size of the legacy header: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len. */
const HEADER_BYTES = 28;

/** First word of llama2.c's versioned exports ("ak42"), which this loader does not read. */
const VERSIONED_MAGIC = 0x616b3432;

/** The seven header fields of a legacy checkpoint. */
export interface Llama2cHeader {
  /** Model width. */
  readonly dim: number;
  /** MLP width. */
  readonly hiddenDim: number;
  /** Decoder layers. */
  readonly nLayers: number;
  /** Query heads. */
  readonly nHeads: number;
  /** Key/value heads. */
  readonly nKvHeads: number;
  /** Absolute vocabulary size. */
  readonly vocabSize: number;
  /** True when the classifier is the token embedding (the stored vocab_size was positive). */
  readonly shared: boolean;
  /** Longest sequence (also the length of the stored RoPE tables). */
  readonly seqLen: number;
}

/**
 * Reads and checks the 28-byte header.
 *
 * @throws {FormatError} when the file is shorter than the header, is a versioned ("ak42") export, or a field is not
 *   positive.
 */
export function parseLlama2cHeader(bytes: Uint8Array, path: string): Llama2cHeader {
  if (bytes.length < HEADER_BYTES) {
    throw new FormatError(path, `file is ${bytes.length} bytes, shorter than the ${HEADER_BYTES}-byte llama2.c header`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  if (v.getUint32(0, true) === VERSIONED_MAGIC) {
    throw new FormatError(
      path,
      `is a versioned llama2.c export (version ${v.getInt32(4, true)}); only the legacy format is supported`,
    );
  }
  const f = Array.from({ length: 7 }, (_, i) => v.getInt32(4 * i, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = f;
  const names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
  f.forEach((x, i) => {
    if (i === 5 ? x === 0 : x <= 0) {
      throw new FormatError(path, `header field ${names[i]} is ${x}; not a llama2.c checkpoint?`);
    }
  });
  return { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: Math.abs(vocab), shared: vocab > 0, seqLen };
}

/** The {@link LlamaConfig} of a llama2.c checkpoint (llama2.c hard-codes eps 1e-5, theta 10000, BOS 1, EOS 2). */
export function llama2cConfig(h: Llama2cHeader, path: string): LlamaConfig {
  if (h.dim % h.nHeads !== 0) throw new FormatError(path, `dim ${h.dim} is not divisible by ${h.nHeads} heads`);
  return validateLlamaConfig({
    architecture: "llama",
    hiddenSize: h.dim,
    intermediateSize: h.hiddenDim,
    numLayers: h.nLayers,
    numHeads: h.nHeads,
    numKvHeads: h.nKvHeads,
    headDim: h.dim / h.nHeads,
    vocabSize: h.vocabSize,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    tieWordEmbeddings: h.shared,
    maxPositionEmbeddings: h.seqLen,
    ropePairing: "interleaved",
    bosTokenId: 1,
    eosTokenId: 2,
  }, path);
}

/**
 * Parses a legacy llama2.c checkpoint held in memory. The weights are float32 views into `bytes` (no copy) when the
 * host is little-endian and the data aligned, which it is for a buffer read from offset 0.
 *
 * Layout after the header, each tensor for all layers at once: token_embedding [vocab, dim], rms_att [L, dim],
 * wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim],
 * w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim], freq_cis_real and freq_cis_imag
 * [seq_len, head_dim/2] each (skipped: RoPE is recomputed), then wcls [vocab, dim] when unshared. w1, w3 and w2 map
 * to gate, up and down.
 *
 * @throws {FormatError} on a bad header, a truncated file, or trailing bytes.
 */
export function parseLlama2cCheckpoint(bytes: Uint8Array, path: string): LoadedModel {
  const header = parseLlama2cHeader(bytes, path);
  const config = llama2cConfig(header, path);
  const { hiddenSize: d, intermediateSize: hd, numLayers: L, vocabSize: V, headDim } = config;
  const kv = config.numKvHeads * headDim;
  const qd = config.numHeads * headDim;
  const parts: [string, number][] = [
    ["token_embedding", V * d],
    ["rms_att", L * d],
    ["wq", L * qd * d],
    ["wk", L * kv * d],
    ["wv", L * kv * d],
    ["wo", L * d * qd],
    ["rms_ffn", L * d],
    ["w1", L * hd * d],
    ["w2", L * d * hd],
    ["w3", L * hd * d],
    ["rms_final", d],
    ["freq_cis", header.seqLen * headDim],
  ];
  if (!header.shared) parts.push(["wcls", V * d]);
  const total = parts.reduce((a, [, n]) => a + n, 0);
  const expected = HEADER_BYTES + 4 * total;
  if (bytes.length < expected) {
    throw new FormatError(
      path,
      `truncated: the header implies ${expected} bytes (${total} floats), the file has ${bytes.length}`,
    );
  }
  if (bytes.length > expected) {
    throw new FormatError(path, `${bytes.length - expected} bytes beyond the ${expected} the header implies`);
  }

  const floats = floatView(bytes, HEADER_BYTES, total);
  const at = new Map<string, number>();
  let off = 0;
  for (const [name, n] of parts) at.set(name, off), off += n;
  const weights: ModelWeights = new Map();
  const put = (name: string, part: string, index: number, rows: number, cols: number) => {
    const start = at.get(part)! + index * rows * cols;
    weights.set(name, matrix(rows, cols, floats.subarray(start, start + rows * cols)));
  };
  put("model.embed_tokens.weight", "token_embedding", 0, V, d);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    put(`${p}input_layernorm.weight`, "rms_att", i, 1, d);
    put(`${p}self_attn.q_proj.weight`, "wq", i, qd, d);
    put(`${p}self_attn.k_proj.weight`, "wk", i, kv, d);
    put(`${p}self_attn.v_proj.weight`, "wv", i, kv, d);
    put(`${p}self_attn.o_proj.weight`, "wo", i, d, qd);
    put(`${p}post_attention_layernorm.weight`, "rms_ffn", i, 1, d);
    put(`${p}mlp.gate_proj.weight`, "w1", i, hd, d);
    put(`${p}mlp.up_proj.weight`, "w3", i, hd, d);
    put(`${p}mlp.down_proj.weight`, "w2", i, d, hd);
  }
  put("model.norm.weight", "rms_final", 0, 1, d);
  if (header.shared) weights.set("lm_head.weight", weights.get("model.embed_tokens.weight")!);
  else put("lm_head.weight", "wcls", 0, V, d);
  checkLlamaWeights(config, weights, path);
  return { config, weights };
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** `count` little-endian float32 values at byte `offset`: a view when possible, else a decoded copy. */
function floatView(bytes: Uint8Array, offset: number, count: number): Float32Array {
  const abs = bytes.byteOffset + offset;
  if (HOST_LITTLE_ENDIAN && abs % 4 === 0) return new Float32Array(bytes.buffer, abs, count);
  const v = new DataView(bytes.buffer, abs, count * 4);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = v.getFloat32(4 * i, true);
  return out;
}

async function readFile(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw new FormatError(
      path,
      e instanceof Deno.errors.NotFound ? "file not found" : `cannot read: ${(e as Error).message}`,
    );
  }
}

/**
 * Loads a legacy llama2.c checkpoint file (see {@link parseLlama2cCheckpoint}).
 *
 * @example
 * ```ts ignore
 * const { config, weights } = await loadLlama2cModel("../shared/models/stories260K/stories260K.bin");
 * ```
 * @throws {FormatError} when the file is missing, malformed or truncated.
 */
export async function loadLlama2cModel(path: string): Promise<LoadedModel> {
  return parseLlama2cCheckpoint(await readFile(path), path);
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------------------------

/** llama2.c's fixed special ids (run.c hard-codes them). */
const BOS = 1, EOS = 2;

/** run.c starts the best-pair search at `float best_score = -1e10`, so pairs must score above that float. */
const MIN_SCORE = Math.fround(-1e10);

/**
 * llama2.c's tokenizer: a scored vocabulary of byte strings, encoded with run.c's algorithm (dummy-prefix space,
 * UTF-8 code points looked up whole or spelled as `<0xXX>` byte tokens at id 3 + byte, then repeated merging of the
 * adjacent pair whose concatenation is the best-scoring vocabulary entry, leftmost on ties). The merge loop
 * ({@link mergeAdjacent}) uses a heap instead of run.c's quadratic rescan; it picks the same pair at every step, so
 * the output is identical.
 */
export class Llama2cTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number = BOS;
  readonly eosId: number = EOS;
  /** Each token's bytes as a binary string (one char per byte): cheap to concatenate and to use as a map key. */
  readonly #pieces: string[];
  readonly #scores: Float32Array;
  readonly #lookup = new Map<string, number>();
  /** Bytes each token decodes to (`<0xXX>` → that byte). */
  readonly #decoded: Uint8Array[];

  /**
   * A tokenizer over a vocabulary already in memory (see {@link parseLlama2cTokenizer} for files).
   *
   * @param pieces Each token's bytes.
   * @param scores Each token's merge score.
   * @param maxTokenLength The file's declared longest token (kept for reference).
   * @throws {OptionError} when the lengths differ or the vocabulary is too small for the special ids.
   */
  constructor(pieces: readonly Uint8Array[], scores: Float32Array, readonly maxTokenLength: number) {
    if (pieces.length !== scores.length) throw new OptionError(`${pieces.length} tokens but ${scores.length} scores`);
    if (pieces.length < 3) throw new OptionError(`a llama2.c vocabulary needs at least 3 tokens, got ${pieces.length}`);
    this.vocabSize = pieces.length;
    this.#scores = scores;
    this.#pieces = pieces.map((p) => String.fromCharCode(...p));
    // run.c binary-searches a sorted copy; with unique pieces any lookup agrees. On duplicates keep the first id.
    this.#pieces.forEach((p, i) => this.#lookup.has(p) || this.#lookup.set(p, i));
    this.#decoded = pieces.map((p) => {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(String.fromCharCode(...p));
      return m ? new Uint8Array([parseInt(m[1], 16)]) : p;
    });
  }

  /** Token id of a piece (its bytes as a binary string), or -1. */
  #find(s: string): number {
    return this.#lookup.get(s) ?? -1;
  }

  /** See {@link Tokenizer.encode}; text is taken as UTF-8 bytes. */
  encode(text: string, options: EncodeOptions = {}): Int32Array {
    const bytes = new TextEncoder().encode(text);
    const tokens: number[] = [];
    if (options.bos) tokens.push(BOS);
    if (bytes.length > 0) {
      const space = this.#find(" ");
      if (space < 0) throw new OptionError(`vocabulary has no " " token for the dummy prefix`);
      tokens.push(space);
    }
    // Group the bytes into UTF-8 code points (at most 4 bytes), as run.c does.
    let start = 0;
    for (let c = 0; c < bytes.length; c++) {
      if ((bytes[c] & 0xc0) !== 0x80) start = c;
      if (c + 1 < bytes.length && (bytes[c + 1] & 0xc0) === 0x80 && c - start + 1 < 4) continue;
      const piece = String.fromCharCode(...bytes.subarray(start, c + 1));
      const id = this.#find(piece);
      if (id >= 0) tokens.push(id);
      else for (let i = start; i <= c; i++) tokens.push(bytes[i] + 3);
      start = c + 1;
    }
    const merged = this.#merge(tokens);
    if (options.eos) merged.push(EOS);
    return Int32Array.from(merged);
  }

  /**
   * run.c's merge loop: while some adjacent pair concatenates to a vocabulary entry scoring above -1e10, merge the
   * best-scoring one (the leftmost among equals).
   */
  #merge(tokens: number[]): number[] {
    return mergeAdjacent(tokens, (a, b) => {
      const id = this.#find(this.#pieces[a] + this.#pieces[b]);
      // Negated score: mergeAdjacent merges the lowest rank first.
      return id >= 0 && this.#scores[id] > MIN_SCORE ? [-this.#scores[id], id] : undefined;
    });
  }

  /**
   * Text of `ids`: BOS and EOS are left out, a piece's leading space is dropped at the start of the text and after
   * BOS (run.c's rule, which undoes the dummy prefix), `<0xXX>` tokens become their byte, and the bytes are decoded
   * as UTF-8 (invalid sequences become U+FFFD).
   *
   * @throws {OptionError} on an id outside the vocabulary.
   */
  decode(ids: ArrayLike<number>): string {
    const chunks: Uint8Array[] = [];
    let total = 0, prev = BOS;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new OptionError(`token id ${id} is outside the vocabulary of ${this.vocabSize}`);
      }
      const before = prev;
      prev = id;
      if (id === BOS || id === EOS) continue;
      let piece = this.#decoded[id];
      if (before === BOS && this.#pieces[id][0] === " ") piece = piece.subarray(1);
      chunks.push(piece);
      total += piece.length;
    }
    const all = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) all.set(c, off), off += c.length;
    return new TextDecoder().decode(all);
  }
}

/**
 * Greedy pair merging, the loop at the heart of BPE encoders: while some adjacent pair `(a, b)` has a rank, replace
 * the lowest-ranked pair (the leftmost among equal ranks) by its merged token, and repeat. Runs in O(n log n) with a
 * heap over a linked list instead of rescanning all pairs after every merge; the choice at each step, and so the
 * result, is the same as the quadratic rescan's. Shared by llama2.c's encoder and the byte-level BPE in
 * `tokenizer.ts`.
 *
 * @param tokens Initial token ids (not modified).
 * @param rank `[rank, merged id]` for a pair that may merge, else undefined.
 * @returns The merged token ids.
 */
export function mergeAdjacent(
  tokens: readonly number[],
  rank: (left: number, right: number) => readonly [rank: number, merged: number] | undefined,
): number[] {
  const n = tokens.length;
  if (n < 2) return tokens.slice();
  const tok = Int32Array.from(tokens);
  const next = new Int32Array(n), prev = new Int32Array(n), version = new Int32Array(n);
  for (let i = 0; i < n; i++) next[i] = i + 1 < n ? i + 1 : -1, prev[i] = i - 1;
  const heap = new PairHeap();
  // Pairs are keyed by their left token's original position, which orders them as a left-to-right scan would.
  const consider = (left: number) => {
    const right = next[left];
    if (right < 0) return;
    const r = rank(tok[left], tok[right]);
    if (r) heap.push({ rank: r[0], left, right, id: r[1], vl: version[left], vr: version[right] });
  };
  for (let i = 0; i + 1 < n; i++) consider(i);
  for (let p = heap.pop(); p; p = heap.pop()) {
    // Skip entries made stale by an earlier merge of either token.
    if (next[p.left] !== p.right || version[p.left] !== p.vl || version[p.right] !== p.vr) continue;
    tok[p.left] = p.id;
    version[p.left]++;
    version[p.right] = -1;
    next[p.left] = next[p.right];
    if (next[p.right] >= 0) prev[next[p.right]] = p.left;
    if (prev[p.left] >= 0) consider(prev[p.left]);
    consider(p.left);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(tok[i]);
  return out;
}

interface Pair {
  readonly rank: number;
  readonly left: number;
  readonly right: number;
  readonly id: number;
  readonly vl: number;
  readonly vr: number;
}

/** A binary min-heap of candidate merges: lower rank first, then the leftmost (smaller original position). */
class PairHeap {
  readonly #a: Pair[] = [];

  #before(x: Pair, y: Pair): boolean {
    return x.rank < y.rank || (x.rank === y.rank && x.left < y.left);
  }

  push(p: Pair): void {
    const a = this.#a;
    let i = a.push(p) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(a[i], a[parent])) break;
      [a[i], a[parent]] = [a[parent], a[i]];
      i = parent;
    }
  }

  pop(): Pair | undefined {
    const a = this.#a;
    if (a.length === 0) return undefined;
    const top = a[0], last = a.pop()!;
    if (a.length) {
      a[0] = last;
      for (let i = 0;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && this.#before(a[l], a[m])) m = l;
        if (r < a.length && this.#before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

/**
 * Parses llama2.c's tokenizer file: int32 max_token_length, then per token a float32 score, an int32 byte length
 * and the bytes. The file does not store the vocabulary size (run.c takes it from the checkpoint), so tokens are
 * read to the end of the file and, when `vocabSize` is given, their count is checked against it.
 *
 * @throws {FormatError} on a truncated record, a negative length, or a count different from `vocabSize`.
 */
export function parseLlama2cTokenizer(bytes: Uint8Array, path: string, vocabSize?: number): Llama2cTokenizer {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) {
    throw new FormatError(path, `file is ${bytes.length} bytes, too short for a llama2.c tokenizer`);
  }
  const maxLen = v.getInt32(0, true);
  if (maxLen <= 0) throw new FormatError(path, `max_token_length is ${maxLen}; not a llama2.c tokenizer?`);
  const pieces: Uint8Array[] = [], scores: number[] = [];
  let off = 4;
  while (off < bytes.length && (vocabSize === undefined || pieces.length < vocabSize)) {
    if (off + 8 > bytes.length) {
      throw new FormatError(path, `truncated record for token ${pieces.length} at byte ${off}`);
    }
    const score = v.getFloat32(off, true), len = v.getInt32(off + 4, true);
    off += 8;
    if (len < 0 || off + len > bytes.length) {
      throw new FormatError(path, `token ${pieces.length} has length ${len}, past the end of the file`);
    }
    pieces.push(bytes.slice(off, off + len));
    scores.push(score);
    off += len;
  }
  if (vocabSize !== undefined && pieces.length !== vocabSize) {
    throw new FormatError(path, `holds ${pieces.length} tokens, the model's vocabulary has ${vocabSize}`);
  }
  if (off !== bytes.length) throw new FormatError(path, `${bytes.length - off} bytes after the last token`);
  if (pieces.length < 3) throw new FormatError(path, `only ${pieces.length} tokens`);
  return new Llama2cTokenizer(pieces, Float32Array.from(scores), maxLen);
}

/**
 * Loads a llama2.c tokenizer file (see {@link parseLlama2cTokenizer}).
 *
 * @example
 * ```ts ignore
 * const tok = await loadLlama2cTokenizer("../shared/models/stories260K/tok512.bin", 512);
 * tok.encode("Once upon a time", { bos: true });
 * ```
 * @throws {FormatError} when the file is missing or malformed.
 */
export async function loadLlama2cTokenizer(path: string, vocabSize?: number): Promise<Llama2cTokenizer> {
  return parseLlama2cTokenizer(await readFile(path), path, vocabSize);
}
