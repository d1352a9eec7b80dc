/**
 * `ptq inspect PATH [--json]`: what a model file or folder holds: its kind, architecture, quantization settings, and
 * every tensor (dtype, shape, bytes), plus per-layer quantization for GPTQ and ptq checkpoints. Reads headers only,
 * never the weights, so it is instant on large files.
 *
 * Kinds: a Hugging Face folder, a safetensors file, a GPTQ checkpoint folder, a ptq checkpoint (folder or file), a
 * GGUF file, a llama2.c checkpoint. With `--json` the output is one JSON object.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { FormatError } from "../core/errors.ts";
import { ggmlTypeName, type GgufValue, readGgufHeader } from "../model/gguf.ts";
import { gptqWeightsPath, readGptqConfig } from "../model/gptq_format.ts";
import { detectModel, type ModelKind, readConfigJson } from "../model/load.ts";
import { parseLlama2cHeader } from "../model/llama2c.ts";
import { describeLayerGrid, parsePtqDocument } from "../model/ptq_format.ts";
import { openSafetensors, openSafetensorsFolder, type SafetensorsReader } from "../model/safetensors.ts";
import { failure, UsageError } from "./common.ts";

const USAGE = `Usage: ptq inspect PATH [--json]

Shows what a model holds: kind, architecture, quantization, and every tensor's dtype, shape and size.
PATH is a Hugging Face folder, a .safetensors file, a GPTQ checkpoint folder, a ptq checkpoint (folder or
ptq.safetensors), a .gguf file, or a llama2.c .bin.

Options:
  --json      print one JSON object
  -h, --help  show this help
`;

/** One tensor as stored. */
export interface InspectTensor {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly bytes: number;
}

/** One quantized layer (GPTQ and ptq checkpoints). */
export interface InspectLayer {
  readonly name: string;
  readonly method: string;
  /** Grid description ("uniform 4-bit, 3 groups/row"). */
  readonly grid: string;
  /** Stored bits per weight, everything the layer's tensors hold included. */
  readonly bitsPerWeight: number;
  readonly bytes: number;
  /** ptq: how the weights are recomputed. */
  readonly reconstruction?: string;
}

/** Everything `ptq inspect` reports. */
export interface InspectReport {
  readonly kind: ModelKind;
  readonly path: string;
  /** Architecture summary (Hugging Face config keys, GGUF `llama.*` keys, llama2.c header fields). */
  readonly config?: Readonly<Record<string, unknown>>;
  readonly quantization?: Readonly<Record<string, unknown>>;
  /** safetensors `__metadata__` or GGUF metadata (long arrays summarized). */
  readonly metadata?: Readonly<Record<string, unknown>>;
  readonly layers?: readonly InspectLayer[];
  readonly tensors: readonly InspectTensor[];
  readonly totals: { readonly tensors: number; readonly bytes: number; readonly parameters: number };
}

function tensorsOf(st: SafetensorsReader): InspectTensor[] {
  return st.names.map((name) => {
    const t = st.info(name);
    return { name, dtype: t.dtype, shape: t.shape, bytes: t.byteLength };
  });
}

const CONFIG_KEYS = [
  "model_type",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "vocab_size",
  "max_position_embeddings",
  "rms_norm_eps",
  "rope_theta",
  "tie_word_embeddings",
  "torch_dtype",
  "dtype",
];

function pick(obj: Readonly<Record<string, unknown>>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  if (obj.rope_theta === undefined && typeof obj.rope_parameters === "object" && obj.rope_parameters) {
    const t = (obj.rope_parameters as Record<string, unknown>).rope_theta;
    if (t !== undefined) out.rope_theta = t;
  }
  return out;
}

function jsonValue(v: GgufValue): unknown {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Array.isArray(v)) {
    if (v.length > 16) {
      const kind = typeof v[0] === "string" ? "strings" : typeof v[0] === "number" ? "numbers" : "values";
      return `[${v.length} ${kind}]`;
    }
    return v.map(jsonValue);
  }
  return v;
}

async function inspectSafetensorsModel(kind: ModelKind, path: string, dir: string): Promise<InspectReport> {
  const config = await readConfigJson(dir);
  const gptq = kind === "gptq" ? await readGptqConfig(dir) : undefined;
  using st = await openSafetensorsFolder(gptq ? await gptqWeightsPath(dir, gptq) : dir);
  const tensors = tensorsOf(st);
  let quantization: Record<string, unknown> | undefined, layers: InspectLayer[] | undefined;
  if (kind === "gptq") {
    const q = gptq!;
    quantization = { ...q.raw };
    layers = [];
    for (const t of tensors) {
      if (!t.name.endsWith(".qweight")) continue;
      const module = t.name.slice(0, -".qweight".length);
      const parts = ["qweight", "qzeros", "scales", "g_idx"].map((s) =>
        tensors.find((x) => x.name === `${module}.${s}`)
      );
      const bytes = parts.reduce((a, p) => a + (p?.bytes ?? 0), 0);
      const out = t.shape[1], inF = (t.shape[0] * 32) / q.bits, groups = parts[2]?.shape[0] ?? 1;
      layers.push({
        name: module,
        method: "gptq",
        grid: `uniform ${q.bits}-bit${q.sym ? " sym" : ""}, ${groups} group${groups === 1 ? "" : "s"}/row`,
        bitsPerWeight: (bytes * 8) / (inF * out),
        bytes,
      });
    }
  }
  return {
    kind,
    path,
    config: config ? pick(config, CONFIG_KEYS) : undefined,
    quantization,
    metadata: Object.keys(st.metadata).length ? { ...st.metadata } : undefined,
    layers,
    tensors,
    totals: totals(tensors),
  };
}

function totals(tensors: readonly InspectTensor[]) {
  return {
    tensors: tensors.length,
    bytes: tensors.reduce((a, t) => a + t.bytes, 0),
    parameters: tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0),
  };
}

async function inspectPtq(path: string, file: string): Promise<InspectReport> {
  using st = await openSafetensors(file);
  const doc = parsePtqDocument(st.metadata, file);
  const tensors = tensorsOf(st);
  const layers: InspectLayer[] = Object.entries(doc.layers).map(([name, l]) => {
    const bytes = tensors.filter((t) => t.name.startsWith(`${name}.`)).reduce((a, t) => a + t.bytes, 0);
    // The JSON form: tensor references stand in for arrays, and carry their length (all a description needs).
    const f = l.fields as Parameters<typeof describeLayerGrid>[0];
    return {
      name,
      method: l.method,
      grid: describeLayerGrid(f),
      bitsPerWeight: (bytes * 8) / (l.shape[0] * l.shape[1]),
      bytes,
      reconstruction: l.reconstruction,
    };
  });
  const { ptq: _, ...metadata } = st.metadata;
  return {
    kind: "ptq",
    path,
    config: { ...doc.config },
    quantization: { format: "ptq", version: doc.version, quantizer: doc.quantizer },
    metadata,
    layers,
    tensors,
    totals: totals(tensors),
  };
}

async function inspectGguf(path: string, file: string): Promise<InspectReport> {
  const h = await readGgufHeader(file);
  const metadata: Record<string, unknown> = { version: h.version };
  for (const [k, v] of h.metadata) metadata[k] = jsonValue(v);
  const arch = String(h.metadata.get("general.architecture") ?? "");
  const config: Record<string, unknown> = { architecture: arch };
  const quantization: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (arch && k.startsWith(`${arch}.`)) config[k.slice(arch.length + 1)] = v;
    if (k === "general.file_type" || k === "general.quantization_version") quantization[k.slice(8)] = v;
  }
  const tensors = h.tensors.map((t) => ({
    name: t.name,
    dtype: ggmlTypeName(t.type),
    // ggml lists the contiguous dimension first; shown as row-major like every other format.
    shape: [...t.dims].reverse(),
    bytes: t.byteLength ?? 0,
  }));
  const byType: Record<string, number> = {};
  for (const t of tensors) byType[t.dtype] = (byType[t.dtype] ?? 0) + 1;
  quantization.tensor_types = byType;
  return { kind: "gguf", path, config, quantization, metadata, tensors, totals: totals(tensors) };
}

async function inspectLlama2c(path: string, file: string): Promise<InspectReport> {
  const f = await Deno.open(file, { read: true });
  const head = new Uint8Array(28);
  let n = 0;
  try {
    n = (await f.read(head)) ?? 0;
  } finally {
    f.close();
  }
  const h = parseLlama2cHeader(head.subarray(0, n), file);
  const { dim, hiddenDim: hid, nLayers: L, nHeads, nKvHeads, vocabSize: V, seqLen } = h;
  const hd = dim / nHeads, kv = nKvHeads * hd;
  const parts: [string, number[]][] = [
    ["token_embedding_table", [V, dim]],
    ["rms_att_weight", [L, dim]],
    ["wq", [L, dim, dim]],
    ["wk", [L, kv, dim]],
    ["wv", [L, kv, dim]],
    ["wo", [L, dim, dim]],
    ["rms_ffn_weight", [L, dim]],
    ["w1", [L, hid, dim]],
    ["w2", [L, dim, hid]],
    ["w3", [L, hid, dim]],
    ["rms_final_weight", [dim]],
    ["freq_cis_real", [seqLen, hd / 2]],
    ["freq_cis_imag", [seqLen, hd / 2]],
  ];
  if (!h.shared) parts.push(["wcls", [V, dim]]);
  const tensors = parts.map(([name, shape]) => ({
    name,
    dtype: "F32",
    shape,
    bytes: 4 * shape.reduce((a, b) => a * b, 1),
  }));
  const size = (await Deno.stat(file)).size;
  const expected = 28 + tensors.reduce((a, t) => a + t.bytes, 0);
  if (size !== expected) throw new FormatError(file, `is ${size} bytes, the header implies ${expected}`);
  return { kind: "llama2c", path, config: { ...h }, tensors, totals: totals(tensors) };
}

/**
 * Inspects a model path (headers only).
 *
 * @throws {FormatError} naming the file when it holds no model or is malformed.
 */
export async function inspectPath(path: string): Promise<InspectReport> {
  const d = await detectModel(path);
  switch (d.kind) {
    case "hf":
    case "gptq":
      return inspectSafetensorsModel(d.kind, path, d.dir);
    case "safetensors": {
      using st = await openSafetensors(d.file!);
      const tensors = tensorsOf(st);
      return { kind: d.kind, path, metadata: { ...st.metadata }, tensors, totals: totals(tensors) };
    }
    case "ptq":
      return inspectPtq(path, d.file!);
    case "gguf":
      return inspectGguf(path, d.file!);
    case "llama2c":
      return inspectLlama2c(path, d.file!);
  }
}

/** Bytes for people: "1.2 MiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) n /= 1024, i++;
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

function table(rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) =>
    "  " + r.map((v, c) => right.has(c) ? v.padStart(widths[c]) : v.padEnd(widths[c])).join("  ").trimEnd()
  )
    .join("\n");
}

function keyValues(obj: Readonly<Record<string, unknown>>): string {
  return Object.entries(obj).map(([k, v]) => `  ${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("\n");
}

const KIND_NAMES: Record<ModelKind, string> = {
  hf: "Hugging Face model folder",
  safetensors: "safetensors file",
  gptq: "GPTQ checkpoint",
  ptq: "ptq checkpoint",
  gguf: "GGUF file",
  llama2c: "llama2.c checkpoint",
};

/** The human-readable report. */
export function formatReport(r: InspectReport): string {
  const out: string[] = [];
  const p = r.totals.parameters;
  out.push(
    `${r.path}: ${KIND_NAMES[r.kind]}, ${r.totals.tensors} tensors, ` +
      `${p >= 1e6 ? `${(p / 1e6).toFixed(2)}M` : p} values, ${formatBytes(r.totals.bytes)}`,
  );
  if (r.config && Object.keys(r.config).length) out.push("", "config:", keyValues(r.config));
  if (r.quantization) out.push("", "quantization:", keyValues(r.quantization));
  if (r.metadata && r.kind !== "gguf" && Object.keys(r.metadata).length) {
    out.push("", "metadata:", keyValues(r.metadata));
  }
  if (r.kind === "gguf" && r.metadata) {
    const rest = Object.fromEntries(
      Object.entries(r.metadata).filter(([k]) => !k.startsWith(`${r.config?.architecture}.`)),
    );
    out.push("", "metadata:", keyValues(rest));
  }
  if (r.layers?.length) {
    const rows = [["layer", "method", "grid", "bits/weight", "size", ...(r.kind === "ptq" ? ["weights"] : [])]];
    for (const l of r.layers) {
      rows.push([
        l.name,
        l.method,
        l.grid,
        l.bitsPerWeight.toFixed(3),
        formatBytes(l.bytes),
        ...(r.kind === "ptq" ? [l.reconstruction ?? ""] : []),
      ]);
    }
    out.push("", `quantized layers (${r.layers.length}):`, table(rows, new Set([3, 4])));
  }
  const rows = [["tensor", "dtype", "shape", "size"]];
  for (const t of r.tensors) rows.push([t.name, t.dtype, `[${t.shape.join(", ")}]`, formatBytes(t.bytes)]);
  out.push("", `tensors (${r.tensors.length}):`, table(rows, new Set([3])));
  return out.join("\n");
}

/**
 * Runs `ptq inspect` with the arguments after the subcommand.
 *
 * @returns 0 on success, 1 when the path cannot be read as a model, 2 on a bad command line.
 */
export async function inspectCommand(args: string[]): Promise<number> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: { json: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false } },
    }));
  } catch (e) {
    console.error(`ptq inspect: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  try {
    if (positionals.length !== 1) throw new UsageError(positionals.length ? "give one PATH" : "PATH is required");
    const report = await inspectPath(positionals[0]);
    console.log(values.json ? JSON.stringify(report) : formatReport(report));
    return 0;
  } catch (e) {
    return failure("inspect", e, USAGE);
  }
}
