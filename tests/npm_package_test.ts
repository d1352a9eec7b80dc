/**
 * The npm package (`scripts/npm.ts`) works as a package: built into a temporary folder, installed by path into a
 * consumer project's node_modules, imported by name under Node 20 and Bun with the numbers Deno computes from the
 * sources, and type-checked with `tsc --noEmit` against its `.d.ts`. Needs `node` and `npx` on PATH and the npm
 * registry (or its cache) for Bun and TypeScript.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { buildNpmPackage, TYPESCRIPT } from "../scripts/npm.ts";
import * as ptq from "../mod.ts";

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${stdout}\n${new TextDecoder().decode(out.stderr)}`);
  }
  return stdout;
}

/** The consumer: imports the package by name and prints one JSON line. Plain JS, so every runtime reads it as is. */
const CONSUMER = `import * as ptq from "@ptq/ptq";
const rng = ptq.createRng(3);
const x = ptq.matrix(64, 24, ptq.randomNormal(rng, 64 * 24));
const w = ptq.matrix(8, 24, ptq.randomNormal(rng, 8 * 24, 0.05));
const h = await ptq.hessianOf(x);
const q = await ptq.gptq(w, h, { bits: 3, groupSize: 8, actOrder: true });
const r = await ptq.rtn(w, h, { bits: 3, groupSize: 8 });
console.log(JSON.stringify({
  gptq: q.stats.layerLoss,
  rtn: r.stats.layerLoss,
  bits: q.stats.avgBits,
  codes: Array.from(q.codes.slice(0, 12)),
  methods: ptq.METHODS,
  backend: ptq.getBackend().name,
}));
`;

/** A TypeScript consumer: what a user of the types writes, including a deliberate misuse that must not compile. */
const TYPED_CONSUMER =
  `import { gptq, hessianOf, matrix, type Matrix, type QuantizedLayer, type GptqOptions } from "@ptq/ptq";
const w: Matrix = matrix(2, 3, new Float32Array(6));
const options: GptqOptions = { bits: 3, groupSize: 0, actOrder: true };
export async function run(): Promise<number> {
  const q: QuantizedLayer = await gptq(w, await hessianOf(matrix(4, 3, new Float32Array(12))), options);
  const rows: number = q.dequantized.shape[0];
  return rows + q.stats.layerLoss;
}
`;

async function expected(): Promise<unknown> {
  const rng = ptq.createRng(3);
  const x = ptq.matrix(64, 24, ptq.randomNormal(rng, 64 * 24));
  const w = ptq.matrix(8, 24, ptq.randomNormal(rng, 8 * 24, 0.05));
  const h = await ptq.hessianOf(x);
  const q = await ptq.gptq(w, h, { bits: 3, groupSize: 8, actOrder: true });
  const r = await ptq.rtn(w, h, { bits: 3, groupSize: 8 });
  return {
    gptq: q.stats.layerLoss,
    rtn: r.stats.layerLoss,
    bits: q.stats.avgBits,
    codes: Array.from(q.codes!.slice(0, 12)),
    methods: [...ptq.METHODS],
    backend: "ts",
  };
}

Deno.test({
  name: "npm package: builds, imports by name in Node 20 and Bun, type-checks with tsc",
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "ptq-npm-test-" });
    try {
      const pkgDir = `${dir}/package`;
      const built = await buildNpmPackage(pkgDir);
      ok(built.bundleBytes > 10_000);
      ok(built.declarations.includes("types/mod.d.ts"));
      const pkg = JSON.parse(await Deno.readTextFile(`${pkgDir}/package.json`));
      equal(pkg.exports["."].types, "./types/mod.d.ts");
      equal(pkg.type, "module");
      deepEqual(Object.keys(pkg.dependencies ?? {}), [], "no runtime dependencies");

      // A consumer project with the package installed by path (a copy, as npm would place it).
      const app = `${dir}/app`;
      await Deno.mkdir(`${app}/node_modules/@ptq`, { recursive: true });
      await run("cp", ["-r", pkgDir, `${app}/node_modules/@ptq/ptq`], dir);
      await Deno.writeTextFile(`${app}/package.json`, JSON.stringify({ name: "app", private: true, type: "module" }));
      await Deno.writeTextFile(`${app}/consumer.mjs`, CONSUMER);
      const want = await expected();

      await t.step("node", async () => {
        console.log(`node ${await run("node", ["--version"], app)}`);
        deepEqual(JSON.parse((await run("node", ["consumer.mjs"], app)).split("\n").at(-1)!), want);
      });
      await t.step("bun", async () => {
        console.log(`bun ${await run("npx", ["-y", "bun@1.3.4", "--version"], app)}`);
        deepEqual(JSON.parse((await run("npx", ["-y", "bun@1.3.4", "consumer.mjs"], app)).split("\n").at(-1)!), want);
      });
      await t.step("tsc --noEmit against the .d.ts", async () => {
        await Deno.writeTextFile(`${app}/consumer.ts`, TYPED_CONSUMER);
        const tsconfig = {
          compilerOptions: {
            strict: true,
            noEmit: true,
            module: "nodenext",
            moduleResolution: "nodenext",
            target: "es2022",
            lib: ["es2023", "dom"],
            types: [],
            // The package's own declarations are checked too, not skipped.
            skipLibCheck: false,
          },
          files: ["consumer.ts"],
        };
        await Deno.writeTextFile(`${app}/tsconfig.json`, JSON.stringify(tsconfig));
        const tsc = ["run", "--no-config", "-A", `${TYPESCRIPT}/tsc`, "-p", "tsconfig.json"];
        await run(Deno.execPath(), tsc, app);
        // And a misuse is caught: the types are real, not `any`.
        await Deno.writeTextFile(
          `${app}/consumer.ts`,
          `${TYPED_CONSUMER}\nconst bad: string = matrix(1, 1).shape[0];\n`,
        );
        const out = await new Deno.Command(Deno.execPath(), { args: tsc, cwd: app, stdout: "piped" }).output();
        ok(!out.success, "assigning a number to a string does not type-check");
        ok(new TextDecoder().decode(out.stdout).includes("TS2322"), new TextDecoder().decode(out.stdout));
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
