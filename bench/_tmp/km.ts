import { tsBackend } from "../../backends/ts/mod.ts";
import { createRng, randomNormal } from "../../core/random.ts";
import { matrix } from "../../core/tensor.ts";
const n = 98304;
const p = matrix(n, 4, randomNormal(createRng(1), n * 4, 0.05));
let t = performance.now();
const r = await tsBackend.kmeans(p, { k: 256, seed: 0 });
console.log("kmeans", (performance.now() - t) / 1000, r.iterations, r.inertia);
