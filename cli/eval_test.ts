import assert from "node:assert/strict";
import { evalCommand } from "./eval.ts";

const STORIES = new URL("../examples/data/stories260K/stories260K.bin", import.meta.url).pathname;
const TEXT = new URL("../examples/data/tinystories/tinystories-valid.txt", import.meta.url).pathname;

/** The JSON line of `ptq eval` with these extra flags. */
async function evalJson(...flags: string[]): Promise<{ ppl: number; windows: number }> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => void lines.push(args.join(" "));
  try {
    const status = await evalCommand(["--model", STORIES, "--data", TEXT, "--seqlen", "64", "--json", ...flags]);
    assert.equal(status, 0);
  } finally {
    console.log = log;
  }
  return JSON.parse(lines.at(-1)!);
}

Deno.test({
  name: "ptq eval: two workers give one thread's perplexity to the last bit",
  sanitizeOps: false, // the pool's worker threads and the WASM backend's outlive the test's bookkeeping
  sanitizeResources: false,
  async fn() {
    const one = await evalJson("--windows", "6", "--batch", "2", "--backend", "wasm", "--workers", "1");
    const two = await evalJson("--windows", "6", "--batch", "2", "--backend", "wasm", "--workers", "2");
    assert.equal(one.windows, 6);
    assert.equal(two.ppl, one.ppl);
  },
});
