/**
 * Hugging Face `config.json` parsing. A small registry maps `model_type` to a parser; each parser turns the JSON
 * into a typed, validated config or raises a {@link FormatError} that names the file and the field. Adding an
 * architecture (OPT, GPT-2, Qwen2, Mistral) is one parser function and one registry line.
 *
 * Only what the forward pass implements is accepted: a Llama config with attention or MLP biases, a non-SiLU
 * activation or a RoPE scaling scheme is refused rather than silently run wrong.
 *
 * @module
 */

import { FormatError } from "../core/errors.ts";

/** A Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, no biases). */
export interface LlamaConfig {
  /** Discriminant for the union of architectures. */
  readonly architecture: "llama";
  /** Model width (`hidden_size`). */
  readonly hiddenSize: number;
  /** SwiGLU MLP width (`intermediate_size`). */
  readonly intermediateSize: number;
  /** Decoder layers (`num_hidden_layers`). */
  readonly numLayers: number;
  /** Query heads (`num_attention_heads`). */
  readonly numHeads: number;
  /** Key/value heads (`num_key_value_heads`; fewer than `numHeads` for grouped-query attention). */
  readonly numKvHeads: number;
  /** Size of each head (`head_dim`, default `hiddenSize / numHeads`). */
  readonly headDim: number;
  /** Embedding rows (`vocab_size`). */
  readonly vocabSize: number;
  /** RMSNorm epsilon (`rms_norm_eps`). */
  readonly rmsNormEps: number;
  /** RoPE base (`rope_theta`). */
  readonly ropeTheta: number;
  /** `lm_head.weight` is the token embedding (`tie_word_embeddings`). */
  readonly tieWordEmbeddings: boolean;
  /** Longest context the model was built for (`max_position_embeddings`). */
  readonly maxPositionEmbeddings: number;
  /** "half": Hugging Face rotate_half pairs (i, i+d/2); "interleaved": llama2.c pairs (2i, 2i+1). */
  readonly ropePairing: "half" | "interleaved";
  /** Beginning-of-sequence token id, when the config names one. */
  readonly bosTokenId?: number;
  /** End-of-sequence token id (the first, when the config lists several). */
  readonly eosTokenId?: number;
}

/** Every config this module can produce (a union as architectures are added). */
export type ModelConfig = LlamaConfig;

/** Turns a parsed `config.json` object into a validated config. */
export type ConfigParser = (json: Readonly<Record<string, unknown>>, path: string) => ModelConfig;

/**
 * Checks a Llama config's internal consistency (positive sizes, heads dividing evenly, even head dimension).
 * Shared by {@link parseHfConfig} and the llama2.c loader, whose configs come from a binary header.
 *
 * @throws {FormatError} naming `path` and the first inconsistent field.
 */
export function validateLlamaConfig(c: LlamaConfig, path: string): LlamaConfig {
  const ints: (keyof LlamaConfig)[] = [
    "hiddenSize",
    "intermediateSize",
    "numLayers",
    "numHeads",
    "numKvHeads",
    "headDim",
    "vocabSize",
    "maxPositionEmbeddings",
  ];
  for (const k of ints) {
    const v = c[k];
    if (!Number.isSafeInteger(v) || (v as number) <= 0) {
      throw new FormatError(path, `${k} must be a positive integer, got ${v}`);
    }
  }
  if (c.numHeads % c.numKvHeads !== 0) {
    throw new FormatError(path, `${c.numHeads} attention heads are not divisible by ${c.numKvHeads} key/value heads`);
  }
  // RoPE rotates pairs of dimensions, so each head needs an even size.
  if (c.headDim % 2 !== 0) throw new FormatError(path, `head dimension ${c.headDim} must be even for RoPE`);
  if (!(c.rmsNormEps > 0) || !Number.isFinite(c.rmsNormEps)) {
    throw new FormatError(path, `rms_norm_eps must be a positive number, got ${c.rmsNormEps}`);
  }
  if (!(c.ropeTheta > 0) || !Number.isFinite(c.ropeTheta)) {
    throw new FormatError(path, `rope_theta must be a positive number, got ${c.ropeTheta}`);
  }
  for (const k of ["bosTokenId", "eosTokenId"] as const) {
    const v = c[k];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) {
      throw new FormatError(path, `${k} must be a non-negative integer, got ${v}`);
    }
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Field readers: each names the JSON key in its error
// ---------------------------------------------------------------------------------------------------------------

function describe(v: unknown): string {
  return v === undefined ? "missing" : `${JSON.stringify(v)}`;
}

function positiveInt(json: Readonly<Record<string, unknown>>, key: string, path: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
    throw new FormatError(path, `"${key}" must be a positive integer, got ${describe(json[key])}`);
  }
  return v;
}

function positiveNumber(json: Readonly<Record<string, unknown>>, key: string, path: string, fallback: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new FormatError(path, `"${key}" must be a positive number, got ${describe(json[key])}`);
  }
  return v;
}

function bool(json: Readonly<Record<string, unknown>>, key: string, path: string, fallback: boolean): boolean {
  const v = json[key] ?? fallback;
  if (typeof v !== "boolean") throw new FormatError(path, `"${key}" must be true or false, got ${describe(json[key])}`);
  return v;
}

/** A token id, or the first of a list (`eos_token_id` may list several); null and absent give undefined. */
function tokenId(json: Readonly<Record<string, unknown>>, key: string, path: string): number | undefined {
  let v = json[key];
  if (Array.isArray(v)) v = v[0];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new FormatError(path, `"${key}" must be a token id, got ${describe(json[key])}`);
  }
  return v;
}

/**
 * RoPE base. Newer configs put it in `rope_parameters.rope_theta`, older ones at the top level as `rope_theta`
 * (default 10000); scaling is declared in `rope_parameters.rope_type` or the older `rope_scaling.{rope_type,type}`.
 */
function ropeTheta(json: Readonly<Record<string, unknown>>, path: string): number {
  const params = json.rope_parameters, scaling = json.rope_scaling;
  for (const [key, block] of [["rope_parameters", params], ["rope_scaling", scaling]] as const) {
    if (block === undefined || block === null) continue;
    if (typeof block !== "object" || Array.isArray(block)) {
      throw new FormatError(path, `"${key}" must be an object, got ${describe(block)}`);
    }
    const b = block as Record<string, unknown>;
    const type = b.rope_type ?? b.type ?? "default";
    if (type !== "default") {
      throw new FormatError(
        path,
        `${key} type ${JSON.stringify(type)} is not supported (only unscaled "default" RoPE is implemented)`,
      );
    }
  }
  const nested = params && typeof params === "object" ? (params as Record<string, unknown>).rope_theta : undefined;
  const top = json.rope_theta;
  if (nested !== undefined && top !== undefined && nested !== top) {
    throw new FormatError(
      path,
      `"rope_theta" ${describe(top)} disagrees with rope_parameters.rope_theta ${describe(nested)}`,
    );
  }
  const v = nested ?? top ?? 10000;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new FormatError(path, `rope_theta must be a positive number, got ${describe(v)}`);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Architectures
// ---------------------------------------------------------------------------------------------------------------

/**
 * Parses a `model_type: "llama"` config. Defaults follow transformers' `LlamaConfig` for optional fields
 * (`num_key_value_heads` = heads, `head_dim` = hidden / heads, `rms_norm_eps` 1e-6, `rope_theta` 10000,
 * `tie_word_embeddings` false, `max_position_embeddings` 2048); the sizes themselves are required.
 *
 * @throws {FormatError} on missing or invalid fields, heads that do not divide, biases, a non-SiLU activation or
 *   RoPE scaling.
 */
export function parseLlamaConfig(json: Readonly<Record<string, unknown>>, path: string): LlamaConfig {
  const hiddenSize = positiveInt(json, "hidden_size", path);
  const numHeads = positiveInt(json, "num_attention_heads", path);
  const numKvHeads = positiveInt(json, "num_key_value_heads", path, numHeads);
  if (json.head_dim === undefined || json.head_dim === null) {
    if (hiddenSize % numHeads !== 0) {
      throw new FormatError(path, `hidden_size ${hiddenSize} is not divisible by ${numHeads} attention heads`);
    }
  }
  const headDim = json.head_dim == null ? hiddenSize / numHeads : positiveInt(json, "head_dim", path);
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (json[key] === true) {
      throw new FormatError(path, `"${key}": true is not supported (the Llama forward has no biases)`);
    }
  }
  const act = json.hidden_act ?? "silu";
  if (act !== "silu") throw new FormatError(path, `hidden_act ${describe(act)} is not supported (only "silu")`);
  return validateLlamaConfig({
    architecture: "llama",
    hiddenSize,
    intermediateSize: positiveInt(json, "intermediate_size", path),
    numLayers: positiveInt(json, "num_hidden_layers", path),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(json, "vocab_size", path),
    rmsNormEps: positiveNumber(json, "rms_norm_eps", path, 1e-6),
    ropeTheta: ropeTheta(json, path),
    tieWordEmbeddings: bool(json, "tie_word_embeddings", path, false),
    maxPositionEmbeddings: positiveInt(json, "max_position_embeddings", path, 2048),
    ropePairing: "half",
    bosTokenId: tokenId(json, "bos_token_id", path),
    eosTokenId: tokenId(json, "eos_token_id", path),
  }, path);
}

/** `model_type` → parser. Add an architecture by adding a line here. */
const PARSERS: ReadonlyMap<string, ConfigParser> = new Map<string, ConfigParser>([
  ["llama", parseLlamaConfig],
]);

/** The `architectures` class names that identify a model type when `model_type` is absent. */
const CLASS_NAMES: ReadonlyMap<string, string> = new Map([["LlamaForCausalLM", "llama"]]);

/** The `model_type` values {@link parseHfConfig} accepts. */
export function supportedModelTypes(): string[] {
  return [...PARSERS.keys()];
}

/**
 * Parses a Hugging Face `config.json` (already JSON-decoded) for a supported architecture, chosen by `model_type`
 * (or by `architectures[0]` when `model_type` is absent).
 *
 * @example
 * ```ts
 * import { parseHfConfig } from "./config.ts";
 * const c = parseHfConfig({
 *   model_type: "llama", hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
 *   num_attention_heads: 4, vocab_size: 100,
 * }, "config.json");
 * console.assert(c.headDim === 16 && c.numKvHeads === 4);
 * ```
 * @param json The parsed JSON.
 * @param path Names the file in errors.
 * @throws {FormatError} for a non-object, an unsupported architecture (listing the supported ones), or any invalid
 *   field of the architecture's config.
 */
export function parseHfConfig(json: unknown, path: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FormatError(path, `config must be a JSON object`);
  }
  const obj = json as Record<string, unknown>;
  let type = obj.model_type;
  if (type === undefined && Array.isArray(obj.architectures)) type = CLASS_NAMES.get(String(obj.architectures[0]));
  const parser = typeof type === "string" ? PARSERS.get(type) : undefined;
  if (!parser) {
    throw new FormatError(
      path,
      `unsupported architecture ${type === undefined ? "(no model_type)" : JSON.stringify(type)}; ` +
        `supported model_type values: ${supportedModelTypes().join(", ")}`,
    );
  }
  return parser(obj, path);
}

/**
 * Reads and parses `<dir>/config.json`.
 *
 * @throws {FormatError} when the file is missing, not JSON, or not a supported valid config.
 */
export async function loadHfConfig(dir: string): Promise<ModelConfig> {
  const path = `${dir.replace(/\/+$/, "")}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new FormatError(
      path,
      e instanceof Deno.errors.NotFound ? "file not found" : `cannot read: ${(e as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, `not valid JSON: ${(e as Error).message}`);
  }
  return parseHfConfig(json, path);
}
