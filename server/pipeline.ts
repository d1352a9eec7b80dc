/**
 * One job, start to end, free of any runtime: load the model (through injected file access, or from uploaded bytes),
 * optionally evaluate it, quantize it with {@link quantizeModel}, evaluate the result, and summarise as
 * `ptq quantize --json` does. Progress is reported in phases with an overall fraction; cancellation is checked
 * between steps.
 *
 * Cancellation rides on the library's progress callbacks: `quantizeModel` and `perplexity` call `onProgress` after
 * every batch of windows and every linear layer, and an exception thrown there propagates out of them (neither catches
 * errors), so checking the flag in the callback stops a job within one step. An `AbortSignal` option on
 * `quantizeModel`/`perplexity` would make that explicit rather than relying on the callbacks not being guarded.
 *
 * @module
 */

import type { MethodName, MethodOptions } from "../algorithms/methods.ts";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { getBackend, loadBackend } from "../backends/registry.ts";
import { FormatError, OptionError } from "../core/errors.ts";
import { parseHfConfig } from "../model/config.ts";
import { llamaFromWeights, type LlamaModel, type WeightTensor } from "../model/llama.ts";
import { parseLlama2cCheckpoint, parseLlama2cTokenizer } from "../model/llama2c.ts";
import { perplexity } from "../model/perplexity.ts";
import { progressCounter, quantizeModel, quantizeProgressTotal } from "../model/quantize_model.ts";
import { memorySource, openSafetensorsSource } from "../model/safetensors.ts";
import { HfTokenizer, type Tokenizer } from "../model/tokenizer.ts";
import { sampleWindows } from "../model/windows.ts";
import type { JobProgress } from "./jobs.ts";
import type { JobSpec, TextSource } from "./spec.ts";

/** A model sent with the request instead of named by path. */
export interface UploadedModel {
  /** The uploaded file's name (names the model in errors and in the summary). */
  readonly name: string;
  /** `safetensors` (needs `config`) or a llama2.c legacy checkpoint. */
  readonly format: "safetensors" | "llama2c";
  readonly bytes: Uint8Array;
  /** Parsed `config.json` (safetensors). */
  readonly config?: unknown;
  /** `tokenizer.json` or a llama2.c tokenizer `.bin`; needed for any text. */
  readonly tokenizer?: { readonly name: string; readonly bytes: Uint8Array };
  /** Parsed `tokenizer_config.json` (BOS/EOS strings), for a `tokenizer.json`. */
  readonly tokenizerConfig?: Record<string, unknown>;
}

/** What a runner receives: the spec with every path already resolved under the roots, or an upload. */
export interface JobInput {
  readonly spec: JobSpec;
  readonly upload?: UploadedModel;
  /** The model as the client named it (the summary never shows server paths the client did not write). */
  readonly modelLabel: string;
}

/** The result, shaped as `ptq quantize --json`'s line plus what a server client needs. */
export interface JobSummary {
  readonly model: string;
  readonly method: string;
  readonly engine?: string;
  readonly oac?: JobSpec["oac"];
  readonly bits: number;
  readonly group: number;
  readonly act_order: boolean;
  readonly factor_precision: "f64" | "f32";
  readonly avg_bits: number;
  /** Linear layers quantized. */
  readonly layers: number;
  /** Perplexity of the quantized model on each eval text, by name. */
  readonly ppl: Readonly<Record<string, number>>;
  /** With `baseline`: perplexity of the model before quantization. */
  readonly ppl_fp?: Readonly<Record<string, number>>;
  readonly backend: string;
  /** With `save`: what was written (download from `/jobs/:id/checkpoint`). */
  readonly checkpoint?: {
    readonly format: string;
    readonly files: readonly string[];
    readonly bytes: number;
    readonly notes: readonly string[];
  };
  readonly seconds: {
    readonly load: number;
    readonly baseline: number;
    readonly calibrate: number;
    readonly quantize: number;
    readonly eval: number;
    readonly save: number;
  };
}

/** A checkpoint a job wrote: a folder on the server holding `files`. */
export interface SavedCheckpoint {
  readonly format: string;
  /** Where the files are (server side; never shown to clients). */
  readonly dir: string;
  /** File names inside `dir`. */
  readonly files: readonly string[];
  readonly bytes: number;
  readonly notes: readonly string[];
}

/** A job's output. */
export interface JobOutput {
  readonly summary: JobSummary;
  /** With `save`. */
  readonly checkpoint?: SavedCheckpoint;
}

/** File access a job needs; the paths are already confined to the roots. */
export interface JobIo {
  /** A model and its tokenizer from a folder or a llama2.c `.bin`. */
  loadModel(path: string): Promise<{ model: LlamaModel; tokenizer: Tokenizer }>;
  /** A text file's contents. */
  readText(path: string): Promise<string>;
  /**
   * Writes the quantized model in `format` (see `model/save.ts`) into a fresh folder; `source` is the model's path
   * (config and tokenizer are copied from it). Absent where the host cannot write files.
   */
  saveCheckpoint?(
    format: string,
    model: LlamaModel,
    layers: ReadonlyMap<string, QuantizedLayer>,
    source: string | undefined,
  ): Promise<SavedCheckpoint>;
}

/** What the job reports to and asks of its host. */
export interface JobHooks {
  progress(p: JobProgress): void;
  /** True once cancellation was requested. */
  aborted(): boolean;
}

/** Thrown inside a job when it notices it was cancelled. */
export class JobCancelledError extends Error {
  constructor() {
    super("the job was cancelled");
    this.name = "JobCancelledError";
  }
}

/**
 * Runs a job.
 *
 * @throws {JobCancelledError} when `hooks.aborted()` turns true; {FormatError} for a malformed model or tokenizer;
 *   {OptionError} for a text shorter than one window and other invalid combinations the spec parser cannot see.
 */
export async function executeJob(input: JobInput, io: JobIo, hooks: JobHooks): Promise<JobOutput> {
  const { spec } = input;
  const check = () => {
    if (hooks.aborted()) throw new JobCancelledError();
  };
  const backend = spec.backend ? await loadBackend(spec.backend) : getBackend();
  const seconds = { load: 0, baseline: 0, calibrate: 0, quantize: 0, eval: 0, save: 0 };
  if (spec.save && !io.saveCheckpoint) throw new OptionError("this host cannot write checkpoints");

  check();
  hooks.progress({ phase: "load", done: 0, total: 1, fraction: 0, note: input.modelLabel });
  let t = performance.now();
  const { model, tokenizer } = input.upload ? await loadUpload(input.upload) : await io.loadModel(spec.model!);
  check();
  const text = (s: TextSource) => s.kind === "inline" ? Promise.resolve(s.text) : io.readText(s.path);
  const needsText = spec.calib !== undefined || spec.eval.length > 0;
  if (needsText && !tokenizer) throw new OptionError("the uploaded model has no tokenizer; texts cannot be encoded");
  const evalTokens: { name: string; tokens: Int32Array; windows: number }[] = [];
  for (const source of spec.eval) {
    const tokens = tokenizer!.encode(await text(source));
    const available = Math.floor(tokens.length / spec.seqLen);
    if (available === 0) {
      throw new OptionError(
        `eval text "${source.name}" has ${tokens.length} tokens, fewer than one window of ${spec.seqLen}`,
      );
    }
    evalTokens.push({ name: source.name, tokens, windows: Math.min(available, spec.windows ?? available) });
  }
  const calibration = spec.calib && spec.engine !== "rtn"
    ? sampleWindows(tokenizer!.encode(await text(spec.calib)), spec.samples, spec.seqLen, spec.seed)
    : undefined;
  seconds.load = (performance.now() - t) / 1000;
  check();

  // Progress in units of "one decoder layer over one window": a calibration step is one, an eval window is a whole
  // model's worth (numLayers), so the overall fraction moves at roughly the pace of the work.
  const layersN = model.config.numLayers;
  const quantizeTotal = quantizeProgressTotal(layersN, {
    method: spec.method as MethodName | "oac",
    engine: spec.engine === "rtn" ? undefined : spec.engine,
    oac: spec.oac,
    calibration,
    seqLen: spec.seqLen,
    trueSequential: spec.trueSequential,
  });
  const evalWindows = evalTokens.reduce((n, e) => n + e.windows, 0);
  const grand = quantizeTotal + layersN * evalWindows * (spec.baseline ? 2 : 1);
  let base = 0;
  const report = (phase: JobProgress["phase"], done: number, total: number, units: number, note?: string) => {
    hooks.progress({ phase, done, total, fraction: Math.min(1, (base + units) / grand), note });
    check();
  };

  const evaluate = async (m: LlamaModel, phase: "baseline" | "eval") => {
    const out: Record<string, number> = {};
    const total = evalWindows;
    let before = 0;
    for (const e of evalTokens) {
      const r = await perplexity(m, e.tokens, {
        seqLen: spec.seqLen,
        batch: spec.batch,
        windows: e.windows,
        backend,
        onProgress: (p) =>
          report(phase, before + p.windows, total, layersN * (before + p.windows), `${e.name} ppl ${p.ppl.toFixed(3)}`),
      });
      out[e.name] = r.ppl;
      before += e.windows;
    }
    base += layersN * total;
    return out;
  };

  let pplFp: Record<string, number> | undefined;
  if (spec.baseline && evalTokens.length) {
    t = performance.now();
    pplFp = await evaluate(model, "baseline");
    seconds.baseline = (performance.now() - t) / 1000;
  }

  const options: MethodOptions = {
    bits: spec.bits,
    groupSize: spec.group,
    actOrder: spec.actOrder,
    staticGroups: spec.staticGroups,
    symmetric: spec.symmetric,
    mse: spec.mse,
    damping: spec.damping,
    factorPrecision: spec.factorPrecision,
    outlierThreshold: spec.outlierThreshold,
    statBits: spec.statBits,
    backend,
  };
  const count = progressCounter();
  const result = await quantizeModel(model, {
    method: spec.method as MethodName | "oac",
    engine: spec.engine === "rtn" ? undefined : spec.engine,
    options,
    oac: { ...spec.oac, seed: spec.seed },
    calibration,
    seqLen: spec.seqLen,
    batch: spec.batch,
    trueSequential: spec.trueSequential,
    backend,
    onProgress: (p) => {
      const done = Math.min(count(p), quantizeTotal);
      report("quantize", done, quantizeTotal, done, `layer ${p.layer + 1}/${p.layers} ${p.name ?? p.stage}`);
    },
  });
  base += quantizeTotal;
  seconds.calibrate = result.seconds.calibrate;
  seconds.quantize = result.seconds.quantize;
  check();

  t = performance.now();
  const ppl = evalTokens.length ? await evaluate(result.model, "eval") : {};
  seconds.eval = (performance.now() - t) / 1000;

  let checkpoint: SavedCheckpoint | undefined;
  if (spec.save) {
    hooks.progress({ phase: "save", done: 0, total: 1, fraction: 1, note: spec.save });
    t = performance.now();
    checkpoint = await io.saveCheckpoint!(spec.save, result.model, result.layers, spec.model);
    seconds.save = (performance.now() - t) / 1000;
  }

  return {
    summary: {
      model: input.modelLabel,
      method: spec.method,
      ...(spec.method === "oac" ? { engine: spec.engine, oac: spec.oac } : {}),
      bits: spec.engine === "billm" ? 1 : spec.bits,
      group: spec.group,
      act_order: spec.actOrder,
      factor_precision: spec.factorPrecision,
      avg_bits: result.avgBits,
      layers: result.layers.size,
      ppl,
      ...(pplFp ? { ppl_fp: pplFp } : {}),
      backend: backend.name,
      ...(checkpoint
        ? {
          checkpoint: {
            format: checkpoint.format,
            files: checkpoint.files,
            bytes: checkpoint.bytes,
            notes: checkpoint.notes,
          },
        }
        : {}),
      seconds,
    },
    ...(checkpoint ? { checkpoint } : {}),
  };
}

function uploadTokenizer(upload: UploadedModel, vocabSize: number): Tokenizer {
  const { name, bytes } = upload.tokenizer!;
  if (name.endsWith(".json") || bytes[0] === 0x7b /* "{" */) {
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new FormatError(name, `not valid JSON: ${(e as Error).message}`);
    }
    return new HfTokenizer(json, upload.tokenizerConfig ?? {}, name);
  }
  return parseLlama2cTokenizer(bytes, name, vocabSize);
}

/** Float dtypes a checkpoint's weights may have. */
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16", "F64"]);

/**
 * A model (and its tokenizer, when one was sent) from uploaded bytes: a llama2.c checkpoint, or a safetensors file
 * with its `config.json`, held in memory.
 *
 * @throws {FormatError} for a malformed file, config or tokenizer, a non-float weight, or a missing or misshapen
 *   weight.
 */
export async function loadUpload(upload: UploadedModel): Promise<{ model: LlamaModel; tokenizer?: Tokenizer }> {
  let model: LlamaModel;
  if (upload.format === "llama2c") {
    const loaded = parseLlama2cCheckpoint(upload.bytes, upload.name);
    model = llamaFromWeights(loaded.config, (n) => loaded.weights.get(n), upload.name);
  } else {
    if (upload.config === undefined) throw new FormatError(upload.name, "a safetensors upload needs its config.json");
    const config = parseHfConfig(upload.config, `${upload.name} (config)`);
    using reader = await openSafetensorsSource(memorySource(upload.bytes), upload.name);
    const tensors = new Map<string, WeightTensor>();
    for (const name of reader.names) {
      // Old checkpoints store RoPE's inverse frequencies as a buffer; the forward pass recomputes them.
      if (name.endsWith(".rotary_emb.inv_freq")) continue;
      const info = reader.info(name);
      if (!FLOAT_DTYPES.has(info.dtype)) throw new FormatError(upload.name, `"${name}" has dtype ${info.dtype}`);
      tensors.set(name, await reader.readF32(name));
    }
    model = llamaFromWeights(config, (n) => tensors.get(n), upload.name);
  }
  return { model, tokenizer: upload.tokenizer && uploadTokenizer(upload, model.config.vocabSize) };
}
