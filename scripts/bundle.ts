/**
 * The npm / browser bundle: `mod.ts` and its dependencies as one ES module, built with esbuild. Runs in Node 20, Bun,
 * browsers and edge runtimes (the library core touches no runtime APIs).
 *
 * Usage: `deno run -A scripts/bundle.ts [outfile]` (default `dist/ptq.mjs`).
 *
 * @module
 */

import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";

/** Bundles `mod.ts` into `outfile`; returns the bundle's size in bytes. */
export async function bundle(outfile: string): Promise<number> {
  const entry = fileURLToPath(new URL("../mod.ts", import.meta.url));
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    minify: false,
    sourcemap: false,
    metafile: true,
    logLevel: "warning",
  });
  await esbuild.stop();
  return Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
}

if (import.meta.main) {
  const out = Deno.args[0] ?? "dist/ptq.mjs";
  const bytes = await bundle(out);
  console.log(`wrote ${out} (${(bytes / 1024).toFixed(0)} KiB)`);
}
