// Runs one small GPTQ computation through the library given as the first argument (the esbuild bundle under Node
// and Bun, mod.ts under Deno) and prints the numbers as JSON, so the runtimes can be compared exactly.
const [modulePath] = typeof Deno !== "undefined" ? Deno.args : process.argv.slice(2);
const ptq = await import(
  new URL(modulePath, `file://${typeof Deno !== "undefined" ? Deno.cwd() : process.cwd()}/`).href
);

const rng = ptq.createRng(42);
const rows = 12, cols = 40, n = 96;
const x = ptq.matrix(n, cols, ptq.randomNormal(rng, n * cols));
const w = ptq.matrix(rows, cols, ptq.randomNormal(rng, rows * cols, 0.05));
const h = await ptq.hessianOf(x);
const q = await ptq.gptq(w, h, { bits: 3, groupSize: 8, actOrder: true });
const r = await ptq.rtn(w, h, { bits: 3, groupSize: 8 });
const product = ptq.matmul(x, w, { transB: true });
let checksum = 0;
for (let i = 0; i < q.dequantized.data.length; i++) checksum += q.dequantized.data[i] * (i + 1);
console.log(JSON.stringify({
  gptqLoss: q.stats.layerLoss,
  rtnLoss: r.stats.layerLoss,
  checksum,
  codes: Array.from(q.codes.slice(0, 16)),
  product: Array.from(product.data.slice(0, 4)),
}));
