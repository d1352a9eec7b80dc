/**
 * `ptq eval`: perplexity of a model on a text file, as GPTQ reports it (see `model/perplexity.ts`).
 *
 * ```
 * ptq eval --model DIR|FILE --data FILE [--seqlen 512] [--windows N] [--batch B] [--backend NAME] [--json]
 * ```
 *
 * `--model` is a Hugging Face folder (`config.json`, safetensors, `tokenizer.json`) or a llama2.c checkpoint `.bin`
 * (its tokenizer is looked for beside it), or a folder holding one. Progress goes to stderr; the result to stdout,
 * with `--json` as one JSON object `{"ppl", "windows", "tokens", "seconds"}` on the last line (`tokens` counts the
 * predicted tokens, `seconds` the evaluation without loading and tokenizing).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { listBackends, setBackend, setBestBackend } from "../backends/registry.ts";
import { PtqError } from "../core/errors.ts";
import type { LlamaModel } from "../model/llama.ts";
import { loadModel } from "../model/load.ts";
import { perplexity } from "../model/perplexity.ts";
import type { Tokenizer } from "../model/tokenizer.ts";

const USAGE = `Usage: ptq eval --model DIR|FILE --data FILE [options]

Perplexity over non-overlapping windows of the tokenized text (no BOS), as GPTQ reports it.

Options:
  --model DIR|FILE  Hugging Face folder, llama2.c checkpoint (.bin), or a GPTQ, ptq or GGUF checkpoint
  --data FILE       text file to evaluate
  --seqlen L        window length in tokens (default 512)
  --windows N       evaluate only the first N windows (default: all)
  --batch B         windows per forward pass (default 1)
  --backend NAME    compute backend (${listBackends().join(", ")}; default: the fastest that starts, wasm then ts)
  --json            print the result as one JSON line {"ppl", "windows", "tokens", "seconds"}
  -h, --help        show this help
`;

/** An invalid command line: reported with the usage, exit status 2. */
class UsageError extends Error {}

function positiveInt(
  value: string | undefined,
  flag: string,
  fallback: number | undefined,
  min = 1,
): number | undefined {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${flag} must be an integer ≥ ${min}, got "${value}"`);
  }
  return n;
}

async function stat(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch {
    return undefined;
  }
}

/**
 * A model and its tokenizer from any path {@link loadModel} reads (Hugging Face, llama2.c, GPTQ, ptq, GGUF).
 * @deprecated use `loadModel` from model/load.ts.
 */
export async function loadModelAndTokenizer(path: string): Promise<{ model: LlamaModel; tokenizer: Tokenizer }> {
  const { model, tokenizer } = await loadModel(path);
  return { model, tokenizer };
}

/**
 * Runs `ptq eval` with the arguments after the subcommand.
 *
 * @returns the exit status: 0 on success, 1 on a failure while running (unreadable files, bad model), 2 on an invalid
 *   command line.
 */
export async function evalCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        data: { type: "string" },
        seqlen: { type: "string" },
        windows: { type: "string" },
        batch: { type: "string" },
        backend: { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    console.error(`ptq eval: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const json = values.json;
  const log = (line: string) => {
    if (!json) console.error(line);
  };
  try {
    if (!values.model) throw new UsageError("--model is required");
    if (!values.data) throw new UsageError("--data is required");
    const seqLen = positiveInt(values.seqlen, "seqlen", 512, 2)!;
    const windows = positiveInt(values.windows, "windows", undefined);
    const batch = positiveInt(values.batch, "batch", 1)!;
    const backend = values.backend ? await setBackend(values.backend) : await setBestBackend();

    const dataInfo = await stat(values.data);
    if (!dataInfo?.isFile) throw new UsageError(`--data ${values.data}: no such file`);
    const t0 = performance.now();
    const { model, tokenizer } = await loadModelAndTokenizer(values.model);
    const text = await Deno.readTextFile(values.data);
    const tokens = tokenizer.encode(text);
    const total = Math.min(Math.floor(tokens.length / seqLen), windows ?? Infinity);
    log(
      `loaded ${values.model} and tokenized ${values.data} (${tokens.length} tokens) in ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s; ${total} windows of ${seqLen} on backend ${backend.name}`,
    );

    const start = performance.now();
    let lastLog = start;
    const result = await perplexity(model, tokens, {
      seqLen,
      batch,
      windows,
      backend,
      onProgress: ({ windows: done, totalWindows, ppl }) => {
        const now = performance.now();
        // At most one line every two seconds, and the last one.
        if (done < totalWindows && now - lastLog < 2000) return;
        lastLog = now;
        const s = (now - start) / 1000;
        log(
          `window ${done}/${totalWindows}  ppl ${ppl.toFixed(3)}  ${s.toFixed(1)} s  ` +
            `${Math.round((done * seqLen) / s)} tokens/s`,
        );
      },
    });
    const seconds = (performance.now() - start) / 1000;
    if (json) {
      console.log(JSON.stringify({ ppl: result.ppl, windows: result.windows, tokens: result.tokens, seconds }));
    } else {
      console.log(
        `perplexity ${result.ppl.toFixed(3)} (${result.windows} windows of ${seqLen} tokens, ` +
          `${result.tokens} predicted, ${seconds.toFixed(1)} s)`,
      );
    }
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`ptq eval: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    // Typed library errors (a malformed file, a backend that fails to start) carry a readable message already.
    if (e instanceof PtqError || e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
      console.error(`ptq eval: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
