/**
 * Development timing of the float32 micro-kernel alone, L1-resident (a 4×256 strip of A, a 256×8 panel of B), one
 * thread, best of 5: `deno run -A bench/wasm_microkernel.ts [generated module .ts] [kernel export] [tile rows]`,
 * by default the committed relaxed build's `kernel4x8`. Another module (an older build, say) and its kernel can be
 * named, and `--v8-flags=--no-wasm-bounds-checks` shows what the bounds checks cost. Measurements only.
 *
 * @module
 */

const [path = "../backends/wasm/generated/relaxed.ts", name = "kernel4x8", rowsArg = "4"] = Deno.args;
const { WASM_BASE64 } = await import(new URL(path, path.startsWith("/") ? "file:///" : import.meta.url).href);
const bytes = Uint8Array.from(atob(WASM_BASE64), (c) => c.charCodeAt(0));
const memory = new WebAssembly.Memory({ initial: 256, maximum: 65536, shared: true } as WebAssembly.MemoryDescriptor);
const exports = new WebAssembly.Instance(await WebAssembly.compile(bytes), { env: { memory } }).exports;
const kernel = exports[name] as (kc: number, pa: number, pb: number, c: number, ldc: number, acc: number) => void;
const heapBase = exports.heapBase as () => number;
const rows = Number(rowsArg), kc = 256;
const pa = heapBase(), pb = pa + rows * kc * 4 + 64, c = pb + 8 * kc * 4 + 64;
const f32 = new Float32Array(memory.buffer);
for (let i = pa / 4; i < c / 4 + rows * 8; i++) f32[i] = Math.random();
let best = 0;
for (let rep = 0; rep < 5; rep++) {
  const calls = 200_000, t0 = performance.now();
  for (let i = 0; i < calls; i++) kernel(kc, pa, pb, c, 8, 1);
  best = Math.max(best, (calls * rows * 8 * kc * 2) / ((performance.now() - t0) / 1000) / 1e9);
}
console.log(`${name} (${rows}×8): ${best.toFixed(1)} GFLOP/s, one thread, L1-resident`);
