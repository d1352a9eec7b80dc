import { equal, ok, rejects } from "node:assert/strict";
import type { BillmLayer } from "../algorithms/billm.ts";
import { OptionError } from "../core/errors.ts";
import { randomTokens, tinyModel } from "../tests/tiny_llama.ts";
import {
  type ModelQuantizeOptions,
  type ModelQuantizeResult,
  progressCounter,
  quantizeModel,
  quantizeProgressTotal,
} from "./quantize_model.ts";

const model = tinyModel({ layers: 2 });
const seqLen = 6, windows = 5;
const calibration = randomTokens(seqLen * windows, model.config.vocabSize, 4);

Deno.test("quantizeProgressTotal and progressCounter: the units quantizeModel reports, in every mode", async () => {
  const runs: [string, ModelQuantizeOptions][] = [
    ["rtn", { method: "rtn", options: { bits: 4 } }],
    ["gptq", { method: "gptq", options: { bits: 4 }, calibration, seqLen, batch: 2 }],
    ["gptq true-sequential", { method: "gptq", options: { bits: 4 }, calibration, seqLen, trueSequential: true }],
    ["oac", { method: "oac", options: { bits: 4 }, calibration, seqLen, batch: 2 }],
    ["oac paper's rows", {
      method: "oac",
      options: { bits: 4 },
      oac: { rows: "independent" },
      calibration,
      seqLen,
      batch: 2,
    }],
    ["oac mix", { method: "oac", options: { bits: 4 }, oac: { mix: 1 }, calibration, seqLen, batch: 2 }],
    ["oac salience", { method: "oac", engine: "billm", oac: { role: "salience" }, calibration, seqLen, batch: 2 }],
    ["rtn + qera", {
      method: "rtn",
      options: { bits: 4 },
      lowRank: { kind: "qera-approx", rank: 2 },
      calibration,
      seqLen,
    }],
  ];
  for (const [name, run] of runs) {
    // Window stages report a running count that restarts at every pass; linear layers come one at a time.
    let units = 0, last = 0, counted = 0;
    const count = progressCounter();
    await quantizeModel(model, {
      ...run,
      onProgress: (p) => {
        units += p.stage === "quantize" ? 1 : p.done - last;
        last = p.stage === "quantize" || p.done === p.total ? 0 : p.done;
        counted = count(p);
      },
    });
    equal(units, quantizeProgressTotal(model.config.numLayers, run), name);
    equal(counted, units, `${name}: progressCounter`);
  }
});

Deno.test("quantizeModel: OAC's salience role needs BiLLM, whose salient columns then come from OAC's Hessians", async () => {
  await rejects(
    quantizeModel(model, { method: "oac", engine: "gptq", oac: { role: "salience" }, calibration, seqLen }),
    OptionError,
  );
  // OAC's Hessians choose other salient columns than GPTQ's, and the feedback differs from plain OAC's.
  const run = { engine: "billm" as const, options: { damping: 0.1 }, calibration, seqLen, batch: 2 };
  const sal = await quantizeModel(model, { ...run, method: "oac", oac: { role: "salience" } });
  const gptq = await quantizeModel(model, { ...run, method: "billm" });
  const oac = await quantizeModel(model, { ...run, method: "oac" });
  const first = "model.layers.0.self_attn.q_proj";
  const mask = (r: ModelQuantizeResult) => (r.layers.get(first) as BillmLayer).salientMask;
  const values = (r: ModelQuantizeResult) => r.layers.get(first)!.dequantized.data;
  ok(mask(sal).some((v, i) => v !== mask(gptq)[i]), "the same salient columns as GPTQ's Hessian");
  ok(values(sal).some((v, i) => v !== values(oac)[i]), "salience role equals plain OAC");
});
