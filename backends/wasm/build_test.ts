/**
 * Fails when `generated/` is stale: each generated module must carry the hash of the current sources and options,
 * and be byte-identical to a fresh build (compiling both takes about two seconds).
 *
 * Fix a failure with `deno run -A backends/wasm/build.ts`.
 *
 * @module
 */

import { strictEqual } from "node:assert/strict";
import { compileVariant, readSources, sourceHash, VARIANTS } from "./build.ts";
import { SOURCE_HASH as RELAXED_HASH, WASM_BASE64 as RELAXED_WASM } from "./generated/relaxed.ts";
import { SOURCE_HASH as SIMD_HASH, WASM_BASE64 as SIMD_WASM } from "./generated/simd.ts";

const GENERATED = { simd: { hash: SIMD_HASH, b64: SIMD_WASM }, relaxed: { hash: RELAXED_HASH, b64: RELAXED_WASM } };
const HINT = "backends/wasm/generated/ is stale: run `deno run -A backends/wasm/build.ts`";

function toBase64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

for (const { name } of VARIANTS) {
  Deno.test(`wasm generated/${name}.ts matches the AssemblyScript sources`, async () => {
    const sources = await readSources();
    strictEqual(GENERATED[name].hash, await sourceHash(sources, name), `${HINT} (source hash differs)`);
    const fresh = toBase64(await compileVariant(sources, name));
    strictEqual(GENERATED[name].b64 === fresh, true, `${HINT} (module bytes differ from a fresh build)`);
  });
}
