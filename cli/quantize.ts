/**
 * `ptq quantize`: the sequential pipeline over a whole model, then perplexity on each `--eval` file.
 *
 * ```
 * ptq quantize --model DIR --method rtn|gptq --bits B [--group G] [--act-order] [--calib FILE] [--samples 128]
 *   [--seqlen 512] [--seed S] [--eval FILE ...] [--windows N] [--json]
 * ```
 *
 * With `--json` the last stdout line is one JSON object
 * `{"method", "bits", "group", "act_order", "factor_precision", "avg_bits", "ppl": {"<file name>": …}, "seconds": {"calibrate", "quantize", "eval"}}`.
 *
 * @module
 */

import { type MethodName, type MethodOptions, METHODS, needsCalibration } from "../algorithms/methods.ts";
import { defaultOacRows, defaultOacStep } from "../algorithms/oac.ts";
import { listBackends, setBackend, setBestBackend } from "../backends/registry.ts";
import type { Backend } from "../core/backend.ts";
import type { LlamaModel } from "../model/llama.ts";
import {
  type ModelQuantizeOptions,
  progressCounter,
  quantizeModel,
  quantizeProgressTotal,
} from "../model/quantize_model.ts";
import { DEFAULT_WORKERS, evaluatePerplexity } from "../model/perplexity_pool.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { sampleWindows } from "../model/windows.ts";
import { loadModel } from "../model/load.ts";
import { SAVE_FORMATS, saveQuantized } from "../model/save.ts";
import { choice, failure, intOption, numberOption, parseCommand, requirePath, UsageError } from "./common.ts";
import { createProgress } from "./progress.ts";

const USAGE = `Usage: ptq quantize --model DIR|FILE --method NAME [options]

Quantizes every linear layer of the decoder, layer by layer (GPTQ's sequential flow), then evaluates perplexity.

Options:
  --model DIR|FILE   Hugging Face model folder, or a llama2.c checkpoint (.bin) with its tokenizer beside it
  --method NAME      ${[...METHODS, "oac"].join(" | ")}
  --engine NAME      with --method oac: the quantizer OAC calibrates (${
  METHODS.filter((m) => m !== "rtn").join(" | ")
}; default gptq)
  --bits B           bits per weight of the grid (default 4)
  --group G          columns per group, 0 = one grid per row (default 0; SpQR 16)
  --act-order        quantize columns by descending Hessian diagonal (GPTQ)
  --static-groups    fit groups before quantizing (GPTQ with act-order)
  --sym              symmetric grid
  --mse              GPTQ's MSE grid search
  --damping L        relative Hessian damping λ (default 0.01; 0.1 with --method oac)
  --factor-precision P  f64 | f32: precision of H's factorisation (default f64; f32 as the reference GPTQ, faster on
                     the wasm backend)
  --outlier-threshold T  SpQR's relative outlier threshold τ (default 0.2)
  --stat-bits B      SpQR's bits for scales and zeros (default 3)
  --vector V         VPTQ: vector length along the output dimension (default 4)
  --codebook K       VPTQ: centroids of the codebook (default 256: log2(K)/V index bits per weight)
  --residual K2      VPTQ: centroids of a residual codebook (default none)
  --outliers F       VPTQ: fraction of columns (highest Hessian diagonal) with their own codebook (default 0)
  --lowrank KIND     add low-rank error factors after quantizing: lorc | qera | qera-approx
  --rank R           rank of the low-rank factors (default 32)
  --smooth KIND      fold scales into the model before quantizing: awq | smoothquant
  --alpha A          SmoothQuant's migration strength (default 0.5; AWQ searches it)
  --true-sequential  quantize q/k/v, o, gate/up, down in turn within each layer
  --oac-labels L     OAC labels: data (empirical Fisher, default) | sampled (true Fisher)
  --oac-form F       OAC form: sequence (default) | token-diagonal
  --oac-refresh R    OAC gradients: per-layer (recomputed on the partly quantized model, default) | once
  --oac-mix A        mix in GPTQ's Hessian: Ĥ_OAC + A·Ĥ_GPTQ, both normalised to a unit mean diagonal (default 0)
  --oac-role R       hessian (OAC's Hessian everywhere, default) | salience (GPTQ's for the error feedback, OAC's to
                     choose BiLLM's salient columns; --engine billm)
  --oac-rows R       coupled (K-FAC: GPTQ's input Hessian, the loss gradients' output-side one, rounding coupled
                     across rows; the default with --engine gptq, spqr or billm and no option built on H_OAC) |
                     independent (the paper's H_OAC, rows summed; the default otherwise)
  --oac-step B       OAC's first-order step: W moved by B times the damped Newton step from the mean loss gradient
                     (K-FAC's with coupled rows) before rounding (default 1 with coupled rows and per-layer refresh,
                     0 otherwise; 0 turns it off)
  --oac-step-from G  the gradient it follows: lost (its change since the full-precision model; the default with
                     per-layer refresh) | loss
  --oac-step-damping L
                     relative damping of the step's solve (default 10 with coupled rows, 0.1 otherwise)
  --oac-step-trust T each row's step at most T times the row's norm (default 0.05)
  --calib FILE       calibration text (required for every method but rtn)
  --samples N        calibration windows (default 128)
  --seqlen L         window length for calibration and evaluation (default 512)
  --seed S           seed of the calibration sampling (default 0)
  --eval FILE        evaluate perplexity on FILE (repeatable)
  --windows N        evaluate only the first N windows of each file
  --batch B          windows per forward pass (default 8)
  --backend NAME     compute backend (${listBackends().join(", ")}; default: the fastest that starts, wasm then ts)
  --workers N        run the calibration's forward passes and Hessians, and the evaluation, on N worker threads, each
                     running the backend on one thread over whole batches (wasm and ts; the same result; each holds
                     a batch of activations; default: the cores, ${DEFAULT_WORKERS} here; 1, or fewer than two batches per
                     worker, runs in this thread; OAC's gradients and the smoothing searches run in this thread)
  --out DIR          save the quantized model (written atomically)
  --format F         checkpoint format: ${SAVE_FORMATS.join(" | ")} (default gptq)
  --json             print one JSON line with the results
  -h, --help         show this help
`;

/** Runs `ptq quantize`; returns the exit status (0 ok, 1 failure, 2 bad command line). */
export async function quantizeCommand(args: string[]): Promise<number> {
  const values = parseCommand("quantize", USAGE, args, {
    model: { type: "string" },
    method: { type: "string" },
    engine: { type: "string" },
    "oac-labels": { type: "string" },
    "oac-form": { type: "string" },
    "oac-refresh": { type: "string" },
    "oac-mix": { type: "string" },
    "oac-role": { type: "string" },
    "oac-rows": { type: "string" },
    "oac-step": { type: "string" },
    "oac-step-from": { type: "string" },
    "oac-step-damping": { type: "string" },
    "oac-step-trust": { type: "string" },
    bits: { type: "string" },
    group: { type: "string" },
    "act-order": { type: "boolean", default: false },
    "static-groups": { type: "boolean", default: false },
    sym: { type: "boolean", default: false },
    mse: { type: "boolean", default: false },
    damping: { type: "string" },
    "factor-precision": { type: "string" },
    "outlier-threshold": { type: "string" },
    "stat-bits": { type: "string" },
    vector: { type: "string" },
    codebook: { type: "string" },
    residual: { type: "string" },
    outliers: { type: "string" },
    lowrank: { type: "string" },
    rank: { type: "string" },
    smooth: { type: "string" },
    alpha: { type: "string" },
    "true-sequential": { type: "boolean", default: false },
    calib: { type: "string" },
    samples: { type: "string" },
    seqlen: { type: "string" },
    seed: { type: "string" },
    eval: { type: "string", multiple: true },
    windows: { type: "string" },
    batch: { type: "string" },
    backend: { type: "string" },
    workers: { type: "string" },
    out: { type: "string" },
    format: { type: "string" },
    json: { type: "boolean", default: false },
  });
  if (typeof values === "number") return values;
  const json = values.json;
  const log = (line: string) => void (json || console.error(line));
  try {
    if (!values.model) throw new UsageError("--model is required");
    const method = values.method;
    const known = [...METHODS, "oac"];
    if (!method) throw new UsageError(`--method is required (${known.join(", ")})`);
    if (!known.includes(method)) throw new UsageError(`unknown --method "${method}"; available: ${known.join(", ")}`);
    const engine = method === "oac" ? values.engine ?? "gptq" : method;
    if (values.engine && method !== "oac") throw new UsageError("--engine applies to --method oac only");
    if (method === "oac" && (engine === "rtn" || !(METHODS as readonly string[]).includes(engine))) {
      throw new UsageError(`--engine must be one of ${METHODS.filter((m) => m !== "rtn").join(", ")}, got "${engine}"`);
    }
    const oacLabels = choice(values["oac-labels"], "oac-labels", ["data", "sampled"] as const, "data");
    const oacForm = choice(values["oac-form"], "oac-form", ["sequence", "token-diagonal"] as const, "sequence");
    const oacRefresh = choice(values["oac-refresh"], "oac-refresh", ["per-layer", "once"] as const, "per-layer");
    const oacMix = numberOption(values["oac-mix"], "oac-mix", 0, 0);
    const oacRole = choice(values["oac-role"], "oac-role", ["hessian", "salience"] as const, "hessian");
    const oacRows = values["oac-rows"] === undefined
      ? defaultOacRows({ form: oacForm, mix: oacMix, role: oacRole }, engine)
      : choice(values["oac-rows"], "oac-rows", ["independent", "coupled"] as const, "independent");
    if (method === "oac" && oacRows === "coupled" && engine === "vptq") {
      throw new UsageError(
        `--oac-rows coupled needs --engine gptq, spqr or billm (the engines that round rows coupled)`,
      );
    }
    if (
      method === "oac" && oacRows === "coupled" &&
      defaultOacRows({ form: oacForm, mix: oacMix, role: oacRole }, engine) !== "coupled"
    ) {
      throw new UsageError(
        `--oac-rows coupled takes GPTQ's input Hessian: not with --oac-mix, --oac-form token-diagonal or --oac-role salience`,
      );
    }
    const stepDefaults = defaultOacStep(oacRows, oacRefresh);
    const oacStep = {
      firstOrder: numberOption(values["oac-step"], "oac-step", stepDefaults.firstOrder, 0),
      firstOrderGradient: choice(
        values["oac-step-from"],
        "oac-step-from",
        ["lost", "loss"] as const,
        stepDefaults.firstOrderGradient,
      ),
      firstOrderDamping: numberOption(
        values["oac-step-damping"],
        "oac-step-damping",
        stepDefaults.firstOrderDamping,
        0,
      ),
      firstOrderTrust: numberOption(values["oac-step-trust"], "oac-step-trust", stepDefaults.firstOrderTrust, 0),
    };
    if (method === "oac" && oacStep.firstOrder > 0 && oacRole === "salience") {
      throw new UsageError(`--oac-step needs --oac-role hessian`);
    }
    if (method === "oac" && oacStep.firstOrder > 0 && oacStep.firstOrderGradient === "lost" && oacRefresh === "once") {
      throw new UsageError(
        `--oac-step-from lost needs --oac-refresh per-layer (with gradients taken once, nothing is lost yet)`,
      );
    }
    const oacVariant = {
      labels: oacLabels,
      form: oacForm,
      refresh: oacRefresh,
      mix: oacMix,
      role: oacRole,
      rows: oacRows,
      ...oacStep,
    };
    if (oacRole === "salience" && engine !== "billm") {
      throw new UsageError(`--oac-role salience needs --engine billm (the engine that chooses salient weights)`);
    }
    const bits = intOption(values.bits, "bits", 4, 1, 8);
    const group = intOption(values.group, "group", engine === "spqr" ? 16 : 0, 0);
    const samples = intOption(values.samples, "samples", 128, 1);
    const seqLen = intOption(values.seqlen, "seqlen", 512, 2);
    const seed = intOption(values.seed, "seed", 0, 0);
    const batch = intOption(values.batch, "batch", 8, 1);
    const workers = intOption(values.workers, "workers", DEFAULT_WORKERS, 1);
    const windows = values.windows === undefined ? undefined : intOption(values.windows, "windows", 1, 1);
    // Absent: the engine's default (0.01), or OAC's (quantizeModel applies OAC_DEFAULT_DAMPING).
    const damping = values.damping === undefined ? undefined : numberOption(values.damping, "damping", 0, 0);
    const factorPrecision = choice(values["factor-precision"], "factor-precision", ["f64", "f32"] as const, "f64");
    const backend: Backend = values.backend ? await setBackend(values.backend) : await setBestBackend();
    const lowRankKind = values.lowrank === undefined
      ? undefined
      : choice(values.lowrank, "lowrank", ["lorc", "qera", "qera-approx"] as const, "lorc");
    const smoothKind = values.smooth === undefined
      ? undefined
      : choice(values.smooth, "smooth", ["awq", "smoothquant"] as const, "awq");
    if (values.rank !== undefined && !lowRankKind) throw new UsageError("--rank needs --lowrank");
    if (values.alpha !== undefined && !smoothKind) throw new UsageError("--alpha needs --smooth");
    // QERA and smoothing use calibration statistics even after an RTN base quantizer.
    const calibrated = needsCalibration(engine as (typeof METHODS)[number]) || smoothKind !== undefined ||
      (lowRankKind !== undefined && lowRankKind !== "lorc");
    if (calibrated && !values.calib) throw new UsageError(`--calib FILE is required for --method ${method}`);
    const format = choice(values.format, "format", SAVE_FORMATS, "gptq");
    if (values.format && !values.out) throw new UsageError("--format needs --out DIR");
    const evalFiles = values.eval ?? [];
    for (const f of [...evalFiles, ...(values.calib ? [values.calib] : [])]) {
      if (!(await isFile(f))) throw new UsageError(`${f}: no such file`);
    }

    await requirePath(values.model, "model");
    const { model, tokenizer } = await loadModel(values.model);
    log(
      `loaded ${values.model}: ${model.config.numLayers} layers, hidden ${model.config.hiddenSize}; backend ${backend.name}`,
    );

    const options: MethodOptions = {
      bits,
      groupSize: group,
      actOrder: values["act-order"],
      staticGroups: values["static-groups"],
      symmetric: values.sym,
      mse: values.mse,
      damping,
      factorPrecision,
      outlierThreshold: numberOption(values["outlier-threshold"], "outlier-threshold", 0.2, 0),
      statBits: intOption(values["stat-bits"], "stat-bits", 3, 0, 16),
      vectorSize: intOption(values.vector, "vector", 4, 1, 64),
      codebookSize: intOption(values.codebook, "codebook", 256, 2, 65536),
      residualCodebookSize: values.residual === undefined
        ? undefined
        : intOption(values.residual, "residual", 0, 2, 65536),
      outlierFraction: numberOption(values.outliers, "outliers", 0, 0),
      backend,
    };
    let calibration: Int32Array | undefined;
    if (calibrated) {
      const calibTokens = tokenizer.encode(await Deno.readTextFile(values.calib!));
      calibration = sampleWindows(calibTokens, samples, seqLen, seed);
      log(`calibration: ${samples} windows of ${seqLen} tokens from ${values.calib} (seed ${seed})`);
    }
    // One bar over the calibration driver's steps: passes over the windows and seven linear layers per layer.
    const bar = createProgress(calibrated ? "calibrate+quantize" : "quantize", { silent: json, unit: "steps" });
    const count = progressCounter();
    const run: ModelQuantizeOptions = {
      method: method as MethodName | "oac",
      engine: engine as Exclude<MethodName, "rtn">,
      options,
      oac: { ...oacVariant, seed },
      calibration,
      seqLen,
      batch,
      trueSequential: values["true-sequential"],
      lowRank: lowRankKind && { kind: lowRankKind, rank: intOption(values.rank, "rank", 32, 1) },
      smooth: smoothKind &&
        {
          kind: smoothKind,
          alpha: values.alpha === undefined ? undefined : numberOption(values.alpha, "alpha", 0.5, 0),
        },
      backend,
      workers,
      onProgress: (p) => {
        bar.update(Math.min(count(p), totalSteps), totalSteps, `layer ${p.layer + 1}/${p.layers} ${p.name ?? p.stage}`);
      },
    };
    const totalSteps = quantizeProgressTotal(model.config.numLayers, run);
    const result = await quantizeModel(model, run);
    bar.finish();
    const { model: quantized, layers, avgBits } = result;
    log(`quantized ${layers.size} linear layers: ${avgBits.toFixed(3)} bits per weight on average`);

    let saved: { path: string; format: string } | undefined;
    if (values.out) {
      const r = await saveQuantized(values.out, format, quantized, layers, values.model);
      saved = { path: r.path, format: r.format };
      log(`saved ${r.format} checkpoint to ${r.path}${r.notes.length ? `\n  ${r.notes.join("\n  ")}` : ""}`);
    }
    const te = performance.now();
    const ppl: Record<string, number> = {};
    for (const file of evalFiles) {
      ppl[baseName(file)] = await evaluate(
        quantized,
        tokenizer,
        file,
        { seqLen, batch, windows, backend, workers },
        json,
      );
      log(`${file}: perplexity ${ppl[baseName(file)].toFixed(3)}`);
    }
    const seconds = { ...result.seconds, eval: (performance.now() - te) / 1000 };
    const summary = {
      method,
      ...(method === "oac"
        ? {
          engine,
          oac: oacVariant,
        }
        : {}),
      // Code bits per weight: BiLLM's first binary term, VPTQ's index bits; the grid's bits otherwise.
      bits: engine === "billm" ? 1 : engine === "vptq" ? Math.log2(options.codebookSize!) / options.vectorSize! : bits,
      group,
      act_order: values["act-order"],
      factor_precision: options.factorPrecision,
      avg_bits: avgBits,
      ppl,
      seconds,
      ...(lowRankKind ? { lowrank: lowRankKind, rank: intOption(values.rank, "rank", 32, 1) } : {}),
      ...(smoothKind ? { smooth: smoothKind } : {}),
      ...(saved ? { saved } : {}),
    };
    if (json) console.log(JSON.stringify(summary));
    else {
      console.log(
        `${method} ${bits}-bit${group ? ` g${group}` : ""}${values["act-order"] ? " act-order" : ""}: ` +
          `${avgBits.toFixed(3)} bits/weight; ` +
          Object.entries(ppl).map(([f, p]) => `${f} ppl ${p.toFixed(3)}`).join(", ") +
          `; calibrate ${seconds.calibrate.toFixed(1)} s, quantize ${seconds.quantize.toFixed(1)} s, eval ${
            seconds.eval.toFixed(1)
          } s`,
      );
    }
    return 0;
  } catch (e) {
    return failure("quantize", e, USAGE);
  }
}

async function evaluate(
  model: LlamaModel,
  tokenizer: Tokenizer,
  file: string,
  options: { seqLen: number; batch: number; windows?: number; backend: Backend; workers: number },
  silent: boolean,
): Promise<number> {
  const tokens = tokenizer.encode(await Deno.readTextFile(file));
  const bar = createProgress(`eval ${baseName(file)}`, { silent, unit: "windows" });
  const r = await evaluatePerplexity(model, tokens, {
    ...options,
    onProgress: (p) => bar.update(p.windows, p.totalWindows, `ppl ${p.ppl.toFixed(3)}`),
  });
  bar.finish(`ppl ${r.ppl.toFixed(3)}`);
  return r.ppl;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
