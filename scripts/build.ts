/**
 * `deno task build`: regenerates every generated file and the bundle.
 *
 * 1. the WASM modules (AssemblyScript → base64 `.ts` files in `backends/wasm/generated/`);
 * 2. the npm / browser bundle `dist/ptq.mjs` (esbuild).
 *
 * @module
 */

import { buildWasm } from "../backends/wasm/build.ts";
import { bundle } from "./bundle.ts";

const wasm = await buildWasm();
for (const [variant, bytes] of Object.entries(wasm)) console.log(`wasm ${variant}: ${bytes} bytes`);
const size = await bundle("dist/ptq.mjs");
console.log(`dist/ptq.mjs: ${(size / 1024).toFixed(0)} KiB`);
