/**
 * Builds the browser example (as `scripts/bundle.ts` builds the library: esbuild, one ES module per entry) and,
 * with `--serve`, serves it.
 *
 * ```sh
 * deno run -A examples/browser/build.ts            # → dist/browser/{main,worker}.js
 * deno run -A examples/browser/build.ts --serve    # and serve examples/ on http://127.0.0.1:8788/browser/
 * ```
 *
 * The server sends `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp`: the
 * page is then cross-origin isolated, which browsers require for `SharedArrayBuffer`, which the WASM backend needs
 * for its threads.
 *
 * @module
 */

import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const HERE = new URL("./", import.meta.url);
const DEFAULT_OUTDIR = fileURLToPath(new URL("../../dist/browser/", HERE));

/**
 * `model/llama2c.ts` reaches `model/safetensors.ts` (through `hf_loader.ts`'s weight checks), which imports
 * `node:path` for its folder functions. The page only calls the pure `parse*` functions, so `node:*` modules are
 * replaced by an empty CommonJS module: importing works, and a call into one would fail loudly, never silently.
 */
const stubNodeBuiltins: esbuild.Plugin = {
  name: "stub-node-builtins",
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: "node-stub" }));
    build.onLoad({ filter: /.*/, namespace: "node-stub" }, () => ({ contents: "module.exports = {};", loader: "js" }));
  },
};

/**
 * Bundles `main.ts` and `worker.ts` into `outdir` (default `dist/browser/` at the repository root: ignored by git and
 * by `deno fmt`/`lint`/`test`).
 *
 * @returns The bundles' paths and total size in bytes.
 */
export async function buildBrowserExample(
  outdir: string = DEFAULT_OUTDIR,
): Promise<{ files: string[]; bytes: number }> {
  const result = await esbuild.build({
    entryPoints: [fileURLToPath(new URL("main.ts", HERE)), fileURLToPath(new URL("worker.ts", HERE))],
    outdir,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: false,
    sourcemap: false,
    metafile: true,
    logLevel: "warning",
    plugins: [stubNodeBuiltins],
  });
  await esbuild.stop();
  const outputs = Object.entries(result.metafile.outputs);
  return { files: outputs.map(([f]) => f), bytes: outputs.reduce((n, [, o]) => n + o.bytes, 0) };
}

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  txt: "text/plain; charset=utf-8",
  bin: "application/octet-stream",
  png: "image/png",
};

/** Options of {@link serveBrowserExample}. */
export interface ServeExampleOptions {
  /** Where the bundles are (served as `/browser/dist/`); default `dist/browser/`. */
  readonly outdir?: string;
  /** Default 127.0.0.1. */
  readonly hostname?: string;
  /** Default 8788; 0 picks a free port. */
  readonly port?: number;
}

/**
 * Serves `examples/` (the page at `/browser/`, the bundled data at `/data/`) with `/browser/dist/` taken from
 * `outdir`, cross-origin isolated. Only files below those folders are served.
 *
 * @returns The server and the page's URL.
 */
export function serveBrowserExample(options: ServeExampleOptions = {}): { server: Deno.HttpServer; url: string } {
  const examples = fileURLToPath(new URL("../", HERE));
  const outdir = (options.outdir ?? DEFAULT_OUTDIR).replace(/\/?$/, "/");
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 8788,
    onListen: () => {},
  }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    const headers = {
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-embedder-policy": "require-corp",
      "cache-control": "no-store",
    };
    // Serve only plain names under the two folders: no "..", no dot files.
    if (path.split("/").some((p) => p === ".." || p.startsWith(".") && p !== "")) {
      return new Response("not found", { status: 404, headers });
    }
    let file: string | undefined;
    if (path === "/" || path === "/browser") return Response.redirect(new URL("/browser/", req.url), 302);
    if (path.startsWith("/browser/dist/")) file = outdir + path.slice("/browser/dist/".length);
    else if (path === "/browser/") file = `${examples}browser/index.html`;
    else if (path.startsWith("/data/")) file = examples + path.slice(1);
    if (!file) return new Response("not found", { status: 404, headers });
    try {
      const body = await Deno.readFile(file);
      const type = TYPES[file.slice(file.lastIndexOf(".") + 1)] ?? "application/octet-stream";
      return new Response(body, { headers: { ...headers, "content-type": type } });
    } catch {
      return new Response("not found", { status: 404, headers });
    }
  });
  const { hostname, port } = server.addr;
  return { server, url: `http://${hostname}:${port}/browser/` };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { serve: { type: "boolean", default: false }, port: { type: "string", default: "8788" } },
  });
  const { files, bytes } = await buildBrowserExample();
  console.log(`wrote ${files.join(", ")} (${(bytes / 1024).toFixed(0)} KiB)`);
  if (values.serve) {
    const { url } = serveBrowserExample({ port: Number(values.port) });
    console.log(`serving the example on ${url}`);
  }
}
