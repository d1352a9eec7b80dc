import { createWasmBackend } from "../../backends/wasm/mod.ts";
import { loadModelAndTokenizer } from "../../cli/eval.ts";
import { forward } from "../../model/llama.ts";
const { model, tokenizer } = await loadModelAndTokenizer("/work/shared/models/llama-12m");
const toks = tokenizer.encode(await Deno.readTextFile("/work/shared/data/heldout.txt"));
const wasm = await createWasmBackend();
console.log(wasm.name, (wasm as any).threads);
for (let r = 0; r < 2; r++) {
  const t0 = performance.now();
  await forward(model, toks.slice(0, 8 * 512), { batch: 8, seqLen: 512, backend: wasm });
  console.log(wasm.name, (performance.now() - t0) / 1000, "s for 4096 tokens");
}
wasm.dispose?.();
