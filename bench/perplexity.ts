/**
 * Full-file perplexity check and Llama speed: evaluates llama-12m on `../shared/data/heldout.txt` and `wiki.test.raw`
 * exactly as `ptq eval` does (windows of 512, no BOS) and compares with the PyTorch references of `../shared/README.md`
 * (13.905 ± 0.01 and 721.6 ± 1). The windows are evaluated by `evaluatePerplexity`: batches of `--batch` windows
 * handed to `--workers` worker threads, each running the backend on one thread (on the TS backend one file takes
 * about an hour of one core). `--workers 1` evaluates in this process on the backend with all its threads.
 *
 * ```
 * deno run -A bench/perplexity.ts [--model DIR] [--data FILE]... [--seqlen 512] [--batch 1] [--backend ts]
 *   [--workers N] [--first W] [--windows N] [--speed]
 * ```
 * `--memory` evaluates `--windows` windows (default 16) in this process and reports the peak resident memory against
 * the float32 weights plus one batch of activations. `--first`/`--windows` evaluate a slice of the windows (its total NLL is printed, so slices run separately can be
 * added). `--speed` measures forward and forward+backward tokens/s on one batch instead. The exit status is 1 when a
 * reference perplexity is missed (a check, not only a benchmark: the numbers are printed either way).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { setBackend } from "../backends/registry.ts";
import { loadModel } from "../model/load.ts";
import { perplexity } from "../model/perplexity.ts";
import { forward, lossAndGradients } from "../model/llama.ts";
import { sharedPath } from "../tests/shared.ts";
import { bestSeconds, fmt, markdownTable } from "./timing.ts";
import { DEFAULT_WORKERS, evaluatePerplexity } from "../model/perplexity_pool.ts";

/** PyTorch perplexities of llama-12m, windows of 512 (../shared/README.md), with the agreed tolerance. */
const REFERENCES: Record<string, { ppl: number; tolerance: number }> = {
  "heldout.txt": { ppl: 13.905, tolerance: 0.01 },
  "wiki.test.raw": { ppl: 721.6, tolerance: 1 },
};

const { values } = parseArgs({
  options: {
    model: { type: "string", default: sharedPath("models/llama-12m") },
    data: { type: "string", multiple: true },
    seqlen: { type: "string", default: "512" },
    batch: { type: "string", default: "1" },
    backend: { type: "string", default: "ts" },
    workers: { type: "string", default: String(DEFAULT_WORKERS) },
    first: { type: "string", default: "0" },
    windows: { type: "string" },
    speed: { type: "boolean", default: false },
    memory: { type: "boolean", default: false },
  },
});
const seqLen = Number(values.seqlen), batch = Number(values.batch);
const workerCount = Math.max(1, Number(values.workers));
const backend = await setBackend(values.backend);
const { model, tokenizer } = await loadModel(values.model);

if (values.speed) {
  const tokens = tokenizer.encode(await Deno.readTextFile(sharedPath("data/heldout.txt"))).slice(0, batch * seqLen);
  const opts = { batch, seqLen, backend };
  const fwd = await bestSeconds(() => forward(model, tokens, opts), { repeats: 2, warmup: 1 });
  const bwd = await bestSeconds(() => lossAndGradients(model, tokens, opts), { repeats: 2, warmup: 1 });
  console.log(markdownTable(["backend", "batch × seqLen", "forward tokens/s", "forward+backward tokens/s"], [[
    backend.name,
    `${batch} × ${seqLen}`,
    fmt(tokens.length / fwd),
    fmt(tokens.length / bwd),
  ]]));
  Deno.exit(0);
}

if (values.memory) {
  // Peak memory of an evaluation in this process, sampled after every batch (and before, as the baseline).
  const tokens = tokenizer.encode(await Deno.readTextFile(values.data?.[0] ?? sharedPath("data/heldout.txt")));
  const windows = Number(values.windows ?? 16);
  const mb = (b: number) => (b / 2 ** 20).toFixed(0);
  const before = Deno.memoryUsage().rss;
  let peak = before;
  const r = await perplexity(model, tokens, {
    seqLen,
    batch,
    windows,
    backend,
    onProgress: () => void (peak = Math.max(peak, Deno.memoryUsage().rss)),
  });
  const c = model.config;
  let weights = model.weights.embed.data.byteLength + model.weights.finalNorm.byteLength;
  if (model.weights.lmHead !== model.weights.embed) weights += model.weights.lmHead.data.byteLength;
  for (const l of model.weights.layers) {
    for (const m of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) weights += m.data.byteLength;
    weights += l.inputNorm.byteLength + l.postAttentionNorm.byteLength;
  }
  // The largest activations alive at once in a forward pass: logits and a few [T, intermediate] tensors.
  const T = batch * seqLen;
  const activations = 4 * T * (c.vocabSize + 4 * c.intermediateSize + 6 * c.hiddenSize);
  console.log(markdownTable(["what", "MiB"], [
    ["RSS after loading the model (baseline)", mb(before)],
    ["peak RSS while evaluating", mb(peak)],
    ["growth during evaluation", mb(peak - before)],
    ["float32 weights", mb(weights)],
    [`one batch of activations (${batch} × ${seqLen} tokens, estimate)`, mb(activations)],
  ]));
  console.log(`\n${r.windows} windows, ppl ${r.ppl.toFixed(4)}, backend ${backend.name}`);
  backend.dispose?.();
  Deno.exit(0);
}

/** Evaluates windows `[w0, w1)` with `evaluatePerplexity` (on the pool, or in this process); returns their total NLL. */
async function windowsNll(tokens: Int32Array, w0: number, w1: number, label: string): Promise<number> {
  const t0 = performance.now();
  let lastLog = t0;
  const onProgress = ({ windows, totalWindows, ppl }: { windows: number; totalWindows: number; ppl: number }) => {
    if (performance.now() - lastLog < 30_000) return;
    lastLog = performance.now();
    console.error(
      `${label}: ${windows}/${totalWindows} windows, ppl so far ${ppl.toFixed(3)}, ${
        ((lastLog - t0) / 1000).toFixed(0)
      } s`,
    );
  };
  const slice = tokens.subarray(w0 * seqLen, w1 * seqLen);
  return (await evaluatePerplexity(model, slice, { seqLen, batch, onProgress, backend, workers: workerCount })).nll;
}

const files = values.data ?? [sharedPath("data/heldout.txt"), sharedPath("data/wiki.test.raw")];
const rows: (string | number)[][] = [];
let missed = false;
for (const file of files) {
  const tokens = tokenizer.encode(await Deno.readTextFile(file));
  const available = Math.floor(tokens.length / seqLen);
  const first = Math.min(available, Number(values.first));
  const last = values.windows ? Math.min(available, first + Number(values.windows)) : available;
  const name = file.split("/").at(-1)!;
  const t0 = performance.now();
  const nll = await windowsNll(tokens, first, last, name);
  const seconds = (performance.now() - t0) / 1000;
  const total = last - first;
  const ppl = Math.exp(nll / (total * (seqLen - 1)));
  const ref = first === 0 && last === available && seqLen === 512 ? REFERENCES[name] : undefined;
  const ok = ref ? Math.abs(ppl - ref.ppl) <= ref.tolerance : undefined;
  if (ok === false) missed = true;
  rows.push([
    name,
    `${first}..${last} of ${available}`,
    nll.toFixed(4),
    ppl.toFixed(4),
    ref ? `${ref.ppl} ± ${ref.tolerance}` : "-",
    ok === undefined ? "-" : ok ? "ok" : "MISSED",
    seconds.toFixed(0),
    fmt((total * seqLen) / seconds),
  ]);
  console.error(`${name}: ppl ${ppl.toFixed(4)} over windows ${first}..${last} in ${seconds.toFixed(0)} s`);
}
console.log(
  `llama perplexity, backend ${backend.name}, ${workerCount} workers, windows of ${seqLen}\n\n` +
    markdownTable(
      ["data", "windows", "total NLL", "ppl", "PyTorch", "check", "seconds", "tokens/s (all workers)"],
      rows,
    ),
);
if (missed) Deno.exitCode = 1;
