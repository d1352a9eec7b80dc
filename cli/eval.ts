/**
 * `ptq eval`: perplexity of a model on a text file, as GPTQ reports it (see `model/perplexity.ts`).
 *
 * ```
 * ptq eval --model DIR|FILE --data FILE [--seqlen 512] [--windows N] [--batch B] [--backend NAME] [--workers N] [--json]
 * ```
 *
 * `--model` is a Hugging Face folder (`config.json`, safetensors, `tokenizer.json`) or a llama2.c checkpoint `.bin`
 * (its tokenizer is looked for beside it), or a folder holding one. Progress goes to stderr; the result to stdout,
 * with `--json` as one JSON object `{"ppl", "windows", "tokens", "seconds"}` on the last line (`tokens` counts the
 * predicted tokens, `seconds` the evaluation without loading and tokenizing).
 *
 * @module
 */

import { listBackends, setBackend, setBestBackend } from "../backends/registry.ts";
import { loadModel } from "../model/load.ts";
import { DEFAULT_WORKERS, evaluatePerplexity } from "../model/perplexity_pool.ts";
import { createProgress } from "./progress.ts";
import { failure, intOption, parseCommand, requirePath, UsageError } from "./common.ts";

const USAGE = `Usage: ptq eval --model DIR|FILE --data FILE [options]

Perplexity over non-overlapping windows of the tokenized text (no BOS), as GPTQ reports it.

Options:
  --model DIR|FILE  Hugging Face folder, llama2.c checkpoint (.bin), or a GPTQ, ptq or GGUF checkpoint
  --data FILE       text file to evaluate
  --seqlen L        window length in tokens (default 512)
  --windows N       evaluate only the first N windows (default: all)
  --batch B         windows per forward pass (default 1)
  --backend NAME    compute backend (${listBackends().join(", ")}; default: the fastest that starts, wasm then ts)
  --workers N       evaluate on N worker threads, each running the backend on one thread (wasm and ts; the same
                    result; each holds a batch of activations; default: the cores, ${DEFAULT_WORKERS} here; 1, or fewer than two
                    batches per worker, evaluates in this thread)
  --json            print the result as one JSON line {"ppl", "windows", "tokens", "seconds"}
  -h, --help        show this help
`;

/**
 * Runs `ptq eval` with the arguments after the subcommand.
 *
 * @returns the exit status: 0 on success, 1 on a failure while running (unreadable files, bad model), 2 on an invalid
 *   command line.
 */
export async function evalCommand(args: string[]): Promise<number> {
  const values = parseCommand("eval", USAGE, args, {
    model: { type: "string" },
    data: { type: "string" },
    seqlen: { type: "string" },
    windows: { type: "string" },
    batch: { type: "string" },
    backend: { type: "string" },
    workers: { type: "string" },
    json: { type: "boolean", default: false },
  });
  if (typeof values === "number") return values;
  const json = values.json;
  const log = (line: string) => {
    if (!json) console.error(line);
  };
  try {
    if (!values.model) throw new UsageError("--model is required");
    if (!values.data) throw new UsageError("--data is required");
    const seqLen = intOption(values.seqlen, "seqlen", 512, 2);
    const windows = values.windows === undefined ? undefined : intOption(values.windows, "windows", 1, 1);
    const batch = intOption(values.batch, "batch", 1, 1);
    const workers = intOption(values.workers, "workers", DEFAULT_WORKERS, 1);
    const backend = values.backend ? await setBackend(values.backend) : await setBestBackend();

    await requirePath(values.data, "data");
    await requirePath(values.model, "model");
    const t0 = performance.now();
    const { model, tokenizer } = await loadModel(values.model);
    const text = await Deno.readTextFile(values.data);
    const tokens = tokenizer.encode(text);
    const total = Math.min(Math.floor(tokens.length / seqLen), windows ?? Infinity);
    log(
      `loaded ${values.model} and tokenized ${values.data} (${tokens.length} tokens) in ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s; ${total} windows of ${seqLen} on backend ${backend.name}`,
    );

    const start = performance.now();
    const bar = createProgress("eval", { silent: json, unit: "windows" });
    const result = await evaluatePerplexity(model, tokens, {
      seqLen,
      batch,
      windows,
      backend,
      workers,
      onProgress: ({ windows: done, totalWindows, ppl }) => bar.update(done, totalWindows, `ppl ${ppl.toFixed(3)}`),
    });
    bar.finish(`${Math.round((result.windows * seqLen) / ((performance.now() - start) / 1000))} tokens/s`);
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
    return failure("eval", e, USAGE);
  }
}
