/**
 * One entry point for writing a quantized model in any of ptq's export formats, for `ptq quantize --out DIR
 * --format F` and programs: a GPTQ checkpoint folder (transformers, vLLM, GPTQModel), a ptq checkpoint folder
 * (everything a {@link QuantizedLayer} holds), or a GGUF file (llama.cpp).
 *
 * @module
 */

import { join } from "node:path";
import type { QuantizedLayer } from "../algorithms/result.ts";
import { OptionError } from "../core/errors.ts";
import { saveGguf } from "./gguf.ts";
import { saveGptqCheckpoint } from "./gptq_format.ts";
import type { LlamaModel } from "./llama.ts";
import { savePtqCheckpoint } from "./ptq_format.ts";

/** Formats {@link saveQuantized} writes. */
export const SAVE_FORMATS = ["gptq", "ptq", "gguf-q8_0", "gguf-q4_0", "gguf-q4_k"] as const;

/** One of {@link SAVE_FORMATS}. */
export type SaveFormat = typeof SAVE_FORMATS[number];

/** What {@link saveQuantized} wrote. */
export interface SaveResult {
  readonly format: SaveFormat;
  /** The checkpoint folder, or the `.gguf` file. */
  readonly path: string;
  /** Files written (relative to the folder for folder formats). */
  readonly files: readonly string[];
  /** Bytes of the model files. */
  readonly bytes: number;
  /** Lines worth telling the user (layers kept in float, format choices, blocks taken from codes). */
  readonly notes: readonly string[];
}

async function sizeOf(dir: string, files: readonly string[]): Promise<number> {
  let total = 0;
  for (const f of files) total += (await Deno.stat(join(dir, f))).size;
  return total;
}

/**
 * Writes `model` and its quantized `layers` in `format`.
 *
 * - `gptq`: a GPTQ checkpoint folder at `dir` (see `gptq_format.ts`); layers must share one uniform 2/3/4/8-bit grid.
 * - `ptq`: a ptq checkpoint folder at `dir` (see `ptq_format.ts`); any method.
 * - `gguf-*`: `dir` itself when it ends in `.gguf`, else `<dir>/model-<type>.gguf` (the folder is created).
 *
 * Every format is written atomically; an existing non-empty output folder is replaced only when ptq wrote it.
 *
 * @example
 * ```ts ignore
 * const { model, layers } = await quantizeModel(base, { method: "gptq", options: { bits: 4, groupSize: 128 }, calibration });
 * const r = await saveQuantized("out/llama-12m-w4g128", "gptq", model, layers, "../shared/models/llama-12m");
 * console.log(r.files, r.notes);
 * ```
 * @param sourceDir the model that was quantized (Hugging Face folder or llama2.c `.bin`): config, dtypes and
 *   tokenizer come from it.
 * @throws {OptionError} for an unknown format, or layers the format cannot hold (the message names the layer and
 *   suggests the ptq format).
 * @throws {FormatError} when the source model is malformed.
 */
export async function saveQuantized(
  dir: string,
  format: string,
  model: LlamaModel,
  layers: ReadonlyMap<string, QuantizedLayer>,
  sourceDir?: string,
): Promise<SaveResult> {
  switch (format) {
    case "gptq": {
      const s = await saveGptqCheckpoint(dir, model, layers, sourceDir);
      const notes = [
        `GPTQ ${s.bits}-bit, group_size ${s.groupSize}, desc_act ${s.descAct}, sym ${s.sym}, ` +
        `checkpoint_format ${s.checkpointFormat}${s.formatReason ? ` (${s.formatReason})` : ""}`,
        ...s.dense.map((d) => `${d.name} kept as float32 (${d.reason})`),
      ];
      return { format, path: dir, files: s.files, bytes: await sizeOf(dir, s.files), notes };
    }
    case "ptq": {
      const s = await savePtqCheckpoint(dir, model, layers, sourceDir);
      const dense = s.layers.filter((l) => l.reconstruction === "dense");
      const notes = dense.length
        ? [`${dense.length} layer(s) stored with dense weights (no rule reproduces them): ${dense[0].name}, …`]
        : [];
      return { format, path: dir, files: s.files, bytes: s.bytes, notes };
    }
    case "gguf-q8_0":
    case "gguf-q4_0":
    case "gguf-q4_k": {
      const type = format.slice(5) as "q8_0" | "q4_0" | "q4_k";
      let path = dir;
      if (!dir.endsWith(".gguf")) {
        await Deno.mkdir(dir, { recursive: true });
        path = join(dir, `model-${type}.gguf`);
      }
      const s = await saveGguf(path, model, sourceDir, { type, layers });
      const notes = [
        `tensor types: ${Object.entries(s.types).map(([t, n]) => `${n} ${t}`).join(", ")}`,
        `${s.blocksFromCodes} of ${s.blocks} quantized blocks written from the layers' codes, the rest re-rounded`,
      ];
      return { format, path, files: [path], bytes: s.bytes, notes };
    }
    default:
      throw new OptionError(`unknown format "${format}"; available: ${SAVE_FORMATS.join(", ")}`);
  }
}
