/**
 * The job request body: the options of `ptq quantize`, spelled as its long flags (`{"method": "gptq", "bits": 4,
 * "act-order": true, "calib": "data/calib.txt"}` is `ptq quantize --method gptq --bits 4 --act-order --calib ...`),
 * plus inline texts and a few server-only fields. Validated strictly, before a job is queued, so a client learns of a
 * bad request at once (400) rather than from a failed job.
 *
 * | key | type | default | meaning |
 * | --- | --- | --- | --- |
 * | `model` | string | — | folder or llama2.c `.bin` under the server's roots (absent with an upload) |
 * | `method` | string | — | `rtn`, `gptq`, `spqr`, `billm` or `oac` |
 * | `engine` | string | `gptq` | with `oac`: `gptq`, `spqr` or `billm` |
 * | `bits`, `group` | integer | 4, 0 (SpQR 16) | grid bits, columns per group |
 * | `act-order`, `static-groups`, `sym`, `mse`, `true-sequential` | boolean | false | as the CLI flags |
 * | `damping`, `outlier-threshold`, `stat-bits` | number | 0.01 (OAC 0.1), 0.2, 3 | as the CLI flags |
 * | `factor-precision` | string | `f64` | `f64` or `f32`: precision of the Hessian's factorisation |
 * | `oac-labels`, `oac-form`, `oac-refresh`, `oac-mix`, `oac-role`, `oac-rows` | | | OAC's variant, as the CLI flags |
 * | `oac-step`, `oac-step-from`, `oac-step-damping`, `oac-step-trust` | | | OAC's first-order step, as the CLI flags |
 * | `calib` / `calib-text` | string | — | calibration text: a file under the roots, or the text itself |
 * | `samples`, `seqlen`, `seed`, `batch` | integer | 128, 512, 0, 8 | calibration windows, window length, ... |
 * | `eval` / `eval-text` | string or string[] / string | — | texts to evaluate perplexity on |
 * | `windows` | integer | all | evaluate only the first N windows of each text |
 * | `baseline` | boolean | false | also evaluate the unquantized model (`ppl_fp` in the result) |
 * | `backend` | string | the server's | a registered backend name |
 * | `save` | string | — | also write the checkpoint: `gptq`, `ptq`, `gguf-q8_0`, ... (`model/save.ts`) |
 *
 * @module
 */

import { METHODS } from "../algorithms/methods.ts";
import { defaultOacRows, defaultOacStep } from "../algorithms/oac.ts";
import { SAVE_FORMATS } from "../model/save.ts";
import { HttpError } from "./errors.ts";

/** The engines a job may ask for, as a method or as OAC's engine (VPTQ's codebook options are not served). */
const JOB_ENGINES = METHODS.filter((m) => m !== "vptq");

/** Every method name a job may ask for. */
export const JOB_METHODS: readonly string[] = [...JOB_ENGINES, "oac"];

/** A text given by path (resolved under the roots before the job runs) or inline. */
export type TextSource =
  | { readonly kind: "path"; readonly path: string; readonly name: string }
  | { readonly kind: "inline"; readonly text: string; readonly name: string };

/** A validated job request. Paths are as the client wrote them until the app resolves them under the roots. */
export interface JobSpec {
  /** Model folder or llama2.c checkpoint; undefined when the model is uploaded. */
  readonly model?: string;
  readonly method: "rtn" | "gptq" | "spqr" | "billm" | "oac";
  /** The quantizer: `method`, or OAC's engine. */
  readonly engine: "rtn" | "gptq" | "spqr" | "billm";
  readonly bits: number;
  readonly group: number;
  readonly actOrder: boolean;
  readonly staticGroups: boolean;
  readonly symmetric: boolean;
  readonly mse: boolean;
  /** Absent: the engine's default, or OAC's. */
  readonly damping?: number;
  readonly factorPrecision: "f64" | "f32";
  readonly outlierThreshold: number;
  readonly statBits: number;
  readonly trueSequential: boolean;
  readonly oac: {
    readonly labels: "data" | "sampled";
    readonly form: "sequence" | "token-diagonal";
    readonly refresh: "per-layer" | "once";
    readonly mix: number;
    readonly role: "hessian" | "salience";
    readonly rows: "independent" | "coupled";
    /** Scale of the first-order step (0: none). */
    readonly firstOrder: number;
    /** The gradient the step follows. */
    readonly firstOrderGradient: "loss" | "lost";
    /** Relative damping of the step's solve. */
    readonly firstOrderDamping: number;
    /** Each row's step at most this fraction of its norm. */
    readonly firstOrderTrust: number;
  };
  /** Calibration text; required for every engine but RTN. */
  readonly calib?: TextSource;
  readonly samples: number;
  readonly seqLen: number;
  readonly seed: number;
  readonly batch: number;
  /** Texts to evaluate, in order; results are keyed by their `name`. */
  readonly eval: readonly TextSource[];
  readonly windows?: number;
  /** Also evaluate the model before quantization. */
  readonly baseline: boolean;
  /** Backend name; undefined = the runner's current backend. */
  readonly backend?: string;
  /** Checkpoint format to write (`model/save.ts`); none when undefined. */
  readonly save?: string;
}

/** Bounds on a job's size, so that one request cannot ask for hours of work or gigabytes of activations. */
export interface SpecLimits {
  /** Most calibration windows; default 1024. */
  readonly maxSamples?: number;
  /** Longest window; default 4096. */
  readonly maxSeqLen?: number;
  /** Most eval texts; default 8. */
  readonly maxEvalTexts?: number;
}

const KEYS = [
  "model",
  "method",
  "engine",
  "bits",
  "group",
  "act-order",
  "static-groups",
  "sym",
  "mse",
  "damping",
  "factor-precision",
  "outlier-threshold",
  "stat-bits",
  "true-sequential",
  "oac-labels",
  "oac-form",
  "oac-refresh",
  "oac-mix",
  "oac-role",
  "oac-rows",
  "oac-step",
  "oac-step-from",
  "oac-step-damping",
  "oac-step-trust",
  "calib",
  "calib-text",
  "samples",
  "seqlen",
  "seed",
  "batch",
  "eval",
  "eval-text",
  "windows",
  "baseline",
  "backend",
  "save",
] as const;

function bad(message: string): HttpError {
  return new HttpError(400, "bad_request", message);
}

/**
 * Validates a parsed request body.
 *
 * @param body The parsed JSON (or the `spec` field of an upload).
 * @param options `uploaded`: the model comes with the request, so `model` must be absent; `backends`: the names a
 *   job may ask for; `limits`: see {@link SpecLimits}.
 * @throws {HttpError} 400 `bad_request` for a non-object, an unknown key, a wrong type or an out-of-range value, or
 *   400 `unknown_method` for an unknown method or engine.
 */
export function parseJobSpec(
  body: unknown,
  options: { uploaded?: boolean; backends?: readonly string[]; limits?: SpecLimits } = {},
): JobSpec {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw bad("the request body must be a JSON object");
  }
  const o = body as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !(KEYS as readonly string[]).includes(k));
  if (unknown.length) {
    throw bad(`unknown key${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => `"${k}"`).join(", ")}`);
  }
  const { maxSamples = 1024, maxSeqLen = 4096, maxEvalTexts = 8 } = options.limits ?? {};

  const str = (key: string): string | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== "string" || v === "") throw bad(`"${key}" must be a non-empty string`);
    return v;
  };
  const bool = (key: string): boolean => {
    const v = o[key];
    if (v === undefined) return false;
    if (typeof v !== "boolean") throw bad(`"${key}" must be true or false`);
    return v;
  };
  const int = (key: string, fallback: number, min: number, max: number): number => {
    const v = o[key];
    if (v === undefined) return fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw bad(`"${key}" must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const num = (key: string, fallback: number, min: number): number => {
    const v = o[key];
    if (v === undefined) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min) {
      throw bad(`"${key}" must be a number ≥ ${min}, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const oneOf = <T extends string>(key: string, allowed: readonly T[], fallback: T): T => {
    const v = o[key];
    if (v === undefined) return fallback;
    if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
      throw bad(`"${key}" must be one of ${allowed.join(", ")}, got ${JSON.stringify(v)}`);
    }
    return v as T;
  };

  const method = o.method;
  if (method === undefined) {
    throw new HttpError(400, "unknown_method", `"method" is required (${JOB_METHODS.join(", ")})`);
  }
  if (typeof method !== "string" || !JOB_METHODS.includes(method)) {
    throw new HttpError(
      400,
      "unknown_method",
      `unknown method ${JSON.stringify(method)}; available: ${JOB_METHODS.join(", ")}`,
    );
  }
  if (o.engine !== undefined && method !== "oac") throw bad(`"engine" applies to method "oac" only`);
  const engines = JOB_ENGINES.filter((m) => m !== "rtn");
  const engineValue = o.engine ?? "gptq";
  if (method === "oac" && (typeof engineValue !== "string" || !(engines as readonly string[]).includes(engineValue))) {
    throw new HttpError(
      400,
      "unknown_method",
      `unknown engine ${JSON.stringify(engineValue)}; available: ${engines.join(", ")}`,
    );
  }
  const engine = (method === "oac" ? engineValue : method) as JobSpec["engine"];
  if (o["oac-role"] === "salience" && engine !== "billm") throw bad(`"oac-role" "salience" needs engine "billm"`);

  const model = str("model");
  if (options.uploaded && model !== undefined) throw bad(`"model" must be absent when the model is uploaded`);
  if (!options.uploaded && model === undefined) throw bad(`"model" is required (a folder or .bin under the roots)`);

  const text = (pathKey: string, textKey: string): TextSource[] => {
    const out: TextSource[] = [];
    const p = o[pathKey];
    const paths = p === undefined ? [] : Array.isArray(p) ? p : [p];
    for (const path of paths) {
      if (typeof path !== "string" || path === "") throw bad(`"${pathKey}" must be a path or a list of paths`);
      out.push({ kind: "path", path, name: path.slice(path.lastIndexOf("/") + 1) });
    }
    const t = o[textKey];
    if (t !== undefined) {
      if (typeof t !== "string" || t === "") throw bad(`"${textKey}" must be a non-empty string`);
      out.push({ kind: "inline", text: t, name: textKey });
    }
    return out;
  };
  const calibs = text("calib", "calib-text");
  if (calibs.length > 1) throw bad(`give one calibration text: "calib" (one path) or "calib-text"`);
  if (engine !== "rtn" && calibs.length === 0) {
    throw bad(`method ${method} needs calibration text: "calib" (a path under the roots) or "calib-text"`);
  }
  const evals = text("eval", "eval-text");
  if (evals.length > maxEvalTexts) throw bad(`at most ${maxEvalTexts} eval texts`);
  const names = new Set<string>();
  for (const e of evals) {
    if (names.has(e.name)) throw bad(`two eval texts are named "${e.name}"`);
    names.add(e.name);
  }

  const backend = str("backend");
  if (backend !== undefined && options.backends && !options.backends.includes(backend)) {
    throw bad(`unknown backend "${backend}"; available: ${options.backends.join(", ")}`);
  }
  const oacVariant = {
    labels: oneOf("oac-labels", ["data", "sampled"] as const, "data"),
    form: oneOf("oac-form", ["sequence", "token-diagonal"] as const, "sequence"),
    refresh: oneOf("oac-refresh", ["per-layer", "once"] as const, "per-layer"),
    mix: num("oac-mix", 0, 0),
    role: oneOf("oac-role", ["hessian", "salience"] as const, "hessian"),
  };
  const rows = o["oac-rows"] === undefined
    ? defaultOacRows(oacVariant, engine)
    : oneOf("oac-rows", ["independent", "coupled"] as const, "independent");
  const step = defaultOacStep(rows, oacVariant.refresh);
  const oac = {
    ...oacVariant,
    rows,
    firstOrder: num("oac-step", step.firstOrder, 0),
    firstOrderGradient: oneOf("oac-step-from", ["lost", "loss"] as const, step.firstOrderGradient),
    firstOrderDamping: num("oac-step-damping", step.firstOrderDamping, 0),
    firstOrderTrust: num("oac-step-trust", step.firstOrderTrust, 0),
  };
  if (method === "oac" && oac.rows === "coupled" && defaultOacRows(oacVariant, engine) !== "coupled") {
    throw bad(
      `"oac-rows" "coupled" takes GPTQ's input Hessian: not with "oac-mix", the token-diagonal form or the salience role`,
    );
  }
  if (method === "oac" && oac.firstOrder > 0 && oac.role === "salience") {
    throw bad(`"oac-step" needs "oac-role" "hessian"`);
  }
  if (method === "oac" && oac.firstOrder > 0 && oac.firstOrderGradient === "lost" && oac.refresh === "once") {
    throw bad(`"oac-step-from" "lost" needs "oac-refresh" "per-layer"`);
  }

  return {
    model,
    method: method as JobSpec["method"],
    engine,
    bits: int("bits", 4, 1, 8),
    group: int("group", engine === "spqr" ? 16 : 0, 0, 1 << 20),
    actOrder: bool("act-order"),
    staticGroups: bool("static-groups"),
    symmetric: bool("sym"),
    mse: bool("mse"),
    damping: o.damping === undefined ? undefined : num("damping", 0, 0),
    factorPrecision: oneOf("factor-precision", ["f64", "f32"] as const, "f64"),
    outlierThreshold: num("outlier-threshold", 0.2, 0),
    statBits: int("stat-bits", 3, 0, 16),
    trueSequential: bool("true-sequential"),
    oac,
    calib: calibs[0],
    samples: int("samples", 128, 1, maxSamples),
    seqLen: int("seqlen", 512, 2, maxSeqLen),
    seed: int("seed", 0, 0, 2 ** 31 - 1),
    batch: int("batch", 8, 1, 1024),
    eval: evals,
    windows: o.windows === undefined ? undefined : int("windows", 1, 1, 1 << 30),
    baseline: bool("baseline"),
    backend,
    save: o.save === undefined ? undefined : oneOf("save", SAVE_FORMATS, SAVE_FORMATS[0]),
  };
}
