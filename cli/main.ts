/**
 * The `ptq` command: `ptq <command> [options]`. Each command lives in its own module and returns an exit status.
 *
 * @module
 */

import { benchCommand } from "./bench.ts";
import { evalCommand } from "./eval.ts";
import { inspectCommand } from "./inspect.ts";
import { quantizeCommand } from "./quantize.ts";
import { serveCommand } from "./serve.ts";

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; summary: string }> = {
  quantize: { run: quantizeCommand, summary: "quantize a model's linear layers and evaluate it" },
  eval: { run: evalCommand, summary: "perplexity of a model on a text file" },
  inspect: { run: inspectCommand, summary: "layers, dtypes, sizes and quantization of a model or checkpoint" },
  bench: { run: benchCommand, summary: "plot and tabulate quantize results (--report DIR)" },
  serve: { run: serveCommand, summary: "serve quantization jobs over HTTP" },
};

const USAGE = `Usage: ptq <command> [options]

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`).join("\n")}

Run "ptq <command> --help" for a command's options.
`;

/** Runs the CLI with `args` (without the program name); returns the exit status. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "-h" || name === "--help" || name === "help") {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`ptq: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  return await command.run(rest);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
