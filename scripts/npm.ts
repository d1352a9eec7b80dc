/**
 * The npm package: `mod.ts` bundled as one ES module by esbuild (`scripts/bundle.ts`), `.d.ts` types emitted by the
 * TypeScript compiler from npm, a `package.json` with an `exports` map, and the README. The package has no runtime
 * dependencies: the library core imports nothing from npm.
 *
 * Usage: `deno run -A scripts/npm.ts [outdir]` (default `dist/npm`).
 *
 * ```
 * dist/npm/
 *   package.json     "exports": { ".": { "types": "./types/mod.d.ts", "import": "./ptq.mjs" } }
 *   ptq.mjs          the bundle
 *   types/           one .d.ts per source module reachable from mod.d.ts, relative imports ending in .js
 *   README.md
 * ```
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { bundle } from "./bundle.ts";

/** The TypeScript compiler that emits the declarations (the version Deno 2.9 embeds). */
export const TYPESCRIPT = "npm:typescript@6.0.3";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** What {@link buildNpmPackage} wrote. */
export interface NpmBuild {
  /** The package folder. */
  readonly outdir: string;
  /** Bytes of the bundle. */
  readonly bundleBytes: number;
  /** Declaration files kept, relative to `outdir`. */
  readonly declarations: readonly string[];
}

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

/** Relative module specifiers in a declaration file: `from "./x.ts"`, `import("./x.ts")`, `export * from "./x.ts"`. */
const SPECIFIER = /(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}\/[^"']+)\2/g;

/**
 * Emits declarations for `mod.ts` into `typesDir` with `tsc` (no type check: `deno check` does that; this only
 * writes the public types), rewrites `.ts` specifiers to `.js` (each resolves to its `.d.ts` sibling under every
 * module resolution mode), and deletes the declarations `mod.d.ts` does not reach.
 */
async function emitDeclarations(typesDir: string): Promise<string[]> {
  const tmp = await Deno.makeTempDir({ prefix: "ptq-npm-" });
  try {
    const tsconfig = `${tmp}/tsconfig.json`;
    await Deno.writeTextFile(
      tsconfig,
      JSON.stringify({
        compilerOptions: {
          declaration: true,
          emitDeclarationOnly: true,
          // Declarations only; type errors are `deno check`'s business, and Deno-only globals in files the public
          // API never names (Deno.*, WebGPU's types) must not stop the emit.
          noCheck: true,
          allowImportingTsExtensions: true,
          rewriteRelativeImportExtensions: true,
          module: "esnext",
          moduleResolution: "bundler",
          target: "es2022",
          lib: ["es2023", "dom"],
          types: [],
          skipLibCheck: true,
          strict: true,
          rootDir: ROOT,
          outDir: typesDir,
        },
        files: [`${ROOT}mod.ts`],
      }),
    );
    await run(Deno.execPath(), ["run", "--no-config", "-A", `${TYPESCRIPT}/tsc`, "-p", tsconfig], tmp);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }

  // Rewrite specifiers, then keep what mod.d.ts reaches.
  const all = new Map<string, string>();
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".d.ts")) all.set(p, await Deno.readTextFile(p));
    }
  };
  await walk(typesDir);
  const kept = new Set<string>();
  const visit = (file: string) => {
    if (kept.has(file) || !all.has(file)) return;
    kept.add(file);
    const dir = file.slice(0, file.lastIndexOf("/"));
    for (const m of all.get(file)!.matchAll(SPECIFIER)) {
      const target = new URL(m[3].replace(/\.(ts|js)$/, ".d.ts"), `file://${dir}/`).pathname;
      visit(target);
    }
  };
  visit(`${typesDir}/mod.d.ts`);
  if (!kept.size) throw new Error(`tsc wrote no ${typesDir}/mod.d.ts`);
  for (const [file, text] of all) {
    if (!kept.has(file)) {
      await Deno.remove(file);
      continue;
    }
    await Deno.writeTextFile(
      file,
      text.replace(SPECIFIER, (_, lead, q, spec) => `${lead}${q}${spec.replace(/\.ts$/, ".js")}${q}`),
    );
  }
  return [...kept].map((f) => f.slice(typesDir.length + 1)).sort();
}

/**
 * Builds the package into `outdir` (emptied first).
 *
 * @returns What was written.
 * @throws {Error} when esbuild or tsc fails.
 */
export async function buildNpmPackage(outdir: string = `${ROOT}dist/npm`): Promise<NpmBuild> {
  await Deno.remove(outdir, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  await Deno.mkdir(outdir, { recursive: true });
  const bundleBytes = await bundle(`${outdir}/ptq.mjs`);
  const declarations = await emitDeclarations(`${outdir}/types`);
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const pkg = {
    name: config.name,
    version: config.version,
    description: "Post-training quantization of transformer language models (GPTQ, RTN, SpQR, BiLLM), in TypeScript",
    license: config.license,
    type: "module",
    main: "./ptq.mjs",
    module: "./ptq.mjs",
    types: "./types/mod.d.ts",
    exports: { ".": { types: "./types/mod.d.ts", import: "./ptq.mjs", default: "./ptq.mjs" } },
    files: ["ptq.mjs", "types/", "README.md"],
    engines: { node: ">=20" },
    keywords: ["quantization", "gptq", "llm", "llama", "webgpu", "wasm"],
  };
  await Deno.writeTextFile(`${outdir}/package.json`, JSON.stringify(pkg, null, 2) + "\n");
  await Deno.copyFile(`${ROOT}README.md`, `${outdir}/README.md`);
  return { outdir, bundleBytes, declarations: declarations.map((d) => `types/${d}`) };
}

if (import.meta.main) {
  const outdir = Deno.args[0] ?? `${ROOT}dist/npm`;
  const built = await buildNpmPackage(outdir);
  console.log(
    `wrote ${outdir}: ptq.mjs (${
      (built.bundleBytes / 1024).toFixed(0)
    } KiB), ${built.declarations.length} .d.ts files, ` +
      `package.json`,
  );
}
