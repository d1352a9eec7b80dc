/**
 * OAC ablation on llama-12m: held-out perplexity of each OAC variant against the same engine fed GPTQ's Hessian (at
 * dampings 0.01, 0.1 and 1), on the same calibration windows, over several seeds (mean and spread), with the seconds
 * each calibration takes.
 *
 * Usage: `deno run -A bench/oac_ablation.ts [--setting w2g128,w3,spqr2,billm] [--variants NAME,...] [--seeds 0,1,2]
 *   [--samples 128] [--seqlen 512] [--windows N [--spread]] [--backend wasm] [--out bench/results/oac_ablation] [--readme]`
 *
 * Every run is appended to `<out>.jsonl` as soon as it finishes (so a long ablation can be resumed with
 * `--resume`), and the table is rebuilt from all runs in that file (`--table-only` just rebuilds it). `--readme` puts
 * the table between the `<section>` markers of README.md (`--section`, default `oac-table`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { MethodName, MethodOptions } from "../algorithms/methods.ts";
import { setBackend, setBestBackend } from "../backends/registry.ts";
import { loadModel } from "../model/load.ts";
import { perplexity } from "../model/perplexity.ts";
import { type OacVariant, quantizeModel } from "../model/quantize_model.ts";
import { sampleWindows } from "../model/windows.ts";
import { sharedPath } from "../tests/shared.ts";
import { openRunLog, replaceReadmeSection, writeResults } from "./results.ts";
import { fmt, markdownTable } from "./timing.ts";

/** An engine setting of the ablation: the quantizer and its options. */
interface EngineSetting {
  readonly label: string;
  readonly engine: Exclude<MethodName, "rtn">;
  readonly options: MethodOptions;
}

const SETTINGS: Record<string, EngineSetting> = {
  w2g128: { label: "GPTQ 2-bit g128", engine: "gptq", options: { bits: 2, groupSize: 128 } },
  w3: { label: "GPTQ 3-bit per row", engine: "gptq", options: { bits: 3, groupSize: 0 } },
  spqr2: {
    label: "SpQR 2-bit g16 τ1",
    engine: "spqr",
    options: { bits: 2, groupSize: 16, outlierThreshold: 1, actOrder: true },
  },
  billm: { label: "BiLLM", engine: "billm", options: {} },
};

/** A Hessian choice: GPTQ's at a damping, or an OAC variant at a damping (and engine options of its own). */
interface Variant {
  readonly name: string;
  readonly damping: number;
  readonly oac?: OacVariant;
  readonly options?: MethodOptions;
}

const VARIANTS: Variant[] = [
  { name: "gptq λ0.01", damping: 0.01 },
  { name: "gptq λ0.1", damping: 0.1 },
  { name: "gptq λ1", damping: 1 },
  { name: "oac once λ0.01", damping: 0.01, oac: { refresh: "once" } },
  { name: "oac λ0.01", damping: 0.01, oac: {} },
  { name: "oac λ0.1", damping: 0.1, oac: {} },
  { name: "oac λ1", damping: 1, oac: {} },
  { name: "oac sampled λ0.1", damping: 0.1, oac: { labels: "sampled" } },
  { name: "oac token-diag λ0.1", damping: 0.1, oac: { form: "token-diagonal" } },
  { name: "oac mix1 λ0.01", damping: 0.01, oac: { mix: 1 } },
  { name: "oac mix1 λ0.1", damping: 0.1, oac: { mix: 1 } },
  { name: "oac mix0.3 λ0.1", damping: 0.1, oac: { mix: 0.3 } },
  { name: "oac chunk64 λ0.1", damping: 0.1, oac: { chunk: 64 } },
  { name: "oac token-diag p0.5 λ0.1", damping: 0.1, oac: { form: "token-diagonal", tokenPower: 0.5 } },
  { name: "oac token-diag p0.5 mix1 λ0.1", damping: 0.1, oac: { form: "token-diagonal", tokenPower: 0.5, mix: 1 } },
  { name: "oac token-diag mix1 λ0.1", damping: 0.1, oac: { form: "token-diagonal", mix: 1 } },
  {
    name: "oac first-order trust0.02 λ0.1",
    damping: 0.1,
    oac: { firstOrder: 1, firstOrderTrust: 0.02, firstOrderDamping: 0.1 },
  },
  {
    name: "oac first-order trust0.1 λ0.1",
    damping: 0.1,
    oac: { firstOrder: 1, firstOrderTrust: 0.1, firstOrderDamping: 0.1 },
  },
  {
    name: "oac mix1 first-order trust0.05 λ0.1",
    damping: 0.1,
    oac: { mix: 1, firstOrder: 1, firstOrderTrust: 0.05, firstOrderDamping: 0.1 },
  },
  { name: "oac norm λ0.1", damping: 0.1, oac: { normalize: "sequence" } },
  { name: "oac norm λ1", damping: 1, oac: { normalize: "sequence" } },
  { name: "oac salience λ0.1", damping: 0.1, oac: { role: "salience" } },
  // Rows rounded in their stored order (the engines' default), or by descending B_ii (`outputOrder`).
  { name: "oac coupled-rows λ0.01", damping: 0.01, oac: { rows: "coupled" }, options: { outputOrder: false } },
  { name: "oac coupled-rows λ0.1", damping: 0.1, oac: { rows: "coupled" }, options: { outputOrder: false } },
  { name: "oac coupled-rows λ1", damping: 1, oac: { rows: "coupled" }, options: { outputOrder: false } },
  {
    name: "oac coupled-rows once λ0.1",
    damping: 0.1,
    oac: { rows: "coupled", refresh: "once" },
    options: { outputOrder: false },
  },
  { name: "oac coupled-rows row-order λ0.1", damping: 0.1, oac: { rows: "coupled" }, options: { outputOrder: true } },
  // Coupled rows with the first-order term: K-FAC's Newton step from the mean gradient (kroneckerFirstOrderTarget),
  // its solve damped by fλ, each row's step capped at `trust` of the row's norm.
  ...([[1, 0.05], [1, 0.2], [10, 0.05]] as const).map(([stepDamping, trust]): Variant => ({
    name: `oac coupled-rows first-order β1 trust${trust} fλ${stepDamping} λ0.1`,
    damping: 0.1,
    oac: { rows: "coupled", firstOrder: 1, firstOrderTrust: trust, firstOrderDamping: stepDamping },
    options: { outputOrder: false },
  })),
  // The same step along the gradient's change since the full-precision model only (firstOrderGradient "lost").
  {
    name: "oac coupled-rows first-order lost β1 trust0.05 fλ10 λ0.1",
    damping: 0.1,
    oac: { rows: "coupled", firstOrder: 1, firstOrderTrust: 0.05, firstOrderDamping: 10, firstOrderGradient: "lost" },
    options: { outputOrder: false },
  },
];

const { values } = parseArgs({
  options: {
    setting: { type: "string", default: "w2g128" },
    variants: { type: "string" },
    seeds: { type: "string", default: "0,1,2" },
    samples: { type: "string", default: "128" },
    seqlen: { type: "string", default: "512" },
    windows: { type: "string" },
    spread: { type: "boolean", default: false },
    batch: { type: "string", default: "8" },
    backend: { type: "string" },
    out: { type: "string", default: "bench/results/oac_ablation" },
    resume: { type: "boolean", default: false },
    readme: { type: "boolean", default: false },
    section: { type: "string", default: "oac-table" },
    "table-only": { type: "boolean", default: false },
    list: { type: "boolean", default: false },
  },
});
if (values.list) {
  console.log(
    `settings: ${Object.keys(SETTINGS).join(", ")}\nvariants:\n  ${VARIANTS.map((v) => v.name).join("\n  ")}`,
  );
  Deno.exit(0);
}

const backend = values.backend ? await setBackend(values.backend) : await setBestBackend();
const seqLen = Number(values.seqlen), samples = Number(values.samples), batch = Number(values.batch);
const windows = values.windows ? Number(values.windows) : undefined;
const seeds = values.seeds.split(",").map(Number);
const wantedVariants = values.variants?.split(",");
const variants = wantedVariants ? VARIANTS.filter((v) => wantedVariants.includes(v.name)) : VARIANTS;
if (wantedVariants && variants.length !== wantedVariants.length) {
  throw new Error(`unknown variant in ${values.variants}; see --list`);
}

/** One finished run, as stored in the JSONL file. */
interface Run {
  setting: string;
  variant: string;
  seed: number;
  samples: number;
  seqLen: number;
  windows: number | "all";
  /** Whether the `windows` were spread over the held-out text rather than its first ones. */
  spread?: boolean;
  avg_bits: number;
  ppl: number;
  seconds: { calibrate: number; quantize: number };
}

const { runs: previous, append } = await openRunLog<Run>(values.out, values.resume);

const { model, tokenizer } = await loadModel(sharedPath("models/llama-12m"));
const calibTokens = tokenizer.encode(await Deno.readTextFile(sharedPath("data/calib.txt")));
const heldout = tokenizer.encode(await Deno.readTextFile(sharedPath("data/heldout.txt")));
console.error(
  `backend ${backend.name}; ${samples}×${seqLen} calibration; held-out ${windows ?? "all"}${
    values.spread ? " spread" : ""
  } windows`,
);

for (const key of values["table-only"] ? [] : values.setting.split(",")) {
  const setting = SETTINGS[key];
  if (!setting) throw new Error(`unknown setting ${key}; known: ${Object.keys(SETTINGS).join(", ")}`);
  for (const seed of seeds) {
    const calibration = sampleWindows(calibTokens, samples, seqLen, seed);
    for (const v of variants) {
      const done = previous.some((r) =>
        r.setting === key && r.variant === v.name && r.seed === seed && r.samples === samples &&
        r.windows === (windows ?? "all") && (r.spread ?? false) === values.spread
      );
      if (done) continue;
      const q = await quantizeModel(model, {
        method: v.oac ? "oac" : setting.engine,
        engine: setting.engine,
        options: { ...setting.options, ...v.options, damping: v.damping },
        // Variants name their rows and step: a model run's defaults (coupled rows with the first-order step where they
        // apply) would blur the variants.
        oac: v.oac && { rows: "independent", firstOrder: 0, firstOrderGradient: "loss", ...v.oac, seed },
        calibration,
        seqLen,
        batch,
        backend,
      });
      const ppl = (await perplexity(q.model, heldout, { seqLen, batch, windows, spread: values.spread, backend })).ppl;
      const run: Run = {
        setting: key,
        variant: v.name,
        seed,
        samples,
        seqLen,
        windows: windows ?? "all",
        spread: values.spread,
        avg_bits: q.avgBits,
        ppl,
        seconds: q.seconds,
      };
      await append(run);
      console.error(`${setting.label} | ${v.name} | seed ${seed}: ppl ${fmt(ppl, 4)} (${fmt(q.seconds.calibrate)} s)`);
    }
  }
}

// The table: every (setting, variant) with its mean and spread over seeds.
const groups = new Map<string, Run[]>();
for (const r of previous) {
  const k = [r.setting, r.samples, r.windows, r.spread ?? false, r.variant].join("\u0000");
  groups.set(k, [...(groups.get(k) ?? []), r]);
}
const settingOrder = Object.keys(SETTINGS), variantOrder = VARIANTS.map((v) => v.name);
const rank = (r: Run) => [settingOrder.indexOf(r.setting), r.samples, variantOrder.indexOf(r.variant)];
const sorted = [...groups.values()].sort((a, b) => {
  const [x, y] = [rank(a[0]), rank(b[0])];
  return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
});
const rows = sorted.map((runs) => {
  const p = runs.map((r) => r.ppl);
  const mean = p.reduce((a, b) => a + b, 0) / p.length;
  const sd = Math.sqrt(p.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, p.length - 1));
  const cal = runs.reduce((a, r) => a + r.seconds.calibrate + r.seconds.quantize, 0) / runs.length;
  const s = SETTINGS[runs[0].setting];
  return [
    s?.label ?? runs[0].setting,
    runs[0].variant,
    String(runs[0].samples),
    fmt(runs.reduce((a, r) => a + r.avg_bits, 0) / runs.length),
    fmt(mean, 4),
    runs.length > 1 ? fmt(sd, 2) : "—",
    p.map((x) => fmt(x, 4)).join(", "),
    fmt(cal),
  ];
});
const table = markdownTable(
  [
    "engine setting",
    "Hessian",
    "calibration windows",
    "avg bits",
    "held-out ppl (mean)",
    "sd",
    "per seed",
    "seconds (calibrate + quantize)",
  ],
  rows,
);
const distinct = <T>(f: (r: Run) => T) => [...new Set(previous.map(f))];
const evalWindows = distinct((r) => `${r.windows === "all" ? "all" : r.windows}${r.spread ? " spread" : " first"}`);
const note = `llama-12m, ${distinct((r) => r.samples).join(" / ")} calibration windows of ${
  distinct((r) => r.seqLen).join(" / ")
} tokens from calib.txt (seeds ${distinct((r) => r.seed).join(", ")}), held-out perplexity on ${
  evalWindows.map((w) =>
    w.startsWith("all")
      ? "all windows"
      : w.endsWith("spread")
      ? `${parseInt(w)} windows spread evenly over the text`
      : `the first ${parseInt(w)} windows`
  ).join(" / ")
}, backend ${backend.name}. Generated by \`deno run -A bench/oac_ablation.ts\`.`;
await writeResults(values.out, previous, `${table}\n\n${note}\n`);
if (values.readme) await replaceReadmeSection(values.section, `${table}\n\n${note}`);
console.log(`${table}\n\n${note}`);
backend.dispose?.();
