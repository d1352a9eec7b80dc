/**
 * File-system entry point of ptq (Deno): loading models and checkpoints, saving quantized checkpoints, reading and
 * writing safetensors and GGUF, and perplexity on a pool of Web Workers. Kept apart from `mod.ts`, whose core runs anywhere (browsers, edge functions),
 * as Hono keeps its runtime adapters apart from its core.
 *
 * @example
 * ```ts ignore
 * import { loadModel, saveQuantized } from "jsr:@ptq/ptq/io";
 * import { quantizeModel, sampleWindows } from "jsr:@ptq/ptq";
 * const { model, tokenizer } = await loadModel("models/llama-12m");
 * const calib = sampleWindows(tokenizer.encode(await Deno.readTextFile("calib.txt")), 128, 512, 0);
 * const q = await quantizeModel(model, { method: "gptq", options: { bits: 4, groupSize: 128 }, calibration: calib });
 * await saveQuantized("out/llama-12m-gptq", "gptq", q.model, q.layers, "models/llama-12m");
 * ```
 * @module
 */

export { detectModel, type LoadedModelAndTokenizer, loadModel, type ModelKind } from "./model/load.ts";
export { SAVE_FORMATS, type SaveFormat, saveQuantized, type SaveResult } from "./model/save.ts";
export { loadGptqCheckpoint, saveGptqCheckpoint } from "./model/gptq_format.ts";
export { loadPtqCheckpoint, savePtqCheckpoint } from "./model/ptq_format.ts";
export { loadGgufModel, saveGguf } from "./model/gguf.ts";
export { loadHfModel } from "./model/hf_loader.ts";
export { loadLlama2cModel, loadLlama2cTokenizer } from "./model/llama2c.ts";
export { loadTokenizer, type Tokenizer } from "./model/tokenizer.ts";
export {
  type EvaluateOptions,
  evaluatePerplexity,
  perplexityOnWorkers,
  type PoolBackend,
  type PoolPerplexityOptions,
  shareModel,
} from "./model/perplexity_pool.ts";
export {
  openSafetensors,
  openSafetensorsFolder,
  type SafetensorsReader,
  writeSafetensors,
  writeSafetensorsSharded,
} from "./model/safetensors.ts";
