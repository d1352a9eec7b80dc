/**
 * The esbuild bundle of mod.ts runs under Node 20 and Bun and gives bit-identical numbers to Deno running the sources.
 * Needs `node` on PATH and the npm registry (or its cache) for `npx bun`.
 */

import { deepEqual, ok } from "node:assert/strict";
import { bundle } from "../scripts/bundle.ts";

const SMOKE = new URL("./cross_runtime/smoke.mjs", import.meta.url).pathname;

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${new TextDecoder().decode(out.stderr)}`);
  return text.split("\n").at(-1)!;
}

Deno.test({
  name: "bundle: Node 20 and Bun compute what Deno computes",
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir();
    try {
      const file = `${dir}/ptq.mjs`;
      ok((await bundle(file)) > 10_000);
      const deno = JSON.parse(
        await run(Deno.execPath(), ["run", "-A", SMOKE, new URL("../mod.ts", import.meta.url).pathname]),
      );
      ok(deno.gptqLoss < deno.rtnLoss, "sanity: GPTQ beats RTN on the smoke case");
      await t.step("node", async () => {
        const version = await run("node", ["--version"]);
        console.log(`node ${version}`);
        deepEqual(JSON.parse(await run("node", [SMOKE, file])), deno);
      });
      await t.step("bun", async () => {
        const version = await run("npx", ["-y", "bun@1.3.4", "--version"]);
        console.log(`bun ${version}`);
        deepEqual(JSON.parse(await run("npx", ["-y", "bun@1.3.4", SMOKE, file])), deno);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
